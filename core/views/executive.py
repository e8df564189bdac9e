"""The executive views (issue 10): trends, team comparison, value map, payment models, ACO,
equity and e-consults. Everything here is an aggregate, and every figure goes through the
CMS cell-size rule of core/metrics/scorecard.py (counts of 1-10 are never published).

Sources
- Trends, team comparison, value map and payment-model member-months and costs read the
  additive cells (GROUP BY in SQL), so they cost the same at any network size.
- Payment-model activity counts and e-consults are counted in SQL from encounters (GROUP BY;
  no patient rows leave the database).
- ACO inputs: the figures of core.metrics.payments.aco_inputs_from_store, summed from cells.

Scope: every reader takes ``team_ids`` (the caller's scope; None = whole network) and filters in
SQL. Network reference values (comparison, equity) are aggregates of the whole network.
Settings are data: core/config/executive.toml.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine, and_, case, func, or_, select

from core.config import config_path, load_toml
from core.derive.costs import COST_EXTERNAL, COST_INTERNAL, COST_TOTAL, window_months
from core.derive.measures import MeasureCatalogue, load_measures
from core.metrics import payments
from core.metrics.scorecard import (
    Selection,
    build_scorecard,
    figure,
    figure_counts,
    hide_complements,
    is_small,
    small_figure,
    suppress_table,
    window_counts_published,
)
from core.metrics.stats import intervals_differ, t_interval, value_outside
from core.metrics.value import outcome_index, value_map
from core.store.db import month_start_sql
from core.store.models import Attribution, Cell, Encounter, TeamMonthActivity
from core.store.queries import read_frame, where_selection

EXECUTIVE_PATH = config_path("executive.toml")
COST_LABELS = {COST_TOTAL: "Total cost PMPM", COST_INTERNAL: "Internal cost PMPM (TDABC)",
               COST_EXTERNAL: "External cost PMPM (claims)"}  # fmt: skip
COST_KIND = "cost_pmpm"
ALL = "all"
SUMS = ["numerator", "denominator", "sum_sq", "patients"]


@dataclass(frozen=True)
class ExecutiveSettings:
    trend_months: int
    key_outcomes: tuple[str, ...]
    default_compare_measure: str
    default_equity_measure: str
    min_denominator: float
    not_a_group: tuple[str, ...]
    specialist_categories: tuple[str, ...]


@cache
def load_executive_settings(path: Path = EXECUTIVE_PATH) -> ExecutiveSettings:
    """Load and check core/config/executive.toml (measure ids must exist in the catalogue)."""
    raw = load_toml(path)
    out = ExecutiveSettings(
        trend_months=int(raw["trends"]["months"]), key_outcomes=tuple(raw["trends"]["key_outcomes"]),
        default_compare_measure=str(raw["compare"]["default_measure"]),
        default_equity_measure=str(raw["equity"]["default_measure"]),
        min_denominator=float(raw["value_map"]["min_denominator"]), not_a_group=tuple(raw["equity"]["not_a_group"]),
        specialist_categories=tuple(raw["econsults"]["specialist_categories"]),
    )  # fmt: skip
    known = set(load_measures().by_id())
    unknown = {*out.key_outcomes, out.default_compare_measure, out.default_equity_measure} - known
    if unknown:
        raise ValueError(f"{path}: unknown measure ids {sorted(unknown)}")
    return out


# --- cells -----------------------------------------------------------------------------------


def _month(value) -> date:
    if isinstance(value, str):
        value = date.fromisoformat(value[:10])
    return date(value.year, value.month, 1)


def _shift(month: date, months: int) -> date:
    i = month.year * 12 + month.month - 1 + months
    return date(i // 12, i % 12 + 1, 1)


def cell_sums_by(engine: Engine, by: Sequence[str], metrics: Sequence[str], first: date, last: date,
                 team_ids: tuple[str, ...] | None = None, practice_id: str | None = None, team_id: str | None = None,
                 subgroup: str | None = None, stratum: str = ALL) -> pd.DataFrame:  # fmt: skip
    """Cell sums grouped in SQL by ``by`` (any of practice_id, team_id, subgroup, stratum_value), metric and month.

    Columns: *by, metric, month (date), numerator, denominator, sum_sq, patients.
    """
    cols = [getattr(Cell, b) for b in by]
    stmt = (
        select(*cols, Cell.metric, Cell.month, *[func.sum(getattr(Cell, s)).label(s) for s in SUMS])
        .where(Cell.stratum == stratum, Cell.metric.in_(list(metrics)), Cell.month >= first, Cell.month <= last)
        .group_by(*cols, Cell.metric, Cell.month)
    )  # fmt: skip
    stmt = where_selection(stmt, practice_id=practice_id, team_id=team_id, subgroup=subgroup, team_ids=team_ids)
    frame = read_frame(engine, stmt)
    if frame.empty:
        frame = pd.DataFrame(columns=[*by, "metric", "month", *SUMS])
    frame["month"] = [_month(m) for m in frame["month"]]
    return frame.astype({s: "float64" for s in SUMS})


def _kinds(metrics: Sequence[str], catalogue: MeasureCatalogue) -> dict[str, str]:
    by_id = catalogue.by_id()
    return {m: by_id[m].kind if m in by_id else COST_KIND for m in metrics}


def add_figures(sums: pd.DataFrame, catalogue: MeasureCatalogue | None = None) -> pd.DataFrame:
    """Add value, ci_low, ci_high (measure unit; cost PMPM in USD) and suppressed to summed cells.

    A measure is suppressed by core.metrics.scorecard.small_figure; a cost PMPM when its patient count
    is 1-10. Suppressed rows lose their counts and figures (NaN).
    """
    catalogue = catalogue or load_measures()
    out = sums.copy()
    kinds = out["metric"].map(_kinds(out["metric"].unique(), catalogue))
    out["kind"] = kinds
    for col in ("value", "ci_low", "ci_high"):
        out[col] = np.nan
    out["suppressed"] = False
    for kind in kinds.unique():
        mask = (kinds == kind).to_numpy()
        part = out.loc[mask]
        if kind == COST_KIND:
            den = part["denominator"].to_numpy()
            with np.errstate(divide="ignore", invalid="ignore"):
                value = np.where(den > 0, part["numerator"].to_numpy() / den, np.nan)
            low = high = np.full(len(part), np.nan)
            small = is_small(part["patients"])
        else:
            value, low, high = figure(kind, part["numerator"], part["denominator"], part["sum_sq"])
            small = small_figure(kind, part["numerator"], part["denominator"], part["patients"])
        out.loc[mask, "value"], out.loc[mask, "ci_low"], out.loc[mask, "ci_high"] = value, low, high
        out.loc[mask, "suppressed"] = small
    hidden = out["suppressed"].to_numpy(dtype=bool)
    for col in ("numerator", "denominator", "sum_sq", "patients", "value", "ci_low", "ci_high"):
        out[col] = out[col].astype("float64").where(~hidden, np.nan)
    return out


def window_sums(sums: pd.DataFrame, by: Sequence[str], end: date, months: int, catalogue: MeasureCatalogue | None = None) -> pd.DataFrame:
    """Reduce monthly sums to one window of ``months`` ending with ``end``, per ``by`` and metric.

    Measures with ``window = "end"`` take the end month (their rule already looks back); the rest
    add the months. ``patients`` is the largest monthly count (as core/metrics/scorecard.py does).
    """
    catalogue = catalogue or load_measures()
    end_rule = {m.id for m in catalogue.measures if m.window == "end"}
    first = _shift(end, -(months - 1))
    part = sums.loc[(sums["month"] >= first) & (sums["month"] <= end)]
    part = part.loc[~part["metric"].isin(end_rule) | (part["month"] == end)]
    keys = [*by, "metric"]
    if part.empty:
        return pd.DataFrame(columns=[*keys, *SUMS])
    return part.groupby(keys, as_index=False).agg(numerator=("numerator", "sum"), denominator=("denominator", "sum"),
                                                  sum_sq=("sum_sq", "sum"), patients=("patients", "max"))  # fmt: skip


# --- trends ----------------------------------------------------------------------------------


def trends(engine: Engine, team_ids: tuple[str, ...] | None = None, practice_id: str | None = None,
           team_id: str | None = None, months: int | None = None, rolling: int = 1) -> dict[str, pd.DataFrame]:  # fmt: skip
    """Cost PMPM (internal, external, total), key outcomes and the subgroup mix, month by month.

    ``rolling`` > 1: each month's figure is of the ``rolling`` months ending with it (fewer
    figures suppressed; window-"end" measures still take the month itself).

    Returns ``figures`` (grain: month, subgroup, metric; subgroup ``all`` = every subgroup
    together; columns metric_label, kind, value, ci_low, ci_high, patients, suppressed) and
    ``mix`` (grain: month, subgroup; members, share, suppressed; complementary suppression
    within each month, as the parts of the month's total; share = of the published members).
    """
    settings = load_executive_settings()
    catalogue = load_measures()
    last = _last_cell_month(engine)
    if last is None:
        return {"figures": pd.DataFrame(), "mix": pd.DataFrame()}
    first = _shift(last, -((months or settings.trend_months) - 1))
    metrics = [*COST_LABELS, *settings.key_outcomes, "member_months"]
    sums = cell_sums_by(engine, ["subgroup"], metrics, _shift(first, -(rolling - 1)), last, team_ids, practice_id, team_id)
    total = sums.groupby(["metric", "month"], as_index=False)[SUMS].sum().assign(subgroup=ALL)
    both = pd.concat([sums, total], ignore_index=True)
    mix = both.loc[(both["metric"] == "member_months") & (both["subgroup"] != ALL) & (both["month"] >= first)]
    outcomes = both.loc[both["metric"] != "member_months"]
    present = sorted(m for m in set(outcomes["month"]) if m >= first)
    rolled = [window_sums(outcomes, ["subgroup"], m, rolling, catalogue).assign(month=m) for m in present]
    rolled = pd.concat(rolled, ignore_index=True) if rolled else outcomes
    figures = add_figures(rolled, catalogue)
    # every subgroup's figure is published with the All row: complementary suppression per month and metric
    counts = figure_counts(figures["kind"], rolled["numerator"], rolled["denominator"], rolled["patients"])
    figures = hide_complements(figures, counts, (figures["subgroup"] != ALL).to_numpy(), ["month", "metric"],
                               ["numerator", "denominator", "sum_sq", "patients", "value", "ci_low", "ci_high"])
    names = {m.id: m.name for m in catalogue.measures} | COST_LABELS
    figures["metric_label"] = figures["metric"].map(names)
    figures = figures[["month", "subgroup", "metric", "metric_label", "kind", "value", "ci_low", "ci_high", "patients", "suppressed"]]
    mix = mix.rename(columns={"numerator": "members"})[["month", "subgroup", "members"]]
    mix = suppress_table(mix, ["members"], total=True, group_cols=["month"])
    # a subgroup's members are also the patients of its cost figures: one hidden set for both
    cost = figures["kind"] == COST_KIND
    hidden = set(zip(mix.loc[mix["suppressed"], "month"], mix.loc[mix["suppressed"], "subgroup"], strict=True))
    hidden |= set(zip(figures.loc[cost & figures["suppressed"], "month"], figures.loc[cost & figures["suppressed"], "subgroup"], strict=True))
    in_mix = np.array([(m, s) in hidden for m, s in zip(mix["month"], mix["subgroup"], strict=True)], dtype=bool)
    in_figures = cost & np.array([(m, s) in hidden for m, s in zip(figures["month"], figures["subgroup"], strict=True)], dtype=bool)
    mix = mix.assign(members=mix["members"].where(~in_mix), suppressed=in_mix)
    figures.loc[in_figures, ["value", "ci_low", "ci_high", "patients"]] = np.nan
    figures.loc[in_figures, "suppressed"] = True
    month_total = mix.groupby("month")["members"].transform("sum")
    mix["share"] = mix["members"] / month_total.where(month_total > 0)
    return {"figures": figures.sort_values(["metric", "subgroup", "month"]).reset_index(drop=True),
            "mix": mix.sort_values(["month", "subgroup"]).reset_index(drop=True)}  # fmt: skip


def _last_cell_month(engine: Engine) -> date | None:
    with engine.connect() as conn:
        last = conn.execute(select(func.max(Cell.month)).where(Cell.metric == "member_months")).scalar_one_or_none()
    return None if last is None else _month(last)


# --- team comparison -------------------------------------------------------------------------


def team_comparison(engine: Engine, measure_id: str, period: date, window: str = "12m", subgroup: str | None = None,
                    team_ids: tuple[str, ...] | None = None) -> dict:  # fmt: skip
    """Every team's value of one measure with its 95 % interval against the network value.

    A team is an outlier (``flag`` ``better`` / ``worse``) only when the network value lies
    outside the team's interval (a caterpillar plot: an interval that crosses the network line is
    noise). Returns ``teams`` (grain: team_id; numerator, denominator, patients, value,
    ci_low, ci_high, flag, suppressed; complementary suppression, as parts of the network total)
    and ``network`` (a dict: value, ci_low, ci_high, suppressed).
    """
    catalogue = load_measures()
    measure = catalogue.by_id()[measure_id]
    n = {"month": 1, "quarter": 3, "12m": 12}[window]
    first = _shift(period, -(n - 1))
    sums = cell_sums_by(engine, ["team_id"], [measure_id], first, period, subgroup=subgroup)
    per_team = window_sums(sums, ["team_id"], period, n, catalogue)
    net = window_sums(sums.assign(team_id=ALL), ["team_id"], period, n, catalogue)
    network = add_figures(net, catalogue)
    if team_ids is not None:
        per_team = per_team.loc[per_team["team_id"].isin(team_ids)]
    count_cols = ["numerator", "denominator", "patients"] if measure.kind != "rate_per_1000_member_years" else ["numerator", "patients"]
    if measure.kind == "proportion":
        per_team = per_team.assign(non_numerator=per_team["denominator"] - per_team["numerator"])
        count_cols.append("non_numerator")
    raw = per_team.copy()
    teams = add_figures(per_team, catalogue)
    teams["suppressed"] = suppress_table(raw.assign(suppressed=teams["suppressed"].to_numpy()), count_cols, total=True)["suppressed"].to_numpy()
    hidden = teams["suppressed"].to_numpy(dtype=bool)
    for col in ("numerator", "denominator", "sum_sq", "patients", "value", "ci_low", "ci_high"):
        teams[col] = teams[col].where(~hidden, np.nan)
    net_row = network.iloc[0] if len(network) else None
    net_value = float(net_row["value"]) if net_row is not None else np.nan
    outside = value_outside(teams["ci_low"], teams["ci_high"], net_value)
    higher = measure.direction == "higher"
    better = (teams["value"] > net_value) if higher else (teams["value"] < net_value)
    teams["flag"] = np.where(np.asarray(outside, dtype=bool), np.where(better, "better", "worse"), "as expected")
    teams.loc[hidden, "flag"] = "suppressed"
    if not window_counts_published(window):
        teams[["numerator", "denominator"]] = np.nan
    teams = teams[["team_id", "numerator", "denominator", "patients", "value", "ci_low", "ci_high", "flag", "suppressed"]]
    network_dict = {"value": net_value, "ci_low": float(net_row["ci_low"]) if net_row is not None else np.nan,
                    "ci_high": float(net_row["ci_high"]) if net_row is not None else np.nan,
                    "suppressed": bool(net_row["suppressed"]) if net_row is not None else True}  # fmt: skip
    return {"teams": teams.sort_values("value", na_position="last").reset_index(drop=True), "network": network_dict,
            "measure": measure}  # fmt: skip


# --- value map -------------------------------------------------------------------------------


def value_positions(engine: Engine, period: date, window: str = "12m", team_ids: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Value map points: cost PMPM and outcome index (core.metrics.value) per team and subgroup, now and
    12 months earlier (same window length), for the movement arrows.

    Grain: team_id, subgroup. Columns: cost_pmpm_usd, outcome_index, measures_in_index, member_months,
    quadrant, previous_cost_pmpm_usd, previous_outcome_index, suppressed (a point whose largest
    monthly patient count is 1-10 is hidden, and so is its previous position).
    """
    settings = load_executive_settings()
    catalogue = load_measures()
    n = {"month": 1, "quarter": 3, "12m": 12}[window]
    metrics = [m.id for m in catalogue.measures] + [COST_TOTAL, "member_months"]
    sums = cell_sums_by(engine, ["team_id", "subgroup"], metrics, _shift(period, -(n - 1) - 12), period, team_ids)
    points = []
    for end in (period, _shift(period, -12)):
        win = window_sums(sums, ["team_id", "subgroup"], end, n, catalogue)
        measures = win.loc[win["metric"].isin([m.id for m in catalogue.measures])]
        measures = measures.loc[[catalogue.by_id()[m].applies_to(s) for m, s in zip(measures["metric"], measures["subgroup"], strict=True)]]
        measures = add_figures(measures, catalogue)
        measures = measures.loc[~measures["suppressed"]].rename(columns={"metric": "measure_id"})
        measures["higher_is_better"] = measures["measure_id"].map(lambda m: catalogue.by_id()[m].direction == "higher")
        index = outcome_index(measures, by=("subgroup",), min_denominator=settings.min_denominator)
        cost = win.loc[win["metric"] == COST_TOTAL, ["team_id", "subgroup", "numerator", "denominator", "patients"]]
        cost = cost.assign(cost_total_pmpm_usd=cost["numerator"] / cost["denominator"].where(cost["denominator"] > 0),
                           member_months=cost["denominator"])  # fmt: skip
        vm = value_map(index, cost, by=("subgroup",)).merge(cost[["team_id", "subgroup", "patients"]], on=["team_id", "subgroup"], how="left")
        vm["suppressed"] = is_small(vm["patients"].fillna(0)) | vm["patients"].isna()
        points.append(vm)
    now, before = points
    before = before.loc[~before["suppressed"], ["team_id", "subgroup", "cost_pmpm_usd", "outcome_index"]]
    out = now.merge(before.rename(columns={"cost_pmpm_usd": "previous_cost_pmpm_usd", "outcome_index": "previous_outcome_index"}),
                    on=["team_id", "subgroup"], how="left")  # fmt: skip
    hidden = out["suppressed"].to_numpy(dtype=bool)
    for col in ("cost_pmpm_usd", "outcome_index", "measures", "member_months", "previous_cost_pmpm_usd", "previous_outcome_index",
                "cost_ratio_to_peers"):
        out[col] = out[col].astype("float64").where(~hidden, np.nan)
    out.loc[hidden, "quadrant"] = "suppressed"
    if not window_counts_published(window):
        out["member_months"] = np.nan
    out = out.drop(columns=["patients"]).rename(columns={"measures": "measures_in_index"})
    return out.sort_values(["subgroup", "team_id"]).reset_index(drop=True)


