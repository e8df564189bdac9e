"""Reading FHIR files: Bundles (``.json``) and Bulk Data NDJSON streams -> :class:`Resource` records,
the JSON type of every field the readers use (:data:`SHAPES`), and the small parsers of FHIR
datatypes (dates, references, codings, quantities)."""

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from core.ingest.report import ImportReport

NDJSON_SUFFIXES = (".ndjson", ".jsonl")
TYPE_RE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
DATE_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?(?:T.*)?$")
STREAMED_TYPES = {"Condition", "Observation", "MedicationRequest", "Procedure", "Immunization", "CarePlan", "Claim",
                  "ExplanationOfBenefit"}
USED_TYPES = {
    "Patient",
    "Encounter",
    "Condition",
    "Observation",
    "MedicationRequest",
    "Procedure",
    "Immunization",
    "CarePlan",
    "Claim",
    "ExplanationOfBenefit",
    "Coverage",
    "Organization",
    "Medication",
}

# The JSON type of every field the readers use (FHIR R4 datatypes): "path[]" is each element of
# an array. A resource whose field has another type (a name given as a string, a valueQuantity
# value as "7.5") is an error at its file and line, never a crash.
_REFERENCE, _CONCEPT, _PERIOD, _QUANTITY = "object", "object", "object", "object"
SHAPES: dict[str, dict[str, str]] = {
    "Patient": {
        "identifier": "array", "identifier[]": "object", "birthDate": "string", "deceasedDateTime": "string",
        "gender": "string", "name": "array", "name[]": "object", "name[].use": "string", "name[].family": "string",
        "name[].given": "array", "name[].given[]": "string", "extension": "array", "extension[]": "object",
        "extension[].url": "string", "extension[].extension": "array", "extension[].extension[]": "object",
        "extension[].extension[].valueCoding": "object", "communication": "array", "communication[].language": _CONCEPT,
        "address": "array", "address[]": "object", "address[].postalCode": "string", "managingOrganization": _REFERENCE,
    },
    "Encounter": {
        "subject": _REFERENCE, "period": _PERIOD, "period.start": "string", "period.end": "string",
        "type": "array", "reasonCode": "array", "serviceProvider": _REFERENCE, "hospitalization": "object",
        "hospitalization.dischargeDisposition": _CONCEPT,
    },
    "Procedure": {
        "subject": _REFERENCE, "code": _CONCEPT, "code.text": "string", "status": "string",
        "performedDateTime": "string", "performedPeriod": _PERIOD, "performedPeriod.start": "string",
    },
    "Immunization": {
        "patient": _REFERENCE, "vaccineCode": _CONCEPT, "vaccineCode.text": "string", "status": "string",
        "occurrenceDateTime": "string",
    },
    "CarePlan": {
        "subject": _REFERENCE, "status": "string", "created": "string", "period": _PERIOD, "period.start": "string",
        "category": "array", "category[]": "object",
    },
    "Condition": {
        "subject": _REFERENCE, "code": _CONCEPT, "code.text": "string", "verificationStatus": _CONCEPT,
        "onsetPeriod": _PERIOD, "onsetDateTime": "string", "abatementDateTime": "string", "recordedDate": "string",
    },
    "Observation": {
        "subject": _REFERENCE, "code": _CONCEPT, "effectivePeriod": _PERIOD, "effectiveDateTime": "string",
        "valueQuantity": _QUANTITY, "valueQuantity.value": "number", "valueQuantity.unit": "string",
        "valueCodeableConcept": _CONCEPT, "valueCodeableConcept.text": "string", "component": "array",
        "component[]": "object", "component[].valueQuantity": _QUANTITY, "component[].valueQuantity.value": "number",
        "component[].valueQuantity.unit": "string",
    },
    "MedicationRequest": {
        "subject": _REFERENCE, "authoredOn": "string", "medicationCodeableConcept": _CONCEPT,
        "medicationCodeableConcept.text": "string", "medicationReference": _REFERENCE, "dispenseRequest": "object",
        "dispenseRequest.validityPeriod": _PERIOD, "dispenseRequest.expectedSupplyDuration": "object",
    },
    "ExplanationOfBenefit": {
        "patient": _REFERENCE, "payment": "object", "payment.amount": "object", "payment.amount.value": "number",
        "total": "array", "total[]": "object", "total[].amount": "object", "total[].amount.value": "number",
        "item": "array", "item[]": "object", "item[].encounter": "array", "billablePeriod": _PERIOD,
        "billablePeriod.start": "string", "billablePeriod.end": "string", "type": _CONCEPT,
    },
    "Coverage": {"beneficiary": _REFERENCE, "period": _PERIOD, "period.start": "string", "period.end": "string"},
    "Organization": {"name": "string"},
    "Medication": {"code": _CONCEPT, "code.text": "string"},
}
_JSON_TYPES = {"object": dict, "array": list, "string": str, "number": (int, float)}
# Fields whose value is a Coding or Identifier (or a list of them): their system/code must be text.
CODING_FIELDS = {"coding", "valueCoding", "class", "identifier", "language"}




