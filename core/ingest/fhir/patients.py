"""Patient resources -> patient rows; each patient's practice and team (managingOrganization, else
the usual internal serviceProvider); member-months from Coverage, else the encounter lookback."""

from collections import Counter, defaultdict
from datetime import date

from core.ingest.fhir.maps import ETHNICITY_URL, RACE_URL
from core.ingest.fhir.resources import codings, ref_id
from core.ingest.fhir.state import ReadState, field_date, subject_id
from core.ingest.idmap import (
    DEFAULT_PRACTICE_ID,
    DEFAULT_PRACTICE_NAME,
    count_unmapped,
    make_id,
    person_id,
    practice_rows,
    team_id_of,
)
from core.store.months import add_months, as_month, months_between


def read_patients(st: ReadState) -> None:
    """One patient row per Patient resource; helper fields (``_deceased_flag``, ``_fhir_id``,
    ``_managing_org``) are dropped by :func:`finish_patients`."""
    maps = st.maps
    systems = set(maps["identity"]["person_id_systems"])
    for res in st.by_type["Patient"]:
        b = res.body
        pid = _patient_id(b, systems)
        st.patient_key[b["id"]] = pid
        birth = field_date(st, res, "birthDate", b.get("birthDate"))
        death = None
        if "deceasedDateTime" in b:
            death = field_date(st, res, "deceasedDateTime", b.get("deceasedDateTime"))
        name = next(
            (n for n in b.get("name") or [] if isinstance(n, dict) and n.get("use") == "official"), (b.get("name") or [{}])[0]
        )
        race, ethnicity = _race_ethnicity(st, b)
        zip_code = next((str(a["postalCode"]) for a in b.get("address") or [] if a.get("postalCode")), "")
        gender = b.get("gender") or "unknown"
        if gender not in maps["sexes"]:
            count_unmapped(st.log, f"Patient.gender:{gender}")
        st.rows["patient"].append(
            dict(
                patient_id=pid,
                given_name=" ".join(name.get("given") or [])[:100],
                family_name=(name.get("family") or "")[:100],
                birth_date=birth,
                sex=maps["sexes"].get(gender, "unknown"),
                race=race,
                ethnicity=ethnicity,
                language=str(_language(maps, b))[:64],
                dual_status=False,
                zip=zip_code[:10],
                deprivation_decile=None,
                death_date=death,
                _deceased_flag=b.get("deceasedBoolean") is True,
                _fhir_id=b["id"],
                _managing_org=ref_id(b.get("managingOrganization")),
            )
        )


def _patient_id(b: dict, systems: set[str]) -> str:
    """``person:<identifier value>`` for an identifier of a configured system, else ``fhir:<id>``."""
    key = next(
        (
            str(i["value"])
            for i in b.get("identifier") or []
            if isinstance(i, dict) and i.get("system") in systems and i.get("value")
        ),
        None,
    )
    return person_id(key) if key else make_id("fhir", b["id"])


def _race_ethnicity(st: ReadState, b: dict) -> tuple[str, str]:
    """The US Core race and ethnicity OMB categories of a Patient (``unknown`` when absent)."""
    race = ethnicity = "unknown"
    for ext in b.get("extension") or []:
        if ext.get("url") in (RACE_URL, ETHNICITY_URL):
            table = st.maps["races"] if ext["url"] == RACE_URL else st.maps["ethnicities"]
            for sub in ext.get("extension") or []:
                code = (sub.get("valueCoding") or {}).get("code")
                if sub.get("url") == "ombCategory" and code:
                    label = table.get(code)
                    if label is None:
                        count_unmapped(st.log, f"Patient.{ext['url'].rsplit('-', 1)[-1]}:{code}")
                    elif ext["url"] == RACE_URL:
                        race = label
                    else:
                        ethnicity = label
    return race, ethnicity


def _language(maps: dict, b: dict) -> str:
    """The communication language of a Patient: the preferred one, else the first."""
    comms = [c for c in b.get("communication") or [] if isinstance(c, dict)]
    comm = next((c for c in comms if c.get("preferred")), comms[0] if comms else None)
    if comm:
        code = next((c.get("code") for c in codings(comm.get("language")) if c.get("code")), None)
        if code:
            return maps["languages"].get(code.split("-")[0].lower()) or (comm["language"].get("text") or code)
    return "unknown"


