"""``medical_claim`` -> external encounters (lines netted per claim, claims grouped into stays and
ED visits by ``core.ingest.claims``) and conditions from the diagnosis codes; ``pharmacy_claim``
-> one pharmacy fill per claim and one medication per dispensed line."""

from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from core.ingest.claims import Claim, Episode, claim_kind, group_claims, net_claim
from core.ingest.idmap import count_unmapped, make_id, normalize_icd10, person_id
from core.ingest.tuva.files import MAX_LISTED, TuvaReader

DX_COLUMNS = [f"diagnosis_code_{i}" for i in range(1, 26)]
MAX_DAYS_SUPPLY = 3650  # a fill's days of supply beyond ten years cannot be real


def read_medical_claims(reader: TuvaReader, path: Path) -> None:
    frame = reader.read("medical_claim", path)
    if frame is None:
        return
    name = path.name
    start = reader.dates(name, frame, "claim_start_date", False)
    line_start = reader.dates(name, frame, "claim_line_start_date", False) if "claim_line_start_date" in frame else start
    start = start.where(start.notna(), line_start)
    reader.list_bad(
        name,
        "claim_start_date",
        frame[start.isna() & (frame["claim_start_date"].str.strip() == "")],
        "missing claim_start_date and claim_line_start_date",
    )
    end = reader.dates(name, frame, "claim_end_date", False) if "claim_end_date" in frame else start
    if "claim_end_date" in frame:
        reader.end_before_start(name, frame, start, end, "claim_end_date")
    paid = reader.amounts(name, frame, "paid_amount")
    paid_on = reader.dates(name, frame, "paid_date", False) if "paid_date" in frame else pd.Series(None, index=frame.index, dtype=object)
    if not reader.report.ok:
        return
    frame = reader.known_persons(name, frame.assign(_start=start, _end=end, _paid=paid, _paid_date=paid_on,
                                                    _line_start=line_start))
    frame = frame.assign(_line=pd.to_numeric(frame["claim_line_number"], errors="coerce").fillna(0)).sort_values(
        ["claim_id", "_line"], kind="stable"
    )
    mixed = frame.groupby("claim_id")["_person"].nunique()
    for claim in mixed[mixed > 1].index[:MAX_LISTED]:
        reader.report.add_error(name, None, "person_id", f"claim_id {claim!r} has lines for more than one person")
    if not reader.report.ok:
        return
    _claims_to_encounters(reader, frame)
    _diagnoses_to_conditions(reader, frame)


def medical_claim_kind(reader: TuvaReader, lines: list[dict]) -> tuple[str, str]:
    """(kind, cost category override) of one claim from its lines (see claims.toml)."""
    first = lines[0]
    claim_type = first["claim_type"].strip().lower()
    revenue = [ln["revenue_center_code"].strip().zfill(4) for ln in lines if ln["revenue_center_code"].strip()]
    bill = next((ln["bill_type_code"].strip().lstrip("0") for ln in lines if ln["bill_type_code"].strip()), "")
    pos = next((ln["place_of_service_code"].strip().zfill(2) for ln in lines if ln["place_of_service_code"].strip()), "")
    pcps = reader.pcp_npi.get(first["_person"], set())
    pcp_office = any(ln["rendering_npi"].strip() in pcps for ln in lines)
    kind, category, unmapped = claim_kind(claim_type, bill, revenue, pos, reader.claim_rules, pcp_office)
    if unmapped:
        count_unmapped(reader.report, f"medical_claim.{unmapped}")
    return kind, category


def _claims_to_encounters(reader: TuvaReader, frame: pd.DataFrame) -> None:
    """Net each claim's lines, give it a kind, group claims into stays and ED visits (core.ingest.claims)."""
    claims = _net_medical_claims(reader, frame)
    for episode in group_claims(claims, reader.claim_rules, reader.report.claims):
        reader.rows["encounter"].append(_episode_encounter(episode))
    _claim_procedures(reader, frame, {c.claim_id for c in claims if c.reversed})


def _net_medical_claims(reader: TuvaReader, frame: pd.DataFrame) -> list[Claim]:
    """One :class:`Claim` per claim_id: its lines netted, its kind and cost category."""
    kinds = reader.catalog.activity_kinds
    rules = reader.claim_rules
    optional = (
        "revenue_center_code",
        "bill_type_code",
        "place_of_service_code",
        "rendering_npi",
        "diagnosis_code_1",
        "in_network_flag",
        "discharge_disposition_code",
        "facility_npi",
        "billing_npi",
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
        net = net_claim(claim_id, claim_type, [ln["_paid"] for ln in lines], rules, reader.report.claims)
        kind, category = medical_claim_kind(reader, lines)
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
                    disposition=_disposition(reader, lines),
                    facility=_facility(lines),
                ),
            )
        )
    return claims


def _facility(lines: list[dict]) -> str:
    """The claim's facility: its ``facility_npi``, else its ``billing_npi`` (a professional claim's
    group); '' when both are blank. Episodes prefer the facility of an institutional claim
    (core.ingest.claims.Episode.facility)."""
    for column in ("facility_npi", "billing_npi"):
        npi = next((ln[column].strip() for ln in lines if ln[column].strip()), "")
        if npi:
            return npi
    return ""


