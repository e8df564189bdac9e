"""Patient-month facts and additive cells (DESIGN section 9).

:func:`build_cells` gathers every metric provider's per-patient-month rows (the outcome
measures of core/derive/measures.py, the costs of core/derive/costs.py, member-months and risk-score sums),
attaches each attributed patient-month to its practice, team, subgroup and equity strata, adds
them up into :class:`core.store.models.Cell` rows and replaces the cell table in one transaction.
It works through the patients in blocks (every value of a cell is a sum over patients), so
memory follows the block size, not the network. Scorecards read cells only.

Metrics written here besides the measures and costs
- ``member_months``: numerator = denominator = 1 per attributed patient-month.
- ``risk_score_sum``: numerator = the month's risk score (SubgroupAssignment.risk_score),
  denominator = 1 where a score exists, sum_sq = score squared. Used for observed / expected.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from sqlalchemy import Engine, delete, insert, select

from core.derive.blocks import process_pool
from core.derive.measures import (
    MeasureCatalogue,
    StoreFrames,
    load_measures,
    load_store_frames,
    month_date,
    month_index,
    patient_month_flags,
    read_columns,
)
from core.store import models
from core.store.db import copy_rows

STRATA = ("age_band", "sex", "race_ethnicity", "language", "dual_status", "deprivation_decile")
UNASSIGNED = "unassigned"
UNKNOWN = "unknown"
INSERT_BATCH = 100_000
# Patients per block of build_cells: peak memory follows the block (~6 GB at 100,000 patients x
# 24 months, so ~1.5 GB per worker at 25,000), and each block's queries are indexed range scans.
BLOCK_PATIENTS = 25_000
WORKERS = 2  # this product's reference machine has 2 cores
CELL_COLUMNS = ["practice_id", "team_id", "subgroup", "month", "stratum", "stratum_value", "metric",
                "numerator", "denominator", "sum_sq", "patients"]
METRIC_COLUMNS = ["patient_id", "month", "metric", "numerator", "denominator", "sum_sq"]


# --- equity strata -------------------------------------------------------------------------


def age_band(age: pd.Series) -> pd.Series:
    """Age bands of the equity view: 0-17, 18-44, 45-64, 65-74, 75+ (unknown when missing)."""
    bins = [-1, 17, 44, 64, 74, 200]
    labels = ["0-17", "18-44", "45-64", "65-74", "75+"]
    return pd.cut(age, bins=bins, labels=labels).astype("object").fillna(UNKNOWN).astype(str)


def deprivation_band(decile: pd.Series) -> pd.Series:
    """Area deprivation deciles in bands of two: 1-2 (least deprived) ... 9-10 (most)."""
    d = pd.to_numeric(decile, errors="coerce")
    low = ((d - 1) // 2) * 2 + 1
    band = low.astype("Int64").astype(str) + "-" + (low + 1).astype("Int64").astype(str)
    return band.where(d.between(1, 10), UNKNOWN).astype(str)


def race_ethnicity(race: pd.Series, ethnicity: pd.Series) -> pd.Series:
    """One race/ethnicity stratum: Hispanic or Latino when the ethnicity says so, else the race."""
    eth = ethnicity.fillna("").astype(str).str.lower()
    hispanic = eth.str.contains("hispanic") & ~eth.str.contains(r"\bnot\b|\bnon", regex=True)
    r = race.fillna("").astype(str).str.strip().replace("", UNKNOWN)
    return r.where(~hispanic, "hispanic_or_latino").astype(str)


def _age_years(birth: pd.Series, m: np.ndarray) -> np.ndarray:
    """Whole years of age at the end of month index ``m``."""
    b = pd.DatetimeIndex(birth)
    end_year, end_month = m // 12, m % 12 + 1
    # At the month's end, the birthday of that year has passed iff birth month <= end month.
    return end_year - b.year.to_numpy() - (b.month.to_numpy() > end_month).astype(int)


def patient_month_dimensions(attribution: pd.DataFrame, assignments: pd.DataFrame, patients: pd.DataFrame,
                             months: Iterable | None = None) -> pd.DataFrame:
    """Practice, team, subgroup, risk score and equity strata of every attributed patient-month.

    Grain: patient_id, m (integer month index). Columns: patient_id, m, practice_id, team_id,
    subgroup (``unassigned`` without an assignment), risk_score, and one column per stratum.
    """
    att = pd.DataFrame({"patient_id": attribution["patient_id"].astype(str).to_numpy(),
                        "m": month_index(attribution["month"]).to_numpy(),
                        "practice_id": attribution["practice_id"].astype(str).to_numpy(),
                        "team_id": attribution["team_id"].astype(str).to_numpy()}).dropna(subset=["m"])
    att["m"] = att["m"].astype("int64")
    if months is not None:
        att = att[att["m"].isin(set(month_index(list(months)).dropna().astype(int)))]
    att = att.drop_duplicates(["patient_id", "m"]).reset_index(drop=True)

    sub = pd.DataFrame({"patient_id": assignments["patient_id"].astype(str).to_numpy(),
                        "m": month_index(assignments["month"]).to_numpy(),
                        "subgroup": assignments["subgroup"].astype(str).to_numpy(),
                        "risk_score": pd.to_numeric(assignments["risk_score"], errors="coerce").to_numpy()})
    sub = sub.dropna(subset=["m"]).astype({"m": "int64"}).drop_duplicates(["patient_id", "m"])
    dims = att.merge(sub, on=["patient_id", "m"], how="left")
    dims["subgroup"] = dims["subgroup"].fillna(UNASSIGNED).astype(str)

    pts = patients.drop_duplicates("patient_id")
    pts = pd.DataFrame({
        "patient_id": pts["patient_id"].astype(str).to_numpy(),
        "birth_date": pd.to_datetime(pts["birth_date"], errors="coerce").to_numpy(),
        "sex": pts["sex"].fillna(UNKNOWN).astype(str).to_numpy(),
        "race_ethnicity": race_ethnicity(pts["race"], pts["ethnicity"]).to_numpy(),
        "language": pts["language"].fillna(UNKNOWN).astype(str).replace("", UNKNOWN).to_numpy(),
        "dual_status": np.where(pts["dual_status"].fillna(False).astype(bool), "dual", "not_dual"),
        "deprivation_decile": deprivation_band(pts["deprivation_decile"]).to_numpy(),
    })
    dims = dims.merge(pts, on="patient_id", how="left")
    age = _age_years(dims["birth_date"], dims["m"].to_numpy())
    dims["age_band"] = age_band(pd.Series(age, index=dims.index, dtype="float64"))
    for col in STRATA:
        dims[col] = dims[col].fillna(UNKNOWN).astype(str)
    return dims.drop(columns="birth_date")


# --- metric providers ----------------------------------------------------------------------


def cost_metrics_wide(engine: Engine, months: list, patients: tuple[str, str] | None = None) -> WideMetrics:
    """The cost provider's wide rows (``core.derive.costs.patient_month_cost_wide``) of the patients in
    the inclusive id range ``patients`` (all if None): one row per patient-month, one column per
    metric, each row one member-month (denominator 1)."""
    from core.derive import costs

    frame = costs.patient_month_cost_wide(engine, months, patients)
    return WideMetrics(frame, [c for c in frame.columns if c not in ("patient_id", "month")])


def _base_metrics(dims: pd.DataFrame) -> pd.DataFrame:
    mm = pd.DataFrame({"patient_id": dims["patient_id"], "month": dims["m"], "metric": "member_months",
                       "numerator": 1.0, "denominator": 1.0, "sum_sq": 1.0})
    scored = dims.dropna(subset=["risk_score"])
    rs = pd.DataFrame({"patient_id": scored["patient_id"], "month": scored["m"], "metric": "risk_score_sum",
                       "numerator": scored["risk_score"].astype("float64"), "denominator": 1.0,
                       "sum_sq": scored["risk_score"].astype("float64") ** 2})
    return pd.concat([mm, rs], ignore_index=True)


def _as_month_index(values) -> np.ndarray:
    """Integer month indexes of ints (already indexes), dates or date strings; NaN where missing."""
    values = pd.Series(values)
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype="float64")
    return month_index(values).to_numpy(dtype="float64")


def _factorized_map(column: pd.Series, convert) -> np.ndarray:
    """``convert`` applied to the distinct values only (fast on tens of millions of repeated ids/months).

    ``convert`` takes a Series of distinct values and returns numbers; missing values give NaN.
    """
    codes, uniques = pd.factorize(column)
    mapped = np.asarray(convert(pd.Series(np.asarray(uniques))), dtype="float64")
    out = np.full(len(codes), np.nan)
    valid = codes >= 0
    out[valid] = mapped[codes[valid]]
    return out


# --- aggregation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WideMetrics:
    """Metric rows given wide: ``frame`` has patient_id, month (integer month index, date or
    date string) and one numerator column per name in ``metrics``. Each row counts as
    denominator 1 and sum_sq = numerator squared, for every metric (as the cost provider's
    long rows do). Aggregated wide, then melted: 12+ times fewer rows to add up."""

    frame: pd.DataFrame
    metrics: list[str]


def _dims_rows(part: pd.DataFrame, patient_index: pd.Index, key_index: pd.Index, m0: int, n_months: int) -> np.ndarray:
    """Row of ``dims`` of each metric row (by patient_id and month); -1 where not attributed."""
    met_m = _factorized_map(part["month"], _as_month_index)
    pid = _factorized_map(part["patient_id"], lambda u: patient_index.get_indexer(u.astype(str)))
    pid = np.nan_to_num(pid, nan=-1.0).astype("int64")
    ok = (pid >= 0) & (met_m >= m0) & (met_m < m0 + n_months)
    row = np.full(len(part), -1, dtype="int64")
    row[ok] = key_index.get_indexer(pid[ok].astype("int64") * n_months + (met_m[ok].astype("int64") - m0))
    return row


def aggregate_cells(dims: pd.DataFrame, metrics: pd.DataFrame | list[pd.DataFrame | WideMetrics],
                    strata: Iterable[str] = STRATA) -> pd.DataFrame:
    """Add patient-month metric rows into cells.

    ``dims``: output of :func:`patient_month_dimensions`. ``metrics``: one frame or a list of frames
    (one per provider) with patient_id, month (integer month index), metric, numerator,
    denominator, sum_sq (several rows of one patient_id, month and metric are added up), or
    :class:`WideMetrics`; rows of patient-months that are not attributed are dropped. Grain of the result: practice_id,
    team_id, subgroup, month, stratum, stratum_value, metric; ``patients`` = distinct patients
    in the cell.
    """
    if dims.empty:
        return pd.DataFrame(columns=CELL_COLUMNS)
    m0 = int(dims["m"].min())
    n_months = int(dims["m"].max()) - m0 + 1
    patient_index = pd.Index(dims["patient_id"].unique())
    dims_key = patient_index.get_indexer(dims["patient_id"]).astype("int64") * n_months + (dims["m"].to_numpy() - m0)
    key_index = pd.Index(dims_key)

    parts = [metrics] if isinstance(metrics, pd.DataFrame) else list(metrics)
    wide_parts = [p for p in parts if isinstance(p, WideMetrics) and len(p.frame) and p.metrics]
    parts = [p for p in parts if isinstance(p, pd.DataFrame)]
    rows, names, nums, dens, sqs = [], [], [], [], []
    metric_names: list[str] = []
    for part in parts:  # mapped part by part: the frames can be tens of millions of rows
        if part.empty:
            continue
        row = _dims_rows(part, patient_index, key_index, m0, n_months)
        keep = row >= 0
        codes, uniques = pd.factorize(part["metric"].to_numpy()[keep])
        lookup = []
        for name in uniques:
            if name not in metric_names:
                metric_names.append(name)
            lookup.append(metric_names.index(name))
        rows.append(row[keep])
        names.append(np.asarray(lookup, dtype="int64")[codes] if len(codes) else codes.astype("int64"))
        nums.append(part["numerator"].to_numpy(dtype="float64")[keep])
        dens.append(part["denominator"].to_numpy(dtype="float64")[keep])
        sqs.append(part["sum_sq"].fillna(0.0).to_numpy(dtype="float64")[keep])
    for part in wide_parts:
        for name in part.metrics:
            if name not in metric_names:
                metric_names.append(name)
    if not rows and not wide_parts:
        return pd.DataFrame(columns=CELL_COLUMNS)
    empty_i, empty_f = np.zeros(0, dtype="int64"), np.zeros(0, dtype="float64")
    row, metric_codes = np.concatenate([*rows, empty_i]), np.concatenate([*names, empty_i])
    num, den, sq = np.concatenate([*nums, empty_f]), np.concatenate([*dens, empty_f]), np.concatenate([*sqs, empty_f])
    metric_names = np.asarray(metric_names, dtype=object)

    n_metrics = max(len(metric_names), 1)
    pm_key = row * n_metrics + metric_codes
    seen = np.zeros(len(dims) * n_metrics, dtype=bool)
    seen[pm_key] = True
    if seen.sum() < len(pm_key):  # a provider sent several rows for a patient-month and metric: add them up
        pm = pd.DataFrame({"k": pm_key, "num": num, "den": den, "sq": sq}).groupby("k", sort=False).sum()
        row, metric_codes = pm.index.to_numpy() // n_metrics, pm.index.to_numpy() % n_metrics
        num, den, sq = pm["num"].to_numpy(), pm["den"].to_numpy(), pm["sq"].to_numpy()
    del seen, pm_key
    unit_cols = ["practice_id", "team_id", "subgroup"]
    unit_codes = dims.groupby(unit_cols, sort=False).ngroup().to_numpy()
    units = dims[unit_cols].drop_duplicates().reset_index(drop=True)  # row i = group i (first appearance)
    base = (unit_codes[row].astype("int64") * n_months + (dims["m"].to_numpy()[row] - m0)) * n_metrics + metric_codes

    # First add up by unit, month, metric and the full equity profile (all strata at once), then
    # roll that much smaller table up once per stratum. ``patients`` counts patient-month rows,
    # now one per patient, month and metric.
    strata = list(strata)
    stratum_codes, stratum_values, profile = [], [], np.zeros(len(dims), dtype="int64")
    for stratum in strata:
        codes, values = pd.factorize(dims[stratum].to_numpy())
        stratum_codes.append(codes)
        stratum_values.append(np.asarray(values, dtype=object))
        profile = profile * len(values) + codes
    profile_codes, profiles = pd.factorize(profile)
    n_profiles = max(len(profiles), 1)
    fine = pd.DataFrame({"k": base * n_profiles + profile_codes[row], "num": num, "den": den, "sq": sq, "n": 1})
    fine = fine.groupby("k", sort=False).sum()
    if wide_parts:
        metric_pos = {name: i for i, name in enumerate(metric_names)}
        fines = [fine] + [_aggregate_wide(p, dims, patient_index, key_index, m0, n_months, unit_codes, profile_codes,
                                          n_profiles, n_metrics, metric_pos) for p in wide_parts]
        fine = pd.concat(fines).groupby(level=0, sort=False).sum()
    fine_key = fine.index.to_numpy()
    fine_base, fine_profile = fine_key // n_profiles, fine_key % n_profiles
    first_row = pd.Series(np.arange(len(dims))).groupby(profile_codes).first().to_numpy()  # a dims row per profile

    frames = []
    for j, stratum in enumerate(["all", *strata]):
        if stratum == "all":
            value_of_profile, s_values = np.zeros(n_profiles, dtype="int64"), np.asarray(["all"], dtype=object)
        else:
            value_of_profile, s_values = stratum_codes[j - 1][first_row], stratum_values[j - 1]
        n_values = len(s_values)
        agg = fine.groupby(fine_base * n_values + value_of_profile[fine_profile], sort=False).sum()
        k = agg.index.to_numpy()
        value_code, rest = k % n_values, k // n_values
        metric_code, rest = rest % n_metrics, rest // n_metrics
        month_off, unit = rest % n_months, rest // n_months
        unit_frame = units.iloc[unit]
        frames.append(pd.DataFrame({
            "practice_id": unit_frame["practice_id"].to_numpy(), "team_id": unit_frame["team_id"].to_numpy(),
            "subgroup": unit_frame["subgroup"].to_numpy(), "m": month_off + m0, "stratum": stratum,
            "stratum_value": s_values[value_code], "metric": metric_names[metric_code],
            "numerator": agg["num"].to_numpy(), "denominator": agg["den"].to_numpy(),
            "sum_sq": agg["sq"].to_numpy(), "patients": agg["n"].to_numpy(dtype="int64"),
        }))
    cells = pd.concat(frames, ignore_index=True)
    lookup = {i: month_date(i) for i in cells["m"].unique()}
    cells["month"] = cells["m"].map(lookup)
    return cells[CELL_COLUMNS]


def _aggregate_wide(part: WideMetrics, dims: pd.DataFrame, patient_index: pd.Index, key_index: pd.Index, m0: int,
                    n_months: int, unit_codes: np.ndarray, profile_codes: np.ndarray, n_profiles: int, n_metrics: int,
                    metric_pos: dict[str, int]) -> pd.DataFrame:
    """Add up wide metric rows by unit, month and equity profile, then melt the sums into the
    fine keys of :func:`aggregate_cells` (columns num, den, sq, n; index = fine key)."""
    row = _dims_rows(part.frame, patient_index, key_index, m0, n_months)
    keep = row >= 0
    row = row[keep]
    values = part.frame[part.metrics].to_numpy(dtype="float64")[keep]
    base0 = unit_codes[row].astype("int64") * n_months + (dims["m"].to_numpy()[row] - m0)
    group_key = base0 * n_profiles + profile_codes[row]
    k = len(part.metrics)
    sums = pd.DataFrame(np.hstack([values, values * values]), copy=False).groupby(group_key, sort=False).sum()
    counts = pd.Series(1, index=group_key).groupby(level=0, sort=False).size().reindex(sums.index).to_numpy(dtype="float64")
    g = sums.index.to_numpy()
    g_base, g_profile = g // n_profiles, g % n_profiles
    matrix = sums.to_numpy()
    frames = []
    for j, name in enumerate(part.metrics):
        key = (g_base * n_metrics + metric_pos[name]) * n_profiles + g_profile
        frames.append(pd.DataFrame({"num": matrix[:, j], "den": counts, "sq": matrix[:, k + j], "n": counts.astype("int64")},
                                   index=pd.Index(key, name="k")))
    return pd.concat(frames)


def write_cells(engine: Engine, cells: pd.DataFrame) -> int:
    """Replace the cell table with ``cells`` in one transaction (driver executemany in big batches
    on SQLite, ``COPY`` on PostgreSQL).

    Rows go in primary-key order, and the secondary indexes are dropped and rebuilt inside the
    same transaction, which is several times faster than maintaining them row by row.
    """
    table = models.Cell.__table__
    cells = cells.sort_values(CELL_COLUMNS[:7], kind="stable")
    columns = [cells[c].tolist() for c in CELL_COLUMNS]
    with engine.begin() as conn:
        conn.execute(delete(table))
        for index in table.indexes:
            index.drop(conn, checkfirst=True)  # a store made before an index was added lacks it
        dialect = conn.dialect.name
        if dialect == "sqlite":
            # Compiled once, tuples straight to the driver (SQLite stores a Date as ISO text).
            month = CELL_COLUMNS.index("month")
            columns[month] = [d.isoformat() for d in columns[month]]
            compiled = insert(table).compile(dialect=conn.dialect, column_keys=CELL_COLUMNS)
            rows = zip(*(columns[CELL_COLUMNS.index(key)] for key in compiled.positiontup))
            while batch := list(itertools.islice(rows, INSERT_BATCH)):
                conn.exec_driver_sql(str(compiled), batch)
        elif dialect == "postgresql":
            copy_rows(conn, table.name, CELL_COLUMNS, zip(*columns))
        else:
            rows = zip(*columns)
            while batch := [dict(zip(CELL_COLUMNS, r)) for r in itertools.islice(rows, INSERT_BATCH)]:
                conn.execute(insert(table), batch)
        for index in table.indexes:
            index.create(conn)
    if engine.dialect.name == "sqlite":
        # Fresh planner statistics of the whole store (cells are the last derived table). Without
        # them SQLite picks e.g. the attribution (team_id, month) index over the primary key for
        # a patient's scope check, 500 ms instead of 0.1 ms at 100,000 patients. The analysis
        # limit makes it a sample (sqlite.org/lang_analyze.html): milliseconds, not minutes.
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA analysis_limit=1000")
            conn.exec_driver_sql("ANALYZE")
    return len(cells)


def patient_blocks(engine: Engine, size: int) -> list[tuple[str, str]]:
    """Inclusive ``patient_id`` ranges of at most ``size`` attributed patients each, in id order."""
    A = models.Attribution
    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(select(A.patient_id).distinct().order_by(A.patient_id))]
    return [(ids[i], ids[min(i + size, len(ids)) - 1]) for i in range(0, len(ids), size)]


def add_cells(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Cells of two disjoint sets of patients added up (every value column is additive)."""
    if a.empty or b.empty:
        return b if a.empty else a
    keys = CELL_COLUMNS[:7]
    return pd.concat([a, b], ignore_index=True).groupby(keys, as_index=False, sort=False)[CELL_COLUMNS[7:]].sum()[CELL_COLUMNS]


