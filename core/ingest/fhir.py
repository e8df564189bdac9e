"""FHIR R4 importer: transaction/collection bundles (``.json``) and Bulk Data NDJSON -> canonical frames.

``read_fhir(path, engine)`` reads a file or a folder and returns ``(frames, report)``: frames
keyed by table name (``practice``, ``team``, ``patient``, ``attribution``, ``condition``,
``encounter``, ``measurement``, ``medication``) with model field names and typed values, for
``core.ingest.loader.load_tables``. It writes nothing; when ``report.errors`` is not empty the
caller must not load the frames (all or nothing).

Mapping decisions (codes and vocabularies are data: ``core/config/fhir_maps.toml``):

- **Input**: ``*.json`` (a Bundle of any type, or one resource) is parsed whole up to
  ``[limits] max_bundle_bytes``; ``*.ndjson`` / ``*.jsonl`` (Bulk Data, one resource per line,
  any file name) are streamed line by line and a line longer than ``max_line_bytes`` is an error
  (it is skipped unread, never parsed). Resources of the bulky types (Observation, Condition,
  MedicationRequest, Procedure, Claim, ExplanationOfBenefit) are read in a second pass, one
  resource at a time, after patients and encounters; only their output rows are kept. In an
  NDJSON file that mixes types, the first pass only notes where those lines are (line number
  and byte offset) and the second reads them again, so memory does not grow with the file.
  Errors carry the file, the line (NDJSON) or entry number (bundle), the resource id and field.
- **Values that cannot be read are errors** (``core/ingest/checks.py``): JSON that does not parse
  or nests too deep to read; a field the readers use whose JSON type is not its FHIR type
  (:data:`SHAPES`: a ``name`` or ``address`` given as a string, ``valueQuantity.value`` ``"7.5"``);
  a date after the extract date (except the planned end of a Coverage); an end before its start
  (Encounter.period, Condition abatement, EOB billablePeriod); a paid amount that is not finite
  or beyond any claim.
- **Resource types** not listed above are counted (``skipped``); types neither used nor in
  ``[resources] ignored`` also raise a warning, so a misspelt type does not pass unnoticed.
- **Ids**: ``fhir:<resource id>`` (see ``idmap``); patients linked to Tuva by a configured
  identifier system are ``person:<value>``. References may be ``urn:uuid:<id>``, ``Type/<id>``
  or absolute URLs ending in ``Type/<id>``. A reference to a Patient or Encounter that is not in
  the import is an error (dangling); a missing serviceProvider Organization is a warning.
- **Patient**: name, birthDate (required), gender, deceasedDateTime (deceasedBoolean without a
  date: the last encounter date, with a warning), US Core race/ethnicity OMB categories,
  communication language (preferred, else first), first address postalCode.
- **Practice/team**: Patient.managingOrganization, else the Organization that is the
  serviceProvider of most of the patient's internal-kind encounters (ties: smallest id), else
  the default "Imported practice". Each such Organization becomes a practice with one team.
- **Member-months**: Coverage.period months when the patient has Coverage; else the 24-month
  encounter lookback of ``[member_months]`` (capped at death and the import's last encounter
  month, within the last ``window_months``).
- **Encounter**: kind from Encounter.type (``[encounter_types]``) else class
  (``[encounter_classes]``); unknown classes become ``other_claim`` and are counted as unmapped.
  ``team_id`` is the patient's team when the serviceProvider is the patient's practice.
  ``primary_dx`` is the first reasonCode with an ICD-10-CM code or a mapped SNOMED code.
- **Costs**: ExplanationOfBenefit ``payment.amount`` (else ``total`` of category ``benefit``)
  is the paid amount, netted per claim (the EOBs that share ``EOB.claim``: an original and its
  adjustments or reversal); a claim netting to zero or below is a credit (``core.ingest.claims``),
  never an error; cancelled and entered-in-error EOBs are skipped with a count. The amount goes
  to the encounter the EOB items reference, or, when they reference none, the EOB is a claim
  grouped like Tuva claims into acute stays and ED visits (kind from the type of bill, revenue
  centres or place of service for institutional/professional EOBs, else ``[eob_types]``). Claim
  resources carry charges, not payments, and Synthea writes one Claim and one EOB per encounter,
  so Claims are counted and never costed (no double counting). Paid amounts on *internal*
  encounters are the practice's own fee-for-service revenue, not an external cost: they are
  left out (paid_usd 0) and their total is reported as a warning.
- **Condition**: ICD-10-CM coding, else SNOMED CT through ``[snomed_to_icd10]``; unmapped codes
  are counted in ``unmapped_codes``. entered-in-error / refuted conditions are skipped.
- **Observation**: catalogue LOINC codes only; blood pressure panels 85354-9 / 55284-4 split
  into 8480-6 / 8462-4 rows (``fhir:<id>:<component>``); tobacco 72166-2 coded answers -> 1/0.
  Values outside the catalogue's plausible range are skipped with a warning count.
- **MedicationRequest** -> medication (RxNorm code, authoredOn; end = validity period end, else
  authoredOn + expected supply duration, else authoredOn for stopped/completed/cancelled orders).
- **Procedure**: counted only (its cost is in the encounter's EOB).
"""

