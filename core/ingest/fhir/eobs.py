"""ExplanationOfBenefit resources -> paid amounts: netted per claim, added to the encounter they
reference, else grouped into stays, ED visits and other claims (``core.ingest.claims``)."""

from collections.abc import Iterable

from core.config.catalog import load_catalog
from core.ingest.checks import amount_problem
from core.ingest.claims import Claim, ClaimRules, Episode, claim_kind, group_claims, load_claim_rules, net_claim
from core.ingest.fhir.resources import Resource, codings, money, parse_fhir_date, ref_id
from core.ingest.fhir.state import ReadState, field_date, subject_id
from core.ingest.idmap import count_unmapped, make_id


def _eob_paid(b: dict) -> float | None:
    paid = money((b.get("payment") or {}).get("amount"))
    if paid is not None:
        return paid
    for t in b.get("total") or []:
        cats = {c.get("code") for c in codings(t.get("category"))}
        if cats & {"benefit", "paidtoprovider", "payment"}:
            return money(t.get("amount"))
    return None


EOB_SKIPPED_STATUSES = ("entered-in-error", "cancelled")
# Network status of an EOB: CARIN Blue Button ``supportingInfo`` of category
# ``benefitpaymentstatus`` (codes innetwork / outofnetwork / other), or FHIR R4
# ``benefitBalance.network`` (http://terminology.hl7.org/CodeSystem/benefit-network: in / out).
OUT_OF_NETWORK_CODES = {"outofnetwork", "out"}
IN_NETWORK_CODES = {"innetwork", "in"}


def eob_in_network(b: dict) -> bool | None:
    """Whether an EOB was paid in network (None: the EOB does not say; read as in network)."""
    codes = set()
    for info in b.get("supportingInfo") or []:
        if isinstance(info, dict) and any(c.get("code") == "benefitpaymentstatus" for c in codings(info.get("category"))):
            codes |= {str(c.get("code", "")).lower() for c in codings(info.get("code"))}
    for balance in b.get("benefitBalance") or []:
        if isinstance(balance, dict):
            codes |= {str(c.get("code", "")).lower() for c in codings(balance.get("network"))}
    if codes & OUT_OF_NETWORK_CODES:
        return False
    return True if codes & IN_NETWORK_CODES else None


def _reference_text(ref, org_names: dict[str, str]) -> str:
    """A Reference as a facility: its display, else its identifier's value (an NPI), else the name
    of the Organization it points to when that is in the import; '' otherwise (a bare id names nothing)."""
    if not isinstance(ref, dict):
        return ""
    ident = ref.get("identifier") if isinstance(ref.get("identifier"), dict) else {}
    return str(ref.get("display") or ident.get("value") or org_names.get(ref_id(ref) or "", "") or "").strip()


def eob_facility(b: dict, org_names: dict[str, str] | None = None) -> str:
    """The facility of an EOB (``facility``, else the billing ``provider``), by name or NPI; ''
    when neither names one (max 200 characters). ``org_names``: Organization id -> name."""
    org_names = org_names or {}
    return (_reference_text(b.get("facility"), org_names) or _reference_text(b.get("provider"), org_names))[:200]


def eob_specialty(b: dict) -> str:
    """The specialty of an EOB: the first ``careTeam.qualification`` (text, else a coding's display,
    else its code: CARIN Blue Button carries the NUCC provider taxonomy there); '' when none (max 64)."""
    for member in b.get("careTeam") or []:
        q = member.get("qualification") if isinstance(member, dict) else None
        if not isinstance(q, dict):
            continue
        text = q.get("text") or next((c.get("display") or c.get("code") for c in codings(q) if c.get("display") or c.get("code")), "")  # fmt: skip
        if str(text or "").strip():
            return str(text).strip()[:64]
    return ""