# --- reading files ----------------------------------------------------------------------


@dataclass
class Resource:
    """One parsed resource and where it came from (for error messages)."""

    file: str
    where: int | None  # NDJSON line or bundle entry number (1-based)
    body: dict
    offset: int | None = None  # NDJSON: byte offset of the line (read again in the second pass)


def list_fhir_files(path: Path) -> list[Path]:
    """The ``.json`` / ``.ndjson`` / ``.jsonl`` files of a file or folder, sorted."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".json", *NDJSON_SUFFIXES))


def file_resource_type(file_name: str, known: set[str]) -> str | None:
    """The resource type a Bulk Data file name announces (``Patient.ndjson``, ``1.Patient.ndjson``)."""
    if not file_name.lower().endswith(NDJSON_SUFFIXES):
        return None
    return next((part for part in file_name.split(".") if part in known), None)


def iter_ndjson(path: Path, max_line_bytes: int, log: ImportReport | None,
                lines: Iterable[tuple[int, int]] | None = None) -> Iterator[Resource]:
    """Stream an NDJSON file line by line; over-long and non-JSON lines become errors.

    ``lines``: read only these ``(line number, byte offset)`` lines (a second pass over lines
    already checked, so ``log`` may be None).
    """
    with path.open("rb") as f:
        if lines is not None:
            for line_no, offset in lines:
                f.seek(offset)
                yield Resource(path.name, line_no, json.loads(f.readline(max_line_bytes + 1)), offset)
            return
        line_no, offset = 0, 0
        while True:
            line = f.readline(max_line_bytes + 1)
            if not line:
                return
            line_no += 1
            start, offset = offset, offset + len(line)
            if len(line) > max_line_bytes and not line.endswith(b"\n"):
                log.add_error(path.name, line_no, "", f"line is longer than {max_line_bytes:,} bytes; not parsed")
                while line and not line.endswith(b"\n"):  # skip the rest of the line unread
                    line = f.readline(1 << 20)
                    offset += len(line)
                continue
            if not line.strip():
                continue
            body = _parse_json(line, path.name, line_no, log)
            if body is None:
                continue
            if not isinstance(body, dict):
                log.add_error(path.name, line_no, "resourceType", "line is not a JSON object")
                continue
            yield Resource(path.name, line_no, body, start)


def _parse_json(data: bytes, file: str, where: int | None, log: ImportReport):
    """The parsed JSON value, or None with an error (not JSON, not UTF-8, or nested too deep to read)."""
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        log.add_error(file, where, "", f"not valid JSON: {exc}")
    except RecursionError:
        log.add_error(file, where, "", "JSON nested too deep to read (no FHIR resource nests like this)")
    return None


def iter_bundle(path: Path, max_bytes: int, log: ImportReport) -> Iterator[Resource]:
    """The resources of a Bundle (any type) or of a single-resource JSON file."""
    if path.stat().st_size > max_bytes:
        log.add_error(path.name, None, "", f"file is larger than {max_bytes:,} bytes; export it as NDJSON")
        return
    body = _parse_json(path.read_bytes(), path.name, None, log)
    if body is None:
        return
    if not isinstance(body, dict) or "resourceType" not in body:
        log.add_error(path.name, None, "resourceType", "not a FHIR resource (no resourceType)")
        return
    if body["resourceType"] != "Bundle":
        yield Resource(path.name, None, body)
        return
    entries = body.get("entry") or []
    if not isinstance(entries, list):
        log.add_error(path.name, None, "Bundle.entry", f"must be a JSON array, not {_json_type(entries)}")
        return
    for i, entry in enumerate(entries, start=1):
        res = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(res, dict):
            log.add_error(path.name, i, "entry.resource", "bundle entry without a resource")
            continue
        yield Resource(path.name, i, res)


def _json_type(value: object) -> str:
    """The JSON name of a parsed value's type, with the value when it is short."""
    kind = ("a boolean" if isinstance(value, bool) else "a number" if isinstance(value, int | float)
            else "a string" if isinstance(value, str) else "an array" if isinstance(value, list)
            else "an object" if isinstance(value, dict) else "null")
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        return f"{kind} ({shown})"
    return kind