# --- payment models --------------------------------------------------------------------------


def _days_between(engine: Engine, later, earlier):
    if engine.dialect.name == "postgresql":
        return later - earlier
    return func.julianday(later) - func.julianday(earlier)


def payment_inputs(engine: Engine, months: tuple[date, ...], team_ids: tuple[str, ...] | None = None) -> dict[str, pd.DataFrame]:
    """What core.metrics.payments.compare_payment_models needs, as aggregates of the selection's months.

    ``member_months`` and ``costs`` (team_id, subgroup) from cells; ``activities`` (team_id,
    subgroup, kind): internal activities of attributed patient-months, summed from the derived
    ``team_month_activity`` (the encounter's month joined to the attribution and subgroup of
    that month; ``core.derive.activity``).
    """
    months = tuple(months)
    wide = cell_sums_by(engine, ["team_id", "subgroup"], [COST_INTERNAL, COST_EXTERNAL, "member_months"], min(months), max(months), team_ids)
    wide = wide.loc[wide["month"].isin(months)]
    pivot = wide.pivot_table(index=["team_id", "subgroup"], columns="metric", values="numerator", aggfunc="sum", fill_value=0.0).reset_index()
    for col in (COST_INTERNAL, COST_EXTERNAL, "member_months"):
        if col not in pivot:
            pivot[col] = 0.0
    t = TeamMonthActivity
    stmt = (
        select(t.team_id, t.subgroup, t.kind, func.sum(t.activities).label("activities"))
        .where(t.month.in_(list(months)))
        .group_by(t.team_id, t.subgroup, t.kind)
    )
    if team_ids is not None:
        stmt = stmt.where(t.team_id.in_(list(team_ids)))
    activities = read_frame(engine, stmt)
    if activities.empty:
        activities = pd.DataFrame(columns=["team_id", "subgroup", "kind", "activities"])
    return {
        "member_months": pivot[["team_id", "subgroup", "member_months"]],
        "costs": pivot[["team_id", "subgroup", COST_INTERNAL, COST_EXTERNAL]],
        "activities": activities.astype({"activities": "float64"}),
        "months": pd.DataFrame({"month": list(months)}),
    }


