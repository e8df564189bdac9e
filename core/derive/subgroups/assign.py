"""Subgroup assignment of the whole store, block by block.

:func:`assign_subgroups` reads the store block by block (contiguous ranges of patient_id, in
worker processes when it can), computes the inputs, evaluates the rules, applies the active
overrides and replaces the stored rows in one transaction. Two things are not per patient, so a
first pass over the blocks gets them for the whole run: the month thresholds of a top fraction
of risk scores (from the count of each month's scores) and the period whose smallest active
code names a condition group in a reason (the first and last patient-month).

After an import (``import_id``), the run also measures how much the import moved patients that
were not in it: the first pass reads each block's stored subgroups (a fingerprint per patient,
:func:`subgroup_fingerprints`), the second compares them with the new ones, and the count with
example ids is stored in ``import_effect`` (:func:`_record_effect`).
"""

import json
import time
from collections.abc import Iterator
from datetime import date

import numpy as np
import pandas as pd
from sqlalchemy import Engine, Integer, and_, cast, delete, extract, func, insert, or_, select

from core.derive.blocks import BLOCK_PATIENTS, BlockPool, map_blocks, patient_blocks, worker_count, worker_pool
from core.derive.risk import DEFAULT_MODEL
from core.derive.subgroups.evaluate import evaluate_rules, history_flags, thresholds_from_counts, top_fractions
from core.derive.subgroups.frames import (
    Run,
    _as_text,
    _months_clause,
    _patients_clause,
    _read,
    insert_frame,
    load_frames,
    risk_for,
    run_of,
    stored_risk_for,
)
from core.derive.subgroups.inputs import compute_inputs, patient_months, row_scores
from core.derive.subgroups.overrides import active_overrides, apply_overrides
from core.derive.subgroups.rules import RuleSet, active_rules_path, load_rules
from core.store.db import refresh_statistics
from core.store.models import Attribution, ImportEffect, ImportPatient, ImportRun, Patient, RiskScore, SubgroupAssignment
from core.store.months import as_month, month_floor, month_index, month_start_sql
from core.store.queries import create_indexes, drop_secondary_indexes, patient_hashes

EXAMPLES = 5
THRESHOLDS_KEY = "subgroup_thresholds"  # app_setting: the month thresholds of the top-fraction rules, as last derived

ASSIGNMENT_COLUMNS = [
    "patient_id", "month", "subgroup", "team_id", "rule_id", "reason", "risk_score", "overridden", "thin_history", "history_note",
]  # fmt: skip