import json
import re
import time
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine

from core.config import config_path, load_toml
from core.config.catalog import load_catalog
from core.ingest.checks import amount_problem, extract_date
from core.ingest.claims import Claim, ClaimRules, claim_kind, group_claims, load_claim_rules, net_claim
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
from core.store.months import add_months, as_month, months_between

MAPS_PATH = config_path("fhir_maps.toml")
NDJSON_SUFFIXES = (".ndjson", ".jsonl")
ICD10_SYSTEMS = ("http://hl7.org/fhir/sid/icd-10-cm", "http://hl7.org/fhir/sid/icd-10")
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
TYPE_RE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
DATE_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?(?:T.*)?$")
RACE_URL = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
ETHNICITY_URL = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"
STREAMED_TYPES = {"Condition", "Observation", "MedicationRequest", "Procedure", "Claim", "ExplanationOfBenefit"}
USED_TYPES = {
    "Patient",
    "Encounter",
    "Condition",
    "Observation",
    "MedicationRequest",
    "Procedure",
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
        "type": "array", "reasonCode": "array", "serviceProvider": _REFERENCE,
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


@cache
def load_fhir_maps(path: Path = MAPS_PATH) -> dict:
    """The FHIR mapping tables, checked against the catalogue."""
    maps = load_toml(path)
    kinds = load_catalog().activity_kinds
    for table in ("encounter_classes", "encounter_types", "eob_types"):
        for code, kind in maps[table].items():
            if kind not in kinds:
                raise ValueError(f"{path}: [{table}] {code!r} maps to unknown activity kind {kind!r}")
    for code, icd in maps["snomed_to_icd10"].items():
        if normalize_icd10(icd) != icd:
            raise ValueError(f"{path}: [snomed_to_icd10] {code!r} -> {icd!r} is not an ICD-10-CM code")
    return maps


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


# --- the reader ---------------------------------------------------------------------------


@dataclass
class _State:
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


def read_fhir(path: Path, engine: Engine | None = None) -> tuple[dict[str, pd.DataFrame], ImportReport]:
    """Read FHIR R4 bundles / NDJSON under ``path`` into canonical frames and an import report."""
    t0 = time.perf_counter()
    path = Path(path)
    maps = load_fhir_maps()
    st = _State(maps, ImportReport(source=str(path), format="fhir"))
    if not path.exists():
        st.log.add_error(str(path), None, "", "path does not exist")
        st.log.seconds = round(time.perf_counter() - t0, 2)
        return {}, st.log

    # Pass 1: bundles and every file that is not a per-type NDJSON of a streamed type. Pass 2 (below)
    # streams the big per-type NDJSON files (Observation, Condition, ...) resource by resource once
    # patients and encounters are known, so they are never held in memory whole.
    known = USED_TYPES | set(maps["resources"]["ignored"])
    deferred: dict[str, list[Path]] = defaultdict(list)
    pass1: list[Path] = []
    for f in list_fhir_files(path):
        announced = file_resource_type(f.name, known)
        (deferred[announced] if announced in STREAMED_TYPES else pass1).append(f)
    if not pass1 and not deferred:
        st.log.add_error(path.name, None, "", "no .json, .ndjson or .jsonl files found")
    # The lines of the streamed types in NDJSON files that mix types are only located in pass 1.
    later: dict[str, dict[Path, tuple[array, array]]] = defaultdict(dict)
    for res in _accepted(st, _iter_files(pass1, maps, st.log, later)):
        st.by_type[res.body["resourceType"]].append(res)

    def resources_of(rtype: str) -> Iterator[Resource]:
        yield from st.by_type.pop(rtype, [])
        yield from _accepted(st, _iter_files(deferred.get(rtype, []), maps, st.log))
        max_line = int(maps["limits"]["max_line_bytes"])
        for f, (numbers, offsets) in later.pop(rtype, {}).items():
            yield from _accepted(st, iter_ndjson(f, max_line, None, zip(numbers, offsets, strict=True)))

    _read_patients(st)
    _read_encounters(st)
    _assign_practices(st)
    _read_eobs(st, resources_of("ExplanationOfBenefit"))
    _read_conditions(st, resources_of("Condition"))
    _read_observations(st, resources_of("Observation"))
    _read_medications(st, resources_of("MedicationRequest"))
    _finish_patients(st)
    _build_attribution(st)
    procedures = sum(1 for _ in resources_of("Procedure"))
    claims = sum(1 for _ in resources_of("Claim"))
    st.log.add_skipped("encounter", "Procedure (counted; its cost is on the encounter's EOB)", procedures)
    st.log.add_skipped("encounter", "Claim (charges; paid amounts come from ExplanationOfBenefit)", claims)

    if engine is not None and not st.log.errors:
        st.rows["patient"] = merge_existing_patients(engine, st.rows["patient"])
    st.rows["encounter"] = list(st.encounters.values())
    frames = frames_from_rows(st.rows)
    st.log.seconds = round(time.perf_counter() - t0, 2)
    return frames, st.log


def _iter_files(files: list[Path], maps: dict, log: ImportReport,
                later: dict[str, dict[Path, tuple[array, array]]] | None = None) -> Iterator[Resource]:
    """The resources of ``files``; with ``later``, the NDJSON lines of the streamed types are not
    yielded but recorded there (type -> file -> line numbers, byte offsets) to be read again one at
    a time, so a big NDJSON file that mixes types is never held in memory."""
    limits = maps["limits"]
    for f in files:
        if f.suffix.lower() in NDJSON_SUFFIXES:
            for res in iter_ndjson(f, int(limits["max_line_bytes"]), log):
                rtype = res.body.get("resourceType")
                if later is not None and isinstance(rtype, str) and rtype in STREAMED_TYPES:
                    numbers, offsets = later[rtype].setdefault(f, (array("q"), array("q")))
                    numbers.append(res.where)
                    offsets.append(res.offset)
                    continue
                yield res
        else:
            yield from iter_bundle(f, int(limits["max_bundle_bytes"]), log)


def _accepted(st: _State, resources: Iterator[Resource]) -> Iterator[Resource]:
    """The resources with a valid type and id, first of each (type, id); the rest become issues."""
    ignored = set(st.maps["resources"]["ignored"])
    for res in resources:
        rtype = res.body.get("resourceType")
        if not isinstance(rtype, str) or not TYPE_RE.match(rtype):
            st.log.add_error(res.file, res.where, "resourceType", f"missing or malformed resourceType {rtype!r}")
            continue
        expected = file_resource_type(res.file, USED_TYPES | ignored)
        if expected and rtype != expected:
            st.log.add_error(
                res.file,
                res.where,
                "resourceType",
                f"wrong resourceType {rtype!r} in a file of {expected} resources (Bulk Data: one type per file)",
            )
            continue
        if rtype == "Bundle":
            st.log.add_error(res.file, res.where, "resourceType", "nested Bundle is not supported")
            continue
        if rtype not in USED_TYPES:
            if rtype not in ignored and rtype not in st.unknown_types:
                st.unknown_types.add(rtype)
                st.log.add_warning(
                    res.file, res.where, "resourceType", f"resource type {rtype!r} is not known to this importer; skipped"
                )
            st.log.add_skipped("fhir resources", f"{rtype} (not used)", 1)
            continue
        rid = res.body.get("id")
        if not isinstance(rid, str) or not rid.strip():
            st.log.add_error(res.file, res.where, f"{rtype}.id", "missing resource id")
            continue
        if (rtype, rid) in st.seen:
            st.log.add_skipped("fhir resources", f"{rtype} (duplicate id)", 1)
            continue
        st.seen.add((rtype, rid))
        problem = shape_problem(res.body)
        if problem is not None:
            path, what = problem
            st.log.add_error(res.file, res.where, f"{rtype}.{path.replace('[]', '')}", f"{rtype}/{rid}: {what}")
            continue
        yield res


def _subject(st: _State, res: Resource, field_name: str) -> str | None:
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


def _date(st: _State, res: Resource, field_name: str, value: object, required: bool = True, future: bool = False,
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


def _read_patients(st: _State) -> None:
    maps = st.maps
    systems = set(maps["identity"]["person_id_systems"])
    for res in st.by_type["Patient"]:
        b = res.body
        key = next(
            (
                str(i["value"])
                for i in b.get("identifier") or []
                if isinstance(i, dict) and i.get("system") in systems and i.get("value")
            ),
            None,
        )
        pid = person_id(key) if key else make_id("fhir", b["id"])
        st.patient_key[b["id"]] = pid
        birth = _date(st, res, "birthDate", b.get("birthDate"))
        death = None
        if "deceasedDateTime" in b:
            death = _date(st, res, "deceasedDateTime", b.get("deceasedDateTime"))
        name = next(
            (n for n in b.get("name") or [] if isinstance(n, dict) and n.get("use") == "official"), (b.get("name") or [{}])[0]
        )
        race = ethnicity = "unknown"
        for ext in b.get("extension") or []:
            if ext.get("url") in (RACE_URL, ETHNICITY_URL):
                table = maps["races"] if ext["url"] == RACE_URL else maps["ethnicities"]
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
        comms = [c for c in b.get("communication") or [] if isinstance(c, dict)]
        comm = next((c for c in comms if c.get("preferred")), comms[0] if comms else None)
        language = "unknown"
        if comm:
            code = next((c.get("code") for c in codings(comm.get("language")) if c.get("code")), None)
            if code:
                language = maps["languages"].get(code.split("-")[0].lower()) or (comm["language"].get("text") or code)
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
                language=str(language)[:64],
                dual_status=False,
                zip=zip_code[:10],
                deprivation_decile=None,
                death_date=death,
                _deceased_flag=b.get("deceasedBoolean") is True,
                _fhir_id=b["id"],
                _managing_org=ref_id(b.get("managingOrganization")),
            )
        )