def payment_settings_with(base: payments.PaymentSettings, bundled: dict[str, float] | None = None,
                          fees: dict[str, float] | None = None, **pcmh) -> payments.PaymentSettings:  # fmt: skip
    """A what-if copy of the payment settings (never saved): new bundled rates, fees or PCMH amounts."""
    out = replace(base, bundled_pmpm_usd={**base.bundled_pmpm_usd, **(bundled or {})}, fee_usd={**base.fee_usd, **(fees or {})},
                  **pcmh)  # fmt: skip
    for name, amount in [*out.bundled_pmpm_usd.items(), *out.fee_usd.items()]:
        if amount < 0:
            raise ValueError(f"{name}: amounts must be >= 0")
    return out


def payment_comparison(inputs: dict[str, pd.DataFrame], settings: payments.PaymentSettings, targets_met: int = 0) -> dict[str, pd.DataFrame]:
    """Payment models side by side per subgroup and in total, suppressed.

    ``by_subgroup`` grain: subgroup, model; ``total`` grain: model (columns of
    core.metrics.payments.summarise_models: member_months, revenue_usd, cost_usd, margin_usd and PMPMs).
    A subgroup whose member-months are 1-10 is suppressed, with complementary suppression within
    each model (the subgroups add up to the total). ``mix_sensitivity``: annual bundled revenue
    of the average panel by subgroup (core.metrics.payments.revenue_mix_sensitivity), same suppression.
    """
    comparison = payments.compare_payment_models(inputs["member_months"], inputs["activities"], inputs["costs"], settings, targets_met)
    by_subgroup = payments.summarise_models(comparison, ("subgroup",))
    money = ["revenue_usd", "cost_usd", "margin_usd", "revenue_pmpm_usd", "cost_pmpm_usd", "margin_pmpm_usd"]
    by_subgroup = suppress_table(by_subgroup, ["member_months"], total=True, group_cols=["model"], value_cols=money)
    total = payments.summarise_models(comparison, ())
    mm = inputs["member_months"].groupby("subgroup")["member_months"].sum()
    mm = mm.loc[mm.index.isin(list(settings.bundled_pmpm_usd)) & (mm > 0)]
    sensitivity = pd.DataFrame()
    if mm.sum() > 0:
        n_months = max(len(inputs["months"]), 1)
        sensitivity = payments.revenue_mix_sensitivity(float(mm.sum()) / n_months, (mm / mm.sum()).to_dict(), settings.bundled_pmpm_usd)
        small = is_small(mm.reindex(sensitivity["subgroup"]).to_numpy())
        sensitivity = suppress_table(sensitivity.assign(member_months=mm.reindex(sensitivity["subgroup"]).to_numpy(),
                                                        suppressed=small),
                                     ["member_months", "members"], total=True,
                                     value_cols=["share", "members", "annual_revenue_usd", "revenue_change_per_point_usd"])  # fmt: skip
    return {"by_subgroup": by_subgroup, "total": total, "mix_sensitivity": sensitivity}