def subgroup_fingerprints(patient_id: pd.Series, month: pd.Series, subgroup: pd.Series) -> pd.Series:
    """One 64-bit fingerprint of each patient's subgroups by month (the XOR of a hash of each
    (month, subgroup)), indexed by :func:`core.store.queries.patient_hashes` of the patient ids.
    Two fingerprints differ when a month's subgroup differs (or the months do)."""
    if not len(patient_id):
        return pd.Series(dtype="uint64", index=pd.Index([], dtype="uint64"))
    key = patient_hashes(patient_id)
    cells = pd.DataFrame({"m": month_index(month).to_numpy(dtype="int64"), "s": np.asarray(subgroup, dtype=object)})
    cell = pd.util.hash_pandas_object(cells, index=False).to_numpy(dtype="uint64")
    order = np.argsort(key, kind="stable")
    key, cell = key[order], cell[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    return pd.Series(np.bitwise_xor.reduceat(cell, starts), index=pd.Index(key[starts], dtype="uint64"))


def stored_fingerprints(conn, run: Run, patients: tuple[str, str] | None) -> pd.Series:
    """:func:`subgroup_fingerprints` of the subgroups stored now for a block (the run's months)."""
    sa = SubgroupAssignment.__table__.c
    stmt = select(sa.patient_id, _as_text(sa.month), sa.subgroup).where(
        *_patients_clause(sa.patient_id, patients), *_months_clause(sa.month, run.months)
    )
    rows = _read(conn, stmt, ("month",))
    return subgroup_fingerprints(rows["patient_id"], rows["month"], rows["subgroup"])


def block_scores(
    conn, run: Run, patients: tuple[str, str] | None, with_scores: bool, track: bool = False
) -> tuple[pd.Series, set, pd.Series | None]:
    """Pass 1 over a block: how many of its patient-months have each (month, risk score), its
    months and (``track``) the :func:`stored_fingerprints` of its patients (else None).

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
    return counts, set(pm["month"].unique()), stored_fingerprints(conn, run, patients) if track else None


def stored_scores(conn, run: Run, with_scores: bool) -> Iterator[tuple[pd.Series, set, None]]:
    """Pass 1 (:func:`block_scores` of every block, as :func:`first_pass` takes them) from the stored
    risk scores of ``run.model``: one result for the patients whose every patient-month of the
    run has a stored score of its year, then :func:`block_scores` of the others (a patient new to
    the store, or one without a score: unknown sex), 10,000 at a time.

    Only for a run whose months' scores no change can have moved (the derive of new months,
    :func:`core.derive.incremental.derive_months`, decides): a score of year Y is made from the
    conditions active in Y - 1 and the patient's birth date, sex and dual status, and the
    importer marks a condition's change from the month of its dates and a change of those three
    as every month. Reads each attributed patient-month of the run once, with its stored score,
    instead of every patient's conditions and a CMS-HCC model run."""
    a, p, r = Attribution, Patient, RiskScore
    dialect = conn.dialect.name
    year = cast(extract("year", a.month), Integer) if dialect == "postgresql" else cast(func.strftime("%Y", a.month), Integer)
    alive = or_(p.death_date.is_(None), a.month <= month_start_sql(dialect, p.death_date))  # as patient_months
    stmt = (select(a.patient_id, _as_text(a.month), r.score)
            .join(p, p.patient_id == a.patient_id)
            .outerjoin(r, and_(r.patient_id == a.patient_id, r.year == year, r.model == run.model))
            .where(*_months_clause(a.month, run.months), alive))  # fmt: skip
    rows = _read(conn, stmt)
    rows["month"] = month_floor(rows["month"])
    if not with_scores:
        yield _no_counts(), set(rows["month"].unique()), None
        return
    fresh = pd.unique(rows.loc[rows["score"].isna(), "patient_id"].to_numpy(dtype=object))
    kept = rows[~rows["patient_id"].isin(fresh)]
    counts = pd.DataFrame({"month": kept["month"], "risk_score": kept["score"].astype("float64")}).value_counts()
    yield counts, set(rows["month"].unique()), None
    for start in range(0, len(fresh), 10_000):
        yield block_scores(conn, run, sorted(fresh[start : start + 10_000]), True)


def _no_counts() -> pd.Series:
    return pd.Series(0, index=pd.MultiIndex.from_arrays([[], []], names=["month", "risk_score"]), dtype="int64")


