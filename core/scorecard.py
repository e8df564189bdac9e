"""Scorecards from additive cells: values, intervals, comparisons and suppression (DESIGN section 4).

:func:`build_scorecard` reads the cell table only (filtered and grouped in SQL), so a scorecard
costs the same at any network size. Rules, in one place:

- Window: ``month`` (the period month), ``quarter`` (the 3 months ending with it) or ``12m``
  (the 12 months ending with it). Measures with ``window = "sum"`` add the window's months
  (events, member-years, cohorts); ``window = "end"`` measures report the status in the last
  month of the window (their rule already looks back, e.g. the latest HbA1c of 12 months).
- Comparisons: the previous window of the same length, the same window a year earlier, the
  network (every practice and team, same subgroup and stratum) and the target. A change or gap
  is flagged (``better`` / ``worse``) only when the two 95 % intervals do not overlap
  (core.stats.intervals_differ).
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
from sqlalchemy import Engine, func, select

from core import models
from core.measures import MeasureCatalogue, load_measures, month_date
from core.stats import intervals_differ, poisson_exact_interval, t_interval, wilson_interval

WINDOW_MONTHS = {"month": 1, "quarter": 3, "12m": 12}
SMALL_CELL_MAX = 10  # CMS cell-size suppression policy: counts of 1 to 10 are not published
RISK_METRIC = "risk_score_sum"
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
        if self.window not in WINDOW_MONTHS:
            raise ValueError(f"window must be one of {tuple(WINDOW_MONTHS)}, got {self.window!r}")
        if self.period.day != 1:
            object.__setattr__(self, "period", self.period.replace(day=1))


def _midx(d: date) -> int:
    return d.year * 12 + d.month - 1


# --- reading cells ---------------------------------------------------------------------------


def _cell_statement(*, first: date, last: date, stratum: str, metrics: list[str] | None, practice_id: str | None,
                    team_id: str | None, subgroup: str | None, team_ids: tuple[str, ...] | None):
    C = models.Cell
    stmt = (
        select(C.metric, C.month, C.stratum_value, func.sum(C.numerator), func.sum(C.denominator), func.sum(C.sum_sq),
               func.sum(C.patients))
        .where(C.stratum == stratum, C.month >= first, C.month <= last)
        .group_by(C.metric, C.month, C.stratum_value)
    )
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


def _fetch(engine: Engine, **filters) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(_cell_statement(**filters)).all()]


def cell_sums(engine: Engine, *, first: date, last: date, stratum: str = "all", metrics: list[str] | None = None,
              practice_id: str | None = None, team_id: str | None = None, subgroup: str | None = None,
              team_ids: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Cell sums per metric, month and stratum value for the filters (GROUP BY in SQL).

    Columns: metric, month (first-of-month date), stratum_value, numerator, denominator, sum_sq, patients.
    ``team_ids`` restricts to those teams (access scope); an empty tuple returns nothing.
    """
    rows = _fetch(engine, first=first, last=last, stratum=stratum, metrics=metrics, practice_id=practice_id,
                  team_id=team_id, subgroup=subgroup, team_ids=team_ids)
    df = pd.DataFrame(rows, columns=["metric", "month", "stratum_value", "numerator", "denominator", "sum_sq", "patients"])
    return df.astype({"numerator": "float64", "denominator": "float64", "sum_sq": "float64", "patients": "float64"})


def _as_month_index(value) -> int:
    if isinstance(value, str):
        value = date.fromisoformat(value[:10])
    return value.year * 12 + value.month - 1