# --- ACO -------------------------------------------------------------------------------------


def aco_inputs(engine: Engine, months: tuple[date, ...], practice_id: str | None = None, team_id: str | None = None,
               benchmark_pmpy_usd: float | None = None, quality_score: float = 100.0,
               team_ids: tuple[str, ...] | None = None) -> tuple[payments.AcoInputs | None, str]:  # fmt: skip
    """ACO inputs of a selection from cells: the same figures as core.metrics.payments.aco_inputs_from_store
    (performance = ``months``, baseline = the same months a year earlier; spend = claims paid per
    member-year; risk = mean monthly CMS-HCC score of the scored patient-months, 1.0 for both years
    when either has none; benchmark = the argument, else the baseline's claims per member-year),
    summed in SQL instead of rebuilt from encounters. (None, reason) when there is nothing to
    project or the selection has 1-10 member-months.
    """
    baseline = tuple(m.replace(year=m.year - 1) for m in months)

    def totals(window: tuple[date, ...]) -> pd.Series:
        sums = cell_sums_by(engine, [], [COST_EXTERNAL, "risk_score_sum", "member_months"], min(window), max(window), team_ids,
                            practice_id, team_id)  # fmt: skip
        sums = sums.loc[sums["month"].isin(window)].groupby("metric")[["numerator", "denominator"]].sum()
        return pd.Series({"member_months": sums["numerator"].get("member_months", 0.0),
                          "claims_usd": sums["numerator"].get(COST_EXTERNAL, 0.0),
                          "risk_sum": sums["numerator"].get("risk_score_sum", 0.0),
                          "risk_n": sums["denominator"].get("risk_score_sum", 0.0)})  # fmt: skip

    now, before = totals(tuple(months)), totals(baseline)
    if not now["member_months"]:
        return None, "no attributed member-months in the selection"
    if bool(is_small(now["member_months"])):
        return None, "suppressed: 1-10 member-months in the selection"
    note = []
    if benchmark_pmpy_usd is None:
        if not before["member_months"]:
            return None, "no claims in the baseline year (the 12 months before): enter a benchmark per member-year"
        benchmark_pmpy_usd = float(before["claims_usd"]) * 12 / float(before["member_months"])
        note.append("benchmark = baseline-year claims per member-year")
    if now["risk_n"] and before["risk_n"]:
        perf_risk, base_risk = now["risk_sum"] / now["risk_n"], before["risk_sum"] / before["risk_n"]
    else:
        perf_risk = base_risk = 1.0
        note.append("no risk scores for both years: risk ratio 1.0")
    inputs = payments.AcoInputs(
        baseline_benchmark_pmpy_usd=float(benchmark_pmpy_usd), baseline_risk_score=float(base_risk),
        performance_risk_score=float(perf_risk), member_years=float(now["member_months"]) / 12,
        actual_spend_pmpy_usd=float(now["claims_usd"]) * 12 / float(now["member_months"]), quality_score=quality_score,
    )  # fmt: skip
    return inputs, "; ".join(note)


