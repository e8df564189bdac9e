"""Subgroup assignment of the whole store, block by block.

:func:`assign_subgroups` reads the store block by block (contiguous ranges of patient_id, in
worker processes when it can), computes the inputs, evaluates the rules, applies the active
overrides and replaces the stored rows in one transaction. Two things are not per patient, so a
first pass over the blocks gets them for the whole run: the month thresholds of a top fraction
of risk scores (from the count of each month's scores) and the period whose smallest active
code names a condition group in a reason (the first and last patient-month).
"""

import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import date

import numpy as np
import pandas as pd
from sqlalchemy import Engine, delete

from core.derive.blocks import BLOCK_PATIENTS, map_blocks, patient_blocks, worker_count, worker_pool
from core.derive.risk import DEFAULT_MODEL
from core.derive.subgroups.evaluate import evaluate_rules, history_flags, thresholds_from_counts, top_fractions
from core.derive.subgroups.frames import Run, insert_frame, load_frames, risk_for, run_of
from core.derive.subgroups.inputs import compute_inputs, patient_months, row_scores
from core.derive.subgroups.overrides import active_overrides, apply_overrides
from core.derive.subgroups.rules import RuleSet, active_rules_path, load_rules
from core.store.models import RiskScore, SubgroupAssignment
from core.store.months import as_month

ASSIGNMENT_COLUMNS = [
    "patient_id", "month", "subgroup", "team_id", "rule_id", "reason", "risk_score", "overridden", "thin_history", "history_note",
]  # fmt: skip


def block_scores(conn, run: Run, patients: tuple[str, str] | None, with_scores: bool) -> tuple[pd.Series, set]:
    """Pass 1 over a block: how many of its patient-months have each (month, risk score), and its months.

    The counts (NaN scores left out; empty when not ``with_scores``) are all the network-wide top
    fractions need, whatever the size of the network.
    """
    tables = ("attribution", "patients", "conditions") if with_scores else ("attribution", "patients")
    frames = load_frames(conn, run, patients, tables)
    pm = patient_months(frames["patients"], frames["attribution"], run.months)
    scores = pd.DataFrame({"month": pm["month"], "risk_score": np.nan})
    if with_scores and len(pm):
        scores["risk_score"] = row_scores(pm, risk_for(frames, run.years, run.model))
    counts = scores.dropna().value_counts()
    return counts, set(pm["month"].unique())


