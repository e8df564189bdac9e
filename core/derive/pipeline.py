"""First run and re-derivation: load a bundle, then rebuild everything derived from the data.

Derived tables (subgroup assignments, risk scores, patient- and team-month activity, the pages'
monthly aggregates of ``core.derive.page_aggregates``, additive cells) are rebuilt after every import, in this order, so pages always read a consistent data
version.

An import and its derive are two units of work (the derive of a million patients runs in
blocks and takes minutes; one transaction around both would hold the store locked meanwhile).
What keeps them together is a mark in the store (``derive_pending``): the import writes it in
its own transaction, :func:`derive_all` writes it when it starts without one, and only a derive
that finished clears it. So an import killed after its commit, or a derive that failed half-way
(new subgroups, old cells), leaves the mark: pages show a banner, and the next
``python -m core import`` or ``assign`` (or the banner's button) derives everything again and
clears it (:func:`finish_pending_derive`).
"""

from collections.abc import Callable
from datetime import date
from pathlib import Path

from sqlalchemy import Engine

from core.store.queries import bump_data_version, derive_pending, mark_derive_pending

Progress = Callable[[float, str], None]


def _no_progress(_fraction: float, _text: str) -> None:
    return None


def derive_all(engine: Engine, progress: Progress = _no_progress, rules=None) -> dict:
    """Assign subgroups (with ``rules``, default the active rules), rebuild the patient- and
    team-month activity (worklist, payments), then build the additive cells and mark the data version
    changed. Returns a summary per step."""
    from core.derive.activity import build_patient_month_activity
    from core.derive.cells import build_cells
    from core.derive.incremental import TOUCH_ALL, clear_touched, mark_touched, touched_patients
    from core.derive.page_aggregates import build_page_aggregates
    from core.derive.subgroups.assign import assign_subgroups

    pending = mark_derive_pending(engine)
    with engine.begin() as conn:  # a derive that stops half-way leaves everything to do again
        mark_touched(conn, [TOUCH_ALL], pending)
    touched = touched_patients(engine)  # what the imports and overrides before it touched, and *
    summary = {}
    progress(0.6, "Assigning subgroups")
    # after an import (the pending mark is its id): how many patients outside it changed subgroup
    summary["subgroups"] = assign_subgroups(engine, rules, import_id=int(pending) if pending.isdigit() else None)
    progress(0.7, "Summing activity per patient and month")
    summary["activity"] = build_patient_month_activity(engine)
    summary["page_aggregates"] = build_page_aggregates(engine)  # e-consults, moves, costliest patients
    progress(0.8, "Building scorecard cells")
    summary["cells"] = build_cells(engine)
    summary["data_version"] = bump_data_version(engine, derived=pending)
    clear_touched(engine, touched)
    progress(1.0, "Done")
    return summary


def finish_pending_derive(engine: Engine, progress: Progress = _no_progress) -> dict | None:
    """Catch up when an earlier import, override or derive did not finish its derive: the
    patients it touched only when the store knows them and that is exact, else everything
    (:func:`core.derive.incremental.derive_touched`). Returns the summary, or None when nothing
    was pending."""
    from core.derive.incremental import derive_touched

    if derive_pending(engine) is None:
        return None
    return derive_touched(engine, progress)


def derive_text(summary: dict | None) -> str:
    """One line on what a derive did, for the messages of the upload and override forms."""
    if not summary:
        return "nothing to re-derive"
    if summary.get("mode") == "incremental":
        return (f"re-derived {summary['patients']:,} patient(s) and {summary['cells']['rows']:,} cells "
                f"of {summary['cells']['keys']:,} team-subgroup-months in {summary['seconds']:.1f} s")  # fmt: skip
    if summary.get("mode") == "months":
        reach = summary.get("reach") or {}
        before = (f", and the forward-looking measures (readmissions, first diagnoses, end of life) of the {reach['months']} "
                  f"month(s) before ({summary['cells'].get('reach_rows', 0):,} cells)") if reach.get("months") else ""  # fmt: skip
        return (f"re-derived the {summary['months']} month(s) from {date.fromisoformat(summary['from_month']):%b %Y} "
                f"({summary['cells']['rows']:,} cells){before} in {summary['seconds']:.1f} s")  # fmt: skip
    why = f" ({summary['why']})" if summary.get("why") else ""
    return f"re-derived the whole network{why} in {summary.get('seconds', 0):.1f} s"


def load_bundle_and_derive(engine: Engine, bundle: Path, progress: Progress = _no_progress):
    """Import a canonical CSV bundle and derive everything. Raises if the bundle is rejected."""
    from core.ingest import import_path

    progress(0.3, "Importing the bundle")
    report = import_path(engine, bundle, fmt="csv")
    if not report.ok:
        raise ValueError(report.to_text())
    derive_all(engine, progress)
    return report


MAX_UPLOAD_BYTES = 100 * 1024 * 1024


def import_files(engine: Engine, files: list[tuple[str, bytes]], fmt: str, progress: Progress = _no_progress):
    """Import uploaded files (name, content) as one dataset, then derive what it touched.

    The files are written under their base names to a private temporary folder (never to a
    path the uploader chose), validated and loaded all or nothing, then the patients the import
    touched are re-derived (everything when needed: :func:`core.derive.incremental.derive_touched`).
    Returns the import report, with the derive's summary in ``report.derive``; nothing is
    derived when the import is rejected.
    """
    import tempfile

    from core.ingest import import_path
    from core.ingest.report import ImportReport

    total = sum(len(content) for _, content in files)
    if total > MAX_UPLOAD_BYTES:
        report = ImportReport(source="upload", format=fmt)
        report.add_error("upload", None, None, f"{total / 1e6:.0f} MB is over the {MAX_UPLOAD_BYTES / 1e6:.0f} MB upload limit; "
                         "load large data with `python -m core import PATH`")  # fmt: skip
        return report
    with tempfile.TemporaryDirectory(prefix="upload-") as folder:
        for name, content in files:
            (Path(folder) / Path(name).name).write_bytes(content)
        progress(0.1, "Validating and loading")
        report = import_path(engine, Path(folder), fmt=fmt)
    if report.ok:
        from core.derive.incremental import derive_touched

        report.derive = derive_touched(engine, progress)
    return report
