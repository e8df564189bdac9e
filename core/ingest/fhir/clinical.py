"""Condition, Observation, MedicationRequest, Procedure, Immunization and CarePlan resources ->
condition, measurement, medication and procedure rows."""

from collections.abc import Iterable
from datetime import timedelta

from core.config.catalog import load_catalog
from core.derive.measures import load_measures
from core.ingest.fhir.maps import LOINC, SNOMED
from core.ingest.fhir.resources import Resource, codings, first_code, money, parse_fhir_date, ref_id
from core.ingest.fhir.state import ReadState, field_date, icd10_code, subject_id
from core.ingest.idmap import count_unmapped, make_id


def read_conditions(st: ReadState, resources: Iterable[Resource]) -> None:
    for res in resources:
        b = res.body
        pid = subject_id(st, res, "subject")
        status = first_code(b.get("verificationStatus"), "http://terminology.hl7.org/CodeSystem/condition-ver-status")
        onset_value = b.get("onsetDateTime") or (b.get("onsetPeriod") or {}).get("start") or b.get("recordedDate")
        onset = field_date(st, res, "onsetDateTime", onset_value)
        resolved = field_date(st, res, "abatementDateTime", b.get("abatementDateTime"), required=False, after=onset)
        if pid is None or onset is None:
            continue
        if status in ("entered-in-error", "refuted"):
            st.log.add_skipped("condition", f"Condition ({status})", 1)
            continue
        code = icd10_code(st, b.get("code"), "Condition.code")
        if code is None:
            st.log.add_skipped("condition", "code not mapped to ICD-10-CM (see unmapped codes)", 1)
            continue
        text = (b.get("code") or {}).get("text") or next((c.get("display") for c in codings(b.get("code"))), "") or ""
        st.rows["condition"].append(
            dict(
                condition_id=make_id("fhir", b["id"]),
                patient_id=pid,
                code=code,
                code_system="ICD-10-CM",
                description=str(text)[:300],
                onset_date=onset,
                resolved_date=resolved,
            )
        )


def _tobacco_value(st: ReadState, b: dict) -> tuple[float | None, str]:
    concept = b.get("valueCodeableConcept")
    snomed = first_code(concept, SNOMED)
    text = (concept or {}).get("text") or next((c.get("display") for c in codings(concept)), "") or ""
    if snomed and snomed in st.maps["tobacco_snomed"]:
        return float(st.maps["tobacco_snomed"][snomed]), text
    v = st.maps["tobacco_text"].get(text.strip().lower()) if text else None
    if v is None and isinstance(b.get("valueString"), str):
        text = b["valueString"]
        v = st.maps["tobacco_text"].get(text.strip().lower())
    return (float(v) if v is not None else None), text


def read_observations(st: ReadState, resources: Iterable[Resource]) -> None:
    codes = load_catalog().codes
    obs_maps = st.maps["observations"]
    out_of_range = 0
    for res in resources:
        b = res.body
        loinc = first_code(b.get("code"), LOINC)
        status = b.get("status")
        pid = subject_id(st, res, "subject")
        when = b.get("effectiveDateTime") or (b.get("effectivePeriod") or {}).get("start") or b.get("issued")
        measured = field_date(st, res, "effectiveDateTime", when)
        if pid is None or measured is None:
            continue
        if status in ("entered-in-error", "cancelled"):
            st.log.add_skipped("measurement", f"Observation ({status})", 1)
            continue
        values: list[tuple[str, str, float | None, str, str]] = []  # (id suffix, code, value, text, unit)
        if loinc in obs_maps["bp_panels"]:
            for comp in b.get("component") or []:
                ccode = first_code(comp.get("code"), LOINC)
                if ccode in obs_maps["bp_components"]:
                    q = comp.get("valueQuantity") or {}
                    values.append((ccode, ccode, money(q), "", q.get("unit") or codes[ccode].unit))
        elif loinc == obs_maps["tobacco"]:
            v, text = _tobacco_value(st, b)
            if v is None:
                count_unmapped(st.log, f"Observation.{loinc}.value:{text}")
                continue
            values.append(("", loinc, v, text, codes[loinc].unit))
        elif loinc in st.procedure_loincs:  # a test result that marks a screening done (FIT, cytology, HPV)
            _procedure_row(st, f"Observation/{b['id']}", pid, measured, loinc, LOINC, (b.get("code") or {}).get("text") or "")
            continue
        elif loinc in codes:
            q = b.get("valueQuantity") or {}
            values.append(("", loinc, money(q), str(b.get("valueString") or "")[:100], q.get("unit") or codes[loinc].unit))
        else:
            count_unmapped(st.log, f"Observation.code:{loinc or 'no LOINC'}")
            continue
        for suffix, code, value, text, unit in values:
            if value is None:
                st.log.add_skipped("measurement", f"Observation {code} without a numeric value", 1)
                continue
            if not codes[code].min <= value <= codes[code].max:
                out_of_range += 1
                continue
            mid = make_id("fhir", b["id"], suffix) if suffix else make_id("fhir", b["id"])
            st.rows["measurement"].append(
                dict(
                    measurement_id=mid,
                    patient_id=pid,
                    measured_date=measured,
                    code=code,
                    value=float(value),
                    value_text=text[:100],
                    unit=str(unit)[:32],
                )
            )
    if out_of_range:
        st.log.add_skipped("measurement", "value outside the catalogue's plausible range", out_of_range)


