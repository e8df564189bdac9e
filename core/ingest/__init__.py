"""Importers: each input format -> canonical typed frames -> one all-or-nothing load.

``import_path(engine, path, fmt)`` is the one entry point (CLI, admin page, bootstrap). The FHIR
and Tuva readers validate and never write; :func:`core.ingest.loader.load_tables` then writes
everything in one transaction or nothing. The CSV bundle, the format of big loads, streams:
:func:`core.ingest.csv_bundle.import_bundle` checks and writes batch by batch into one open
transaction and rolls it back on the first problem, so its memory does not grow with the bundle.
What every reader rejects alike (non-finite or absurd amounts, dates after the extract date,
truncated or unreadable CSV files) is in :mod:`core.ingest.checks`.
"""

import time
from pathlib import Path

from sqlalchemy import Engine

from core.ingest.report import ImportIssue, ImportReport

FORMATS = ("csv", "fhir", "tuva")


def import_path(engine: Engine, path: Path, fmt: str = "csv") -> ImportReport:
    """Validate ``path`` as ``fmt`` (csv, fhir or tuva) and load it all or nothing; returns the report."""
    from core.ingest.loader import load_tables

    started = time.perf_counter()
    path = Path(path)
    if fmt == "csv":
        from core.ingest.csv_bundle import import_bundle

        report = import_bundle(engine, path)
        report.seconds = round(time.perf_counter() - started, 2)
        return report
    if fmt == "fhir":
        from core.ingest.fhir import read_fhir

        frames, report = read_fhir(path, engine)
    elif fmt == "tuva":
        from core.ingest.tuva import read_tuva

        frames, report = read_tuva(path, engine)
    else:
        report = ImportReport(source=str(path), format=fmt)
        report.add_error(str(path), None, None, f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        return report
    report.seconds = round(time.perf_counter() - started, 2)
    if report.ok:
        load_tables(engine, frames, report)
    report.seconds = round(time.perf_counter() - started, 2)
    return report


__all__ = ["FORMATS", "ImportIssue", "ImportReport", "import_path"]
