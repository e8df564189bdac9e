"""The Tuva Project input layer importer: eligibility, claims, labs, observations, attribution -> canonical frames.

``read_tuva(path, engine)`` reads a folder of Tuva input-layer CSVs (``eligibility.csv``,
``medical_claim.csv``, ``pharmacy_claim.csv``, ``lab_result.csv``, ``observation.csv``,
``provider_attribution.csv``; a ``_seed`` or other ``_suffix`` after the name is accepted) and
returns ``(frames, report)`` for ``core.ingest.loader.load_tables``. It writes nothing. Spec:
https://thetuvaproject.com/data-models/input-layer. Mappings are data: ``core/config/tuva_maps.toml``.

Mapping decisions:

- **Person key**: ``person_id`` (current releases), else ``patient_id`` (earlier releases);
  a file with neither is an error, a blank key an error with its row. Patients are
  ``person:<person_id>`` (shared with FHIR patients that carry the same key; see ``idmap``).
  Rows of people not in ``eligibility`` are skipped with a warning.
- **Patient** from the person's latest eligibility span: gender, race, ethnicity, birth and
  death date, zip, names, dual status (CMS dual status codes 01-06, 08).
- **Member-months**: every month of every eligibility span (overlaps counted once), up to the
  death month. Practice, team and PCP per month from ``provider_attribution`` (custom
  attribution, else payer attribution): the attribution of that month, else the latest earlier
  one, else the earliest later one, else the default "Imported practice". ``pcp_id`` is the
  attributed NPI when a staff row with that id already exists (we never invent staff costs).
- **Medical claims** -> external encounters as analysts count them (``core.ingest.claims``,
  settings in ``claims.toml``): the lines of each ``claim_id`` are netted into one paid amount
  (blank = 0 with a count; reversal and adjustment lines included; an institutional header
  amount repeated on every line counted once); a claim netting to zero or below is kept as a
  credit in its month. Kind and cost category from bill type / revenue centre (institutional)
  or place of service (professional). Overlapping or adjacent acute inpatient claims are one
  stay (with the professional claims during it); the facility and professional claims of one ED
  episode are one ED visit; every other claim is one encounter. The encounter id is that of its
  first facility claim (else its first claim). ``primary_dx`` is diagnosis_code_1 of that claim.
- **Diagnoses** (diagnosis_code_1..25, ICD-10-CM shape; icd-9-cm counted as unmapped) ->
  one condition per person and code, onset = the earliest claim date. The diagnosis_code_type
  label itself is not trusted (the Tuva seed data labels ICD-10-CM codes ``icd-10-pcs``).
- **Pharmacy claims** -> one ``pharmacy_fill`` encounter per claim (lines netted; a claim that
  nets to zero or below through a reversal is a credit, kind other_claim) and one medication
  row per dispensed line (NDC code; end = dispensing date + days_supply - 1).
- **lab_result / observation** -> measurements for catalogue LOINC codes; tobacco answers via
  fhir_maps.toml [tobacco_text]; out-of-range values skipped with a count.
- **Errors** (``core/ingest/checks.py``), each with its file, row and column: a file that is a
  folder, has an over-long header line, or is truncated (a row with fewer fields than the header,
  an unterminated quote); a bad date, or a date after the extract date; a claim ending before it
  starts; an amount that is not a number, not finite or beyond any claim. An enrolment that ends
  after the extract date (or is open, ``9999-12-31``) is counted up to the extract's month, with
  a warning.
"""

import time
from bisect import bisect_right
from collections import defaultdict
from datetime import date, timedelta
from functools import cache
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine
from sqlmodel import Session, select

from core.config import config_path, load_toml
from core.config.catalog import load_catalog
from core.ingest.checks import MAX_AMOUNT_USD, amount_problem, check_csv_file, check_csv_structure, extract_date
from core.ingest.claims import Claim, claim_kind, group_claims, load_claim_rules, net_claim
from core.ingest.fhir.maps import load_fhir_maps
from core.ingest.idmap import (
    DEFAULT_PRACTICE_ID,
    DEFAULT_PRACTICE_NAME,
    count_unmapped,
    frames_from_rows,
    make_id,
    merge_existing_patients,
    normalize_icd10,
    person_id,
    practice_rows,
    team_id_of,
)
from core.ingest.report import ImportReport
from core.store.models import Staff
from core.store.months import as_month, months_between

