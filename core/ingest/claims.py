"""Claims as analysts count them: net each claim, count a repeated header amount once, give each
claim its kind, and group claims into acute stays and ED visits. Shared by the Tuva and FHIR importers.

Steps (settings are data: ``core/config/claims.toml``):

1. :func:`net_claim` -> one paid amount per claim from its lines: reversal and adjustment lines
   (negative amounts) are netted with the lines they correct; for claim types whose paid amount
   sits on the header (``[paid_amount]``), an amount repeated on every line is counted once.
2. :func:`claim_kind` -> the activity kind and cost category of a claim from its bill type,
   revenue centres or place of service.
3. :func:`group_claims` -> encounters: overlapping or adjacent acute facility claims (transfers)
   are one stay, professional claims during a stay belong to it; ED claims of one episode
   (facility and professional, over midnight) are one ED visit; every other claim is one encounter.

Reference: the Tuva Project claims preprocessing and encounter grouping
(https://github.com/tuva-health/tuva, ``models/claims_preprocessing/encounters``); where this
departs from it, ``claims.toml`` says so.

What was corrected is counted in a :class:`ClaimsReport` (stored on the import report's
``claims`` key; its keys are documented on the class).
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache
from pathlib import Path

from core.config import ConfigError, config_path, load_toml
from core.config.catalog import load_catalog
from core.views.format import usd

CLAIMS_PATH = config_path("claims.toml")
PAID_LEVELS = ("line", "header")


@dataclass(frozen=True)
class ClaimRules:
    """The settings of ``claims.toml``."""

    paid_level: dict[str, str]
    unpaid_claims_are_services: bool
    stay_gap_days: int
    stay_attach_claim_types: frozenset[str]
    ed_facility_gap_days: int
    ed_professional_gap_days: int
    ed_before_admission_days: int
    ed_attach_claim_types: frozenset[str]
    ed_attach_kinds: frozenset[str]
    examples: int
    institutional: dict
    bill_types: dict[str, tuple[str, str]]
    pos: dict[str, tuple[str, str]]

    def level(self, claim_type: str) -> str:
        return self.paid_level.get(claim_type, self.paid_level["default"])


@cache
def load_claim_rules(path: Path = CLAIMS_PATH) -> ClaimRules:
    """The claims settings, checked: paid levels known, kinds and categories in the catalogue."""
    raw = load_toml(path)
    levels = dict(raw["paid_amount"])
    if "default" not in levels or any(v not in PAID_LEVELS for v in levels.values()):
        raise ConfigError(f"{path}: [paid_amount] needs a default and values in {PAID_LEVELS}")
    cat = load_catalog()
    bill_types = {k: tuple(v) for k, v in raw["institutional"]["bill_types"].items()}
    pos = {k: tuple(v) for k, v in raw["professional"]["pos"].items()}
    for name, (kind, category) in [*(("bill type " + k, v) for k, v in bill_types.items()),
                                   *(("POS " + k, v) for k, v in pos.items())]:
        if kind not in cat.activity_kinds or (category and category not in cat.cost_categories):
            raise ConfigError(f"{path}: {name} maps to unknown kind/category {kind!r}/{category!r}")
    ed, stays = raw["ed"], raw["stays"]
    unknown = set(ed["attach_kinds"]) - set(cat.activity_kinds)
    if unknown:
        raise ConfigError(f"{path}: [ed] attach_kinds has unknown kinds {sorted(unknown)}")
    return ClaimRules(
        paid_level=levels,
        unpaid_claims_are_services=bool(raw["services"]["unpaid_claims_are_services"]),
        stay_gap_days=int(stays["merge_gap_days"]),
        stay_attach_claim_types=frozenset(stays["attach_claim_types"]),
        ed_facility_gap_days=int(ed["facility_gap_days"]),
        ed_professional_gap_days=int(ed["professional_gap_days"]),
        ed_before_admission_days=int(ed["before_admission_days"]),
        ed_attach_claim_types=frozenset(ed["attach_claim_types"]),
        ed_attach_kinds=frozenset(ed["attach_kinds"]),
        examples=int(raw["report"]["examples"]),
        institutional={k: v for k, v in raw["institutional"].items() if k != "bill_types"},
        bill_types=bill_types,
        pos=pos,
    )


# --- the report ----------------------------------------------------------------------------------


@dataclass
class ClaimsReport:
    """What the claims rules corrected in one import (``ImportReport.claims``, JSON on ``import_run.report``).

    Keys (counts are claims unless named otherwise; ``*_usd`` are US dollars):

    - ``claims``: claims read (one per claim id, medical and pharmacy); ``lines``: their lines.
    - ``netted``: claims with at least one negative line (a reversal or adjustment), netted per claim.
    - ``credits`` / ``credits_usd``: of those, the claims that net to zero or below, and their
      net amount (<= 0). They are kept, as credits in the month they start. (CSV bundle, whose
      encounters are claims already netted: ``claims`` are its external encounters and
      ``credits`` those with a paid amount below 0.)
    - ``unpaid``: claims whose lines are all zero or blank (denied, or paid by another payer).
    - ``repeated_header`` / ``repeated_header_usd``: claims whose paid amount was repeated on
      every line and was counted once, and the dollars that were therefore not counted.
    - ``ed_claims`` / ``ed_visits``: ED claims (facility and professional) and the ED visits they
      make; ``ed_attached``: other claims (labs, imaging, ambulance) that belong to those visits.
    - ``stay_claims`` / ``stays``: acute inpatient facility claims and the stays they make;
      ``stay_attached``: professional claims during a stay and ED claims that led to it.
    - ``examples``: check name (``netted``, ``credits``, ``unpaid``, ``repeated_header``,
      ``ed_visits``, ``stays``) -> a few claim ids (for stays and ED visits: claims of a merged one).
    """

    claims: int = 0
    lines: int = 0
    netted: int = 0
    credits: int = 0
    credits_usd: float = 0.0
    unpaid: int = 0
    repeated_header: int = 0
    repeated_header_usd: float = 0.0
    ed_claims: int = 0
    ed_visits: int = 0
    ed_attached: int = 0
    stay_claims: int = 0
    stays: int = 0
    stay_attached: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    def example(self, check: str, claim_id: str, limit: int) -> None:
        ids = self.examples.setdefault(check, [])
        if len(ids) < limit and claim_id not in ids:
            ids.append(claim_id)

    def to_dict(self) -> dict:
        out = {k: v for k, v in vars(self).items() if k != "examples"}
        out["credits_usd"] = round(self.credits_usd, 2)
        out["repeated_header_usd"] = round(self.repeated_header_usd, 2)
        out["examples"] = {k: list(v) for k, v in self.examples.items()}
        return out

    def to_text(self) -> list[str]:
        """One line per correction that happened (none when nothing was corrected)."""
        lines = []
        if self.netted:
            lines.append(f"{self.netted:,} claim(s) with reversal or adjustment lines netted per claim_id")
        if self.credits:
            lines.append(
                f"{self.credits:,} claim(s) net to zero or below: kept as credits in their month (net {usd(self.credits_usd, 2)})"
            )
        if self.unpaid:
            lines.append(f"{self.unpaid:,} claim(s) paid $0 (denied or paid by another payer): kept as services")
        if self.repeated_header:
            lines.append(
                f"{self.repeated_header:,} claim(s) repeat the header paid amount on every line: counted once "
                f"({usd(self.repeated_header_usd, 2)} of repeats not counted)"
            )
        if self.ed_claims:
            extra = f", with {self.ed_attached:,} lab/imaging/other claim(s) of those visits" if self.ed_attached else ""
            lines.append(f"{self.ed_claims:,} ED claim(s) (facility and professional) grouped into {self.ed_visits:,} ED visit(s){extra}")
        if self.stay_claims:
            extra = f", with {self.stay_attached:,} professional or ED claim(s) during them" if self.stay_attached else ""
            lines.append(f"{self.stay_claims:,} acute inpatient facility claim(s) grouped into {self.stays:,} stay(s){extra}")
        return lines


# --- one claim -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetAmount:
    """The paid amount of one claim after netting its lines.

    ``reversed``: it has a negative line and nets to zero or below (a credit); ``unpaid``: every
    line is zero or blank and none negative (denied, or paid by another payer).
    """

    paid_usd: float
    reversed: bool
    unpaid: bool


def _header_repeats(amounts: list[float]) -> int:
    """How many times a header amount is repeated on the lines: n when every non-zero amount
    occurs exactly n times (13 x 66,898.86; or 13 x +X, 13 x -X, 13 x +Y for an adjusted
    claim), else 1 (the lines are line amounts, or the header sits on one line)."""
    counts: dict[float, int] = {}
    for a in amounts:
        if a != 0:
            counts[a] = counts.get(a, 0) + 1
    n = set(counts.values())
    return n.pop() if len(n) == 1 else 1


def net_claim(claim_id: str, claim_type: str, amounts: list[float], rules: ClaimRules, report: ClaimsReport) -> NetAmount:
    """Net the line amounts (blank = 0, in line order) of one claim; counts what was corrected into ``report``."""
    report.claims += 1
    report.lines += len(amounts)
    negative = any(a < 0 for a in amounts)
    total = sum(amounts)
    paid = total
    if rules.level(claim_type) == "header":
        repeats = _header_repeats(amounts)
        if repeats > 1:
            paid = total / repeats
            report.repeated_header += 1
            report.repeated_header_usd += total - paid
            report.example("repeated_header", claim_id, rules.examples)
    paid = round(paid, 2)
    if negative:
        report.netted += 1
        report.example("netted", claim_id, rules.examples)
        if paid <= 0:
            report.credits += 1
            report.credits_usd += paid
            report.example("credits", claim_id, rules.examples)
    elif paid == 0:
        report.unpaid += 1
        report.example("unpaid", claim_id, rules.examples)
    return NetAmount(paid, negative and paid <= 0, not negative and paid == 0)


def claim_kind(
    claim_type: str,
    bill_type: str,
    revenue_codes: list[str],
    pos: str,
    rules: ClaimRules,
    primary_care_office: bool = False,
) -> tuple[str, str, str | None]:
    """(kind, cost category override, unmapped code or None) of one claim; see claims.toml.

    ``bill_type``: NUBC type of bill without leading zeros (``131``); ``revenue_codes``: 4-digit
    revenue centres; ``pos``: 2-digit CMS place of service; ``primary_care_office``: rendered by
    the person's attributed PCP (an office claim of theirs is primary care).
    """
    if claim_type == "institutional":
        inst = rules.institutional
        kind, category = rules.bill_types.get(bill_type[:2], ("", ""))
        if kind in ("admission", "snf_stay"):  # a stay that began in the ED is one admission
            return kind, category, None
        if any(c[:3] in inst["ed_revenue_prefixes"] or c in inst["ed_revenue_codes"] for c in revenue_codes):
            return "ed_visit", "", None
        imaging = inst["imaging_lab_revenue_prefixes"]
        if bill_type[:2] in ("13", "85") and revenue_codes and all(c[:3] in imaging for c in revenue_codes):
            return "imaging_lab", "", None
        if kind:
            return kind, category, None
        return "other_claim", "other", f"bill_type_code:{bill_type or 'blank'}"
    if claim_type == "professional":
        if pos in rules.pos:
            kind, category = rules.pos[pos]
            if pos == "11" and primary_care_office:
                category = "primary_care"
            return kind, category, None
        return "other_claim", "other", f"place_of_service_code:{pos or 'blank'}"
    if claim_type == "dme":
        return "other_claim", "other", None
    return "other_claim", "other", f"claim_type:{claim_type or 'blank'}"


# --- claims -> encounters ------------------------------------------------------------------------


@dataclass
class Claim:
    """One netted claim, ready to group. ``category``: the cost category (override or the kind's)."""

    claim_id: str
    person: str
    claim_type: str
    kind: str
    category: str
    start: date
    end: date | None
    paid_usd: float
    reversed: bool = False  # has a negative line and nets to zero or below
    unpaid: bool = False  # all lines zero or blank, none negative
    detail: dict = field(default_factory=dict)  # importer fields carried to the encounter (in_network, primary_dx ...)

    @property
    def last(self) -> date:
        return self.end if self.end is not None and self.end >= self.start else self.start


@dataclass(frozen=True)
class Episode:
    """One encounter made of claims: a stay, an ED visit, or a single claim.

    ``claims[0]`` (``anchor``) names the encounter: a stay's first facility claim, an ED visit's
    first facility ED claim (else its first ED claim), so the same claims give the same encounter
    id on every import. ``start`` / ``end``: a stay's admission to discharge, an ED visit's first
    to last day, a single claim's dates (claims attached to a stay or visit do not move them).
    """

    kind: str
    category: str
    claims: list[Claim]
    start: date
    end: date | None

    @property
    def anchor(self) -> Claim:
        return self.claims[0]

    @property
    def paid_usd(self) -> float:
        return round(sum(c.paid_usd for c in self.claims), 2)

    def encounter_row(self, encounter_id: str, patient_id: str, in_network: bool, primary_dx: str) -> dict:
        """The external encounter row of this episode (the canonical ``encounters`` columns);
        its paid date is the latest of its claims' paid dates."""
        return dict(
            encounter_id=encounter_id, patient_id=patient_id, team_id=None, kind=self.kind,
            start_date=self.start, end_date=self.end, requested_date=None, responded_date=None,
            is_internal=False, in_network=in_network,
            is_urgent=self.kind in ("ed_visit", "urgent_care") or self.category == "ed",
            resolved_without_visit=None, primary_dx=primary_dx, specialty=self._first("specialty")[:64],
            cost_category=self.category, paid_usd=self.paid_usd,
            paid_date=max((d for c in self.claims if (d := c.detail["paid_date"]) is not None), default=None),
            discharge_disposition=self.disposition, facility=self.facility,
        )

    def _first(self, key: str) -> str:
        """The first non-blank ``detail[key]`` of the claims (anchor first), '' when none has one."""
        return next((str(v).strip() for c in self.claims if str(v := c.detail.get(key) or "").strip()), "")

    @property
    def facility(self) -> str:
        """The facility or group that billed (name or NPI): that of the first institutional claim
        that names one, else of the first claim that does; '' when none does (max 200 characters)."""
        institutional = [c for c in self.claims if c.claim_type == "institutional" and str(c.detail.get("facility") or "").strip()]  # fmt: skip
        chosen = institutional[0].detail["facility"] if institutional else self._first("facility")
        return str(chosen).strip()[:200]

    @property
    def disposition(self) -> str:
        """Where a stay ended: the disposition of its last claim (by end date) that has one; '' when
        none does, and for encounters that are not stays."""
        if self.kind not in ("admission", "snf_stay"):
            return ""
        dated = [(c.last, c.detail.get("disposition", "")) for c in self.claims if c.detail.get("disposition")]
        return max(dated)[1] if dated else ""


@dataclass
class _Group:
    """A stay or an ED visit being built: its claims, first and last day, and last facility day."""

    claims: list[Claim]
    start: date
    last: date
    facility_last: date | None

    @classmethod
    def of(cls, c: Claim) -> "_Group":
        return cls([c], c.start, c.last, c.last if c.claim_type == "institutional" else None)

    def extend(self, c: Claim) -> None:
        self.claims.append(c)
        self.last = max(self.last, c.last)
        if c.claim_type == "institutional":
            self.facility_last = max(self.facility_last or c.last, c.last)

    def holds(self, c: Claim, before: int = 0) -> bool:
        return self.start - timedelta(days=before) <= c.start <= self.last

    def episode(self, kind: str) -> Episode:
        # The anchor: an anchoring claim of the group's kind, facility claims first, earliest first.
        ranked = sorted(self.claims, key=lambda c: (c.kind != kind or c.reversed, c.claim_type != "institutional", *_order(c)))
        return Episode(kind, ranked[0].category, ranked, self.start, self.last)


def _anchors(claim: Claim, rules: ClaimRules) -> bool:
    """Whether a claim can start a stay or an ED visit by itself (credits and, by setting, $0 claims cannot)."""
    return not claim.reversed and (rules.unpaid_claims_are_services or not claim.unpaid)


def _order(c: Claim) -> tuple:
    return (c.start, c.claim_type != "institutional", c.last, c.claim_id)


def _stays(claims: list[Claim], rules: ClaimRules) -> list[_Group]:
    """Acute stays: anchoring acute facility claims that overlap or follow within the merge gap."""
    stays: list[_Group] = []
    for c in claims:
        if stays and c.start <= stays[-1].last + timedelta(days=rules.stay_gap_days):
            stays[-1].extend(c)
        else:
            stays.append(_Group.of(c))
    return stays


def _ed_visits(claims: list[Claim], rules: ClaimRules) -> list[_Group]:
    """ED visits: a facility claim joins a visit it overlaps (within the facility gap of the last
    facility day); a professional claim, or any claim of a visit without a facility claim yet,
    joins within the professional gap of the visit's last day."""
    visits: list[_Group] = []
    for c in claims:
        if visits:
            v = visits[-1]
            if c.claim_type == "institutional" and v.facility_last is not None:
                joins = c.start <= v.facility_last + timedelta(days=rules.ed_facility_gap_days)
            else:
                joins = c.start <= v.last + timedelta(days=rules.ed_professional_gap_days)
            if joins:
                v.extend(c)
                continue
        visits.append(_Group.of(c))
    return visits


def _person_episodes(claims: list[Claim], rules: ClaimRules, report: ClaimsReport) -> list[Episode]:
    claims = sorted(claims, key=_order)
    anchoring = [_anchors(c, rules) for c in claims]
    stays = _stays([c for c, a in zip(claims, anchoring, strict=True) if a and c.kind == "admission"], rules)

    def stay_of(c: Claim, before: int = 0) -> _Group | None:
        return next((s for s in stays if s.holds(c, before)), None)

    # ED claims that led to a stay (the day of admission or just before) or happened during it
    # belong to the stay; the rest make ED visits.
    ed = []
    for c, a in zip(claims, anchoring, strict=True):
        if not a or c.kind != "ed_visit":
            continue
        stay = stay_of(c, before=rules.ed_before_admission_days)
        if stay is not None:
            stay.claims.append(c)
            report.stay_attached += 1
        else:
            ed.append(c)
    visits = _ed_visits(ed, rules)

    # The rest: credits of a stay or visit join the one they fall in; professional claims during a
    # stay and labs / imaging / ambulance on the days of an ED visit belong to it.
    singles: list[Claim] = []
    for c, a in zip(claims, anchoring, strict=True):
        if a and c.kind in ("admission", "ed_visit"):
            continue
        stay = stay_of(c)
        if stay is not None and (c.claim_type in rules.stay_attach_claim_types or c.kind in ("admission", "ed_visit")):
            stay.claims.append(c)
            report.stay_attached += c.kind != "admission"
            continue
        visit = next((v for v in visits if v.holds(c)), None)
        attaches = c.kind == "ed_visit" or (c.claim_type in rules.ed_attach_claim_types and c.kind in rules.ed_attach_kinds)
        if visit is not None and attaches:
            visit.claims.append(c)
            report.ed_attached += c.kind != "ed_visit"
            continue
        singles.append(c)

    episodes = []
    for stay in stays:
        report.stays += 1
        report.stay_claims += sum(1 for c in stay.claims if c.kind == "admission")
        if len(stay.claims) > 1:
            report.example("stays", stay.claims[0].claim_id, rules.examples)
        episodes.append(stay.episode("admission"))
    for visit in visits:
        report.ed_visits += 1
        report.ed_claims += sum(1 for c in visit.claims if c.kind == "ed_visit")
        if len(visit.claims) > 1:
            report.example("ed_visits", visit.claims[0].claim_id, rules.examples)
        episodes.append(visit.episode("ed_visit"))
    for c in singles:
        # A credit (or a $0 claim, by setting) cannot stand as a visit of its kind: it is kept as other_claim.
        episodes.append(Episode(c.kind if _anchors(c, rules) else "other_claim", c.category, [c], c.start, c.end))
    return episodes


def group_claims(claims: Iterable[Claim], rules: ClaimRules, report: ClaimsReport) -> list[Episode]:
    """Claims -> encounters (stays, ED visits, single claims), person by person; counts into ``report``."""
    by_person: dict[str, list[Claim]] = {}
    for c in claims:
        by_person.setdefault(c.person, []).append(c)
    out: list[Episode] = []
    for person in sorted(by_person):
        out.extend(_person_episodes(by_person[person], rules, report))
    return out
