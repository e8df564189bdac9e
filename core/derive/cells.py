"""Patient-month facts and additive cells.

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

import dataclasses
import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine, delete, insert, select

from core.config import config_path, load_toml
from core.derive.blocks import BLOCK_PATIENTS, map_blocks, patient_blocks, worker_count, worker_pool
from core.derive.measures import (
    MeasureCatalogue,
    StoreFrames,
    load_measures,
    load_store_frames,
    patient_month_flag_sets,
    patient_month_flags,
    read_bounds,
    read_columns,
    read_encounters,
)
from core.store import models
from core.store.db import copy_rows
from core.store.months import from_index, month_index, year_and_month
from core.store.queries import on_distinct

# The equity dimensions the cells are cut by (computed in patient_month_dimensions); their
# labels, order and bands are data: core/config/strata.toml.
STRATA = ("age_band", "sex", "race_ethnicity", "language", "dual_status", "deprivation_decile")
STRATA_PATH = config_path("strata.toml")
UNASSIGNED = "unassigned"
UNKNOWN = "unknown"
INSERT_BATCH = 100_000
CELL_COLUMNS = ["practice_id", "team_id", "subgroup", "month", "stratum", "stratum_value", "metric",
                "numerator", "denominator", "sum_sq", "patients"]


# --- equity strata -------------------------------------------------------------------------


@dataclass(frozen=True)
class Strata:
    """core/config/strata.toml: the equity strata's labels (display order) and bands."""

    labels: dict[str, str]
    default: str
    age_upper: tuple[int, ...]
    deprivation_deciles_per_band: int


@cache
def load_strata(path: Path = STRATA_PATH) -> Strata:
    """Load and check the strata file: every dimension of :data:`STRATA` once, rising age bands."""
    raw = load_toml(path)
    try:
        labels = {str(s["id"]): str(s["label"]) for s in raw["strata"]}
        default = next((str(s["id"]) for s in raw["strata"] if s.get("default")), next(iter(labels), ""))
        out = Strata(labels, default, tuple(int(a) for a in raw["bands"]["age_upper"]),
                     int(raw["bands"]["deprivation_deciles_per_band"]))  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: missing or malformed setting ({exc!r})") from exc
    if sorted(labels) != sorted(STRATA) or len(raw["strata"]) != len(STRATA):
        raise ValueError(f"{path}: [[strata]] must list each of {', '.join(STRATA)} once")
    ages = out.age_upper
    if not ages or ages[0] < 0 or any(b <= a for a, b in zip(ages, ages[1:])):
        raise ValueError(f"{path}: bands.age_upper must be rising ages >= 0")
    if not 1 <= out.deprivation_deciles_per_band <= 10:
        raise ValueError(f"{path}: bands.deprivation_deciles_per_band must be 1 to 10")
    return out


def age_band(age: pd.Series) -> pd.Series:
    """Age bands of the equity view (strata.toml bands.age_upper): 0-17, 18-44, 45-64, 65-74, 75+
    with the shipped bands (unknown when missing)."""
    upper = load_strata().age_upper
    lows = [0, *(a + 1 for a in upper)]
    labels = [f"{lo}-{hi}" for lo, hi in zip(lows, upper)] + [f"{lows[-1]}+"]
    return pd.cut(age, bins=[-1, *upper, np.inf], labels=labels).astype("object").fillna(UNKNOWN).astype(str)