MAPS_PATH = config_path("tuva_maps.toml")
FILES = ("eligibility", "medical_claim", "pharmacy_claim", "lab_result", "observation", "provider_attribution")
DX_COLUMNS = [f"diagnosis_code_{i}" for i in range(1, 26)]
MAX_LISTED = 20  # bad values listed per file and column; the rest are counted in one message
MAX_DAYS_SUPPLY = 3650  # a fill's days of supply beyond ten years cannot be real


@cache
def load_tuva_maps(path: Path = MAPS_PATH) -> dict:
    """The Tuva mapping tables (claims rules are in claims.toml: :func:`core.ingest.claims.load_claim_rules`)."""
    return load_toml(path)


def find_tuva_files(folder: Path) -> dict[str, Path]:
    """``{name: path}`` for the input-layer files in ``folder`` (``name.csv`` or ``name_*.csv``)."""
    found: dict[str, Path] = {}
    for p in sorted(folder.glob("*.csv")):
        stem = p.stem.lower()
        for name in FILES:
            if stem == name or (stem.startswith(name + "_") and name not in found):
                found[name] = p
    return found


def parse_dates(values: pd.Series) -> pd.Series:
    """``YYYY-MM-DD`` (time part ignored) -> ``date`` objects; blanks and bad values -> None."""
    text = values.str.strip().str[:10]
    parsed = pd.to_datetime(text, format="%Y-%m-%d", errors="coerce")
    out = parsed.dt.date.astype(object)
    out[parsed.isna()] = None
    return out