def block_inputs(
    conn, run: Run, patients: tuple[str, str] | None, month_range: tuple[pd.Timestamp, pd.Timestamp], history_lookback: int = 6,
    stored_risk: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Pass 2 over a block: the :func:`core.derive.subgroups.inputs.compute_inputs` of its
    patient-months (grain patient_id, month) and its risk scores (grain patient_id, year);
    ``stored_risk``: the scores as stored where every year has one (:func:`stored_risk_for`)."""
    frames = load_frames(conn, run, patients, history_lookback=history_lookback)
    risk = stored_risk_for(conn, frames, run, patients) if stored_risk else risk_for(frames, run.years, run.model)
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
    stored_risk: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rules' assignments of a block (overrides not applied) and its risk scores
    (``stored_risk``: :func:`block_inputs`)."""
    inputs, risk = block_inputs(conn, run, patients, month_range, rules.history.lookback_months, stored_risk)
    result = evaluate_rules(inputs, rules, thresholds)
    result["thin_history"], result["history_note"] = history_flags(inputs, rules)
    result["risk_score"] = inputs["risk_score"].to_numpy()
    result["team_id"] = inputs["team_id"].to_numpy(dtype=object)
    return result, risk


def _add_counts(counts: list[pd.Series]) -> pd.Series:
    """Score counts (index month, risk_score) of several blocks added up."""
    counts = [c for c in counts if len(c)]
    if not counts:
        return _no_counts()
    return pd.concat(counts).groupby(level=["month", "risk_score"]).sum()


def first_pass(
    scores: Iterator[tuple], fractions: set[float], fingerprints: list | None = None
) -> tuple[tuple[pd.Timestamp, pd.Timestamp] | None, list[date], dict[float, pd.Series]]:
    """Month range, months and top-fraction thresholds of the whole run from the
    :func:`block_scores` of every block (their stored fingerprints appended to ``fingerprints``).

    Returns (None, [], {}) when the run has no patient-month (e.g. every patient died before).
    """
    counts: list[pd.Series] = []
    months: set = set()
    for block_counts, block_months, *stored in scores:
        if fingerprints is not None:
            fingerprints.append(stored[0] if stored else None)
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
    import_id: int | None = None,
) -> dict:
    """Assign every attributed patient-month of ``months`` (default: all) and store it.

    Computes the risk scores of the months' years (stored in ``risk_score``), the inputs, the
    rules and the active overrides, then replaces the ``subgroup_assignment`` rows of those
    months (and the risk scores of those years) in one transaction.
    Patients are taken in blocks of ``block_patients`` (by id), so memory follows the block, not
    the network: a first pass over the blocks finds the network-wide month thresholds of the
    top-fraction rules, the second assigns and writes each block. With two or more blocks,
    ``workers`` Dask workers (default :func:`core.derive.blocks.worker_count`; a cluster's with
    ``$DERIVE_SCHEDULER``) compute blocks side by side while this process writes.
    ``import_id``: the import this run derives after; how many patients outside it (and outside
    the imports before it not derived yet: ``import_patient``) changed subgroup is stored in
    ``import_effect`` (once per import), and its ``import_patient`` rows are cleared.
    Returns rows, mix (patient-months per subgroup), overridden, thin_history (patient-months),
    months, blocks, moved (with an ``import_id``), seconds and parts (wall seconds of this
    process: first pass, waiting for the second, writing).
    """
    t0 = time.perf_counter()
    rules = rules or load_rules(active_rules_path())
    workers = worker_count() if workers is None else workers
    months = None if months is None else sorted({as_month(m) for m in months})
    with engine.connect() as conn:
        run = run_of(conn, months, model)
        blocks = patient_blocks(conn, block_patients, months, workers) if run else []
    summary = {"rows": 0, "mix": {}, "overridden": 0, "months": 0, "blocks": len(blocks)}
    if not blocks:
        return {**summary, "seconds": round(time.perf_counter() - t0, 2)}
    with worker_pool(engine, workers, len(blocks), while_writing=True) as pool, engine.connect() as conn, conn.begin() as transaction:
        t1 = time.perf_counter()
        track = import_id is not None and conn.execute(select(ImportEffect.import_id).where(ImportEffect.import_id == import_id)).first() is None
        stored: list | None = [] if track else None
        # a whole run replaces every row: the secondary indexes are dropped for its write and built
        # once after. On SQLite before its delete of the stored rows too (each row was taken out of
        # every index); on PostgreSQL only after the first pass, whose worker processes may read
        # the table (a dropped index locks it until the commit; its delete leaves the indexes be).
        whole, early = run.months is None, conn.dialect.name == "sqlite"
        indexes = drop_secondary_indexes(conn, SubgroupAssignment.__table__) if whole and early else []
        month_range, month_dates, thresholds = _first_pass_replacing(conn, pool, run, blocks, rules, workers, stored)
        first = time.perf_counter() - t1
        if month_range is None:  # nothing to assign: the store stays as it was
            transaction.rollback()
            return {**summary, "seconds": round(time.perf_counter() - t0, 2)}
        save_thresholds(conn, thresholds, None if run.months is None else month_dates)
        calls = [(run, block, month_range, rules, thresholds) for block in blocks]
        if track:
            stored = _outside_imports(conn, stored)
        if whole and not early:  # and the primary key, put back after the write
            indexes = drop_secondary_indexes(conn, SubgroupAssignment.__table__, primary_key=True)
        written, parts = _write_blocks(conn, pool, calls, rules, workers, stored)
        if indexes:
            t2 = time.perf_counter()
            create_indexes(conn, indexes)
            parts["indexes"] = time.perf_counter() - t2
        moved = written.pop("_moved")
        if track:
            written["moved"] = _record_effect(conn, import_id, moved)
        refresh_statistics(conn, [SubgroupAssignment.__tablename__, RiskScore.__tablename__])  # PostgreSQL: for the reads that follow
        t2 = time.perf_counter()
        transaction.commit()
        parts["write"] += time.perf_counter() - t2
    parts = {"first_pass": first, **parts}
    summary = {**summary, **written, "months": len(month_dates)}
    return {**summary, "seconds": round(time.perf_counter() - t0, 2), "parts": {k: round(v, 2) for k, v in parts.items()}}


