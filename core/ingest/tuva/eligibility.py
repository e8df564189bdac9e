"""``eligibility`` -> patients (from each person's latest span) and member-months;
``provider_attribution`` -> each month's practice, team and PCP."""

from bisect import bisect_right
from collections import defaultdict
from datetime import date
from pathlib import Path

import pandas as pd
from sqlmodel import Session, select

from core.ingest.checks import extract_date
from core.ingest.idmap import (
    DEFAULT_PRACTICE_ID,
    DEFAULT_PRACTICE_NAME,
    count_unmapped,
    make_id,
    person_id,
    practice_rows,
    team_id_of,
)
from core.ingest.tuva.files import TuvaReader
from core.store.models import Staff
from core.store.months import as_month, months_between


def read_eligibility(reader: TuvaReader, path: Path) -> pd.DataFrame | None:
    frame = reader.read("eligibility", path)
    if frame is None:
        return None
    birth = reader.dates(path.name, frame, "birth_date", True)
    start = reader.dates(path.name, frame, "enrollment_start_date", True, future=True)
    # An open enrolment is often written 9999-12-31 (past what a date type holds): read it as open.
    end_text = frame["enrollment_end_date"].str.strip()
    end = reader.dates(path.name, frame.assign(enrollment_end_date=end_text.where(~end_text.str.startswith("9999"), "2100-12-31")),
                     "enrollment_end_date", True, future=True)
    death = (
        reader.dates(path.name, frame, "death_date", False)
        if "death_date" in frame
        else pd.Series(None, index=frame.index, dtype=object)
    )
    backwards = start.notna() & end.notna() & (end.map(lambda d: d or date.min) < start.map(lambda d: d or date.min))
    reader.list_bad(path.name, "enrollment_end_date", frame[backwards], "enrollment ends before it starts")
    if not reader.report.ok:
        return None
    # Enrolment continues past the extract: member-months end with the extract's month.
    latest = extract_date()
    ahead = end.map(lambda d: d is not None and d > latest).astype(bool)
    if ahead.any():
        reader.report.add_warning(path.name, int(frame.loc[ahead, "_row"].iloc[0]), "enrollment_end_date",
                                f"{int(ahead.sum())} enrolment span(s) end after the extract date {latest.isoformat()}; "
                                f"member-months are counted up to {latest:%Y-%m}")
        end = end.where(~ahead, latest)
    frame = frame.assign(_birth=birth, _start=start, _end=end, _death=death)
    reader.persons = set(frame["_person"])
    return frame


def build_patients(reader: TuvaReader, elig: pd.DataFrame) -> None:
    m = reader.maps
    dual_codes = set(m["dual_status"]["dual_codes"])
    latest = elig.sort_values(["_person", "_end", "_row"]).groupby("_person").tail(1)
    deaths = elig.dropna(subset=["_death"]).groupby("_person")["_death"].min().to_dict()
    for _, r in latest.iterrows():
        gender = r["gender"].strip().lower()
        if gender not in m["sexes"]:
            count_unmapped(reader.report, f"eligibility.gender:{gender}")
        race = r.get("race", "").strip().lower()
        if race and race not in m["races"]:
            count_unmapped(reader.report, f"eligibility.race:{race}")
        eth = r.get("ethnicity", "").strip().lower()
        if eth and eth not in m["ethnicities"]:
            count_unmapped(reader.report, f"eligibility.ethnicity:{eth}")
        dual_text = r.get("dual_status_code", "").strip()
        try:
            dual = int(float(dual_text)) in dual_codes if dual_text else False
        except ValueError:
            count_unmapped(reader.report, f"eligibility.dual_status_code:{dual_text}")
            dual = False
        pid = r["_person"]
        reader.deaths[pid] = deaths.get(pid)
        reader.rows["patient"].append(
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


def read_attribution(reader: TuvaReader, path: Path | None) -> dict[str, list[tuple[date, str, str]]]:
    """person -> sorted [(month, practice, npi)] from provider_attribution."""
    out: dict[str, list[tuple[date, str, str]]] = defaultdict(list)
    if path is None:
        return out
    frame = reader.read("provider_attribution", path)
    if frame is None:
        return out
    months = pd.to_datetime(frame["year_month"].str.strip(), format="%Y%m", errors="coerce")
    reader.list_bad(path.name, "year_month", frame[months.isna()], "bad year_month (expected YYYYMM)", frame["year_month"])
    frame = reader.known_persons(path.name, frame.assign(_month=months.dt.date.astype(object)))
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
            reader.pcp_npi[r["_person"]].add(npi)
    for v in out.values():
        v.sort()
    return out


def build_attribution(reader: TuvaReader, elig: pd.DataFrame, attributed: dict[str, list[tuple[date, str, str]]]) -> None:
    staff_ids: set[str] = set()
    npis = {npi for v in attributed.values() for _, _, npi in v if npi}
    if reader.engine is not None and npis:
        with Session(reader.engine) as session:
            staff_ids = set(session.exec(select(Staff.staff_id).where(Staff.staff_id.in_(sorted(npis)))))
    practices: dict[str, str] = {}
    months: dict[str, set[date]] = defaultdict(set)
    for _, r in elig.iterrows():
        months[r["_person"]].update(months_between(r["_start"], r["_end"]))
    for person, ms in sorted(months.items()):
        death = reader.deaths.get(person)
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
            reader.rows["attribution"].append(
                dict(
                    patient_id=person_id(person),
                    month=m,
                    practice_id=prac_id,
                    team_id=team_id_of(prac_id),
                    pcp_id=npi if npi in staff_ids else None,
                )
            )
    reader.rows["practice"], reader.rows["team"] = practice_rows(practices)