class _Reader:
    def __init__(self, folder: Path, engine: Engine | None):
        self.folder = folder
        self.engine = engine
        self.maps = load_tuva_maps()
        self.claim_rules = load_claim_rules()
        self.tobacco_text = load_fhir_maps()["tobacco_text"]
        self.catalog = load_catalog()
        self.report = ImportReport(source=str(folder), format="tuva")
        self.rows: dict[str, list[dict]] = defaultdict(list)
        self.persons: set[str] = set()  # person_id values with eligibility
        self.deaths: dict[str, date | None] = {}
        self.pcp_npi: dict[str, set[str]] = defaultdict(set)

    # --- file-level helpers ---------------------------------------------------------------

    def read(self, name: str, path: Path) -> pd.DataFrame | None:
        """The CSV as strings with a ``_row`` (spreadsheet row) and ``_person`` column, or None on errors."""
        if not check_csv_file(path, path.name, self.report) or not check_csv_structure(path, path.name, self.report):
            return None
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8")
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            self.report.add_error(path.name, None, None, f"not a readable CSV file: {exc}")
            return None
        frame.columns = [c.strip().lower() for c in frame.columns]
        key = "person_id" if "person_id" in frame.columns else "patient_id" if "patient_id" in frame.columns else None
        missing = [c for c in self.maps["files"][name] if c not in frame.columns]
        if key is None:
            missing.insert(0, "person_id (or patient_id)")
        if missing:
            self.report.add_error(path.name, 1, missing[0], f"missing column(s): {', '.join(missing)}")
            return None
        frame["_row"] = range(2, len(frame) + 2)
        frame["_person"] = frame[key].str.strip()
        blank = frame[frame["_person"] == ""]
        self.list_bad(path.name, key, blank, "blank person key")
        return frame if blank.empty else None

    def list_bad(self, file: str, column: str, bad: pd.DataFrame, what: str, values: pd.Series | None = None) -> None:
        for i, (_, row) in enumerate(bad.iterrows()):
            if i == MAX_LISTED:
                self.report.add_error(file, None, column, f"... and {len(bad) - MAX_LISTED} more rows: {what}")
                break
            shown = f" {values.loc[row.name]!r}" if values is not None else ""
            self.report.add_error(file, int(row["_row"]), column, f"{what}{shown}")

    def dates(self, file: str, frame: pd.DataFrame, column: str, required: bool, label: str = "",
              future: bool = False) -> pd.Series:
        """Parsed dates of a column; bad values (and blanks when required) become errors, and so do
        dates after the extract date unless ``future`` (an enrolment's planned end)."""
        parsed = parse_dates(frame[column])
        blank = frame[column].str.strip() == ""
        bad = parsed.isna() & ~blank
        self.list_bad(file, label or column, frame[bad], "bad date (expected YYYY-MM-DD)", frame[column])
        if required:
            self.list_bad(file, label or column, frame[blank], "missing date")
        if not future:
            latest = extract_date()
            late = parsed.map(lambda d: d is not None and d > latest).astype(bool)
            self.list_bad(file, label or column, frame[late], f"date is after the extract date {latest.isoformat()}",
                          frame[column])
        return parsed

    def end_before_start(self, file: str, frame: pd.DataFrame, start: pd.Series, end: pd.Series, column: str) -> None:
        """An error for each row whose ``end`` date is before its ``start``."""
        both = start.notna() & end.notna()
        backwards = both & (end.where(both, date.min) < start.where(both, date.min))
        self.list_bad(file, column, frame[backwards.astype(bool)], f"{column} is before the start date", frame[column])

    def amounts(self, file: str, frame: pd.DataFrame, column: str) -> pd.Series:
        """Numeric amounts; blank -> 0 (counted), non-numeric -> error."""
        text = frame[column].str.strip()
        values = pd.to_numeric(text.where(text != "", None), errors="coerce")
        bad = values.isna() & (text != "")
        self.list_bad(file, column, frame[bad], "not a number", frame[column])
        absurd = values.map(lambda v: v == v and amount_problem(v) is not None).astype(bool)
        self.list_bad(file, column, frame[absurd], "not a finite amount or beyond any claim "
                      f"(more than {MAX_AMOUNT_USD:,.0f} USD)", frame[column])
        blank = int((text == "").sum())
        if blank:
            self.report.add_warning(file, None, column, f"{blank} blank {column} value(s) counted as 0")
        return values.fillna(0.0).astype(float)

    def known_persons(self, file: str, frame: pd.DataFrame) -> pd.DataFrame:
        unknown = ~frame["_person"].isin(self.persons)
        if unknown.any():
            n_people = frame.loc[unknown, "_person"].nunique()
            self.report.add_warning(
                file, None, "person_id", f"{int(unknown.sum())} row(s) of {n_people} person(s) without eligibility skipped"
            )
        return frame[~unknown]

    # --- files --------------------------------------------------------------------------

    def read_eligibility(self, path: Path) -> pd.DataFrame | None:
        frame = self.read("eligibility", path)
        if frame is None:
            return None
        birth = self.dates(path.name, frame, "birth_date", True)
        start = self.dates(path.name, frame, "enrollment_start_date", True, future=True)
        # An open enrolment is often written 9999-12-31 (past what a date type holds): read it as open.
        end_text = frame["enrollment_end_date"].str.strip()
        end = self.dates(path.name, frame.assign(enrollment_end_date=end_text.where(~end_text.str.startswith("9999"), "2100-12-31")),
                         "enrollment_end_date", True, future=True)
        death = (
            self.dates(path.name, frame, "death_date", False)
            if "death_date" in frame
            else pd.Series(None, index=frame.index, dtype=object)
        )
        backwards = start.notna() & end.notna() & (end.map(lambda d: d or date.min) < start.map(lambda d: d or date.min))
        self.list_bad(path.name, "enrollment_end_date", frame[backwards], "enrollment ends before it starts")
        if not self.report.ok:
            return None
        # Enrolment continues past the extract: member-months end with the extract's month.
        latest = extract_date()
        ahead = end.map(lambda d: d is not None and d > latest).astype(bool)
        if ahead.any():
            self.report.add_warning(path.name, int(frame.loc[ahead, "_row"].iloc[0]), "enrollment_end_date",
                                    f"{int(ahead.sum())} enrolment span(s) end after the extract date {latest.isoformat()}; "
                                    f"member-months are counted up to {latest:%Y-%m}")
            end = end.where(~ahead, latest)
        frame = frame.assign(_birth=birth, _start=start, _end=end, _death=death)
        self.persons = set(frame["_person"])
        return frame

    def build_patients(self, elig: pd.DataFrame) -> None:
        m = self.maps
        dual_codes = set(m["dual_status"]["dual_codes"])
        latest = elig.sort_values(["_person", "_end", "_row"]).groupby("_person").tail(1)
        deaths = elig.dropna(subset=["_death"]).groupby("_person")["_death"].min().to_dict()
        for _, r in latest.iterrows():
            gender = r["gender"].strip().lower()
            if gender not in m["sexes"]:
                count_unmapped(self.report, f"eligibility.gender:{gender}")
            race = r.get("race", "").strip().lower()
            if race and race not in m["races"]:
                count_unmapped(self.report, f"eligibility.race:{race}")
            eth = r.get("ethnicity", "").strip().lower()
            if eth and eth not in m["ethnicities"]:
                count_unmapped(self.report, f"eligibility.ethnicity:{eth}")
            dual_text = r.get("dual_status_code", "").strip()
            try:
                dual = int(float(dual_text)) in dual_codes if dual_text else False
            except ValueError:
                count_unmapped(self.report, f"eligibility.dual_status_code:{dual_text}")
                dual = False
            pid = r["_person"]
            self.deaths[pid] = deaths.get(pid)
            self.rows["patient"].append(
                dict(
                    patient_id=person_id(pid),
                    given_name=r.get("first_name", "")[:100],
                    family_name=r.get("last_name", "")[:100],
                    birth_date=r["_birth"],
                    sex=m["sexes"].get(gender, "unknown"),
                    race=m["races"].get(race, "unknown"),
                    ethnicity=m["ethnicities"].get(eth, "unknown"),
                    language="unknown",
                    dual_status=dual,
                    zip=r.get("zip_code", "").strip()[:10],
                    deprivation_decile=None,
                    death_date=deaths.get(pid),
                )
            )

    def read_attribution(self, path: Path | None) -> dict[str, list[tuple[date, str, str]]]:
        """person -> sorted [(month, practice, npi)] from provider_attribution."""
        out: dict[str, list[tuple[date, str, str]]] = defaultdict(list)
        if path is None:
            return out
        frame = self.read("provider_attribution", path)
        if frame is None:
            return out
        months = pd.to_datetime(frame["year_month"].str.strip(), format="%Y%m", errors="coerce")
        self.list_bad(path.name, "year_month", frame[months.isna()], "bad year_month (expected YYYYMM)", frame["year_month"])
        frame = self.known_persons(path.name, frame.assign(_month=months.dt.date.astype(object)))
        for _, r in frame.iterrows():
            practice = (
                r.get("custom_attributed_provider_practice", "").strip()
                or r.get("payer_attributed_provider_practice", "").strip()
            )
            npi = r.get("custom_attributed_provider", "").strip() or r.get("payer_attributed_provider", "").strip()
            if r["_month"] is None:
                continue
            out[r["_person"]].append((r["_month"], practice, npi))
            if npi:
                self.pcp_npi[r["_person"]].add(npi)
        for v in out.values():
            v.sort()
        return out

    def build_attribution(self, elig: pd.DataFrame, attributed: dict[str, list[tuple[date, str, str]]]) -> None:
        staff_ids: set[str] = set()
        npis = {npi for v in attributed.values() for _, _, npi in v if npi}
        if self.engine is not None and npis:
            with Session(self.engine) as session:
                staff_ids = set(session.exec(select(Staff.staff_id).where(Staff.staff_id.in_(sorted(npis)))))
        practices: dict[str, str] = {}
        months: dict[str, set[date]] = defaultdict(set)
        for _, r in elig.iterrows():
            months[r["_person"]].update(months_between(r["_start"], r["_end"]))
        for person, ms in sorted(months.items()):
            death = self.deaths.get(person)
            spans = attributed.get(person, [])
            keys = [s[0] for s in spans]
            for m in sorted(ms):
                if death is not None and m > as_month(death):
                    continue
                practice, npi = "", ""
                if spans:
                    i = bisect_right(keys, m) - 1
                    _, practice, npi = spans[max(i, 0)]
                prac_id = make_id("tuva:practice", practice) if practice else DEFAULT_PRACTICE_ID
                practices[prac_id] = f"Practice {practice}" if practice else DEFAULT_PRACTICE_NAME
                self.rows["attribution"].append(
                    dict(
                        patient_id=person_id(person),
                        month=m,
                        practice_id=prac_id,
                        team_id=team_id_of(prac_id),
                        pcp_id=npi if npi in staff_ids else None,
                    )
                )
        self.rows["practice"], self.rows["team"] = practice_rows(practices)

    def read_medical_claims(self, path: Path) -> None:
        frame = self.read("medical_claim", path)
        if frame is None:
            return
        name = path.name
        start = self.dates(name, frame, "claim_start_date", False)
        line_start = self.dates(name, frame, "claim_line_start_date", False) if "claim_line_start_date" in frame else start
        start = start.where(start.notna(), line_start)
        self.list_bad(
            name,
            "claim_start_date",
            frame[start.isna() & (frame["claim_start_date"].str.strip() == "")],
            "missing claim_start_date and claim_line_start_date",
        )
        end = self.dates(name, frame, "claim_end_date", False) if "claim_end_date" in frame else start
        if "claim_end_date" in frame:
            self.end_before_start(name, frame, start, end, "claim_end_date")
        paid = self.amounts(name, frame, "paid_amount")
        paid_on = self.dates(name, frame, "paid_date", False) if "paid_date" in frame else pd.Series(None, index=frame.index, dtype=object)
        if not self.report.ok:
            return
        frame = self.known_persons(name, frame.assign(_start=start, _end=end, _paid=paid, _paid_date=paid_on))
        frame = frame.assign(_line=pd.to_numeric(frame["claim_line_number"], errors="coerce").fillna(0)).sort_values(
            ["claim_id", "_line"], kind="stable"
        )
        mixed = frame.groupby("claim_id")["_person"].nunique()
        for claim in mixed[mixed > 1].index[:MAX_LISTED]:
            self.report.add_error(name, None, "person_id", f"claim_id {claim!r} has lines for more than one person")
        if not self.report.ok:
            return
        self._claims_to_encounters(frame)
        self._diagnoses_to_conditions(frame)

    def _claim_kind(self, lines: list[dict]) -> tuple[str, str]:
        """(kind, cost category override) of one claim from its lines (see claims.toml)."""
        first = lines[0]
        claim_type = first["claim_type"].strip().lower()
        revenue = [ln["revenue_center_code"].strip().zfill(4) for ln in lines if ln["revenue_center_code"].strip()]
        bill = next((ln["bill_type_code"].strip().lstrip("0") for ln in lines if ln["bill_type_code"].strip()), "")
        pos = next((ln["place_of_service_code"].strip().zfill(2) for ln in lines if ln["place_of_service_code"].strip()), "")
        pcps = self.pcp_npi.get(first["_person"], set())
        pcp_office = any(ln["rendering_npi"].strip() in pcps for ln in lines)
        kind, category, unmapped = claim_kind(claim_type, bill, revenue, pos, self.claim_rules, pcp_office)
        if unmapped:
            count_unmapped(self.report, f"medical_claim.{unmapped}")
        return kind, category

    def _claims_to_encounters(self, frame: pd.DataFrame) -> None:
        """Net each claim's lines, give it a kind, group claims into stays and ED visits (core.ingest.claims)."""
        kinds = self.catalog.activity_kinds
        rules = self.claim_rules
        optional = (
            "revenue_center_code",
            "bill_type_code",
            "place_of_service_code",
            "rendering_npi",
            "diagnosis_code_1",
            "in_network_flag",
        )
        cols = ["claim_id", "claim_type", "_person", "_start", "_end", "_paid", "_paid_date"]
        records = frame[cols].assign(**{c: frame[c] if c in frame else "" for c in optional}).to_dict("records")
        by_claim: dict[str, list[dict]] = defaultdict(list)
        for rec in records:  # frame is sorted by claim_id, line number
            by_claim[rec["claim_id"]].append(rec)
        claims = []
        for claim_id, lines in by_claim.items():
            first = lines[0]
            claim_type = first["claim_type"].strip().lower()
            net = net_claim(claim_id, claim_type, [ln["_paid"] for ln in lines], rules, self.report.claims)
            kind, category = self._claim_kind(lines)
            ends = [ln["_end"] for ln in lines if ln["_end"] is not None]
            claims.append(
                Claim(
                    claim_id=claim_id,
                    person=first["_person"],
                    claim_type=claim_type,
                    kind=kind,
                    category=category or kinds[kind].category,
                    start=min(ln["_start"] for ln in lines),
                    end=max(ends) if ends else None,
                    paid_usd=net.paid_usd,
                    reversed=net.reversed,
                    unpaid=net.unpaid,
                    detail=dict(
                        in_network=not any(ln["in_network_flag"].strip() == "0" for ln in lines),
                        primary_dx=normalize_icd10(first["diagnosis_code_1"]) or "",
                        paid_date=max((ln["_paid_date"] for ln in lines if not pd.isna(ln["_paid_date"])), default=None),
                    ),
                )
            )
        for episode in group_claims(claims, rules, self.report.claims):
            anchor = episode.anchor
            self.rows["encounter"].append(
                dict(
                    encounter_id=make_id("tuva:claim", anchor.claim_id),
                    patient_id=person_id(anchor.person),
                    team_id=None,
                    kind=episode.kind,
                    start_date=episode.start,
                    end_date=episode.end,
                    requested_date=None,
                    responded_date=None,
                    is_internal=False,
                    in_network=all(c.detail["in_network"] for c in episode.claims),
                    is_urgent=episode.kind in ("ed_visit", "urgent_care") or episode.category == "ed",
                    resolved_without_visit=None,
                    primary_dx=anchor.detail["primary_dx"],
                    specialty="",
                    cost_category=episode.category,
                    paid_usd=episode.paid_usd,
                    paid_date=max((d for c in episode.claims if (d := c.detail["paid_date"]) is not None), default=None),
                )
            )

    def _diagnoses_to_conditions(self, frame: pd.DataFrame) -> None:
        cols = [c for c in DX_COLUMNS if c in frame.columns]
        if not cols:
            return
        code_type = (
            frame["diagnosis_code_type"].str.strip().str.lower()
            if "diagnosis_code_type" in frame
            else pd.Series("", index=frame.index)
        )
        long = (
            frame[["_person", "_start"]]
            .assign(_type=code_type)
            .join(frame[cols])
            .melt(id_vars=["_person", "_start", "_type"], value_name="code")
        )
        long = long[long["code"].str.strip() != ""]
        icd9 = long["_type"] == "icd-9-cm"
        for code, n in long.loc[icd9, "code"].value_counts().items():
            count_unmapped(self.report, f"medical_claim.diagnosis:icd-9-cm|{code}", int(n))
        long = long[~icd9].assign(norm=lambda d: d["code"].map(normalize_icd10))
        for code, n in long.loc[long["norm"].isna(), "code"].value_counts().items():
            count_unmapped(self.report, f"medical_claim.diagnosis:{code}", int(n))
        first: dict[tuple[str, str], date] = {}
        valid = long.dropna(subset=["norm"])
        for person, code, start in zip(valid["_person"], valid["norm"], valid["_start"], strict=True):
            if (person, code) not in first or start < first[(person, code)]:
                first[(person, code)] = start
        for (person, code), onset in sorted(first.items()):
            self.rows["condition"].append(
                dict(
                    condition_id=make_id("tuva:dx", person, code),
                    patient_id=person_id(person),
                    code=code,
                    code_system="ICD-10-CM",
                    description="",
                    onset_date=onset,
                    resolved_date=None,
                )
            )

    def read_pharmacy_claims(self, path: Path) -> None:
        frame = self.read("pharmacy_claim", path)
        if frame is None:
            return
        name = path.name
        dispensed = self.dates(name, frame, "dispensing_date", True)
        paid = self.amounts(name, frame, "paid_amount")
        if not self.report.ok:
            return
        frame = self.known_persons(name, frame.assign(_date=dispensed, _paid=paid))
        frame = frame.assign(
            _supply=pd.to_numeric(frame["days_supply"], errors="coerce") if "days_supply" in frame else float("nan"),
            _in_net=frame["in_network_flag"].str.strip() if "in_network_flag" in frame else "",
        )
        endless = frame["_supply"].abs() > MAX_DAYS_SUPPLY  # inf included; NaN (blank, text) means unknown
        self.list_bad(name, "days_supply", frame[endless], f"days_supply beyond {MAX_DAYS_SUPPLY:,} days", frame.get("days_supply"))
        if not self.report.ok:
            return
        records = frame[["claim_id", "claim_line_number", "ndc_code", "_person", "_date", "_paid", "_supply", "_in_net"]].to_dict(
            "records"
        )
        by_claim: dict[str, list[dict]] = defaultdict(list)
        for rec in records:
            by_claim[rec["claim_id"]].append(rec)
        reversed_fills: set[str] = set()
        for claim, lines in sorted(by_claim.items()):
            net = net_claim(claim, "pharmacy", [ln["_paid"] for ln in lines], self.claim_rules, self.report.claims)
            if net.reversed:
                reversed_fills.add(claim)
            self.rows["encounter"].append(
                dict(
                    encounter_id=make_id("tuva:rxclaim", claim),
                    patient_id=person_id(lines[0]["_person"]),
                    team_id=None,
                    kind="other_claim" if net.reversed else "pharmacy_fill",
                    start_date=min(ln["_date"] for ln in lines),
                    end_date=None,
                    requested_date=None,
                    responded_date=None,
                    is_internal=False,
                    in_network=not any(ln["_in_net"] == "0" for ln in lines),
                    is_urgent=False,
                    resolved_without_visit=None,
                    primary_dx="",
                    specialty="",
                    cost_category="pharmacy",
                    paid_usd=net.paid_usd,
                )
            )
        for r in records:
            if r["claim_id"] in reversed_fills or r["_paid"] < 0:  # a reversed fill was never dispensed
                continue
            days = r["_supply"]
            end = r["_date"] + timedelta(days=int(days) - 1) if days == days and days >= 1 else r["_date"]
            ndc = r["ndc_code"].strip()
            self.rows["medication"].append(
                dict(
                    medication_id=make_id("tuva:rx", r["claim_id"], r["claim_line_number"]),
                    patient_id=person_id(r["_person"]),
                    code=ndc[:32],
                    description=f"NDC {ndc}" if ndc else "",
                    start_date=r["_date"],
                    end_date=end,
                )
            )

    def read_measurements(self, name: str, path: Path) -> None:
        frame = self.read(name, path)
        if frame is None:
            return
        file = path.name
        if name == "lab_result":
            date_text = frame.get("result_datetime", pd.Series("", index=frame.index)).str.strip()
            fallback = frame.get("collection_datetime", pd.Series("", index=frame.index))
            frame = frame.assign(_date_text=date_text.where(date_text != "", fallback))
            code = pd.Series("", index=frame.index)
            for col, type_col in (
                ("normalized_component_code", None),
                ("normalized_order_code", None),
                ("source_component_code", "source_component_type"),
                ("source_order_code", "source_order_type"),
            ):
                if col in frame:
                    ok = frame[col].str.strip() != ""
                    if type_col:
                        ok &= frame.get(type_col, pd.Series("", index=frame.index)).str.strip().str.lower() == "loinc"
                    code = code.where(code != "", frame[col].str.strip().where(ok, ""))
            id_col = "lab_result_id"
        else:
            frame = frame.assign(_date_text=frame["observation_date"])
            code = frame.get("normalized_code", pd.Series("", index=frame.index)).str.strip()
            src_ok = frame.get("source_code_type", pd.Series("", index=frame.index)).str.strip().str.lower() == "loinc"
            code = code.where(
                code != "", frame.get("source_code", pd.Series("", index=frame.index)).str.strip().where(src_ok, "")
            )
            id_col = "observation_id"
        label = "result_datetime" if name == "lab_result" else "observation_date"
        measured = self.dates(file, frame, "_date_text", True, label)
        if not self.report.ok:
            return
        frame = self.known_persons(file, frame.assign(_code=code, _date=measured))
        codes = self.catalog.codes
        unmapped = frame.loc[~frame["_code"].isin(codes.keys()), "_code"].value_counts()
        for c, n in unmapped.items():
            count_unmapped(self.report, f"{name}:{c or 'no LOINC'}", int(n))
        frame = frame[frame["_code"].isin(codes.keys())]
        tobacco = load_fhir_maps()["observations"]["tobacco"]
        no_value = out_of_range = 0
        units = [c for c in ("normalized_units", "source_units") if c in frame]
        records = frame[["_person", "_code", "_date", "result", id_col, *units]].to_dict("records")
        for r in records:
            text = r["result"].strip()
            if r["_code"] == tobacco:
                value = self.tobacco_text.get(text.lower())
                if value is None:
                    count_unmapped(self.report, f"{name}.{tobacco}.result:{text}")
                    continue
            else:
                try:
                    value = float(text)
                except ValueError:
                    no_value += 1
                    continue
            spec = codes[r["_code"]]
            if not spec.min <= value <= spec.max:
                out_of_range += 1
                continue
            unit = r.get("normalized_units", "").strip() or r.get("source_units", "").strip() or spec.unit
            self.rows["measurement"].append(
                dict(
                    measurement_id=make_id(f"tuva:{'lab' if name == 'lab_result' else 'obs'}", r[id_col]),
                    patient_id=person_id(r["_person"]),
                    measured_date=r["_date"],
                    code=r["_code"],
                    value=float(value),
                    value_text=text[:100] if r["_code"] == tobacco else "",
                    unit=unit[:32],
                )
            )
        self.report.add_skipped("measurement", f"{name}: result not a number", no_value)
        self.report.add_skipped("measurement", f"{name}: value outside the catalogue's plausible range", out_of_range)