def block_inputs(
    conn, run: Run, patients: tuple[str, str] | None, month_range: tuple[pd.Timestamp, pd.Timestamp], history_lookback: int = 6
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pass 2 over a block: the :func:`core.derive.subgroups.inputs.compute_inputs` of its
    patient-months (grain patient_id, month) and its risk scores (grain patient_id, year)."""
    frames = load_frames(conn, run, patients, history_lookback=history_lookback)
    risk = risk_for(frames, run.years, run.model)
    inputs = compute_inputs(
        frames["patients"],
        frames["attribution"],
        frames["conditions"],
        frames["measurements"],
        frames["encounters"],
        risk,
        months=run.months,
        month_range=month_range,
        history_lookback=history_lookback,
        enrolment=frames["enrolment"],
        first=frames["first_records"],
    )
    return inputs, risk


def _block_assignments(
    conn,
    run: Run,
    patients: tuple[str, str] | None,
    month_range: tuple[pd.Timestamp, pd.Timestamp],
    rules: RuleSet,
    thresholds: dict[float, pd.Series],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rules' assignments of a block (overrides not applied) and its risk scores."""
    inputs, risk = block_inputs(conn, run, patients, month_range, rules.history.lookback_months)
    result = evaluate_rules(inputs, rules, thresholds)
    result["thin_history"], result["history_note"] = history_flags(inputs, rules)
    result["risk_score"] = inputs["risk_score"].to_numpy()
    result["team_id"] = inputs["team_id"].to_numpy(dtype=object)
    return result, risk


def _add_counts(counts: list[pd.Series]) -> pd.Series:
    """Score counts (index month, risk_score) of several blocks added up."""
    counts = [c for c in counts if len(c)]
    if not counts:
        return pd.Series(0, index=pd.MultiIndex.from_arrays([[], []], names=["month", "risk_score"]), dtype="int64")
    return pd.concat(counts).groupby(level=["month", "risk_score"]).sum()


def first_pass(
    scores: Iterator[tuple[pd.Series, set]], fractions: set[float]
) -> tuple[tuple[pd.Timestamp, pd.Timestamp] | None, list[date], dict[float, pd.Series]]:
    """Month range, months and top-fraction thresholds of the whole run from the
    :func:`block_scores` of every block.

    Returns (None, [], {}) when the run has no patient-month (e.g. every patient died before).
    """
    counts: list[pd.Series] = []
    months: set = set()
    for block_counts, block_months in scores:
        counts.append(block_counts)
        months |= block_months
        if len(counts) >= 8:  # keep the score counts compact
            counts = [_add_counts(counts)]
    if not months:
        return None, [], {}
    month_range = (min(months), max(months))
    return month_range, sorted(m.date() for m in months), thresholds_from_counts(_add_counts(counts), fractions)


def month_inputs(
    engine: Engine, month: date, fractions: set[float], model: str = DEFAULT_MODEL, block_patients: int = BLOCK_PATIENTS
) -> Iterator[tuple[pd.DataFrame, dict[float, pd.Series]]]:
    """The :func:`core.derive.subgroups.inputs.compute_inputs` of the patient-months of ``month``,
    one frame a block of patients (grain: patient_id, month), each with the month thresholds of
    the top ``fractions`` over every patient of the month. Reads only; nothing is stored."""
    with engine.connect() as conn:
        run = run_of(conn, [month], model)
        blocks = patient_blocks(conn, block_patients, [month]) if run else []
        scores = map_blocks(conn, None, block_scores, [(run, b, bool(fractions)) for b in blocks])
        month_range, _, thresholds = first_pass(scores, fractions)
        if month_range is None:
            return
        for block in blocks:
            inputs, _ = block_inputs(conn, run, block, month_range)
            yield inputs, thresholds


def assign_subgroups(
    engine: Engine,
    rules: RuleSet | None = None,
    months: list[date] | None = None,
    model: str = DEFAULT_MODEL,
    block_patients: int = BLOCK_PATIENTS,
    workers: int | None = None,
) -> dict:
    """Assign every attributed patient-month of ``months`` (default: all) and store it.

    Computes the risk scores of the months' years (stored in ``risk_score``), the inputs, the
    rules and the active overrides, then replaces the ``subgroup_assignment`` rows of those
    months (and the risk scores of those years) in one transaction.
    Patients are taken in blocks of ``block_patients`` (by id), so memory follows the block, not
    the network: a first pass over the blocks finds the network-wide month thresholds of the
    top-fraction rules, the second assigns and writes each block. With two or more blocks,
    ``workers`` processes (default :func:`core.derive.blocks.worker_count`) compute blocks side
    by side while this one writes.
    Returns rows, mix (patient-months per subgroup), overridden, months, blocks, seconds and
    parts (wall seconds of this process: first pass, waiting for the second, writing).
    """
    t0 = time.perf_counter()
    rules = rules or load_rules(active_rules_path())
    workers = worker_count() if workers is None else workers
    months = None if months is None else sorted({as_month(m) for m in months})
    with engine.connect() as conn:
        run = run_of(conn, months, model)
        blocks = patient_blocks(conn, block_patients, months) if run else []
    summary = {"rows": 0, "mix": {}, "overridden": 0, "months": 0, "blocks": len(blocks)}
    if not blocks:
        return {**summary, "seconds": round(time.perf_counter() - t0, 2)}
    with worker_pool(engine, workers, len(blocks), while_writing=True) as pool, engine.connect() as conn, conn.begin() as transaction:
        t1 = time.perf_counter()
        month_range, month_dates, thresholds = _first_pass_replacing(conn, pool, run, blocks, rules, workers)
        first = time.perf_counter() - t1
        if month_range is None:  # nothing to assign: the store stays as it was
            transaction.rollback()
            return {**summary, "seconds": round(time.perf_counter() - t0, 2)}
        calls = [(run, block, month_range, rules, thresholds) for block in blocks]
        written, parts = _write_blocks(conn, pool, calls, rules, workers)
        t2 = time.perf_counter()
        transaction.commit()
        parts["write"] += time.perf_counter() - t2
    parts = {"first_pass": first, **parts}
    summary = {**summary, **written, "months": len(month_dates)}
    return {**summary, "seconds": round(time.perf_counter() - t0, 2), "parts": {k: round(v, 2) for k, v in parts.items()}}


def _first_pass_replacing(
    conn, pool: ProcessPoolExecutor | None, run: Run, blocks: list[tuple[str, str]], rules: RuleSet, workers: int
) -> tuple[tuple[pd.Timestamp, pd.Timestamp] | None, list[date], dict[float, pd.Series]]:
    """:func:`first_pass` over the blocks, deleting the stored rows the run replaces: every
    assignment and risk score when the run covers every month (while the blocks are read), else
    the assignments of its months and the risk scores of its years (when it has patient-months)."""
    a, r = SubgroupAssignment.__table__, RiskScore.__table__
    fractions = top_fractions(rules)
    scores = map_blocks(conn, pool, block_scores, [(run, b, bool(fractions)) for b in blocks], workers)
    if run.months is None:  # everything is recomputed: no stale month or year may stay
        conn.execute(delete(a))
        conn.execute(delete(r))
    month_range, month_dates, thresholds = first_pass(scores, fractions)
    if month_range is not None and run.months is not None:
        conn.execute(delete(a).where(a.c.month.in_(month_dates)))
        conn.execute(delete(r).where(r.c.year.in_(list(run.years))))
    return month_range, month_dates, thresholds


def _write_blocks(conn, pool: ProcessPoolExecutor | None, calls: list[tuple], rules: RuleSet, workers: int) -> tuple[dict, dict]:
    """Second pass: each block's assignments with the active overrides applied, inserted with its
    risk scores. Returns (rows, mix, overridden) and the wall seconds spent waiting for the
    blocks (second_pass) and writing them (write)."""
    a, r = SubgroupAssignment.__table__, RiskScore.__table__
    overrides = active_overrides(conn)
    mix = pd.Series(0, index=list(rules.subgroup_ids), dtype="int64")
    rows = overridden = 0
    parts = {"second_pass": 0.0, "write": 0.0}
    t1 = time.perf_counter()
    for result, risk in map_blocks(conn, pool, _block_assignments, calls, workers):
        t2 = time.perf_counter()
        result = apply_overrides(result, overrides)
        insert_frame(conn, r, risk[risk["score"].notna()].astype({"year": int}))
        insert_frame(conn, a, result[ASSIGNMENT_COLUMNS])
        mix = mix.add(result["subgroup"].value_counts(), fill_value=0)
        rows += len(result)
        overridden += int(result["overridden"].sum())
        parts["second_pass"] += t2 - t1
        t1 = time.perf_counter()
        parts["write"] += t1 - t2
    written = {"rows": rows, "mix": {s: int(mix.get(s, 0)) for s in rules.subgroup_ids}, "overridden": overridden}
    return written, parts
