"""Scorecards from additive cells: values, intervals, comparisons and suppression.

:func:`build_scorecard` reads the cell table only (filtered and grouped in SQL), so a scorecard
costs what the cells it reads cost (teams x subgroups x stratum values x months), whatever the
number of patients. Rules, in one place:

- Window: ``month`` (the period month), ``quarter`` (the 3 months ending with it) or ``12m``
  (the 12 months ending with it). Measures with ``window = "sum"`` add the window's months
  (events, member-years, cohorts); ``window = "end"`` measures report the status in the last
  month of the window (their rule already looks back, e.g. the latest HbA1c of 12 months).
- Reading: only the months the figures use: every month of the current, previous and last-year
  windows for summed measures (and the risk score), the last month of each window for
  end-of-window measures, and the current window only for the network. The rows of a stratified
  scorecard are the stratum values with cells in those months (selection or network); a value
  seen only in other months would have no figure and is not listed.
- Comparisons: the previous window of the same length, the same window a year earlier, the
  network (every practice and team, same subgroup and stratum) and the target. A change or gap
  is flagged (``better`` / ``worse``) only when the two 95 % intervals do not overlap
  (core.metrics.stats.intervals_differ).
- Observed / expected for measures with ``risk_adjust``: expected = network rate x (selection
  mean risk score / network mean risk score), the mean risk score being the member-month
  weighted mean of SubgroupAssignment.risk_score over the window (cell ``risk_score_sum``).
  This is indirect standardisation on one covariate; it departs from a full model (no age/sex
  terms beyond what the CMS-HCC score carries).
- Suppression (CMS cell-size rule, counts of 1-10): a figure is suppressed when any count it is
  made of is 1-10: the numerator of a proportion or rate, the denominator of a proportion or
  mean, the non-numerator part of a proportion (denominator - numerator, which subtraction would
  reveal), or the number of patients behind it. For windows longer than a month the patient
  count used is the largest monthly count (a lower bound of the distinct patients, so the rule
  errs towards suppressing). Tables of parts published with their total (strata, teams,
  subgroups) also get complementary suppression, :func:`suppress_table`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from sqlalchemy import Engine, String, func, select, type_coerce, union_all

from core.access.exports import export_csv
from core.access.suppression import load_suppression_rules
from core.derive.measures import MeasureCatalogue, load_measures
from core.metrics.stats import intervals_differ, poisson_exact_interval, t_interval, wilson_interval
from core.store import models
from core.store.months import WINDOWS, as_month, from_index, index_of

SMALL_CELL_MIN = load_suppression_rules().smallest  # CMS cell-size suppression policy: counts of 1 to 10
SMALL_CELL_MAX = load_suppression_rules().largest  # are not published (core/config/suppression.toml)
RISK_METRIC = "risk_score_sum"
FETCH_COLUMNS = ["metric", "month", "stratum_value", "numerator", "denominator", "sum_sq", "patients"]
FETCH_BATCH = 500  # rows turned into columns at a time (see _fetch)
SCALE = {"proportion": 100.0, "rate_per_1000_member_years": 1000.0, "mean": 1.0}
COLUMNS = [
    "measure_id", "name", "tier", "kind", "unit", "direction", "stratum", "stratum_value",
    "numerator", "denominator", "patients", "value", "ci_low", "ci_high", "target", "met_target",
    "previous_value", "last_year_value", "network_value", "expected_value", "observed_expected",
    "change_vs_previous", "change_vs_last_year", "gap_vs_network", "suppressed",
]


@dataclass(frozen=True, kw_only=True)
class Selection:
    """What a scorecard is about. None means all practices / teams / subgroups."""

    practice_id: str | None = None
    team_id: str | None = None
    subgroup: str | None = None
    period: date
    window: str = "month"
    stratum: str = "all"

    def __post_init__(self):
        if self.window not in WINDOWS:
            raise ValueError(f"window must be one of {tuple(WINDOWS)}, got {self.window!r}")
        if self.period.day != 1:
            object.__setattr__(self, "period", self.period.replace(day=1))


# --- reading cells ---------------------------------------------------------------------------


def _cell_statement(*, stratum: str, metrics: list[str] | None, months: tuple[date, date] | list[date],
                    practice_id: str | None, team_id: str | None, subgroup: str | None,
                    team_ids: tuple[str, ...] | None):
    """SELECT of the cell sums per metric, month and stratum value; ``months`` is a (first, last)
    range or a list of months. The filter order matches the covering indexes of models.Cell, so
    SQLite reads them from the index alone, already in GROUP BY order."""
    C = models.Cell
    month = C.month.between(*months) if isinstance(months, tuple) else C.month.in_(months)
    stmt = (
        select(C.metric, type_coerce(C.month, String).label("month"), C.stratum_value, func.sum(C.numerator),
               func.sum(C.denominator), func.sum(C.sum_sq), func.sum(C.patients))
        .where(C.stratum == stratum, month)
        .group_by(C.metric, C.month, C.stratum_value)
    )  # the month as the driver returns it (ISO text on SQLite): parsing each row's date is slower
    if metrics is not None:
        stmt = stmt.where(C.metric.in_(metrics))
    if practice_id is not None:
        stmt = stmt.where(C.practice_id == practice_id)
    if team_id is not None:
        stmt = stmt.where(C.team_id == team_id)
    if subgroup is not None:
        stmt = stmt.where(C.subgroup == subgroup)
    if team_ids is not None:
        stmt = stmt.where(C.team_id.in_(list(team_ids)))
    return stmt


def _fetch(engine: Engine, reads: list[tuple[list[str], tuple[date, date] | list[date]]], **filters) -> list[list]:
    """Cell sums of each (metrics, months) read, in one round trip (UNION ALL of the reads), as
    columns (:data:`FETCH_COLUMNS`).

    Rows are taken in batches and turned into columns at once, so no row object outlives its
    batch: thousands of live rows would be promoted to the oldest garbage-collector generation
    and trigger a full collection every few scorecards (100 ms and more in a large process).
    """
    statements = [_cell_statement(metrics=metrics, months=months, **filters) for metrics, months in reads]
    columns: list[list] = [[] for _ in FETCH_COLUMNS]
    with engine.connect() as conn:
        result = conn.execute(statements[0] if len(statements) == 1 else union_all(*statements))
        for batch in result.partitions(FETCH_BATCH):
            for column, values in zip(columns, zip(*batch)):
                column.extend(values)
    return columns


def _window_reads(sum_metrics: list[str], end_metrics: list[str], ends: list[int],
                  n_months: int) -> list[tuple[list[str], tuple[date, date] | list[date]]]:
    """The (metrics, months) a scorecard reads for windows of ``n_months`` ending at month indexes ``ends``.

    Summed metrics need every month of each window, end-rule metrics only each window's last
    month. A run of consecutive months is read as a range, anything else as a list.
    """
    reads: dict[tuple[int, ...], list[str]] = {}
    window = tuple(sorted({e - i for e in ends for i in range(n_months)}))
    for metrics, months in ((sum_metrics, window), (end_metrics, tuple(sorted(set(ends))))):
        if metrics:
            reads.setdefault(months, []).extend(metrics)
    return [(metrics, (from_index(months[0]), from_index(months[-1])) if 1 < len(months) == months[-1] - months[0] + 1
             else [from_index(m) for m in months]) for months, metrics in reads.items()]


def _cube(columns: list[list], metric_pos: dict[str, int], value_pos: dict[str, int], first: int,
          n_slots: int) -> np.ndarray:
    """Columns of :func:`_fetch` -> array [4, metric, stratum value, month slot] of numerator, denominator, sum_sq, patients.

    Rows of unknown stratum values or outside the slots are dropped; a NULL sum counts as 0.
    """
    cube = np.zeros((4, len(metric_pos), len(value_pos), n_slots))
    if not columns[0]:
        return cube
    metrics, months, values, *sums = columns
    slot_of = {m: index_of(as_month(m)) - first for m in set(months)}
    metric = np.array([metric_pos[m] for m in metrics], dtype=np.int64)
    slot = np.array([slot_of[m] for m in months], dtype=np.int64)
    value = np.array([value_pos.get(v, -1) for v in values], dtype=np.int64)
    data = np.array(sums, dtype=object)
    data = np.where(np.equal(data, None), 0.0, data).astype("float64")
    keep = (value >= 0) & (slot >= 0) & (slot < n_slots)
    np.add.at(cube, (slice(None), metric[keep], value[keep], slot[keep]), data[:, keep])
    return cube


def _window(cube: np.ndarray, end_rule: np.ndarray, end_slot: int, n_months: int) -> np.ndarray:
    """Window sums [4, metric, value]: sums over the window, or the end month for ``end_rule`` metrics.

    The patient count (index 3) is the largest monthly count, a lower bound of the distinct patients.
    """
    lo = max(end_slot - n_months + 1, 0)
    if end_slot < 0:
        return np.zeros(cube.shape[:3])
    summed = cube[:3, :, :, lo:end_slot + 1].sum(axis=3)
    patients = cube[3, :, :, lo:end_slot + 1].max(axis=2)
    out = np.concatenate([summed, patients[None]], axis=0)
    out[:, end_rule, :] = cube[..., end_slot][:, end_rule, :]
    return out


def figure(kind: str, numerator, denominator, sum_sq):
    """(value, ci_low, ci_high) in the measure's unit: % for proportions, per 1,000 member-years, mean."""
    scale = SCALE[kind]
    num, den, sq = (np.asarray(x, dtype="float64") for x in (numerator, denominator, sum_sq))
    if kind == "proportion":
        low, high = wilson_interval(num, den)
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.where(den > 0, num / den, np.nan)
    elif kind == "rate_per_1000_member_years":
        low, high = poisson_exact_interval(num, den)
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.where(den > 0, num / den, np.nan)
    else:
        value, low, high = t_interval(num, den, sq)
    return value * scale, np.asarray(low) * scale, np.asarray(high) * scale


