"""An import of one new month re-derives the months it can change, and gives exactly what a full
derive gives (``core.derive.incremental.derive_months``; issue 21).

A small network's first months are imported and derived, then its last month is imported
(``sample_data.split``) and derived by month; every subgroup assignment, risk score, activity row
and cell is then compared, value for value, with a full derive of the same store. SQLite and
PostgreSQL.
"""

from datetime import date

import pandas as pd
import pytest

from core.derive.incremental import derive_touched, first_changed_month, from_month_mark, touched_patients
from core.derive.pipeline import derive_all
from core.derive.subgroups.assign import stored_thresholds
from core.ingest import import_path
from core.store.queries import derive_pending
from sample_data.split import split_bundle
from tests.store.test_incremental_derive_store import assert_same_as_full_derive, derived_tables

NETWORK = dict(patients=400, months=13, seed=11, end_month=date(2026, 11, 1))


def _no_full_derive(*_args, **_kwargs):
    raise AssertionError("a full derive ran")


@pytest.fixture(scope="module")
def month_bundles(tmp_path_factory):
    from sample_data.generator import NetworkSpec, write_bundle

    root = tmp_path_factory.mktemp("months")
    write_bundle(NetworkSpec(**NETWORK), root / "whole")
    counts = split_bundle(root / "whole", "2026-11", root / "before", root / "after")
    assert counts["attribution.csv"][1] > 0 and counts["encounters.csv"][1] > 0
    return root


def test_readmissions_and_first_diagnoses_look_forward_so_earlier_months_are_re_derived():
    assert first_changed_month(date(2026, 11, 1)) == date(2026, 10, 1)  # a discharge on 2 Oct, readmitted 1 Nov
    assert first_changed_month(date(2026, 3, 1)) == date(2026, 1, 1)  # 30 days before 1 March is in January


def test_one_new_month_re_derives_only_the_months_it_can_change(store_engine, month_bundles, monkeypatch):
    engine = store_engine
    assert import_path(engine, month_bundles / "before").ok
    derive_touched(engine)
    before = derived_tables(engine)
    report = import_path(engine, month_bundles / "after")
    assert report.ok, report.to_text()
    assert from_month_mark(engine) == date(2026, 11, 1)  # the earliest date of its rows
    monkeypatch.setattr("core.derive.pipeline.derive_all", _no_full_derive)
    summary = derive_touched(engine)
    monkeypatch.undo()
    assert summary["mode"] == "months" and summary["from_month"] == "2026-10-01", summary
    assert derive_pending(engine) is None and touched_patients(engine) == [] and from_month_mark(engine) is None
    after = derived_tables(engine)
    old = before["cell"][pd.to_datetime(before["cell"]["month"]) < pd.Timestamp("2026-10-01")]
    kept = after["cell"][pd.to_datetime(after["cell"]["month"]) < pd.Timestamp("2026-10-01")]
    pd.testing.assert_frame_equal(old.reset_index(drop=True), kept.reset_index(drop=True), check_exact=True)
    assert (pd.to_datetime(after["cell"]["month"]) == pd.Timestamp("2026-11-01")).any()
    with engine.connect() as conn:
        cut_offs = stored_thresholds(conn)  # the cut-offs an override evaluates with
    assert_same_as_full_derive(engine)
    with engine.connect() as conn:
        assert cut_offs == stored_thresholds(conn)


def test_a_row_sent_again_with_an_earlier_date_lowers_the_month(store_engine, month_bundles, tmp_path):
    engine = store_engine
    assert import_path(engine, month_bundles / "before").ok
    derive_all(engine)
    folder = tmp_path / "again"
    folder.mkdir()
    tables = {p.name: pd.read_csv(p, dtype=str, keep_default_na=False) for p in (month_bundles / "before").glob("*.csv")}
    measurements = tables["measurements.csv"]
    row = measurements.sort_values("measured_date").iloc[[-1]].copy()  # the latest, moved to a later date
    earlier = row["measured_date"].iloc[0]
    row["measured_date"] = "2026-11-15"
    for name, frame in tables.items():
        if name == "measurements.csv":
            frame = row
        elif name == "patients.csv":
            frame = frame[frame["patient_id"] == row["patient_id"].iloc[0]]
        elif name not in ("practices.csv", "teams.csv", "staff.csv"):
            frame = frame.iloc[0:0]
        frame.to_csv(folder / name, index=False)
    assert import_path(engine, folder).ok
    assert from_month_mark(engine) == date.fromisoformat(earlier[:8] + "01")
    summary = derive_touched(engine)
    assert summary["mode"] == "incremental"  # one patient: by patient
    assert from_month_mark(engine) is None
    assert_same_as_full_derive(engine)