def _encounter_kind(st: _State, b: dict) -> str:
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


def _icd10(st: _State, concept: object, what: str) -> str | None:
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


def _read_encounters(st: _State) -> None:
    kinds = load_catalog().activity_kinds
    for res in st.by_type["Encounter"]:
        b = res.body
        pid = _subject(st, res, "subject")
        period = b.get("period") or {}
        start = _date(st, res, "period.start", period.get("start"))
        end = _date(st, res, "period.end", period.get("end"), required=False, after=start)
        if pid is None or start is None:
            continue
        kind = _encounter_kind(st, b)
        dx = ""
        for rc in b.get("reasonCode") or []:
            dx = _icd10(st, rc, "") or ""
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
            _org=ref_id(b.get("serviceProvider")),
        )


def _assign_practices(st: _State) -> None:
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


def _eob_claim_kind(st: _State, b: dict, rules: ClaimRules) -> tuple[str, str]:
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


def _read_eobs(st: _State, resources: Iterable[Resource]) -> None:
    """Paid amounts from ExplanationOfBenefit, netted per claim (``EOB.claim``, else the EOB).

    The EOBs of one claim (an original and its adjustments or reversal) are summed; a claim that
    nets to zero or below is kept as a credit. EOBs that reference an Encounter add to it; the
    others become claims grouped into stays and ED visits like Tuva claims (``core.ingest.claims``).
    Cancelled and entered-in-error EOBs pay nothing and are skipped with a count.
    """
    kinds = load_catalog().activity_kinds
    rules = load_claim_rules()
    internal_paid = 0.0
    # claim key -> [patient_id, encounter key or None, amounts, first EOB id, claim type, kind, category,
    #               start, end, latest payment date]
    groups: dict[str, list] = {}
    for res in resources:
        b = res.body
        pid = _subject(st, res, "patient")
        if pid is None:
            continue
        if b.get("status") in EOB_SKIPPED_STATUSES:
            st.log.add_skipped("encounter", f"ExplanationOfBenefit {b['status']} (pays nothing)", 1)
            continue
        paid = _eob_paid(b)
        if paid is None:
            st.log.add_skipped("encounter", "ExplanationOfBenefit without a paid amount", 1)
            continue
        if amount_problem(paid):
            st.log.add_error(res.file, res.where, "ExplanationOfBenefit.payment", f"ExplanationOfBenefit/{b['id']}: {amount_problem(paid)}")
            continue
        enc_ids = {ref_id(e) for item in b.get("item") or [] for e in item.get("encounter") or []} - {None}
        enc_key = None
        if enc_ids:
            dangling = sorted(e for e in enc_ids if e not in st.encounters)
            if dangling:
                st.log.add_error(
                    res.file,
                    res.where,
                    "ExplanationOfBenefit.item.encounter",
                    f"ExplanationOfBenefit/{b['id']}: dangling reference to Encounter {dangling[0]!r}",
                )
                continue
            enc_key = sorted(enc_ids)[0]  # one EOB pays one encounter (Synthea, CARIN BB)
        key = f"claim:{ref_id(b.get('claim')) or 'eob:' + b['id']}"
        paid_on = parse_fhir_date((b.get("payment") or {}).get("date"))
        if key in groups:
            groups[key][2].append(paid)
            groups[key][9] = max(filter(None, (groups[key][9], paid_on)), default=None)
            continue
        start = end = None
        kind, category = "", ""
        if enc_key is None:
            period = b.get("billablePeriod") or {}
            start = _date(st, res, "billablePeriod.start", period.get("start"))
            if start is None:
                continue
            end = _date(st, res, "billablePeriod.end", period.get("end"), required=False, after=start)
            kind, category = _eob_claim_kind(st, b, rules)
        claim_type = next((c.get("code") for c in codings(b.get("type")) if c.get("code")), "") or ""
        groups[key] = [pid, enc_key, [paid], b["id"], claim_type, kind, category, start, end, paid_on]

    claims = []
    for key, (pid, enc_key, amounts, eob_id, claim_type, kind, category, start, end, paid_on) in groups.items():
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
                detail=dict(eob_id=eob_id, paid_date=paid_on),
            )
        )
    for episode in group_claims(claims, rules, st.log.claims):
        eob_id = episode.anchor.detail["eob_id"]
        st.encounters[f"eob:{eob_id}"] = dict(
            encounter_id=make_id("fhir:eob", eob_id),
            patient_id=episode.anchor.person,
            team_id=None,
            kind=episode.kind,
            start_date=episode.start,
            end_date=episode.end,
            requested_date=None,
            responded_date=None,
            is_internal=False,
            in_network=True,
            is_urgent=episode.kind in ("ed_visit", "urgent_care") or episode.category == "ed",
            resolved_without_visit=None,
            primary_dx="",
            specialty="",
            cost_category=episode.category,
            paid_usd=episode.paid_usd,
            paid_date=max((d for c in episode.claims if (d := c.detail["paid_date"]) is not None), default=None),
            _org=None,
        )
    if internal_paid:
        st.log.add_warning(
            "ExplanationOfBenefit",
            None,
            "payment",
            f"${internal_paid:,.2f} paid for internal encounters is practice revenue, not external cost; not loaded as paid_usd",
        )