def aco_projection(inputs: payments.AcoInputs, settings: payments.AcoSettings, coding_growth_pct: float = 0.0):
    """Settle the performance year, with an extra coding-intensity what-if.

    ``coding_growth_pct``: extra risk-score growth (%) from coding alone, applied to the
    performance-year risk score before the cap. Returns (AcoResult, table with item, value).
    """
    scenario = replace(inputs, performance_risk_score=inputs.performance_risk_score * (1 + coding_growth_pct / 100.0))
    result = payments.aco_reconciliation(scenario, settings)
    labels = {
        "benchmark_pmpy_usd": "Benchmark per member-year (risk-adjusted, capped)", "benchmark_usd": "Benchmark",
        "actual_spend_usd": "Actual spend", "gross_savings_usd": "Gross savings (losses if negative)",
        "savings_rate": "Savings rate", "outcome": "Outcome", "shared_savings_usd": "Shared savings",
        "shared_losses_usd": "Shared losses", "net_payment_usd": "Net payment (to the ACO if positive)",
        "risk_ratio_uncapped": "Risk ratio (performance / baseline)", "risk_ratio_applied": "Risk ratio applied (after cap)",
        "risk_cap_binds": "Risk-score cap binds", "gross_savings_from_risk_growth_usd": "Gross savings from risk-score growth alone",
        "net_payment_from_risk_growth_usd": "Net payment from risk-score growth alone",
    }  # fmt: skip
    table = pd.DataFrame([(label, getattr(result, key)) for key, label in labels.items()], columns=["item", "value"])
    table["value"] = table["value"].map(lambda v: f"{v:,.3f}" if isinstance(v, float) and abs(v) < 10 else
                                        (f"{v:,.0f}" if isinstance(v, float) else str(v)))  # fmt: skip
    return result, table