def is_small(count) -> np.ndarray:
    """True for counts of ``SMALL_CELL_MIN`` to ``SMALL_CELL_MAX`` (1 to 10: the CMS cell-size rule)."""
    c = np.asarray(count, dtype="float64")
    return (c >= SMALL_CELL_MIN - 1e-9) & (c <= SMALL_CELL_MAX + 1e-9)


def small_figure(kind: str, numerator, denominator, patients) -> np.ndarray:
    """True where a figure must be suppressed: any count it is built from is 1-10 (see module doc)."""
    num, den, pts = (np.asarray(x, dtype="float64") for x in (numerator, denominator, patients))
    small = is_small(pts)
    if kind == "proportion":
        small |= is_small(num) | is_small(den) | is_small(np.round(den - num, 9))
    elif kind == "rate_per_1000_member_years":
        small |= is_small(num)
    else:
        small |= is_small(den)
    return small


# --- complementary suppression ---------------------------------------------------------------


def suppress_table(df: pd.DataFrame, count_cols, total: bool = True, group_cols=(), value_cols=()) -> pd.DataFrame:
    """Suppress counts of 1-10 in an aggregate table, with complementary suppression.

    ``df``: one row per part (team, subgroup, stratum value, ...), within ``group_cols`` (e.g. per
    measure). Primary: a row with any count of 1-10 is suppressed (so are rows already marked
    ``suppressed``). Complementary (``total=True``: the parts are published with their total):
    within each group, while fewer than two rows are suppressed or the suppressed rows add up to
    1 to 10 in any count column, the published row with the next-smallest first count column
    (non-zero first) is suppressed too, so subtraction from the total recovers neither a cell nor
    a small sum (:func:`complementary_suppression`). Suppressed rows get NaN in ``count_cols``
    and ``value_cols`` and ``suppressed = True``. Returns a new frame.
    """
    out = df.copy()
    count_cols, value_cols = list(count_cols), list(value_cols)
    counts = out[count_cols].to_numpy(dtype="float64")
    hidden = is_small(counts).any(axis=1)
    if "suppressed" in out:
        hidden |= out["suppressed"].fillna(False).to_numpy(dtype=bool)
    if total and hidden.any():
        codes = out.groupby(list(group_cols), sort=False).ngroup().to_numpy() if group_cols else np.zeros(len(out), int)
        hidden = complementary_suppression(counts, codes, hidden)
    for col in count_cols + value_cols:
        out[col] = out[col].astype("float64").where(~hidden, np.nan)
    out["suppressed"] = hidden
    return out


