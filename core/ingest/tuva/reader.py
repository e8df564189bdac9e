"""``read_tuva``: the input-layer files of a folder, read in order into canonical frames."""

import time
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine

from core.ingest.idmap import frames_from_rows, merge_existing_patients
from core.ingest.report import ImportReport
from core.ingest.tuva.claims import read_medical_claims, read_pharmacy_claims
from core.ingest.tuva.clinical import read_measurements, read_procedures
from core.ingest.tuva.eligibility import build_attribution, build_patients, read_attribution, read_eligibility
from core.ingest.tuva.files import TuvaReader, find_tuva_files


def read_tuva(path: Path, engine: Engine | None = None) -> tuple[dict[str, pd.DataFrame], ImportReport]:
    """Read a folder of Tuva input-layer CSVs into canonical frames and an import report."""
    t0 = time.perf_counter()
    folder = Path(path)
    reader = TuvaReader(folder, engine)
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
    elig = read_eligibility(reader, files["eligibility"])
    if elig is None:
        return {}, report
    build_patients(reader, elig)
    attributed = read_attribution(reader, files.get("provider_attribution"))
    if "medical_claim" in files:
        read_medical_claims(reader, files["medical_claim"])
    if "pharmacy_claim" in files:
        read_pharmacy_claims(reader, files["pharmacy_claim"])
    for name in ("lab_result", "observation"):
        if name in files:
            read_measurements(reader, name, files[name])
    for name in ("procedure", "immunization"):
        if name in files:
            read_procedures(reader, name, files[name])
    if not report.ok:
        return {}, report
    build_attribution(reader, elig, attributed)
    for e in reader.rows["encounter"]:
        e.pop("_claim_type", None)
    if engine is not None:
        reader.rows["patient"] = merge_existing_patients(engine, reader.rows["patient"])
    frames = frames_from_rows(reader.rows)
    report.seconds = round(time.perf_counter() - t0, 2)
    return frames, report
