"""Subgroups assigned block by block (and in worker processes) equal those of one block."""

import shutil
from datetime import date

import pandas as pd
import pytest
from sqlalchemy import select

from core.derive.blocks import patient_blocks
from core.derive.subgroups.assign import assign_subgroups
from core.derive.subgroups.overrides import set_override
from core.derive.subgroups.rules import load_rules
from core.store.db import make_engine
from core.store.models import Attribution, RiskScore, SubgroupAssignment
from core.views.admin_rules import preview_rules

from .test_subgroups_store import LEAD, MONTHS, RULES, seed

ASSIGNMENT = ["patient_id", "month", "subgroup", "rule_id", "reason", "risk_score", "overridden"]
RISK = ["patient_id", "year", "model", "score", "chronic_score", "hccs"]


def _stored(engine) -> tuple[pd.DataFrame, pd.DataFrame]:
    with engine.connect() as conn:
        a = pd.read_sql(select(SubgroupAssignment), conn)[ASSIGNMENT].sort_values(["patient_id", "month"])
        r = pd.read_sql(select(RiskScore), conn)[RISK].sort_values(["patient_id", "year"])
    return a.reset_index(drop=True), r.reset_index(drop=True)


def _assert_same_store(engine, want: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    got = _stored(engine)
    for g, w in zip(got, want, strict=True):  # every value to the bit, reasons included
        pd.testing.assert_frame_equal(g, w, check_exact=True)


def _summary(out: dict) -> dict:
    return {k: v for k, v in out.items() if k not in ("seconds", "parts", "blocks")}


@pytest.fixture
def sample_copy(sample_db_url, tmp_path):
    copy = tmp_path / "blocks.db"
    shutil.copyfile(sample_db_url.removeprefix("sqlite:///"), copy)
    engine = make_engine(f"sqlite:///{copy}")
    yield engine
    engine.dispose()


def test_blocks_partition_the_attributed_patients(sample_copy):
    with sample_copy.connect() as conn:
        ids = sorted(pd.read_sql(select(SubgroupAssignment.patient_id).distinct(), conn)["patient_id"])
        blocks = patient_blocks(conn, 7)
    assert len(blocks) == -(-len(ids) // 7) > 2
    covered = [[i for i in ids if lo <= i <= hi] for lo, hi in blocks]
    assert sum(len(c) for c in covered) == len(ids) and all(len(c) <= 7 for c in covered)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_blocks_for_workers_are_even_and_a_multiple_of_them(sample_copy, workers):
    """Each worker reads as many patients: no short last block beside full ones."""
    with sample_copy.connect() as conn:
        ids = sorted(pd.read_sql(select(Attribution.patient_id).distinct(), conn)["patient_id"])
        blocks = patient_blocks(conn, 7, workers=workers)
        whole = patient_blocks(conn, len(ids), workers=workers)
    sizes = [len([i for i in ids if lo <= i <= hi]) for lo, hi in blocks]
    assert sum(sizes) == len(ids) and max(sizes) <= 7 and max(sizes) - min(sizes) <= 1
    assert len(blocks) % workers == 0 and len(blocks) < -(-len(ids) // 7) + workers
    assert whole == [(ids[0], ids[-1])]  # the patients fit one block: one, whatever the workers


def test_small_blocks_and_workers_store_what_one_block_stores(sample_copy):
    """Blocks of 37 patients (here, and 97 in two worker processes) and the network-wide top decile."""
    patient = pd.read_sql(select(SubgroupAssignment.patient_id).limit(1), sample_copy)["patient_id"][0]
    set_override(sample_copy, LEAD, patient, "complex", date(2000, 1, 1), "known to the team", RULES)
    one = assign_subgroups(sample_copy, RULES, block_patients=10**9)
    want = _stored(sample_copy)
    assert one["blocks"] == 1 and one["overridden"] > 0
    assert want[0]["reason"].str.contains("top decile").any()  # the thresholds are exercised
    small = assign_subgroups(sample_copy, RULES, block_patients=37, workers=1)
    assert small["blocks"] > 10 and _summary(small) == _summary(one)
    _assert_same_store(sample_copy, want)
    parallel = assign_subgroups(sample_copy, RULES, block_patients=97, workers=2)
    assert parallel["blocks"] > 2 and _summary(parallel) == _summary(one)
    _assert_same_store(sample_copy, want)


def test_one_month_in_blocks_equals_one_block(sample_copy):
    months = sorted(pd.read_sql(select(SubgroupAssignment.month).distinct(), sample_copy)["month"])
    month = pd.Timestamp(months[len(months) // 2]).date()
    assign_subgroups(sample_copy, RULES, months=[month], block_patients=10**9)
    want = _stored(sample_copy)
    assign_subgroups(sample_copy, RULES, months=[month], block_patients=37, workers=1)
    _assert_same_store(sample_copy, want)
    draft = load_rules()
    pd.testing.assert_frame_equal(
        preview_rules(sample_copy, draft, month, RULES, block_patients=37),
        preview_rules(sample_copy, draft, month, RULES, block_patients=10**9),
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_blocks_on_each_backend(store_engine, workers):
    seed(store_engine)
    set_override(store_engine, LEAD, "B", "frail", MONTHS[1], "seen at home", RULES)
    one = assign_subgroups(store_engine, RULES, block_patients=10**9)
    want = _stored(store_engine)
    blocks = assign_subgroups(store_engine, RULES, block_patients=2, workers=workers)
    # five patients in blocks of two: three, or four of one or two for two workers
    assert blocks["blocks"] == {1: 3, 2: 4}[workers] and _summary(blocks) == _summary(one)
    _assert_same_store(store_engine, want)


def test_a_whole_run_builds_the_indexes_once_and_a_failed_one_keeps_them(store_engine, monkeypatch):
    """Every row of a whole run is new: its secondary indexes are dropped for the write and built
    once after (``parts["indexes"]``); a run that fails half way rolls back with its indexes."""
    from sqlalchemy import inspect

    import core.derive.subgroups.assign as assign

    def names():  # the secondary indexes, and the primary key (PostgreSQL drops it for the write too)
        found = inspect(store_engine)
        key = tuple(found.get_pk_constraint("subgroup_assignment")["constrained_columns"])
        return {i["name"] for i in found.get_indexes("subgroup_assignment")} | {key}

    seed(store_engine)
    wanted = {i.name for i in SubgroupAssignment.__table__.indexes} | {("patient_id", "month")}
    assert names() >= wanted
    out = assign_subgroups(store_engine, RULES, block_patients=2, workers=1)
    assert "indexes" in out["parts"] and names() >= wanted
    want = _stored(store_engine)
    assert assign_subgroups(store_engine, RULES, months=[MONTHS[-1]], workers=1)["parts"].get("indexes") is None  # a month: kept
    real = assign.insert_frame
    calls = []

    def fail_on_the_second_block(conn, table, frame, *args, **kwargs):
        calls.append(table.name)
        if calls.count("subgroup_assignment") == 2:
            raise RuntimeError("disk full")
        return real(conn, table, frame, *args, **kwargs)

    monkeypatch.setattr(assign, "insert_frame", fail_on_the_second_block)
    with pytest.raises(RuntimeError, match="disk full"):
        assign_subgroups(store_engine, RULES, block_patients=2, workers=1)
    assert names() >= wanted
    _assert_same_store(store_engine, want)