def _read_conditions(st: _State, resources: Iterable[Resource]) -> None:
    for res in resources:
        b = res.body
        pid = _subject(st, res, "subject")
        status = first_code(b.get("verificationStatus"), "http://terminology.hl7.org/CodeSystem/condition-ver-status")
        onset_value = b.get("onsetDateTime") or (b.get("onsetPeriod") or {}).get("start") or b.get("recordedDate")
        onset = _date(st, res, "onsetDateTime", onset_value)
        resolved = _date(st, res, "abatementDateTime", b.get("abatementDateTime"), required=False, after=onset)
        if pid is None or onset is None:
            continue
        if status in ("entered-in-error", "refuted"):
            st.log.add_skipped("condition", f"Condition ({status})", 1)
            continue
        code = _icd10(st, b.get("code"), "Condition.code")
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


def _tobacco_value(st: _State, b: dict) -> tuple[float | None, str]:
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


def _read_observations(st: _State, resources: Iterable[Resource]) -> None:
    codes = load_catalog().codes
    obs_maps = st.maps["observations"]
    out_of_range = 0
    for res in resources:
        b = res.body
        loinc = first_code(b.get("code"), LOINC)
        status = b.get("status")
        pid = _subject(st, res, "subject")
        when = b.get("effectiveDateTime") or (b.get("effectivePeriod") or {}).get("start") or b.get("issued")
        measured = _date(st, res, "effectiveDateTime", when)
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


def _read_medications(st: _State, resources: Iterable[Resource]) -> None:
    meds = {r.body["id"]: r.body for r in st.by_type["Medication"]}
    for res in resources:
        b = res.body
        pid = _subject(st, res, "subject")
        start = _date(st, res, "authoredOn", b.get("authoredOn"))
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


def _finish_patients(st: _State) -> None:
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


def _build_attribution(st: _State) -> None:
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
        pid = _subject(st, res, "beneficiary")
        period = res.body.get("period") or {}
        start = _date(st, res, "period.start", period.get("start"), future=True)
        end = _date(st, res, "period.end", period.get("end"), required=False, future=True, after=start) or last or start
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