# --- equity ----------------------------------------------------------------------------------


def equity_table(engine: Engine, measure_id: str, stratum: str, period: date, window: str = "12m",
                 subgroup: str | None = None, team_ids: tuple[str, ...] | None = None) -> pd.DataFrame:  # fmt: skip
    """One measure stratified by an equity dimension, with the gap to the best-served group.

    From core.metrics.scorecard.build_scorecard (cells, intervals, complementary suppression across the
    stratum values). Best-served = the best published value among real groups (not
    ``not_a_group`` values such as unknown). Columns: stratum_value, numerator, denominator,
    patients, value, ci_low, ci_high, network_value, best_value, gap_to_best (value - best,
    in the measure's unit), gap_is_real (the two intervals do not overlap), best, suppressed.
    """
    settings = load_executive_settings()
    card = build_scorecard(engine, Selection(period=period, window=window, subgroup=subgroup, stratum=stratum), team_ids=team_ids)
    card = card.loc[card["measure_id"] == measure_id].reset_index(drop=True)
    if card.empty:
        return card
    direction = card["direction"].iloc[0]
    candidates = card.loc[~card["suppressed"] & card["value"].notna() & ~card["stratum_value"].isin(settings.not_a_group)]
    if candidates.empty:
        card = card.assign(best_value=np.nan, gap_to_best=np.nan, gap_is_real=False, best=False)
    else:
        best = candidates.loc[candidates["value"].idxmax() if direction == "higher" else candidates["value"].idxmin()]
        differ = np.asarray(intervals_differ(card["ci_low"], card["ci_high"], best["ci_low"], best["ci_high"]), dtype=bool)
        card = card.assign(best_value=best["value"], gap_to_best=card["value"] - best["value"],
                           gap_is_real=differ & ~card["suppressed"].to_numpy(dtype=bool),
                           best=card["stratum_value"] == best["stratum_value"])  # fmt: skip
    # A complementary-suppressed stratum keeps its network value in the scorecard; for a network
    # selection that is the suppressed value itself, so it is blanked here too.
    card["network_value"] = card["network_value"].where(~card["suppressed"].to_numpy(dtype=bool), np.nan)
    if not window_counts_published(window):
        card[["numerator", "denominator"]] = np.nan
    return card[["stratum_value", "numerator", "denominator", "patients", "value", "ci_low", "ci_high", "network_value",
                 "best_value", "gap_to_best", "gap_is_real", "best", "unit", "suppressed"]]  # fmt: skip


