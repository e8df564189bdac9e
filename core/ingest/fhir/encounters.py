"""Encounter resources -> encounter rows: kind from type, else class; primary diagnosis from reasonCode."""



from core.config.catalog import load_catalog
from core.ingest.fhir.maps import SNOMED
from core.ingest.fhir.resources import codings, first_code, ref_id
from core.ingest.fhir.state import ReadState, field_date, icd10_code, subject_id
from core.ingest.idmap import count_unmapped, make_id


def _encounter_kind(st: ReadState, b: dict) -> str:
    maps = st.maps
    for t in b.get("type") or []:
        code = first_code(t, SNOMED)
        if code and code in maps["encounter_types"]:
            return maps["encounter_types"][code]
    cls = b.get("class")
    code = cls.get("code") if isinstance(cls, dict) else None
    if code in maps["encounter_classes"]:
        return maps["encounter_classes"][code]
    count_unmapped(st.log, f"Encounter.class:{code}")
    return "other_claim"





def _disposition(st: ReadState, b: dict) -> str:
    """Encounter.hospitalization.dischargeDisposition as a catalogue disposition ('' when absent)."""
    concept = (b.get("hospitalization") or {}).get("dischargeDisposition")
    if not concept:
        return ""
    for coding in codings(concept):
        code = coding.get("code")
        if code in st.maps["discharge_dispositions"]:
            return st.maps["discharge_dispositions"][code]
    count_unmapped(st.log, f"Encounter.dischargeDisposition:{next((c.get('code') for c in codings(concept)), concept.get('text'))}")
    return "other"


def read_encounters(st: ReadState) -> None:
    kinds = load_catalog().activity_kinds
    for res in st.by_type["Encounter"]:
        b = res.body
        pid = subject_id(st, res, "subject")
        period = b.get("period") or {}
        start = field_date(st, res, "period.start", period.get("start"))
        end = field_date(st, res, "period.end", period.get("end"), required=False, after=start)
        if pid is None or start is None:
            continue
        kind = _encounter_kind(st, b)
        disposition = _disposition(st, b)
        dx = ""
        for rc in b.get("reasonCode") or []:
            dx = icd10_code(st, rc, "") or ""
            if dx:
                break
        st.encounters[b["id"]] = dict(
            encounter_id=make_id("fhir", b["id"]),
            patient_id=pid,
            team_id=None,
            kind=kind,
            start_date=start,
            end_date=end,
            requested_date=None,
            responded_date=None,
            is_internal=kinds[kind].internal,
            in_network=True,
            is_urgent=kind in ("urgent_care", "ed_visit"),
            resolved_without_visit=None,
            primary_dx=dx[:16],
            specialty="",
            cost_category=kinds[kind].category,
            paid_usd=0.0,
            discharge_disposition=disposition,
            facility="",
            _org=ref_id(b.get("serviceProvider")),
        )


