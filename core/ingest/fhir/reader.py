"""``read_fhir``: the two passes over the files, the checks every resource passes (type, id,
duplicates, field shapes) and the order of the resource readers."""

import time
from array import array
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine

from core.ingest.fhir.clinical import (
    procedure_loincs,
    read_care_plans,
    read_conditions,
    read_medications,
    read_observations,
    read_procedures,
)
from core.ingest.fhir.encounters import read_encounters
from core.ingest.fhir.eobs import read_eobs
from core.ingest.fhir.maps import load_fhir_maps
from core.ingest.fhir.patients import assign_practices, build_attribution, finish_patients, read_patients
from core.ingest.fhir.resources import (
    NDJSON_SUFFIXES,
    STREAMED_TYPES,
    TYPE_RE,
    USED_TYPES,
    Resource,
    file_resource_type,
    iter_bundle,
    iter_ndjson,
    list_fhir_files,
    shape_problem,
)
from core.ingest.fhir.state import ReadState
from core.ingest.idmap import frames_from_rows, merge_existing_patients
from core.ingest.report import ImportReport


def read_fhir(path: Path, engine: Engine | None = None) -> tuple[dict[str, pd.DataFrame], ImportReport]:
    """Read FHIR R4 bundles / NDJSON under ``path`` into canonical frames and an import report."""
    t0 = time.perf_counter()
    path = Path(path)
    maps = load_fhir_maps()
    st = ReadState(maps, ImportReport(source=str(path), format="fhir"))
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

    read_patients(st)
    read_encounters(st)
    assign_practices(st)
    read_eobs(st, resources_of("ExplanationOfBenefit"))
    read_conditions(st, resources_of("Condition"))
    st.procedure_loincs = procedure_loincs()
    read_observations(st, resources_of("Observation"))
    read_medications(st, resources_of("MedicationRequest"))
    read_procedures(st, resources_of("Procedure"))
    read_procedures(st, resources_of("Immunization"))
    read_care_plans(st, resources_of("CarePlan"))
    finish_patients(st)
    build_attribution(st)
    claims = sum(1 for _ in resources_of("Claim"))
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


def _accepted(st: ReadState, resources: Iterator[Resource]) -> Iterator[Resource]:
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