# --- e-consults ------------------------------------------------------------------------------


def econsults(engine: Engine, months: tuple[date, ...], team_ids: tuple[str, ...] | None = None) -> dict[str, pd.DataFrame]:
    """E-consult volume, specialist response time and % resolved without a visit, by specialty and
    by team, and specialist spend of patients with and without an e-consult (aggregates only).

    Counted in SQL (GROUP BY) from encounters of kind ``e_consult`` that started in the months;
    response days = responded_date - start_date. ``by_specialty`` (grain: specialty) and
    ``by_team`` (grain: team_id): econsults, responded, mean_response_days (t interval),
    resolved, resolved_pct; complementary suppression of 1-10 counts (econsults, responded,
    resolved, not resolved) as parts of the total row. ``spend`` (grain: group): patients,
    member_months, specialist_spend_usd, specialist_pmpm_usd; the specialist spend is of
    attributed patient-months (claims in cost categories of executive.toml).
    """
    months = tuple(sorted(months))
    first, end = months[0], _shift(months[-1], 1)
    days = _days_between(engine, Encounter.responded_date, Encounter.start_date)
    responded = Encounter.responded_date.is_not(None)
    team = func.coalesce(Encounter.team_id, "unknown")
    stmt = (
        select(team.label("team_id"), Encounter.specialty, func.count().label("econsults"),
               func.sum(case((responded, 1), else_=0)).label("responded"),
               func.sum(case((responded, days), else_=0)).label("days_sum"),
               func.sum(case((responded, days * days), else_=0)).label("days_sq"),
               func.sum(case((Encounter.resolved_without_visit.is_(True), 1), else_=0)).label("resolved"))
        .where(Encounter.kind == "e_consult", Encounter.start_date >= first, Encounter.start_date < end)
        .group_by(team, Encounter.specialty)
    )  # fmt: skip
    if team_ids is not None:
        stmt = stmt.where(Encounter.team_id.in_(list(team_ids)))
    raw = read_frame(engine, stmt)
    if raw.empty:
        raw = pd.DataFrame(columns=["team_id", "specialty", "econsults", "responded", "days_sum", "days_sq", "resolved"])
    raw = raw.astype({c: "float64" for c in ("econsults", "responded", "days_sum", "days_sq", "resolved")})
    return {"by_specialty": _econsult_table(raw, "specialty"), "by_team": _econsult_table(raw, "team_id"),
            "spend": _specialist_spend(engine, months, team_ids)}  # fmt: skip