def deprivation_band(decile: pd.Series) -> pd.Series:
    """Area deprivation deciles in bands (strata.toml; two deciles each: 1-2 least deprived ... 9-10 most)."""
    width = load_strata().deprivation_deciles_per_band
    d = pd.to_numeric(decile, errors="coerce")
    low = ((d - 1) // width) * width + 1
    high = np.minimum(low + width - 1, 10)
    band = low.astype("Int64").astype(str) + ("-" + high.astype("Int64").astype(str) if width > 1 else "")
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
    end_year, end_month = year_and_month(m)
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


def cost_metrics_wide(engine: Engine, months: list, patients: tuple[str, str] | None = None, dated: bool = False,
                      dims: pd.DataFrame | None = None, encounters: pd.DataFrame | None = None) -> WideMetrics:  # fmt: skip
    """The cost provider's wide rows (``core.derive.costs.patient_month_cost_wide``) of the patients in
    the inclusive id range ``patients`` (all if None): one row per patient-month, one column per
    metric, each row one member-month (denominator 1). Grain: patient_id, month. ``dated``: the
    months' dates bound the encounter reads of a block too (a few late months). ``dims``: the
    same patients' attributed patient-months of ``months`` (:func:`patient_month_dimensions`),
    which the provider then takes instead of reading the attribution again; ``encounters``
    likewise their encounters (``core.derive.costs.load_cost_inputs``)."""
    from core.derive import costs

    attribution = None
    if dims is not None:
        attribution = pd.DataFrame({
            "patient_id": dims["patient_id"].to_numpy(),
            "month": on_distinct(dims["m"], lambda ms: [from_index(int(m)) for m in ms]),
            **{c: dims[c].to_numpy() for c in ("practice_id", "team_id", "subgroup")},
        })  # fmt: skip
    frame = costs.patient_month_cost_wide(engine, months, patients, dated, attribution, encounters)
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
    """``convert`` (a Series of distinct values -> numbers) applied to the distinct values only
    (tens of millions of repeated ids and months); missing values give NaN."""
    return on_distinct(column, lambda distinct: convert(pd.Series(distinct)), np.nan, "float64")


# --- aggregation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WideMetrics:
    """Metric rows given wide: ``frame`` has patient_id, month (integer month index, date or
    date string) and one numerator column per name in ``metrics``. Each row counts as
    denominator 1 and sum_sq = numerator squared, for every metric (as the cost provider's
    long rows do). Aggregated wide, then melted: 12+ times fewer rows to add up."""

    frame: pd.DataFrame
    metrics: list[str]


@dataclass(frozen=True)
class _Layout:
    """Where each attributed patient-month of ``dims`` goes in the cells.

    A metric row finds its dims row by patient and month; a dims row has a unit (practice,
    team, subgroup), a month offset from ``m0`` and an equity profile (its value of every
    stratum at once).
    """

    m0: int  # first month index
    n_months: int
    months: np.ndarray  # month index of each dims row
    patient_index: pd.Index  # distinct patient ids
    key_index: pd.Index  # dims row of each key patient position x n_months + month offset
    unit_codes: np.ndarray  # unit of each dims row
    units: pd.DataFrame  # practice_id, team_id, subgroup of each unit (row i = unit i)
    strata: tuple[str, ...]
    stratum_codes: tuple[np.ndarray, ...]  # per stratum: the value code of each dims row
    stratum_values: tuple[np.ndarray, ...]  # per stratum: its values
    profile_codes: np.ndarray  # equity profile of each dims row
    n_profiles: int

    @classmethod
    def of(cls, dims: pd.DataFrame, strata: Iterable[str]) -> _Layout:
        months = dims["m"].to_numpy()
        m0 = int(months.min())
        n_months = int(months.max()) - m0 + 1
        patient_index = pd.Index(dims["patient_id"].unique())
        key_index = pd.Index(patient_index.get_indexer(dims["patient_id"]).astype("int64") * n_months + (months - m0))
        unit_cols = ["practice_id", "team_id", "subgroup"]
        unit_codes = dims.groupby(unit_cols, sort=False).ngroup().to_numpy()
        units = dims[unit_cols].drop_duplicates().reset_index(drop=True)  # row i = group i (first appearance)
        strata = tuple(strata)
        codes, values, profile = [], [], np.zeros(len(dims), dtype="int64")
        for stratum in strata:
            stratum_codes, stratum_values = pd.factorize(dims[stratum].to_numpy())
            codes.append(stratum_codes)
            values.append(np.asarray(stratum_values, dtype=object))
            profile = profile * len(stratum_values) + stratum_codes
        profile_codes, profiles = pd.factorize(profile)
        return cls(m0, n_months, months, patient_index, key_index, unit_codes, units, strata, tuple(codes),
                   tuple(values), profile_codes, max(len(profiles), 1))  # fmt: skip

    def rows_of(self, part: pd.DataFrame) -> np.ndarray:
        """Dims row of each metric row (by patient_id and month); -1 where not attributed."""
        met_m = _factorized_map(part["month"], _as_month_index)
        pid = _factorized_map(part["patient_id"], lambda u: self.patient_index.get_indexer(u.astype(str)))
        pid = np.nan_to_num(pid, nan=-1.0).astype("int64")
        ok = (pid >= 0) & (met_m >= self.m0) & (met_m < self.m0 + self.n_months)
        row = np.full(len(part), -1, dtype="int64")
        row[ok] = self.key_index.get_indexer(pid[ok].astype("int64") * self.n_months + (met_m[ok].astype("int64") - self.m0))
        return row

    def unit_months(self, row: np.ndarray) -> np.ndarray:
        """Unit and month of dims rows as one code: unit x n_months + month offset."""
        return self.unit_codes[row].astype("int64") * self.n_months + (self.months[row] - self.m0)


@dataclass(frozen=True)
class _Rows:
    """Long metric rows placed on dims rows: dims row, metric code, numerator, denominator, sum_sq."""

    row: np.ndarray
    metric: np.ndarray
    num: np.ndarray
    den: np.ndarray
    sq: np.ndarray


def aggregate_cells(dims: pd.DataFrame, metrics: pd.DataFrame | list[pd.DataFrame | WideMetrics],
                    strata: Iterable[str] = STRATA) -> pd.DataFrame:
    """Add patient-month metric rows into cells.

    ``dims``: output of :func:`patient_month_dimensions`. ``metrics``: one frame or a list of frames
    (one per provider) with patient_id, month (integer month index), metric, numerator,
    denominator, sum_sq (several rows of one patient_id, month and metric are added up), or
    :class:`WideMetrics`; rows of patient-months that are not attributed are dropped.
    Grain of the result: practice_id, team_id, subgroup, month, stratum, stratum_value, metric;
    ``patients`` = distinct patients in the cell.

    Steps: sum by unit, month, metric and the full equity profile (all strata at once), then
    roll that much smaller table up once per stratum.
    """
    parts = [metrics] if isinstance(metrics, pd.DataFrame) else list(metrics)
    wide_parts = [p for p in parts if isinstance(p, WideMetrics) and len(p.frame) and p.metrics]
    long_parts = [p for p in parts if isinstance(p, pd.DataFrame) and not p.empty]
    if dims.empty or (not long_parts and not wide_parts):
        return pd.DataFrame(columns=CELL_COLUMNS)
    # Sums follow the row order, so the rows go in one order whatever the database returned
    # (patient, month; each provider's rows by their patient-month): the cells of a set of
    # patients come out the same to the bit, read with any query (core.derive.incremental).
    dims = dims.sort_values(["patient_id", "m"], kind="stable").reset_index(drop=True)
    layout = _Layout.of(dims, strata)
    rows, names = _long_rows(long_parts, layout)
    for part in wide_parts:
        names += [name for name in dict.fromkeys(part.metrics) if name not in names]
    n_metrics = max(len(names), 1)
    fine = _profile_sums(_add_repeats(rows, len(dims), n_metrics), layout, n_metrics)
    if wide_parts:
        metric_pos = {name: i for i, name in enumerate(names)}
        fines = [fine] + [_aggregate_wide(p, layout, n_metrics, metric_pos) for p in wide_parts]
        fine = pd.concat(fines).groupby(level=0, sort=False).sum()
    return _roll_up(fine, layout, np.asarray(names, dtype=object))


def _long_rows(parts: list[pd.DataFrame], layout: _Layout) -> tuple[_Rows, list[str]]:
    """The attributed rows of long metric frames, and the metric names in order of appearance.

    Mapped part by part: the frames can be tens of millions of rows.
    """
    rows, codes_of, nums, dens, sqs = [], [], [], [], []
    names: list[str] = []
    for part in parts:
        row = layout.rows_of(part)
        keep = row >= 0
        # the metric of each kept row, numbered in order of appearance: factorized whole first (on
        # its codes when categorical, in Arrow when text), then those codes of the kept rows
        every, metrics = pd.factorize(part["metric"])
        codes, used = pd.factorize(every[keep])
        uniques = np.asarray(metrics, dtype=object)[used]
        lookup = []
        for name in uniques:
            if name not in names:
                names.append(name)
            lookup.append(names.index(name))
        rows.append(row[keep])
        codes_of.append(np.asarray(lookup, dtype="int64")[codes] if len(codes) else codes.astype("int64"))
        nums.append(part["numerator"].to_numpy(dtype="float64")[keep])
        dens.append(part["denominator"].to_numpy(dtype="float64")[keep])
        sqs.append(part["sum_sq"].fillna(0.0).to_numpy(dtype="float64")[keep])
    empty_i, empty_f = np.zeros(0, dtype="int64"), np.zeros(0, dtype="float64")
    return _Rows(np.concatenate([*rows, empty_i]), np.concatenate([*codes_of, empty_i]), np.concatenate([*nums, empty_f]),
                 np.concatenate([*dens, empty_f]), np.concatenate([*sqs, empty_f])), names  # fmt: skip


def _add_repeats(rows: _Rows, n_dims: int, n_metrics: int) -> _Rows:
    """One row per dims row and metric: a provider's several rows of a patient-month and metric added up."""
    pm_key = rows.row * n_metrics + rows.metric
    seen = np.zeros(n_dims * n_metrics, dtype=bool)
    seen[pm_key] = True
    if seen.sum() == len(pm_key):
        return rows
    pm = pd.DataFrame({"k": pm_key, "num": rows.num, "den": rows.den, "sq": rows.sq}).groupby("k", sort=False).sum()
    key = pm.index.to_numpy()
    return _Rows(key // n_metrics, key % n_metrics, pm["num"].to_numpy(), pm["den"].to_numpy(), pm["sq"].to_numpy())


def _profile_sums(rows: _Rows, layout: _Layout, n_metrics: int) -> pd.DataFrame:
    """Long rows added up by unit, month, metric and equity profile (columns num, den, sq, n;
    index = the fine key ((unit x n_months + month) x n_metrics + metric) x n_profiles + profile).
    ``n`` counts the rows, one per patient, month and metric: the cell's patients."""
    order = np.argsort(rows.row, kind="stable")
    rows = _Rows(rows.row[order], rows.metric[order], rows.num[order], rows.den[order], rows.sq[order])
    base = layout.unit_months(rows.row) * n_metrics + rows.metric
    key = base * layout.n_profiles + layout.profile_codes[rows.row]
    fine = pd.DataFrame({"k": key, "num": rows.num, "den": rows.den, "sq": rows.sq, "n": 1})
    return fine.groupby("k", sort=False).sum()


def _aggregate_wide(part: WideMetrics, layout: _Layout, n_metrics: int, metric_pos: dict[str, int]) -> pd.DataFrame:
    """Add up wide metric rows by unit, month and equity profile, then melt the sums into the
    fine keys of :func:`_profile_sums` (columns num, den, sq, n; index = fine key)."""
    row = layout.rows_of(part.frame)
    keep = np.flatnonzero(row >= 0)
    keep = keep[np.argsort(row[keep], kind="stable")]  # in dims order (see aggregate_cells)
    row = row[keep]
    values = part.frame[part.metrics].to_numpy(dtype="float64")[keep]
    n_profiles = layout.n_profiles
    group_key = layout.unit_months(row) * n_profiles + layout.profile_codes[row]
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


def _roll_up(fine: pd.DataFrame, layout: _Layout, metric_names: np.ndarray) -> pd.DataFrame:
    """Cells of every stratum (and ``all``) from the sums by equity profile of :func:`_profile_sums`."""
    n_profiles, n_metrics = layout.n_profiles, max(len(metric_names), 1)
    fine_key = fine.index.to_numpy()
    fine_base, fine_profile = fine_key // n_profiles, fine_key % n_profiles
    first_row = pd.Series(np.arange(len(layout.profile_codes))).groupby(layout.profile_codes).first().to_numpy()
    frames = []
    for j, stratum in enumerate(["all", *layout.strata]):
        if stratum == "all":
            value_of_profile, s_values = np.zeros(n_profiles, dtype="int64"), np.asarray(["all"], dtype=object)
        else:
            value_of_profile, s_values = layout.stratum_codes[j - 1][first_row], layout.stratum_values[j - 1]
        n_values = len(s_values)
        agg = fine.groupby(fine_base * n_values + value_of_profile[fine_profile], sort=False).sum()
        k = agg.index.to_numpy()
        value_code, rest = k % n_values, k // n_values
        metric_code, rest = rest % n_metrics, rest // n_metrics
        month_off, unit = rest % layout.n_months, rest // layout.n_months
        unit_frame = layout.units.iloc[unit]
        frames.append(pd.DataFrame({
            "practice_id": unit_frame["practice_id"].to_numpy(), "team_id": unit_frame["team_id"].to_numpy(),
            "subgroup": unit_frame["subgroup"].to_numpy(), "m": month_off + layout.m0, "stratum": stratum,
            "stratum_value": s_values[value_code], "metric": metric_names[metric_code],
            "numerator": agg["num"].to_numpy(), "denominator": agg["den"].to_numpy(),
            "sum_sq": agg["sq"].to_numpy(), "patients": agg["n"].to_numpy(dtype="int64"),
        }))
    cells = pd.concat(frames, ignore_index=True)
    lookup = {i: from_index(i) for i in cells["m"].unique()}
    cells["month"] = cells["m"].map(lookup)
    return cells[CELL_COLUMNS]


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
    # Fresh planner statistics of the whole store (cells are the last derived table). Without
    # them SQLite picks e.g. the attribution (team_id, month) index over the primary key for a
    # patient's scope check, 500 ms instead of 0.1 ms at 100,000 patients; the analysis limit
    # makes it a sample (sqlite.org/lang_analyze.html): milliseconds, not minutes. PostgreSQL
    # samples 30,000 rows a table (core.store.db.refresh_statistics).
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA analysis_limit=1000")
        conn.exec_driver_sql("ANALYZE")
    return len(cells)


def add_cells(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Cells of two disjoint sets of patients added up (every value column is additive).
    Grain: practice_id, team_id, subgroup, month, stratum, stratum_value, metric."""
    if a.empty or b.empty:
        return b if a.empty else a
    keys = CELL_COLUMNS[:7]
    return pd.concat([a, b], ignore_index=True).groupby(keys, as_index=False, sort=False)[CELL_COLUMNS[7:]].sum()[CELL_COLUMNS]


def block_cells(engine: Engine, months: list[date], patients: tuple[str, str] | list[str] | None = None,
                catalogue: MeasureCatalogue | None = None, assignments: pd.DataFrame | None = None,
                bounded: bool = False, metrics: tuple[str, ...] | None = None,
                reach: tuple[list[date], tuple[str, ...]] | None = None) -> tuple[pd.DataFrame, dict]:  # fmt: skip
    """Cells of the patients whose id is in the inclusive range ``patients`` (all if None; or a
    list of ids), and seconds per part. Every metric is a per-patient sum, so the cells of
    disjoint blocks add up. ``assignments`` (patient_id, month, subgroup, risk_score): the
    patients' subgroups when not the stored ones (an incremental derive, before it writes).
    Grain of the cells: practice_id, team_id, subgroup, month, stratum, stratum_value, metric.

    ``bounded`` (the derive of new months, ``months`` the late ones): only the rows those months
    need are read, back from the first of them by the longest look-back of each table
    (:func:`core.derive.measures.read_bounds`, from the measure catalogue), and the costs of the
    encounters starting in them; the cells are the same as from every row.

    ``metrics``: the cells of those measures only (ids of the catalogue; no member-months, risk
    scores or costs), each the same as among every metric's cells.

    ``reach`` (months, metrics): also the cells of those measures in those months (earlier ones),
    from the same read (bounded from the earliest month): what a second call with ``metrics``
    would add, without reading the block's rows again (100,000 patients, one new month and the
    forward-looking measures of the month before: 1.6 s of reads per block of 25,000 patients)."""
    t0 = time.perf_counter()
    catalogue = catalogue or load_measures()

    def only(catalogue, ids):
        return dataclasses.replace(catalogue, measures=tuple(m for m in catalogue.measures if m.id in ids))

    if metrics is not None:
        catalogue = only(catalogue, metrics)
    reach_months = list(reach[0]) if reach else []
    bounds = read_bounds(min([*months, *reach_months]), catalogue) if bounded and months else None
    # the block's encounters, read once for the rules and the cost provider (a bounded read holds
    # the rules' kinds only: the provider then reads its months' own)
    encounters = None
    if metrics is None and bounds is None:
        from core.derive.costs import encounter_columns

        encounters = read_encounters(engine, patients, extra=encounter_columns())
    frames: StoreFrames = load_store_frames(engine, patients, bounds, encounters)
    S = models.SubgroupAssignment
    if assignments is None:
        since = [S.month >= bounds.first] if bounds is not None else []
        assignments = read_columns(engine, [S.patient_id, S.month, S.subgroup, S.risk_score], ["month"], patients, since)
    t1 = time.perf_counter()
    dims = patient_month_dimensions(frames.attribution, assignments, frames.patients, months)
    if reach_months:  # both sets of months from one preparation of the rows
        flags, reach_flags = patient_month_flag_sets(frames, [(months, catalogue), (reach_months, only(catalogue, reach[1]))],
                                                     month_as_index=True, coded=True)  # fmt: skip
        reach_dims = patient_month_dimensions(frames.attribution, assignments, frames.patients, reach_months)
        reach_parts = [reach_flags]
    else:
        flags = patient_month_flags(frames, months, catalogue, month_as_index=True, coded=True)
    parts = [flags]
    if metrics is None:
        parts.append(_base_metrics(dims))
    del frames, assignments  # release the raw tables (the encounters aside) before the cost provider loads its own
    t2 = time.perf_counter()
    if metrics is None:
        costs = cost_metrics_wide(engine, months, patients, dated=bounded, dims=dims, encounters=encounters)  # aggregated wide: far fewer rows than long ones
        if len(costs.frame):
            parts.append(costs)
    del encounters  # before the cells' sums, the block's peak of memory
    t3 = time.perf_counter()
    cells = aggregate_cells(dims, parts)
    if reach_months:
        earlier = aggregate_cells(reach_dims, reach_parts)
        cells = pd.concat([f for f in (earlier, cells) if len(f)] or [cells], ignore_index=True)
    t4 = time.perf_counter()
    return cells, {"load": t1 - t0, "flags": t2 - t1, "costs": t3 - t2, "aggregate": t4 - t3}


def patient_cells(engine: Engine, months: list[date], patients: list[str], assignment_sets: list[pd.DataFrame],
                  catalogue: MeasureCatalogue | None = None, only_months: list[date] | None = None) -> list[pd.DataFrame]:  # fmt: skip
    """The cells of the patients ``patients`` (a block of ids, as :func:`block_cells` takes it)
    under each of ``assignment_sets`` (patient_id, month, subgroup, risk_score): the steps of
    :func:`block_cells`, with the patients' rows, measure flags and costs read once (they do not
    depend on the subgroup). A subgroup override's derive takes the difference of the patient's
    cells before and after (``core.derive.incremental``). ``only_months``: the cells of those
    months only (the flags are evaluated over ``months`` all the same; a month's cells are its
    patient-months' rows alone).

    One measure depends on the block, not only on its patients: polypharmacy has no rows when
    the block has no medication at all. A patient without medicines gets its rows here when the
    store has any (a full derive's block of 25,000 patients without a single medicine, while
    others have them, would differ)."""
    frames: StoreFrames = load_store_frames(engine, patients)
    medication_data = False
    if not len(frames.medications):  # as in the full derive's block (a medicine of anyone): approximated by the store
        with engine.connect() as conn:
            medication_data = conn.execute(select(models.Medication.patient_id).limit(1)).first() is not None
    flags = patient_month_flags(frames, months, catalogue or load_measures(), month_as_index=True, medication_data=medication_data,
                                coded=True)  # fmt: skip
    costs = cost_metrics_wide(engine, months, patients)
    out = []
    for assignments in assignment_sets:
        dims = patient_month_dimensions(frames.attribution, assignments, frames.patients, only_months)
        parts = [flags, _base_metrics(dims), *([costs] if len(costs.frame) else [])]
        out.append(aggregate_cells(dims, parts))
    return out


def build_cells(engine: Engine, catalogue: MeasureCatalogue | None = None, block_patients: int = BLOCK_PATIENTS,
                workers: int | None = None) -> dict:
    """Rebuild every cell from the store. Returns a summary (rows, months, metrics, blocks, seconds per step).

    Patients are taken in blocks of ``block_patients`` (by id), so memory is bounded by the
    block, not by the network; the block cells are added up (:func:`add_cells`). With two or more
    blocks, ``workers`` Dask workers (default :func:`core.derive.blocks.worker_count`; a cluster's
    with ``$DERIVE_SCHEDULER``) build blocks side by side (the default catalogue only).
    """
    t0 = time.perf_counter()
    workers = worker_count() if workers is None else workers
    with engine.connect() as conn:
        months = _attributed_months(conn)
        blocks = patient_blocks(conn, block_patients)
    calls = [(months, block, catalogue) for block in blocks] if len(blocks) > 1 else [(months, None, catalogue)]
    parts = {"load": 0.0, "flags": 0.0, "costs": 0.0, "aggregate": 0.0}
    cells = pd.DataFrame(columns=CELL_COLUMNS)
    # the cells of a block are small: every block is handed to the workers at once
    with worker_pool(engine, workers if catalogue is None else 1, len(blocks)) as pool:
        for block, seconds in map_blocks(engine, pool, block_cells, calls):
            cells = add_cells(cells, block)
            for key, value in seconds.items():
                parts[key] += value
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


def _attributed_months(conn) -> list[date]:
    """Every month with an attribution, oldest first."""
    found = month_index(conn.execute(select(models.Attribution.month).distinct()).scalars().all())
    return sorted(from_index(i) for i in set(found.dropna().astype(int)))