def _first_pass_replacing(
    conn, pool: BlockPool | None, run: Run, blocks: list[tuple[str, str]], rules: RuleSet, workers: int,
    stored: list | None = None,
) -> tuple[tuple[pd.Timestamp, pd.Timestamp] | None, list[date], dict[float, pd.Series]]:
    """:func:`first_pass` over the blocks, deleting the stored rows the run replaces: every
    assignment and risk score when the run covers every month (while the blocks are read), else
    the assignments of its months and the risk scores of its years (when it has patient-months).
    ``stored``: a list to get each block's stored fingerprints (read before they are deleted:
    worker processes read the committed rows; in this process the blocks are read first)."""
    a, r = SubgroupAssignment.__table__, RiskScore.__table__
    fractions = top_fractions(rules)
    scores = map_blocks(conn, pool, block_scores, [(run, b, bool(fractions), stored is not None) for b in blocks], workers)
    if pool is None and stored is not None:
        scores = list(scores)
    if run.months is None:  # everything is recomputed: no stale month or year may stay
        conn.execute(delete(a))
        conn.execute(delete(r))
    month_range, month_dates, thresholds = first_pass(scores, fractions, stored)
    if month_range is not None and run.months is not None:
        conn.execute(delete(a).where(a.c.month.in_(month_dates)))
        conn.execute(delete(r).where(r.c.year.in_(list(run.years))))
    return month_range, month_dates, thresholds


def save_thresholds(conn, thresholds: dict[float, pd.Series], months: list | None = None) -> None:
    """Keep the month thresholds of the top-fraction rules (:func:`first_pass`) in ``app_setting``
    (key :data:`THRESHOLDS_KEY`), in the caller's transaction, as JSON (floats round-trip exactly).

    ``months``: the months the thresholds were computed for (the others keep their stored
    values); None: every month (the stored ones are replaced). A subgroup override moves no
    score, so it evaluates the rules with these instead of counting every stored score
    (:func:`core.derive.incremental.derive_override`)."""
    from core.store.models import AppSetting
    from core.store.queries import utc_now

    kept = (stored_thresholds(conn) or {}) if months is not None else {}
    if months is not None:
        drop = {pd.Timestamp(m).date().isoformat() for m in months}
        kept = {f: {m: v for m, v in per.items() if m not in drop} for f, per in kept.items()}
    for fraction, series in thresholds.items():
        per = kept.setdefault(repr(float(fraction)), {})
        per.update({pd.Timestamp(m).date().isoformat(): float(v) for m, v in series.items()})
    table = AppSetting.__table__
    conn.execute(delete(table).where(table.c.key == THRESHOLDS_KEY))
    conn.execute(insert(table).values(key=THRESHOLDS_KEY, value=json.dumps(kept), updated_at=utc_now()))


def stored_thresholds(conn) -> dict[str, dict[str, float]] | None:
    """The thresholds :func:`save_thresholds` kept ({fraction repr: {ISO month: threshold}}), or
    None when the store has none (derived before they were kept)."""
    from core.store.models import AppSetting

    value = conn.execute(select(AppSetting.value).where(AppSetting.key == THRESHOLDS_KEY)).scalar_one_or_none()
    return None if value is None else json.loads(value)


def thresholds_of(kept: dict[str, dict[str, float]] | None, fractions: set[float], months) -> dict[float, pd.Series] | None:
    """The kept thresholds of ``fractions`` as :func:`first_pass` gives them (a Series per
    fraction, index month), or None when one of ``months`` (that has a threshold) is missing."""
    if kept is None:
        return None
    out = {}
    for fraction in fractions:
        per = kept.get(repr(float(fraction)))
        if per is None or any(pd.Timestamp(m).date().isoformat() not in per for m in months):
            return None
        index = pd.DatetimeIndex(pd.to_datetime(list(per)), name="month")
        out[fraction] = pd.Series(list(per.values()), index=index, dtype="float64", name="risk_score").sort_index()
    return out