def _eob_claim_kind(st: ReadState, b: dict, rules: ClaimRules) -> tuple[str, str]:
    """(kind, cost category override) of an EOB that references no Encounter.

    Institutional EOBs: type of bill (``supportingInfo`` category ``typeofbill``) and the items'
    revenue centres; professional EOBs: the items' place of service (``locationCodeableConcept``);
    both through the claims rules (claims.toml). Other types: ``[eob_types]`` of fhir_maps.toml.
    """
    type_code = next((c.get("code") for c in codings(b.get("type")) if c.get("code")), None)
    items = [i for i in b.get("item") or [] if isinstance(i, dict)]
    if type_code in ("institutional", "professional"):
        bill = ""
        for info in b.get("supportingInfo") or []:
            if isinstance(info, dict) and any(c.get("code") == "typeofbill" for c in codings(info.get("category"))):
                bill = next((str(c["code"]).lstrip("0") for c in codings(info.get("code")) if c.get("code")), "")
        revenue = [str(c["code"]).zfill(4) for i in items for c in codings(i.get("revenue")) if c.get("code")]
        pos = next((str(c["code"]).zfill(2) for i in items for c in codings(i.get("locationCodeableConcept")) if c.get("code")), "")
        if bill or revenue or pos:
            kind, category, unmapped = claim_kind(type_code, bill, revenue, pos, rules)
            if unmapped:
                count_unmapped(st.log, f"ExplanationOfBenefit.{unmapped}")
            return kind, category
    kind = st.maps["eob_types"].get(type_code)
    if kind is None:
        count_unmapped(st.log, f"ExplanationOfBenefit.type:{type_code}")
        kind = "other_claim"
    return kind, ""


def read_eobs(st: ReadState, resources: Iterable[Resource]) -> None:
    """Paid amounts from ExplanationOfBenefit, netted per claim (``EOB.claim``, else the EOB).

    The EOBs of one claim (an original and its adjustments or reversal) are summed; a claim that
    nets to zero or below is kept as a credit. EOBs that reference an Encounter add to it; the
    others become claims grouped into stays and ED visits like Tuva claims (``core.ingest.claims``).
    Cancelled and entered-in-error EOBs pay nothing and are skipped with a count.
    """
    rules = load_claim_rules()
    groups = _group_eobs(st, resources, rules)
    claims, internal_paid = _pay_encounters(st, groups, rules)
    for episode in group_claims(claims, rules, st.log.claims):
        _add_episode(st, episode)
    if internal_paid:
        st.log.add_warning(
            "ExplanationOfBenefit",
            None,
            "payment",
            f"${internal_paid:,.2f} paid for internal encounters is practice revenue, not external cost; not loaded as paid_usd",
        )


def _group_eobs(st: ReadState, resources: Iterable[Resource], rules: ClaimRules) -> dict[str, list]:
    """The EOBs by claim key: [patient_id, encounter key or None, amounts, first EOB id, claim type,
    kind, category, start, end, latest payment date, out of network (any EOB of the claim says so),
    facility, specialty (of the first EOB of the claim that gives one)]."""
    groups: dict[str, list] = {}
    orgs = {r.body["id"]: str(r.body.get("name") or "") for r in st.by_type["Organization"]}
    for res in resources:
        b = res.body
        pid = subject_id(st, res, "patient")
        if pid is None:
            continue
        paid = _counted_paid(st, res)
        if paid is None:
            continue
        enc_ids = {ref_id(e) for item in b.get("item") or [] for e in item.get("encounter") or []} - {None}
        if _dangling_encounter(st, res, enc_ids):
            continue
        enc_key = min(enc_ids, default=None)  # one EOB pays one encounter (Synthea, CARIN BB)
        key = f"claim:{ref_id(b.get('claim')) or 'eob:' + b['id']}"
        paid_on = parse_fhir_date((b.get("payment") or {}).get("date"))
        out = eob_in_network(b) is False
        if key in groups:
            groups[key][2].append(paid)
            groups[key][9] = max(filter(None, (groups[key][9], paid_on)), default=None)
            groups[key][10] = groups[key][10] or out
            groups[key][11] = groups[key][11] or eob_facility(b, orgs)
            groups[key][12] = groups[key][12] or eob_specialty(b)
            continue
        start = end = None
        kind, category = "", ""
        if enc_key is None:
            period = b.get("billablePeriod") or {}
            start = field_date(st, res, "billablePeriod.start", period.get("start"))
            if start is None:
                continue
            end = field_date(st, res, "billablePeriod.end", period.get("end"), required=False, after=start)
            kind, category = _eob_claim_kind(st, b, rules)
        claim_type = next((c.get("code") for c in codings(b.get("type")) if c.get("code")), "") or ""
        groups[key] = [pid, enc_key, [paid], b["id"], claim_type, kind, category, start, end, paid_on, out, eob_facility(b, orgs),
                       eob_specialty(b)]  # fmt: skip
    return groups