def read_medications(st: ReadState, resources: Iterable[Resource]) -> None:
    meds = {r.body["id"]: r.body for r in st.by_type["Medication"]}
    for res in resources:
        b = res.body
        pid = subject_id(st, res, "subject")
        start = field_date(st, res, "authoredOn", b.get("authoredOn"))
        if pid is None or start is None:
            continue
        concept = b.get("medicationCodeableConcept")
        if concept is None and b.get("medicationReference"):
            concept = (meds.get(ref_id(b["medicationReference"])) or {}).get("code")
        code = first_code(concept, "http://www.nlm.nih.gov/research/umls/rxnorm") or ""
        if not code:
            count_unmapped(st.log, "MedicationRequest.medication:no RxNorm")
        text = (concept or {}).get("text") or next((c.get("display") for c in codings(concept)), "") or ""
        dispense = b.get("dispenseRequest") or {}
        end = parse_fhir_date((dispense.get("validityPeriod") or {}).get("end"))
        supply = dispense.get("expectedSupplyDuration") or {}
        if (
            end is None
            and isinstance(supply.get("value"), (int, float))
            and supply.get("code", supply.get("unit")) in ("d", "day", "days")
        ):
            end = start + timedelta(days=max(0, int(supply["value"]) - 1))
        if end is None and b.get("status") in ("stopped", "completed", "cancelled", "entered-in-error"):
            end = start
        st.rows["medication"].append(
            dict(
                medication_id=make_id("fhir", b["id"]),
                patient_id=pid,
                code=code[:32],
                description=str(text)[:300],
                start_date=start,
                end_date=end,
            )
        )


def procedure_loincs() -> set[str]:
    """LOINC codes of the measures' service code lists (a lab result that counts as a screening)."""
    return {code.split(":", 1)[1] for codes in load_measures().code_lists.values() for code in codes if code.startswith("LOINC:")}


def _procedure_row(st: ReadState, rid: str, pid: str, when, code: str, system: str, text: str) -> None:
    system = load_measures().code_systems.get(system, system)  # http://hl7.org/fhir/sid/cvx -> CVX
    st.rows["procedure"].append(dict(procedure_id=make_id("fhir", rid), patient_id=pid, performed_date=when,
                                     code=str(code)[:32], code_system=system[:32], description=str(text)[:300]))


def _coded(st: ReadState, concept: object) -> tuple[str, str] | None:
    """(code, system) of the first coding in a preferred system, else of the first coding."""
    found = [(c.get("code"), c.get("system") or "") for c in codings(concept) if c.get("code")]
    for system in st.maps["procedures"]["systems"]:
        for code, sys_ in found:
            if sys_ == system:
                return code, sys_
    return found[0] if found else None


def read_procedures(st: ReadState, resources: Iterable[Resource]) -> None:
    """Procedure and Immunization resources -> procedure rows (code as recorded; the measures'
    code lists decide what it counts for). Not-done and entered-in-error ones are skipped."""
    skipped = set(st.maps["procedures"]["skipped_status"])
    for res in resources:
        b = res.body
        immunization = b["resourceType"] == "Immunization"
        pid = subject_id(st, res, "patient" if immunization else "subject")
        if immunization:
            when = field_date(st, res, "occurrenceDateTime", b.get("occurrenceDateTime"))
            concept = b.get("vaccineCode")
        else:
            value = b.get("performedDateTime") or (b.get("performedPeriod") or {}).get("start")
            when = field_date(st, res, "performedDateTime", value)
            concept = b.get("code")
        if pid is None or when is None:
            continue
        if b.get("status") in skipped:
            st.log.add_skipped("procedure", f"{b['resourceType']} ({b.get('status')})", 1)
            continue
        coded = _coded(st, concept)
        if coded is None:
            count_unmapped(st.log, f"{b['resourceType']}.code:no coding")
            continue
        text = (concept or {}).get("text") or next((c.get("display") for c in codings(concept)), "") or ""
        _procedure_row(st, f"{b['resourceType']}/{b['id']}", pid, when, coded[0], coded[1], text)


def read_care_plans(st: ReadState, resources: Iterable[Resource]) -> None:
    """CarePlan resources -> one procedure row each, coded LOCAL:care-plan, on the date it was
    created (else its period start). Draft, revoked and entered-in-error plans are skipped."""
    skipped = set(st.maps["procedures"]["care_plan_skipped_status"])
    for res in resources:
        b = res.body
        pid = subject_id(st, res, "subject")
        when = field_date(st, res, "created", b.get("created") or (b.get("period") or {}).get("start"))
        if pid is None or when is None:
            continue
        if b.get("status") in skipped:
            st.log.add_skipped("procedure", f"CarePlan ({b.get('status')})", 1)
            continue
        category = next((c.get("text") or next((x.get("display") for x in codings(c)), "") for c in b.get("category") or []), "")
        _procedure_row(st, f"CarePlan/{b['id']}", pid, when, "care-plan", "LOCAL", f"Care plan: {category}" if category else "Care plan")