def _econsult_table(raw: pd.DataFrame, key: str) -> pd.DataFrame:
    cols = ["econsults", "responded", "days_sum", "days_sq", "resolved"]
    table = raw.groupby(key, as_index=False)[cols].sum()
    table = pd.concat([table, table[cols].sum().to_frame().T.assign(**{key: "All"})], ignore_index=True)
    table["not_resolved"] = table["econsults"] - table["resolved"]
    mean, low, high = t_interval(table["days_sum"], table["responded"], table["days_sq"])
    table = table.assign(mean_response_days=mean, response_ci_low=low, response_ci_high=high,
                         resolved_pct=100 * table["resolved"] / table["econsults"].where(table["econsults"] > 0))  # fmt: skip
    parts = suppress_table(table.iloc[:-1], ["econsults", "responded", "resolved", "not_resolved"], total=True,
                           value_cols=["mean_response_days", "response_ci_low", "response_ci_high", "resolved_pct"])  # fmt: skip
    whole = suppress_table(table.iloc[-1:], ["econsults", "responded", "resolved", "not_resolved"], total=False,
                           value_cols=["mean_response_days", "response_ci_low", "response_ci_high", "resolved_pct"])  # fmt: skip
    out = pd.concat([parts, whole], ignore_index=True)
    return out[[key, "econsults", "responded", "mean_response_days", "response_ci_low", "response_ci_high", "resolved",
                "resolved_pct", "suppressed"]]  # fmt: skip


def _specialist_spend(engine: Engine, months: tuple[date, ...], team_ids: tuple[str, ...] | None) -> pd.DataFrame:
    settings = load_executive_settings()
    first, end = months[0], _shift(months[-1], 1)
    had = select(Encounter.patient_id).where(Encounter.kind == "e_consult", Encounter.start_date >= first, Encounter.start_date < end)
    group = case((Attribution.patient_id.in_(had), "with e-consult"), else_="without e-consult").label("group")
    scoped = Attribution.month.in_(list(months))
    if team_ids is not None:
        scoped = and_(scoped, Attribution.team_id.in_(list(team_ids)))
    members = select(group, func.count().label("member_months"), func.count(func.distinct(Attribution.patient_id)).label("patients"))
    members = members.where(scoped).group_by(group)
    specialist = or_(Encounter.cost_category.in_(settings.specialist_categories),
                     and_(Encounter.cost_category == "", Encounter.kind == "specialist_visit"))  # fmt: skip
    spend = (
        select(group, func.sum(Encounter.paid_usd).label("specialist_spend_usd"))
        .join(Attribution, and_(Attribution.patient_id == Encounter.patient_id, Attribution.month == month_start_sql(engine.dialect.name, Encounter.start_date)))
        .where(scoped, Encounter.is_internal.is_(False), specialist)
        .group_by(group)
    )  # fmt: skip
    table = read_frame(engine, members).merge(read_frame(engine, spend), on="group", how="left")
    if table.empty:
        return pd.DataFrame(columns=["group", "patients", "member_months", "specialist_spend_usd", "specialist_pmpm_usd", "suppressed"])
    table = table.astype({"member_months": "float64", "patients": "float64", "specialist_spend_usd": "float64"}).fillna({"specialist_spend_usd": 0.0})
    table["specialist_pmpm_usd"] = table["specialist_spend_usd"] / table["member_months"]
    table = suppress_table(table, ["patients", "member_months"], total=True,
                           value_cols=["specialist_spend_usd", "specialist_pmpm_usd"])  # fmt: skip
    return table.sort_values("group", ascending=False).reset_index(drop=True)[
        ["group", "patients", "member_months", "specialist_spend_usd", "specialist_pmpm_usd", "suppressed"]]


def period_months(period: date, window: str = "12m") -> tuple[date, ...]:
    """The months of a window ending with ``period`` (a tuple, for cached calls)."""
    return tuple(window_months(period, window))


# --- display helpers (no Streamlit) ----------------------------------------------------------


def usd(amount: float, decimals: int = 0) -> str:
    """Dollars for a metric: ``-$1,234`` (the sign first, so a delta reads as negative)."""
    text = f"${abs(amount):,.{decimals}f}"
    return f"-{text}" if amount < 0 else text


def csv_export(frame: pd.DataFrame) -> str:
    """A published table as CSV: suppressed (and undefined) figures read ``suppressed``, never 0."""
    return frame.to_csv(index=False, na_rep="suppressed")


def scope_units(organisation: pd.DataFrame, team_ids: tuple[str, ...], network: bool) -> dict[str, str]:
    """What a user may look at, as option id -> label: the network (or their teams), each practice
    whose teams are in scope, each team in scope. Ids: ``all``, ``practice:<id>``, ``team:<id>``."""
    org = organisation.loc[organisation["team_id"].isin(team_ids)]
    units = {ALL: "Whole network" if network else "All my teams"}
    units |= {f"practice:{p}": name for p, name in org.groupby("practice_id")["practice"].first().items()}
    units |= {f"team:{r.team_id}": f"{r.practice} · {r.team}" for r in org.itertuples()}
    return units


def unit_filters(unit: str) -> tuple[str | None, str | None]:
    """(practice_id, team_id) of a :func:`scope_units` id."""
    kind, _, value = unit.partition(":")
    return (value, None) if kind == "practice" else (None, value) if kind == "team" else (None, None)