def _counted_paid(st: ReadState, res: Resource) -> float | None:
    """The paid amount of an EOB; None, with a skip count or an error, when it pays nothing
    (cancelled, entered in error, no amount) or its amount cannot be real."""
    b = res.body
    if b.get("status") in EOB_SKIPPED_STATUSES:
        st.log.add_skipped("encounter", f"ExplanationOfBenefit {b['status']} (pays nothing)", 1)
        return None
    paid = _eob_paid(b)
    if paid is None:
        st.log.add_skipped("encounter", "ExplanationOfBenefit without a paid amount", 1)
        return None
    if amount_problem(paid):
        st.log.add_error(res.file, res.where, "ExplanationOfBenefit.payment", f"ExplanationOfBenefit/{b['id']}: {amount_problem(paid)}")
        return None
    return paid


def _dangling_encounter(st: ReadState, res: Resource, enc_ids: set[str]) -> bool:
    """Whether the EOB's items reference an Encounter that is not in the import (an error)."""
    dangling = sorted(e for e in enc_ids if e not in st.encounters)
    if dangling:
        st.log.add_error(
            res.file,
            res.where,
            "ExplanationOfBenefit.item.encounter",
            f"ExplanationOfBenefit/{res.body['id']}: dangling reference to Encounter {dangling[0]!r}",
        )
    return bool(dangling)


def _pay_encounters(st: ReadState, groups: dict[str, list], rules: ClaimRules) -> tuple[list[Claim], float]:
    """Nets each claim and adds the claims of external encounters to them; returns the other
    claims (to group into stays and visits) and what internal encounters were paid (practice
    revenue, reported and not loaded)."""
    kinds = load_catalog().activity_kinds
    internal_paid = 0.0
    claims = []
    for key, (pid, enc_key, amounts, eob_id, claim_type, kind, category, start, end, paid_on, out, facility, specialty) in groups.items():  # fmt: skip
        # EOB payments are claim-level amounts, so the EOBs of one claim are summed ("explanation_of_benefit"
        # is not a claim type of claims.toml [paid_amount]: the default, line).
        net = net_claim(key, "explanation_of_benefit", amounts, rules, st.log.claims)
        if enc_key is not None:
            enc = st.encounters[enc_key]
            if enc["is_internal"]:
                internal_paid += net.paid_usd
            else:
                enc["paid_usd"] = round(enc["paid_usd"] + net.paid_usd, 2)
                enc["paid_date"] = paid_on
                if out:
                    enc["in_network"] = False
                enc["facility"] = enc.get("facility") or facility
                enc["specialty"] = enc.get("specialty") or specialty
            continue
        claims.append(
            Claim(
                claim_id=key,
                person=pid,
                claim_type=claim_type,
                kind=kind,
                category=category or kinds[kind].category,
                start=start,
                end=end,
                paid_usd=net.paid_usd,
                reversed=net.reversed,
                unpaid=net.unpaid,
                detail=dict(eob_id=eob_id, paid_date=paid_on, in_network=not out, facility=facility, specialty=specialty),
            )
        )
    return claims, internal_paid


def _add_episode(st: ReadState, episode: Episode) -> None:
    """One external encounter for a stay, ED visit or claim grouped from EOBs without an Encounter."""
    eob_id = episode.anchor.detail["eob_id"]
    in_network = all(c.detail.get("in_network", True) for c in episode.claims)
    row = episode.encounter_row(make_id("fhir:eob", eob_id), episode.anchor.person, in_network=in_network, primary_dx="")
    st.encounters[f"eob:{eob_id}"] = {**row, "_org": None}