def shape_problem(body: dict) -> tuple[str, str] | None:
    """The first field of ``body`` whose JSON type is not the one :data:`SHAPES` declares, as
    (field, what is wrong); None when every field the readers use has its type."""
    for path, kind in SHAPES.get(body.get("resourceType"), {}).items():
        values = [body]
        for part in path.split("."):
            each, key = part.endswith("[]"), part.removesuffix("[]")
            found = [v[key] for v in values if isinstance(v, dict) and v.get(key) is not None]
            values = [x for v in found if isinstance(v, list) for x in v] if each else found
        expected = _JSON_TYPES[kind]
        for value in values:
            if not isinstance(value, expected) or isinstance(value, bool):
                return path, f"must be {'an' if kind[0] in 'ao' else 'a'} {kind}, not {_json_type(value)}"
    return _coding_problem(body)


def _coding_problem(body: dict) -> tuple[str, str] | None:
    """The first Coding (anywhere in the resource: ``coding[]``, ``valueCoding``, ``class``) or
    Identifier whose ``system``, ``code`` or ``value`` is not a string."""
    stack: list[tuple[str, object]] = [("", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, list):
            stack.extend((path, v) for v in value)
        elif isinstance(value, dict):
            for key, child in value.items():
                where = f"{path}.{key}" if path else key
                in_coding = path.rsplit(".", 1)[-1] in CODING_FIELDS
                if in_coding and key in ("system", "code") and child is not None and not isinstance(child, str):
                    return where, f"must be a string, not {_json_type(child)}"
                stack.append((where, child))
    return None


# --- small parsers ----------------------------------------------------------------------


def parse_fhir_date(value: object) -> date | None:
    """The date part of a FHIR date/dateTime (partial dates -> first day); None if invalid."""
    if not isinstance(value, str):
        return None
    m = DATE_RE.match(value.strip())
    if not m:
        return None
    try:
        d = date(int(m.group(1)), int(m.group(2) or 1), int(m.group(3) or 1))
    except ValueError:
        return None
    return d if date(1900, 1, 1) <= d <= date(2100, 12, 31) else None


def ref_id(ref: object) -> str | None:
    """The id a Reference points to (``urn:uuid:x``, ``Type/x``, ``http://.../Type/x``)."""
    if isinstance(ref, dict):
        ref = ref.get("reference")
    if not isinstance(ref, str) or not ref or ref.startswith("#"):
        return None
    if ref.startswith("urn:uuid:") or ref.startswith("urn:oid:"):
        return ref.split(":", 2)[2]
    parts = ref.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    return parts[-1]


def codings(concept: object) -> list[dict]:
    if not isinstance(concept, dict) or not isinstance(concept.get("coding"), list):
        return []
    return [c for c in concept["coding"] if isinstance(c, dict)]


def first_code(concept: object, system: str) -> str | None:
    for c in codings(concept):
        if c.get("system") == system and c.get("code"):
            return str(c["code"])
    return None


def money(obj: object) -> float | None:
    if isinstance(obj, dict) and isinstance(obj.get("value"), (int, float)):
        return float(obj["value"])
    return None