def block_cells(engine: Engine, months: list[date], patients: tuple[str, str] | None = None,
                catalogue: MeasureCatalogue | None = None) -> tuple[pd.DataFrame, dict]:
    """Cells of the patients whose id is in the inclusive range ``patients`` (all if None), and
    seconds per part. Every metric is a per-patient sum, so the cells of disjoint blocks add up."""
    t0 = time.perf_counter()
    frames: StoreFrames = load_store_frames(engine, patients)
    S = models.SubgroupAssignment
    assignments = read_columns(engine, [S.patient_id, S.month, S.subgroup, S.risk_score], ["month"], patients)
    t1 = time.perf_counter()
    dims = patient_month_dimensions(frames.attribution, assignments, frames.patients)
    parts = [patient_month_flags(frames, months, catalogue or load_measures(), month_as_index=True), _base_metrics(dims)]
    del frames, assignments  # release the raw tables before the cost provider loads its own
    t2 = time.perf_counter()
    costs = cost_metrics_wide(engine, months, patients)  # aggregated wide: far fewer rows than long ones
    if len(costs.frame):
        parts.append(costs)
    t3 = time.perf_counter()
    cells = aggregate_cells(dims, parts)
    t4 = time.perf_counter()
    return cells, {"load": t1 - t0, "flags": t2 - t1, "costs": t3 - t2, "aggregate": t4 - t3}