def _cube(rows: list[tuple], metric_pos: dict[str, int], value_pos: dict[str, int], first: int, n_slots: int) -> np.ndarray:
    """Rows of :func:`_fetch` -> array [4, metric, stratum value, month slot] of numerator, denominator, sum_sq, patients."""
    cube = np.zeros((4, len(metric_pos), len(value_pos), n_slots))
    slots: dict = {}
    for metric, month, value, num, den, sq, pts in rows:
        slot = slots.get(month)
        if slot is None:
            slot = slots[month] = _as_month_index(month) - first
        v = value_pos.get(value)
        if v is not None and 0 <= slot < n_slots:
            cube[:, metric_pos[metric], v, slot] += (num or 0.0, den or 0.0, sq or 0.0, pts or 0.0)
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
    """True for counts of 1 to 10 (the CMS cell-size rule)."""
    c = np.asarray(count, dtype="float64")
    return (c >= 1 - 1e-9) & (c <= SMALL_CELL_MAX + 1e-9)


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
    a small sum. Suppressed rows get NaN in ``count_cols`` and ``value_cols`` and
    ``suppressed = True``. Returns a new frame.
    """
    out = df.copy()
    count_cols, value_cols = list(count_cols), list(value_cols)
    counts = out[count_cols].to_numpy(dtype="float64")
    hidden = is_small(counts).any(axis=1)
    if "suppressed" in out:
        hidden |= out["suppressed"].fillna(False).to_numpy(dtype=bool)
    if total and hidden.any():
        codes = out.groupby(list(group_cols), sort=False).ngroup().to_numpy() if group_cols else np.zeros(len(out), int)
        for code in np.unique(codes[hidden]):
            pos = np.flatnonzero(codes == code)
            mask, part = hidden[pos].copy(), counts[pos]
            while mask.sum() < 2 or is_small(part[mask].sum(axis=0)).any():
                open_ = np.flatnonzero(~mask & ~np.isnan(part[:, 0]))
                if not len(open_):
                    break
                nonzero = open_[part[open_, 0] > 0]
                pool = nonzero if len(nonzero) else open_
                mask[pool[np.argsort(part[pool, 0], kind="stable")[0]]] = True
            hidden[pos] = mask
    for col in count_cols + value_cols:
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
                    catalogue: MeasureCatalogue | None = None) -> pd.DataFrame:
    """Every measure applicable to the selection, from cells. Columns: :data:`COLUMNS`.

    One row per measure (per measure and stratum value when ``selection.stratum`` is not
    ``all``; those rows also get complementary suppression as parts of the total).
    ``team_ids`` restricts the selection to those teams (access scope; network figures are
    aggregates of the whole network and are not restricted).
    """
    catalogue = catalogue or load_measures()
    ms = [m for m in catalogue.measures if m.applies_to(selection.subgroup)]
    if not ms:
        return pd.DataFrame(columns=COLUMNS)
    n = WINDOW_MONTHS[selection.window]
    end = _midx(selection.period)
    first = end - 12 - n + 1  # earliest month of the last-year window (and of the previous one)
    filters = dict(first=month_date(first), last=month_date(end), stratum=selection.stratum,
                   metrics=[m.id for m in ms] + [RISK_METRIC], subgroup=selection.subgroup)
    sel_rows = _fetch(engine, practice_id=selection.practice_id, team_id=selection.team_id, team_ids=team_ids, **filters)
    whole_network = selection.practice_id is None and selection.team_id is None and team_ids is None
    net_rows = sel_rows if whole_network else _fetch(engine, practice_id=None, team_id=None, team_ids=None, **filters)

    values = ["all"]
    if selection.stratum != "all":
        values = sorted({r[2] for r in sel_rows} | {r[2] for r in net_rows}) or ["all"]
    metric_pos = {m.id: i for i, m in enumerate(ms)} | {RISK_METRIC: len(ms)}
    value_pos = {v: i for i, v in enumerate(values)}
    end_rule = np.array([m.window == "end" for m in ms] + [False])
    end_slot, slots = end - first, end - first + 1
    sel_cube = _cube(sel_rows, metric_pos, value_pos, first, slots)
    net_cube = sel_cube if net_rows is sel_rows else _cube(net_rows, metric_pos, value_pos, first, slots)
    windows = {"cur": _window(sel_cube, end_rule, end_slot, n), "prev": _window(sel_cube, end_rule, end_slot - n, n),
               "ly": _window(sel_cube, end_rule, end_slot - 12, n), "net": _window(net_cube, end_rule, end_slot, n)}

    k, v = len(ms), len(values)
    kinds = np.repeat([m.kind for m in ms], v)
    direction = np.repeat([m.direction for m in ms], v)
    target = np.repeat([np.nan if m.target is None else float(m.target) for m in ms], v)
    adjust = np.repeat([m.risk_adjust and m.kind == "rate_per_1000_member_years" for m in ms], v)
    flat = {key: w[:, :k, :].reshape(4, k * v) for key, w in windows.items()}
    f = {key: _figures(s, kinds) for key, s in flat.items()}
    cur = f["cur"]

    def mean_risk(key):
        num, den = windows[key][0, k, :], windows[key][1, k, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.tile(np.where(den > 0, num / den, np.nan), k)

    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.where(adjust, f["net"]["value"] * mean_risk("cur") / mean_risk("net"), np.nan)
        observed_expected = np.where(adjust, cur["value"] / expected, np.nan)
    met = _better(direction, cur["value"], target) | (cur["value"] == target)
    small = cur["small"]
    card = pd.DataFrame({
        "measure_id": np.repeat([m.id for m in ms], v), "name": np.repeat([m.name for m in ms], v),
        "tier": np.repeat([m.tier for m in ms], v), "kind": kinds, "unit": np.repeat([m.unit for m in ms], v),
        "direction": direction, "stratum": selection.stratum, "stratum_value": np.tile(values, k),
        "numerator": flat["cur"][0], "denominator": flat["cur"][1], "patients": flat["cur"][3],
        "value": cur["value"], "ci_low": cur["low"], "ci_high": cur["high"], "target": target,
        "met_target": np.where(np.isnan(cur["value"]) | np.isnan(target), None, met).astype(object),
        "previous_value": np.where(f["prev"]["small"], np.nan, f["prev"]["value"]),
        "last_year_value": np.where(f["ly"]["small"], np.nan, f["ly"]["value"]),
        "network_value": np.where(f["net"]["small"], np.nan, f["net"]["value"]),
        "expected_value": expected, "observed_expected": observed_expected,
        **{col: _flag(direction, cur["low"], cur["high"], cur["value"], f[key]["value"], f[key]["low"], f[key]["high"],
                      small | f[key]["small"])
           for col, key in (("change_vs_previous", "prev"), ("change_vs_last_year", "ly"), ("gap_vs_network", "net"))},
        "suppressed": small,
    })[COLUMNS]
    figures = ["numerator", "denominator", "patients", "value", "ci_low", "ci_high", "met_target", "expected_value",
               "observed_expected"]
    if selection.stratum != "all":
        card = suppress_table(card, ["denominator", "numerator", "patients"], total=True, group_cols=["measure_id"])
    if whole_network:  # the network value is the row's own value: hide it wherever the row is hidden
        figures.append("network_value")
    return _blank(card, card["suppressed"].to_numpy(dtype=bool), figures)


def _blank(card: pd.DataFrame, mask: np.ndarray, columns: list[str]) -> pd.DataFrame:
    """Blank ``columns`` and the comparison flags of suppressed rows."""
    card = card.copy()
    for col in columns:
        if col == "met_target":
            card[col] = card[col].astype(object).where(~mask, None)
        else:
            card[col] = card[col].astype("float64").where(~mask, np.nan)
    for col in ("change_vs_previous", "change_vs_last_year", "gap_vs_network"):
        card[col] = card[col].where(~mask, "")
    return card


def format_scorecard(card: pd.DataFrame, fmt: str = "text") -> str:
    """The scorecard as CSV, JSON (records) or a plain-text table."""
    if fmt == "csv":
        return card.to_csv(index=False)
    if fmt == "json":
        return card.to_json(orient="records", indent=2, date_format="iso")
    view = card[["measure_id", "stratum_value", "numerator", "denominator", "value", "ci_low", "ci_high", "target",
                 "previous_value", "last_year_value", "network_value", "change_vs_previous", "change_vs_last_year",
                 "gap_vs_network", "suppressed"]].copy()
    if (view["stratum_value"] == "all").all():
        view = view.drop(columns="stratum_value")
    return view.to_string(index=False, float_format=lambda x: f"{x:,.1f}", na_rep="-")