def _outside_imports(conn, stored: list) -> list:
    """The stored fingerprints of each block without the patients of the imports not derived yet."""
    hashes = conn.execute(select(ImportPatient.patient_hash)).scalars().all()
    in_import = np.unique(np.asarray(hashes, dtype=np.int64).view(np.uint64))
    return [fp[~np.isin(fp.index.to_numpy(dtype="uint64"), in_import)] if fp is not None else None for fp in stored]


def _moved(result: pd.DataFrame, before: pd.Series) -> tuple[int, int, list[str]]:
    """Patients of a block with a stored fingerprint ``before`` (compared) and those whose
    subgroup changed (moved, with their ids in order)."""
    now = subgroup_fingerprints(result["patient_id"], result["month"], result["subgroup"])
    common = before.index.intersection(now.index)
    changed = common[before.reindex(common).to_numpy() != now.reindex(common).to_numpy()]
    ids = pd.unique(result["patient_id"].to_numpy(dtype=object))
    by_hash = pd.Series(ids, index=pd.Index(patient_hashes(ids), dtype="uint64"))
    return len(common), len(changed), sorted(by_hash.reindex(changed).tolist())


def _record_effect(conn, import_id: int, moved: dict) -> dict:
    """Store the import's ``import_effect`` row and clear the ``import_patient`` rows it was measured against."""
    row = {"import_id": import_id, "patients_compared": moved["compared"], "patients_moved": moved["moved"],
           "examples": ", ".join(moved["examples"][:EXAMPLES])[:500]}  # fmt: skip
    # The effect belongs to a recorded import: a derive pending for an import id the store does not
    # hold (a hand-set marker, a pruned import log) measures nothing. A re-derive replaces the row.
    known = conn.execute(select(ImportRun.import_id).where(ImportRun.import_id == import_id)).first() is not None
    if known:
        conn.execute(delete(ImportEffect.__table__).where(ImportEffect.__table__.c.import_id == import_id))
        conn.execute(insert(ImportEffect.__table__).values(**row, derived_at=pd.Timestamp.now(tz="UTC").to_pydatetime()))
    conn.execute(delete(ImportPatient.__table__))
    return row


def _write_blocks(
    conn, pool: BlockPool | None, calls: list[tuple], rules: RuleSet, workers: int, stored: list | None = None
) -> tuple[dict, dict]:
    """Second pass: each block's assignments with the active overrides applied, inserted with its
    risk scores; with ``stored`` (each block's fingerprints before), the patients moved. Returns
    (rows, mix, overridden, thin_history and _moved) and the wall seconds spent waiting for the
    blocks (second_pass) and writing them (write)."""
    a, r = SubgroupAssignment.__table__, RiskScore.__table__
    overrides = active_overrides(conn)
    mix = pd.Series(0, index=list(rules.subgroup_ids), dtype="int64")
    rows = overridden = thin = 0
    moved = {"compared": 0, "moved": 0, "examples": []}
    parts = {"second_pass": 0.0, "write": 0.0}
    t1 = time.perf_counter()
    for i, (result, risk) in enumerate(map_blocks(conn, pool, _block_assignments, calls, workers)):
        t2 = time.perf_counter()
        result = apply_overrides(result, overrides)
        if stored is not None and stored[i] is not None:
            compared, changed, examples = _moved(result, stored[i])
            moved["compared"] += compared
            moved["moved"] += changed
            moved["examples"] = (moved["examples"] + examples)[:EXAMPLES]
        thin += int(result["thin_history"].sum())
        insert_frame(conn, r, risk[risk["score"].notna()].astype({"year": int}))
        insert_frame(conn, a, result[ASSIGNMENT_COLUMNS])
        mix = mix.add(result["subgroup"].value_counts(), fill_value=0)
        rows += len(result)
        overridden += int(result["overridden"].sum())
        parts["second_pass"] += t2 - t1
        t1 = time.perf_counter()
        parts["write"] += t1 - t2
    written = {"rows": rows, "mix": {s: int(mix.get(s, 0)) for s in rules.subgroup_ids}, "overridden": overridden,
               "thin_history": thin, "_moved": moved}  # fmt: skip
    return written, parts