def _block_worker(url: str, months: list[date], patients: tuple[str, str]) -> tuple[pd.DataFrame, dict]:
    """:func:`block_cells` in a worker process (its own engine)."""
    from core.store.db import make_engine

    engine = make_engine(url)
    try:
        return block_cells(engine, months, patients)
    finally:
        engine.dispose()


def _can_use_workers(engine: Engine) -> bool:
    """Worker processes need a database they can open themselves (not an in-memory SQLite)."""
    return engine.dialect.name != "sqlite" or engine.url.database not in (None, "", ":memory:")


def build_cells(engine: Engine, catalogue: MeasureCatalogue | None = None, block_patients: int = BLOCK_PATIENTS,
                workers: int = WORKERS) -> dict:
    """Rebuild every cell from the store. Returns a summary (rows, months, metrics, blocks, seconds per step).

    Patients are taken in blocks of ``block_patients`` (by id), so memory is bounded by the
    block, not by the network; the block cells are added up (:func:`add_cells`). With two or more
    blocks, ``workers`` processes build blocks side by side (the default catalogue only).
    """
    t0 = time.perf_counter()
    A = models.Attribution
    with engine.connect() as conn:
        months = sorted(month_date(i) for i in set(month_index([r[0] for r in conn.execute(select(A.month).distinct())]).dropna().astype(int)))
    blocks = patient_blocks(engine, block_patients)
    parts = {"load": 0.0, "flags": 0.0, "costs": 0.0, "aggregate": 0.0}
    cells = pd.DataFrame(columns=CELL_COLUMNS)

    def add(result: tuple[pd.DataFrame, dict]) -> None:
        nonlocal cells
        block, seconds = result
        cells = add_cells(cells, block)
        for key, value in seconds.items():
            parts[key] += value

    if len(blocks) <= 1:
        add(block_cells(engine, months, None, catalogue))
    elif workers > 1 and catalogue is None and _can_use_workers(engine):
        url = engine.url.render_as_string(hide_password=False)
        with process_pool(min(workers, len(blocks))) as pool:
            for result in pool.map(_block_worker, itertools.repeat(url), itertools.repeat(months), blocks):
                add(result)
    else:
        for block in blocks:
            add(block_cells(engine, months, block, catalogue))
    t3 = time.perf_counter()
    rows = write_cells(engine, cells)
    t4 = time.perf_counter()
    return {
        "rows": rows,
        "months": len(months),
        "blocks": len(blocks),
        "metrics": sorted(cells["metric"].unique().tolist()) if rows else [],
        "seconds": {**{k: round(v, 2) for k, v in parts.items()}, "write": round(t4 - t3, 2), "total": round(t4 - t0, 2)},
    }