def read_tuva(path: Path, engine: Engine | None = None) -> tuple[dict[str, pd.DataFrame], ImportReport]:
    """Read a folder of Tuva input-layer CSVs into canonical frames and an import report."""
    t0 = time.perf_counter()
    folder = Path(path)
    reader = _Reader(folder, engine)
    report = reader.report
    if not folder.is_dir():
        report.add_error(str(folder), None, None, "not a folder of Tuva input-layer CSV files")
        return {}, report
    files = find_tuva_files(folder)
    for name in reader.maps["files"]["required"]:
        if name not in files:
            report.add_error(f"{name}.csv", None, None, f"required file {name}.csv not found in {folder}")
    if not report.ok:
        return {}, report
    elig = reader.read_eligibility(files["eligibility"])
    if elig is None:
        return {}, report
    reader.build_patients(elig)
    attributed = reader.read_attribution(files.get("provider_attribution"))
    if "medical_claim" in files:
        reader.read_medical_claims(files["medical_claim"])
    if "pharmacy_claim" in files:
        reader.read_pharmacy_claims(files["pharmacy_claim"])
    for name in ("lab_result", "observation"):
        if name in files:
            reader.read_measurements(name, files[name])
    if not report.ok:
        return {}, report
    reader.build_attribution(elig, attributed)
    for e in reader.rows["encounter"]:
        e.pop("_claim_type", None)
    if engine is not None:
        reader.rows["patient"] = merge_existing_patients(engine, reader.rows["patient"])
    frames = frames_from_rows(reader.rows)
    report.seconds = round(time.perf_counter() - t0, 2)
    return frames, report