def complementary_suppression(counts: np.ndarray, groups: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """Rows to hide so that no hidden part, nor a small sum of them, follows from the group totals.

    ``counts`` [row, column] are the parts' counts, ``groups`` [row] any integer label of the
    table (the parts of one total), ``hidden`` [row] the primary suppression. Within each group
    that has a hidden row, while fewer than two rows are hidden or the hidden rows add up to 1-10
    in any column, the next published row is hidden too: rows with a positive first count by
    increasing count (then position), then the other rows the same way; rows whose first count is
    NaN are never chosen. Returns the new mask. All groups advance together, one row per step,
    so the cost is (rows x largest group) array operations, not a Python loop per group.
    With ``complementary = false`` in core/config/suppression.toml the mask is returned unchanged.
    """
    hidden = np.asarray(hidden, dtype=bool).copy()
    if not hidden.any() or not load_suppression_rules().complementary:
        return hidden
    counts = np.asarray(counts, dtype="float64").reshape(len(hidden), -1)
    labels, code = np.unique(groups, return_inverse=True)
    code = code.reshape(-1)
    n_groups, first = len(labels), counts[:, 0]
    open_ = np.flatnonzero(~hidden & ~np.isnan(first))
    order = open_[np.lexsort((open_, first[open_], ~(first[open_] > 0), code[open_]))]  # by group, then pick order
    rank = np.arange(len(order)) - np.searchsorted(code[order], code[order])  # position within its group's queue
    active = np.bincount(code[hidden], minlength=n_groups) > 0
    for step in range(int(rank.max()) + 1 if len(rank) else 0):
        n_hidden = np.bincount(code[hidden], minlength=n_groups)
        sums = np.stack([np.bincount(code[hidden], weights=counts[hidden, j], minlength=n_groups)
                         for j in range(counts.shape[1])], axis=1)  # row order, as part[mask].sum(axis=0)
        needs = active & ((n_hidden < 2) | is_small(sums).any(axis=1))
        pick = order[(rank == step) & needs[code[order]]]
        if not len(pick):
            break
        hidden[pick] = True
    return hidden


def figure_counts(kinds, numerator, denominator, patients) -> np.ndarray:
    """The counts a published figure gives away, [row, 4]: patients, then by kind the denominator
    (proportions, means; member-months for costs), the numerator (proportions, rates) and the
    non-numerator part of a proportion; 0 where a column does not apply (a cost in USD, member-years)."""
    kinds = np.asarray(kinds)
    num, den, pts = (np.asarray(x, dtype="float64") for x in (numerator, denominator, patients))
    proportion = kinds == "proportion"
    den_shown = np.where(proportion | (kinds == "mean") | (kinds == "cost_pmpm"), den, 0.0)
    num_shown = np.where(proportion | (kinds == "rate_per_1000_member_years"), num, 0.0)
    rest = np.where(proportion, np.round(den - num, 9), 0.0)
    return np.nan_to_num(np.stack([pts, den_shown, num_shown, rest], axis=1))


WINDOW_COUNTS_NOTE = ("Counts of windows longer than a month are not published here (two neighbouring windows and the month "
                      "leaving them would give a month's count back): pick the one-month window for counts.")


def window_counts_published(window: str | int) -> bool:
    """Whether the counts of a window may be published where suppression applies.

    Two neighbouring windows of 12 months and the month leaving them give the month entering
    (12 months to November - 12 months to October + November a year earlier = this November), so
    where suppression applies only one-month windows publish their counts; longer windows publish
    their value and interval, and no total (dollars, revenue) that a published per-member figure
    turns back into a count. ``window``: a key of :data:`WINDOWS` or a number of months. True
    everywhere when complementary suppression is off.
    """
    months = window if isinstance(window, int) else WINDOWS.get(window, 1)
    return months <= 1 or not load_suppression_rules().complementary


def hide_complements(figures: pd.DataFrame, counts: np.ndarray, parts: np.ndarray, group_cols, blank_cols) -> pd.DataFrame:
    """Complementary suppression of figures published with their total ("All") rows.

    ``figures`` carry the primary suppression (column ``suppressed``); ``counts`` [row, column]
    are their exact counts (:func:`figure_counts`), ``parts`` marks the rows that add up to the
    total row of their ``group_cols``. Parts get :func:`complementary_suppression` within each
    group; rows hidden now get NaN in ``blank_cols``. Returns a new frame.
    """
    out = figures.copy()
    parts = np.asarray(parts, dtype=bool)
    codes = out.groupby(list(group_cols), sort=False).ngroup().to_numpy()
    hidden = np.array(out["suppressed"], dtype=bool)
    rows = np.flatnonzero(parts)
    hidden[rows] = complementary_suppression(np.asarray(counts)[rows], codes[rows], hidden[rows])
    for col in blank_cols:
        out[col] = out[col].astype("float64").where(~hidden, np.nan)
    out["suppressed"] = hidden
    return out


# --- the scorecard ---------------------------------------------------------------------------


def _better(direction, a, b) -> np.ndarray:
    """True where ``a`` is better than ``b`` given the direction ("higher" / "lower", scalar or array)."""
    higher = np.asarray(direction) == "higher"
    a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    return np.where(higher, a > b, a < b)


def _flag(direction, low, high, value, other_value, other_low, other_high, suppressed) -> np.ndarray:
    """"better" / "worse" where the intervals do not overlap and neither figure is suppressed, else ""."""
    differ = np.asarray(intervals_differ(low, high, other_low, other_high), dtype=bool) & ~np.asarray(suppressed, dtype=bool)
    return np.where(differ, np.where(_better(direction, value, other_value), "better", "worse"), "")


def _figures(sums: np.ndarray, kinds: np.ndarray) -> dict[str, np.ndarray]:
    """value, low, high (in the measure's unit) and small (suppress) from flat window sums [4, n]."""
    num, den, sq, pts = sums
    out = {k: np.full(len(kinds), np.nan) for k in ("value", "low", "high")}
    out["small"] = np.zeros(len(kinds), dtype=bool)
    for kind in SCALE:
        mask = kinds == kind
        if mask.any():
            value, low, high = figure(kind, num[mask], den[mask], sq[mask])
            out["value"][mask], out["low"][mask], out["high"][mask] = value, low, high
            out["small"][mask] = small_figure(kind, num[mask], den[mask], pts[mask])
    return out


def build_scorecard(engine: Engine, selection: Selection, team_ids: tuple[str, ...] | None = None,
                    catalogue: MeasureCatalogue | None = None, suppress: bool = True) -> pd.DataFrame:
    """Every measure applicable to the selection, from cells. Columns: :data:`COLUMNS`.

    ``suppress`` False publishes exact counts (the "exact" policy of core.access.suppression, for
    a user with patient-level access to every team of the selection).

    Grain: measure (measure and stratum value when ``selection.stratum`` is not ``all``; those
    rows also get complementary suppression as parts of the total). ``team_ids`` restricts the
    selection to those teams (access scope; network figures are aggregates of the whole network
    and are not restricted).
    """
    catalogue = catalogue or load_measures()
    ms = [m for m in catalogue.measures if m.applies_to(selection.subgroup)]
    if not ms:
        return pd.DataFrame(columns=COLUMNS)
    values, windows, whole_network = _read_windows(engine, selection, ms, team_ids)
    k, v = len(ms), len(values)
    flat = {key: w[:, :k, :].reshape(4, k * v) for key, w in windows.items()}
    f = _window_figures(flat, np.repeat([m.kind for m in ms], v))
    if not suppress:
        for figures in f.values():
            figures["small"] = np.zeros_like(figures["small"])
    expected, observed_expected = _risk_adjusted(ms, v, windows, f)
    small = hidden = f["cur"]["small"]
    if suppress and selection.stratum != "all":  # the stratum values of a measure are parts of its total
        counts = np.stack([flat["cur"][1], flat["cur"][0], flat["cur"][3]], axis=1)
        hidden = complementary_suppression(counts, np.repeat(np.arange(k), v), small | is_small(counts).any(axis=1))
    network_value = np.where(f["net"]["small"], np.nan, f["net"]["value"])
    if whole_network:  # the network value is the row's own value: hide it wherever the row is hidden
        network_value = np.where(hidden, np.nan, network_value)
    return _card_frame(ms, selection.stratum, values, flat, f, expected, observed_expected, network_value, small, hidden)


def _read_windows(engine: Engine, selection: Selection, ms: list, team_ids: tuple[str, ...] | None):
    """The stratum values and the window sums [4 sums, measures + risk, values] of the selection's
    current, previous and last-year windows and of the network's current window."""
    n = WINDOWS[selection.window]
    end = index_of(selection.period)
    first = end - 12 - n + 1  # earliest month of the last-year window (and of the previous one)
    ends = [end, end - n, end - 12]  # the current, previous and last-year windows
    sums = [m.id for m in ms if m.window != "end"] + [RISK_METRIC]
    ends_only = [m.id for m in ms if m.window == "end"]
    filters = dict(stratum=selection.stratum, subgroup=selection.subgroup)
    sel = _fetch(engine, _window_reads(sums, ends_only, ends, n), practice_id=selection.practice_id,
                 team_id=selection.team_id, team_ids=team_ids, **filters)
    whole_network = selection.practice_id is None and selection.team_id is None and team_ids is None
    net = sel if whole_network else _fetch(engine, _window_reads(sums, ends_only, ends[:1], n), practice_id=None,
                                           team_id=None, team_ids=None, **filters)
    values = ["all"]
    if selection.stratum != "all":
        values = sorted(set(sel[2]) | set(net[2])) or ["all"]
    metric_pos = {m.id: i for i, m in enumerate(ms)} | {RISK_METRIC: len(ms)}
    value_pos = {v: i for i, v in enumerate(values)}
    end_rule = np.array([m.window == "end" for m in ms] + [False])
    end_slot, slots = end - first, end - first + 1
    sel_cube = _cube(sel, metric_pos, value_pos, first, slots)
    net_cube = sel_cube if net is sel else _cube(net, metric_pos, value_pos, first, slots)
    windows = {"cur": _window(sel_cube, end_rule, end_slot, n), "prev": _window(sel_cube, end_rule, end_slot - n, n),
               "ly": _window(sel_cube, end_rule, end_slot - 12, n), "net": _window(net_cube, end_rule, end_slot, n)}
    return values, windows, whole_network


def _window_figures(flat: dict[str, np.ndarray], kinds: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """:func:`_figures` of every window, in one pass over all of them (fewer ppf calls)."""
    every = _figures(np.concatenate(list(flat.values()), axis=1), np.tile(kinds, len(flat)))
    size = len(kinds)
    return {key: {name: x[i * size:(i + 1) * size] for name, x in every.items()} for i, key in enumerate(flat)}


def _risk_adjusted(ms: list, v: int, windows: dict[str, np.ndarray], f: dict) -> tuple[np.ndarray, np.ndarray]:
    """Expected value and observed / expected of the risk-adjusted rates (NaN for the others)."""
    k = len(ms)
    adjust = np.repeat([m.risk_adjust and m.kind == "rate_per_1000_member_years" for m in ms], v)

    def mean_risk(key):
        num, den = windows[key][0, k, :], windows[key][1, k, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.tile(np.where(den > 0, num / den, np.nan), k)

    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.where(adjust, f["net"]["value"] * mean_risk("cur") / mean_risk("net"), np.nan)
        observed_expected = np.where(adjust, f["cur"]["value"] / expected, np.nan)
    return expected, observed_expected


def _card_frame(ms: list, stratum: str, values: list, flat: dict, f: dict, expected, observed_expected, network_value,
                small, hidden) -> pd.DataFrame:  # fmt: skip
    """The scorecard rows (:data:`COLUMNS`): figures of hidden rows blanked, flags from the intervals."""
    k, v = len(ms), len(values)
    cur = f["cur"]
    kinds = np.repeat([m.kind for m in ms], v)
    direction = np.repeat([m.direction for m in ms], v)
    target = np.repeat([np.nan if m.target is None else float(m.target) for m in ms], v)
    met = _better(direction, cur["value"], target) | (cur["value"] == target)

    def shown(x):
        return np.where(hidden, np.nan, x)

    return pd.DataFrame({
        "measure_id": np.repeat([m.id for m in ms], v), "name": np.repeat([m.name for m in ms], v),
        "tier": np.repeat([m.tier for m in ms], v), "kind": kinds, "unit": np.repeat([m.unit for m in ms], v),
        "direction": direction, "stratum": stratum, "stratum_value": np.tile(values, k),
        "numerator": shown(flat["cur"][0]), "denominator": shown(flat["cur"][1]), "patients": shown(flat["cur"][3]),
        "value": shown(cur["value"]), "ci_low": shown(cur["low"]), "ci_high": shown(cur["high"]), "target": target,
        "met_target": np.where(np.isnan(cur["value"]) | np.isnan(target) | hidden, None, met).astype(object),
        "previous_value": np.where(f["prev"]["small"], np.nan, f["prev"]["value"]),
        "last_year_value": np.where(f["ly"]["small"], np.nan, f["ly"]["value"]),
        "network_value": network_value, "expected_value": shown(expected), "observed_expected": shown(observed_expected),
        **{col: np.where(hidden, "", _flag(direction, cur["low"], cur["high"], cur["value"], f[key]["value"],
                                           f[key]["low"], f[key]["high"], small | f[key]["small"]))
           for col, key in (("change_vs_previous", "prev"), ("change_vs_last_year", "ly"), ("gap_vs_network", "net"))},
        "suppressed": hidden,
    }, columns=COLUMNS)  # fmt: skip


def format_scorecard(card: pd.DataFrame, fmt: str = "text") -> str:
    """The scorecard as CSV, JSON (records) or a plain-text table."""
    if fmt == "csv":
        return export_csv(card)
    if fmt == "json":
        return card.to_json(orient="records", indent=2, date_format="iso")
    view = card[["measure_id", "stratum_value", "numerator", "denominator", "value", "ci_low", "ci_high", "target",
                 "previous_value", "last_year_value", "network_value", "change_vs_previous", "change_vs_last_year",
                 "gap_vs_network", "suppressed"]].copy()
    if (view["stratum_value"] == "all").all():
        view = view.drop(columns="stratum_value")
    return view.to_string(index=False, float_format=lambda x: f"{x:,.1f}", na_rep="-")
