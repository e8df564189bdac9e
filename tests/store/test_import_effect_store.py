"""How much an import moves patients that were not in it (import_patient -> import_effect), on SQLite and PostgreSQL."""

from datetime import date

import pandas as pd
from sqlalchemy import func, select

from core.derive.pipeline import derive_all
from core.ingest.loader import load_tables
from core.ingest.report import ImportReport
from core.store.models import ImportEffect, ImportPatient, SubgroupAssignment
from core.store.queries import patient_hashes
from core.views import data_quality as dq

MONTH = date(2025, 6, 1)


def _frames(prefix: str, ages: list[int], heart_failure: set[int], org: bool) -> dict[str, pd.DataFrame]:
    ids = [f"{prefix}{i:02d}" for i in range(len(ages))]
    frames = {}
    if org:
        frames["practice"] = pd.DataFrame([{"practice_id": "PR", "name": "Practice"}])
        frames["team"] = pd.DataFrame([{"team_id": "T", "practice_id": "PR", "name": "Team"}])
    frames["patient"] = pd.DataFrame({"patient_id": ids, "birth_date": [date(2025 - a, 1, 1) for a in ages], "sex": "female"})
    frames["attribution"] = pd.DataFrame({"patient_id": ids, "month": MONTH, "practice_id": "PR", "team_id": "T"})
    frames["condition"] = pd.DataFrame(
        [
            {"condition_id": f"C{ids[i]}", "patient_id": ids[i], "code": "I50.9", "onset_date": date(2024, 2, 1)}
            for i in sorted(heart_failure)
        ]
    )
    return frames


def _import(engine, frames) -> int:
    report = load_tables(engine, frames, ImportReport(source="test", format="csv"))
    assert report.ok, report.to_text()
    derive_all(engine)
    return report.import_id


def test_an_unrelated_import_moves_patients_through_the_network_cut_off(store_engine):
    # A: 20 patients aged 50; A00 and A01 with heart failure are the top decile of June: complex
    first = _import(store_engine, _frames("A", [50] * 20, {0, 1}, org=True))
    with store_engine.connect() as conn:
        complex_ = (
            conn.execute(select(SubgroupAssignment.patient_id).where(SubgroupAssignment.subgroup == "complex")).scalars().all()
        )
        effect = conn.execute(select(ImportEffect)).one()
    assert sorted(complex_) == ["A00", "A01"]
    assert (effect.import_id, effect.patients_compared, effect.patients_moved) == (first, 0, 0)  # nothing assigned before

    # B: 10 older patients with heart failure and 10 without, nobody of A in it: the June cut-off
    # rises above A00 and A01, who drop from complex to chronic with nothing new of their own
    second = _import(store_engine, _frames("B", [85] * 20, set(range(10)), org=False))
    with store_engine.connect() as conn:
        effect = conn.execute(select(ImportEffect).where(ImportEffect.import_id == second)).one()
        a00 = conn.execute(select(SubgroupAssignment.subgroup).where(SubgroupAssignment.patient_id == "A00")).scalar_one()
        left = conn.execute(select(func.count()).select_from(ImportPatient)).scalar_one()
    assert a00 == "chronic"
    assert (effect.patients_compared, effect.patients_moved, effect.examples) == (20, 2, "A00, A01")
    assert left == 0  # measured and cleared

    # the Data quality page and info --quality: per import
    imports = dq.import_quality(store_engine)
    row = imports[(imports["import_id"] == second) & imports["check"].str.startswith("patients not in this import")].iloc[0]
    assert (row["count"], row["examples"], row["status"]) == (2, "A00, A01", dq.REPORTED)
    assert "of 20 assigned before" in row["check"]
    assert "patients not in this import who changed subgroup" in dq.quality_text(dq.data_quality(store_engine))

    # a derive without an import (a rules change, an override) measures nothing and keeps the effects
    derive_all(store_engine)
    with store_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ImportEffect)).scalar_one() == 2


def test_the_import_records_its_patients_in_its_transaction(store_engine):
    report = load_tables(store_engine, _frames("A", [50] * 3, {0}, org=True), ImportReport(source="test", format="csv"))
    with store_engine.connect() as conn:
        rows = conn.execute(select(ImportPatient.import_id, ImportPatient.patient_hash)).all()
    hashes = sorted(int(h) for h in patient_hashes(["A00", "A01", "A02"]).view("int64"))
    assert sorted(h for _, h in rows) == hashes and {i for i, _ in rows} == {report.import_id}


def test_blocks_and_worker_processes_measure_the_same(store_engine):
    """Blocks of 7 patients (three of A, three of B), read by two worker processes where the store
    allows it: the stored subgroups are read before the run deletes them."""
    from core.derive.subgroups.assign import assign_subgroups

    _import(store_engine, _frames("A", [50] * 20, {0, 1}, org=True))
    report = load_tables(store_engine, _frames("B", [85] * 20, set(range(10)), org=False), ImportReport(source="t", format="csv"))
    summary = assign_subgroups(store_engine, import_id=report.import_id, block_patients=7, workers=2)
    assert summary["blocks"] == 6
    assert {k: summary["moved"][k] for k in ("patients_compared", "patients_moved", "examples")} == {
        "patients_compared": 20, "patients_moved": 2, "examples": "A00, A01"}  # fmt: skip
    # once per import: a second run after the same import measures nothing more
    assert "moved" not in assign_subgroups(store_engine, import_id=report.import_id)
