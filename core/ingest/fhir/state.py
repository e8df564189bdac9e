"""The state of one FHIR import (:class:`ReadState`) and the field readers every resource reader
shares: the subject patient, a date field, an ICD-10-CM code; each turns what it cannot read
into an error at the resource's file and line."""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date

from core.ingest.checks import extract_date
from core.ingest.fhir.maps import ICD10_SYSTEMS, SNOMED
from core.ingest.fhir.resources import Resource, codings, first_code, parse_fhir_date, ref_id
from core.ingest.idmap import count_unmapped, normalize_icd10
from core.ingest.report import ImportReport


@dataclass
class ReadState:
    """What one FHIR import has read so far: the resources kept for later steps, the patient and
    encounter keys references resolve to, the output rows and the report."""

    maps: dict
    log: ImportReport
    by_type: dict[str, list[Resource]] = field(default_factory=lambda: defaultdict(list))
    patient_key: dict[str, str] = field(default_factory=dict)  # FHIR Patient.id -> patient_id
    encounters: dict[str, dict] = field(default_factory=dict)  # Encounter.id -> encounter row
    rows: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))
    practice_of: dict[str, str] = field(default_factory=dict)  # patient_id -> practice_id
    org_practice: dict[str, str] = field(default_factory=dict)  # Organization.id -> practice_id
    seen: set[tuple[str, str]] = field(default_factory=set)  # (resourceType, id) already read
    unknown_types: set[str] = field(default_factory=set)
    extract_date: date = field(default_factory=extract_date)  # no date in the data may be later
    procedure_loincs: set[str] = field(default_factory=set)  # Observation codes that mark a screening done



def subject_id(st: ReadState, res: Resource, field_name: str) -> str | None:
    """The canonical patient id of a resource's subject/patient reference; error if dangling."""
    rtype = res.body["resourceType"]
    ref = res.body.get(field_name)
    pid = ref_id(ref)
    if pid is None:
        st.log.add_error(res.file, res.where, f"{rtype}.{field_name}", f"{rtype}/{res.body['id']}: missing patient reference")
        return None
    if pid not in st.patient_key:
        st.log.add_error(
            res.file,
            res.where,
            f"{rtype}.{field_name}",
            f"{rtype}/{res.body['id']}: dangling reference to Patient {pid!r} (not in the import)",
        )
        return None
    return st.patient_key[pid]


def field_date(st: ReadState, res: Resource, field_name: str, value: object, required: bool = True, future: bool = False,
          after: date | None = None) -> date | None:
    """The date of a field; an error (and None) when it is missing but ``required``, unreadable,
    after the extract date (unless ``future``: a planned end) or before ``after`` (its start)."""
    d = parse_fhir_date(value)
    rtype = res.body["resourceType"]
    what = None
    if d is None and (required or value is not None):
        what = "missing" if value is None else f"bad date {value!r}"
    elif d is not None and not future and d > st.extract_date:
        what = f"date {value!r} is after the extract date {st.extract_date.isoformat()}"
    elif d is not None and after is not None and d < after:
        what = f"{field_name} {value!r} is before the start {after.isoformat()}"
    if what is not None:
        st.log.add_error(res.file, res.where, f"{rtype}.{field_name}", f"{rtype}/{res.body['id']}: {what}")
        return None
    return d



def icd10_code(st: ReadState, concept: object, what: str) -> str | None:
    """ICD-10-CM code of a CodeableConcept (direct, else mapped from SNOMED); counts unmapped."""
    for sys in ICD10_SYSTEMS:
        code = first_code(concept, sys)
        if code and normalize_icd10(code):
            return normalize_icd10(code)
    snomed = first_code(concept, SNOMED)
    if snomed and snomed in st.maps["snomed_to_icd10"]:
        return st.maps["snomed_to_icd10"][snomed]
    c = codings(concept)
    if what and c:
        count_unmapped(st.log, f"{what}:{c[0].get('system', '')}|{c[0].get('code', '')}")
    return None