def assign_practices(st: ReadState) -> None:
    """Practice of each patient: managingOrganization, else the usual internal serviceProvider."""
    orgs = {r.body["id"]: (r.body.get("name") or f"Organization {r.body['id']}") for r in st.by_type["Organization"]}
    usual: dict[str, Counter] = defaultdict(Counter)
    for enc in st.encounters.values():
        if enc["is_internal"] and enc["_org"]:
            usual[enc["patient_id"]][enc["_org"]] += 1
    practices: dict[str, str] = {}
    missing_orgs = set()
    for p in st.rows["patient"]:
        org = p["_managing_org"]
        if org is None and usual[p["patient_id"]]:
            counts = usual[p["patient_id"]]
            org = min(counts, key=lambda o: (-counts[o], o))
        if org is not None and org not in orgs:
            missing_orgs.add(org)
            org = None
        if org is None:
            prac, name = DEFAULT_PRACTICE_ID, DEFAULT_PRACTICE_NAME
        else:
            prac, name = make_id("fhir:org", org), orgs[org]
            st.org_practice[org] = prac
        practices[prac] = name
        st.practice_of[p["patient_id"]] = prac
    if missing_orgs:
        st.log.add_warning(
            "Organization",
            None,
            "serviceProvider",
            f"{len(missing_orgs)} referenced Organization(s) not in the import; their patients go to {DEFAULT_PRACTICE_NAME!r}",
        )
    for enc in st.encounters.values():
        prac = st.practice_of.get(enc["patient_id"])
        if enc["is_internal"] and enc["_org"] and st.org_practice.get(enc["_org"]) == prac:
            enc["team_id"] = team_id_of(prac)
    st.rows["practice"], st.rows["team"] = practice_rows(practices)




def finish_patients(st: ReadState) -> None:
    """Deceased without a date -> last encounter date; drop helper columns."""
    last_enc: dict[str, date] = {}
    for enc in st.encounters.values():
        d = enc["end_date"] or enc["start_date"]
        if d > last_enc.get(enc["patient_id"], date.min):
            last_enc[enc["patient_id"]] = d
    for p in st.rows["patient"]:
        if p.pop("_deceased_flag") and p["death_date"] is None:
            p["death_date"] = last_enc.get(p["patient_id"])
            st.log.add_warning(
                "Patient",
                None,
                "deceasedBoolean",
                f"Patient/{p['_fhir_id']}: deceased without a date; "
                + ("last encounter date used" if p["death_date"] else "no encounter, death date unknown"),
            )
        p.pop("_fhir_id")
        p.pop("_managing_org")
    for enc in st.encounters.values():
        enc.pop("_org", None)


def build_attribution(st: ReadState) -> None:
    """Member-months: Coverage periods, else the encounter lookback (see module docstring)."""
    mm = st.maps["member_months"]
    deaths = {p["patient_id"]: p["death_date"] for p in st.rows["patient"]}
    starts = [e["start_date"] for e in st.encounters.values()]
    if not starts and not st.by_type["Coverage"]:
        return
    last = as_month(max(starts)) if starts else None
    months: dict[str, set[date]] = defaultdict(set)
    covered: set[str] = set()
    for res in st.by_type["Coverage"]:
        pid = subject_id(st, res, "beneficiary")
        period = res.body.get("period") or {}
        start = field_date(st, res, "period.start", period.get("start"), future=True)
        end = field_date(st, res, "period.end", period.get("end"), required=False, future=True, after=start) or last or start
        if pid is None or start is None:
            continue
        end = min(end, st.extract_date)  # a planned end: member-months stop at the extract
        covered.add(pid)
        months[pid].update(months_between(start, end) if end >= start else [])
    if last is not None:
        window_start = add_months(last, -(int(mm["window_months"]) - 1))
        for e in st.encounters.values():
            pid = e["patient_id"]
            if pid in covered or add_months(e["start_date"], int(mm["lookback_months"]) - 1) < window_start:
                continue
            m0 = max(as_month(e["start_date"]), window_start)
            m1 = min(add_months(e["start_date"], int(mm["lookback_months"]) - 1), last)
            months[pid].update(months_between(m0, m1) if m1 >= m0 else [])
    for pid, ms in months.items():
        death = deaths.get(pid)
        prac = st.practice_of.get(pid, DEFAULT_PRACTICE_ID)
        for m in sorted(ms):
            if death is not None and m > as_month(death):
                continue
            st.rows["attribution"].append(dict(patient_id=pid, month=m, practice_id=prac, team_id=team_id_of(prac), pcp_id=None))


