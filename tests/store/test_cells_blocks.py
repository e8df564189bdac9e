"""Cells built block by block (and in worker processes) equal the cells of one pass."""

import shutil

import pandas as pd
import pytest
from sqlalchemy import select

from core.derive.blocks import patient_blocks
from core.derive.cells import CELL_COLUMNS, add_cells, block_cells, build_cells
from core.store import models
from core.store.db import make_engine
from core.store.months import from_index, month_index

KEYS = CELL_COLUMNS[:7]


def _months(engine):
    with engine.connect() as conn:
        found = month_index([r[0] for r in conn.execute(select(models.Attribution.month).distinct())])
    return sorted(from_index(i) for i in set(found.dropna().astype(int)))


def _sorted(cells: pd.DataFrame) -> pd.DataFrame:
    cells = cells.astype({"month": str})
    return cells.sort_values(KEYS).reset_index(drop=True)[CELL_COLUMNS]


def _assert_same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    got, want = _sorted(got), _sorted(want)
    assert len(got) == len(want)
    pd.testing.assert_frame_equal(got[KEYS], want[KEYS])
    assert (got["patients"].to_numpy() == want["patients"].to_numpy()).all()
    for col in ("numerator", "denominator", "sum_sq"):  # sums in another order: equal up to rounding
        assert got[col].to_numpy() == pytest.approx(want[col].to_numpy(), rel=1e-9, abs=1e-6)


def _stored(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(select(models.Cell), conn)


def test_blocks_partition_the_attributed_patients(sample_engine):
    with sample_engine.connect() as conn:
        blocks = patient_blocks(conn, 150)
        ids = sorted({r[0] for r in conn.execute(select(models.Attribution.patient_id))})
    assert len(blocks) == -(-len(ids) // 150) > 2
    covered = [[i for i in ids if lo <= i <= hi] for lo, hi in blocks]
    assert sum(len(c) for c in covered) == len(ids) and all(len(c) <= 150 for c in covered)
    assert blocks[0][0] == ids[0] and blocks[-1][1] == ids[-1]


def test_cells_of_blocks_add_up_to_the_cells_of_all_patients(sample_engine):
    months = _months(sample_engine)
    whole, _ = block_cells(sample_engine, months)
    added = pd.DataFrame(columns=CELL_COLUMNS)
    with sample_engine.connect() as conn:
        blocks = patient_blocks(conn, 150)
    for block in blocks:
        cells, seconds = block_cells(sample_engine, months, block)
        assert set(seconds) == {"load", "flags", "costs", "aggregate"}
        added = add_cells(added, cells)
    assert {"member_months", "cost_total_usd", "hba1c_control", "admissions"} <= set(whole["metric"])
    _assert_same(added, whole)


def test_build_cells_in_worker_processes_stores_the_same_cells(sample_db_url, tmp_path):
    path = sample_db_url.removeprefix("sqlite:///")
    copy = tmp_path / "blocks.db"
    shutil.copyfile(path, copy)
    engine = make_engine(f"sqlite:///{copy}")
    try:
        one = build_cells(engine, block_patients=10**9)
        want = _stored(engine)
        assert one["blocks"] == 1
        parallel = build_cells(engine, block_patients=200, workers=2)
        assert parallel["blocks"] == 3 and parallel["rows"] == one["rows"]
        _assert_same(_stored(engine), want)
    finally:
        engine.dispose()


def test_build_cells_in_blocks_on_each_backend(store_engine):
    from tests.store.test_cells_store import _fill

    _fill(store_engine)
    one = build_cells(store_engine, block_patients=10**9)
    want = _stored(store_engine)
    several = build_cells(store_engine, block_patients=7, workers=1)
    assert several["blocks"] == 5 and several["rows"] == one["rows"]
    _assert_same(_stored(store_engine), want)


def test_a_block_reads_the_encounters_by_patient_not_by_date(tmp_path):
    """SQLite must not walk the date index of the whole network for every block of patients."""
    from sqlalchemy import event

    from core.derive.costs import load_cost_inputs
    from core.store.db import create_schema
    from tests.store.test_cells_store import MONTHS, _fill

    engine = make_engine(f"sqlite:///{tmp_path / 'plan.db'}")
    create_schema(engine)
    _fill(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    seen = []

    def record(conn, cursor, sql, params, *_):
        seen.append((sql, params))

    event.listen(engine, "before_cursor_execute", record)
    inputs = load_cost_inputs(engine, MONTHS[2:4], ("X00", "X09"))
    event.remove(engine, "before_cursor_execute", record)
    plans = []
    with engine.connect() as conn:
        for sql, params in seen:
            if "FROM encounter" in sql:
                plans += [row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)]
    assert plans and not any("ix_encounter_date_kind" in p for p in plans), plans
    # the months still apply: X01-X09's ED visits and admissions of March and April 2024 only
    assert sorted(inputs.encounters["encounter_id"]) == sorted(
        f"E{i}-{j}" for i in range(10) for j in range(i % 4) if 2 + j in (3, 4))
    assert set(inputs.attribution["patient_id"]) == {f"X{i:02d}" for i in range(10)}
    engine.dispose()


def test_the_cost_provider_costs_a_block_alike_from_its_own_reads_and_from_the_rules_reads(sample_store):
    """A block's cells read its encounters once for the measure rules and the cost provider, and
    give the provider the attributed patient-months of the rules' read: the costs come out the
    same, to the bit, as from the provider's own reads (a few months of a block, every column)."""
    from core.derive.cells import cost_metrics_wide, patient_month_dimensions
    from core.derive.costs import encounter_columns
    from core.derive.measures import load_store_frames, read_columns, read_encounters

    engine = sample_store
    months = _months(engine)[-5:-2]
    with engine.connect() as conn:
        block = patient_blocks(conn, 250)[1]  # the second of three
    own = cost_metrics_wide(engine, months, block).frame
    assert len(own) and (own.drop(columns=["patient_id", "month"]).sum() > 0).sum() >= 5  # costs of several kinds

    encounters = read_encounters(engine, block, extra=encounter_columns())
    frames = load_store_frames(engine, block, encounters=encounters)
    pd.testing.assert_frame_equal(frames.encounters, load_store_frames(engine, block).encounters)  # the rules see the same
    S = models.SubgroupAssignment
    assignments = read_columns(engine, [S.patient_id, S.month, S.subgroup, S.risk_score], ["month"], block)
    dims = patient_month_dimensions(frames.attribution, assignments, frames.patients, months)
    shared = cost_metrics_wide(engine, months, block, dims=dims, encounters=encounters).frame
    pd.testing.assert_frame_equal(shared, own, check_exact=True)