def _disposition(reader: TuvaReader, lines: list[dict]) -> str:
    """The claim's discharge status (UB-04) as a catalogue disposition; '' when blank."""
    code = next((ln["discharge_disposition_code"].strip() for ln in lines if ln["discharge_disposition_code"].strip()), "")
    if not code:
        return ""
    code = code.zfill(2)
    if code not in reader.maps["discharge_dispositions"]:
        count_unmapped(reader.report, f"medical_claim.discharge_disposition_code:{code}")
        return "other"
    return reader.maps["discharge_dispositions"][code]


def _claim_procedures(reader: TuvaReader, frame: pd.DataFrame, reversed_claims: set[str]) -> None:
    """One procedure row per (person, date, HCPCS/CPT code) billed on a claim that is not reversed."""
    if "hcpcs_code" not in frame:
        return
    lines = frame[(frame["hcpcs_code"].str.strip() != "") & ~frame["claim_id"].isin(reversed_claims)]
    day = lines["_line_start"].where(lines["_line_start"].notna(), lines["_start"])
    seen: set[tuple[str, object, str]] = set()
    for person, on, code in zip(lines["_person"], day, lines["hcpcs_code"].str.strip().str.upper(), strict=True):
        if (person, on, code) in seen:
            continue
        seen.add((person, on, code))
        reader.rows["procedure"].append(dict(procedure_id=make_id("tuva:px", person, on.isoformat(), code),
                                             patient_id=person_id(person), performed_date=on, code=code[:32],
                                             code_system="HCPCS", description=""))


def _episode_encounter(episode: Episode) -> dict:
    """The encounter row of a stay, ED visit or other claim; its id is that of the anchor claim."""
    anchor = episode.anchor
    return episode.encounter_row(make_id("tuva:claim", anchor.claim_id), person_id(anchor.person),
                                 in_network=all(c.detail["in_network"] for c in episode.claims),
                                 primary_dx=anchor.detail["primary_dx"])


def _diagnoses_to_conditions(reader: TuvaReader, frame: pd.DataFrame) -> None:
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
        count_unmapped(reader.report, f"medical_claim.diagnosis:icd-9-cm|{code}", int(n))
    long = long[~icd9].assign(norm=lambda d: d["code"].map(normalize_icd10))
    for code, n in long.loc[long["norm"].isna(), "code"].value_counts().items():
        count_unmapped(reader.report, f"medical_claim.diagnosis:{code}", int(n))
    first: dict[tuple[str, str], date] = {}
    valid = long.dropna(subset=["norm"])
    for person, code, start in zip(valid["_person"], valid["norm"], valid["_start"], strict=True):
        if (person, code) not in first or start < first[(person, code)]:
            first[(person, code)] = start
    for (person, code), onset in sorted(first.items()):
        reader.rows["condition"].append(
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


def read_pharmacy_claims(reader: TuvaReader, path: Path) -> None:
    frame = reader.read("pharmacy_claim", path)
    if frame is None:
        return
    name = path.name
    dispensed = reader.dates(name, frame, "dispensing_date", True)
    paid = reader.amounts(name, frame, "paid_amount")
    if not reader.report.ok:
        return
    frame = reader.known_persons(name, frame.assign(_date=dispensed, _paid=paid))
    frame = frame.assign(
        _supply=pd.to_numeric(frame["days_supply"], errors="coerce") if "days_supply" in frame else float("nan"),
        _in_net=frame["in_network_flag"].str.strip() if "in_network_flag" in frame else "",
    )
    endless = frame["_supply"].abs() > MAX_DAYS_SUPPLY  # inf included; NaN (blank, text) means unknown
    reader.list_bad(name, "days_supply", frame[endless], f"days_supply beyond {MAX_DAYS_SUPPLY:,} days", frame.get("days_supply"))
    if not reader.report.ok:
        return
    records = frame[["claim_id", "claim_line_number", "ndc_code", "_person", "_date", "_paid", "_supply", "_in_net"]].to_dict(
        "records"
    )
    reversed_fills = _pharmacy_fills(reader, records)
    _dispensed_medications(reader, records, reversed_fills)


def _pharmacy_fills(reader: TuvaReader, records: list[dict]) -> set[str]:
    """One pharmacy_fill encounter per claim (lines netted; a reversed claim is other_claim);
    returns the reversed claims."""
    by_claim: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        by_claim[rec["claim_id"]].append(rec)
    reversed_fills: set[str] = set()
    for claim, lines in sorted(by_claim.items()):
        net = net_claim(claim, "pharmacy", [ln["_paid"] for ln in lines], reader.claim_rules, reader.report.claims)
        if net.reversed:
            reversed_fills.add(claim)
        reader.rows["encounter"].append(
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
                facility="",
            )
        )
    return reversed_fills


def _dispensed_medications(reader: TuvaReader, records: list[dict], reversed_fills: set[str]) -> None:
    """One medication per dispensed line (NDC code; end = dispensing date + days_supply - 1)."""
    for r in records:
        if r["claim_id"] in reversed_fills or r["_paid"] < 0:  # a reversed fill was never dispensed
            continue
        days = r["_supply"]
        end = r["_date"] + timedelta(days=int(days) - 1) if days == days and days >= 1 else r["_date"]
        ndc = r["ndc_code"].strip()
        reader.rows["medication"].append(
            dict(
                medication_id=make_id("tuva:rx", r["claim_id"], r["claim_line_number"]),
                patient_id=person_id(r["_person"]),
                code=ndc[:32],
                description=f"NDC {ndc}" if ndc else "",
                start_date=r["_date"],
                end_date=end,
            )
        )

