"""Data of the trends page: cost PMPM, key outcomes and the subgroup mix, month by month, summed
from the additive cells (GROUP BY in SQL). Every figure goes through the CMS cell-size rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from core.derive.costs import COST_EXTERNAL, COST_TOTAL
from core.derive.measures import load_measures
from core.metrics import runout
from core.metrics.scorecard import figure_counts, hide_complements, suppress_table
from core.metrics.stats import t_interval
from core.store.months import add_months, months_between
from core.views.cells_read import ALL, COST_KIND, COST_LABELS, SUMS, add_figures, cell_sums_by, last_cell_month, window_sums
from core.views.executive_settings import load_executive_settings


def trends(engine: Engine, team_ids: tuple[str, ...] | None = None, practice_id: str | None = None,
           team_id: str | None = None, months: int | None = None, rolling: int = 1,
           completed: bool = False, suppress: bool = True) -> dict[str, pd.DataFrame]:  # fmt: skip
    """Cost PMPM (internal, external, total), key outcomes and the subgroup mix, month by month.

    ``rolling`` > 1: each month's figure is of the ``rolling`` months ending with it (fewer
    figures suppressed; window-"end" measures still take the month itself); the first figure is
    the first full window of the data, never a partial one. ``completed``: claims (external and
    total cost) divided by each month's completion factor (core.metrics.runout; only where paid
    dates give factors). Every figure carries ``claims_complete`` (its month's claims have run
    out, core.metrics.runout.claims_completeness), and ``completeness`` is that table.

    Returns ``figures`` (grain: month, subgroup, metric; subgroup ``all`` = every subgroup
    together; columns metric_label, kind, value, ci_low, ci_high (95 %: the measure's interval;
    a t interval for cost PMPM), patients, suppressed, claims_complete, partial (a claims cost
    whose window has not run out and is not completed: never drawn)) and ``mix`` (grain: month,
    subgroup; members, share, suppressed; complementary suppression within each month, as the
    parts of the month's total; share = of all the unit's members of the month, hidden or not).
    Subgroup figures also get complementary suppression against the All row of their month and
    metric. ``suppress`` False: exact figures (core.access.suppression's "exact" policy).
    """
    settings = load_executive_settings()
    catalogue = load_measures()
    last = last_cell_month(engine)
    if last is None:
        return {"figures": pd.DataFrame(), "mix": pd.DataFrame()}
    first = add_months(last, -((months or settings.trend_months) - 1))
    metrics = [*COST_LABELS, *settings.key_outcomes, "member_months"]
    sums = cell_sums_by(engine, ["subgroup"], metrics, add_months(first, -(rolling - 1)), last, team_ids, practice_id, team_id)
    completeness = runout.claims_completeness(engine, months_between(add_months(first, -(rolling - 1)), last))
    if completed:
        sums = _completed_claims(sums, completeness)
    data_start = min(sums["month"]) if len(sums) else last
    total = sums.groupby(["metric", "month"], as_index=False)[SUMS].sum().assign(subgroup=ALL)
    both = pd.concat([sums, total], ignore_index=True)
    mix = both.loc[(both["metric"] == "member_months") & (both["subgroup"] != ALL) & (both["month"] >= first)]
    outcomes = both.loc[both["metric"] != "member_months"]
    present = sorted(m for m in set(outcomes["month"]) if m >= first and add_months(m, -(rolling - 1)) >= data_start)
    rolled = [window_sums(outcomes, ["subgroup"], m, rolling, catalogue).assign(month=m) for m in present]
    rolled = pd.concat(rolled, ignore_index=True) if rolled else outcomes
    figures = add_figures(rolled, catalogue, suppress, rolling)
    cost = (figures["kind"] == COST_KIND).to_numpy()
    if cost.any():  # cost PMPM: a t interval (each member-month one observation; sums and squares are additive)
        _, low, high = t_interval(rolled.loc[cost, "numerator"], rolled.loc[cost, "denominator"], rolled.loc[cost, "sum_sq"])
        hidden = figures.loc[cost, "suppressed"].to_numpy(dtype=bool)
        figures.loc[cost, "ci_low"] = np.where(hidden, np.nan, np.maximum(low, 0.0))  # a cost is never below $0
        figures.loc[cost, "ci_high"] = np.where(hidden, np.nan, high)
    if suppress:  # every subgroup's figure is published with the All row: complementary per month and metric
        counts = figure_counts(figures["kind"], rolled["numerator"], rolled["denominator"], rolled["patients"])
        figures = hide_complements(figures, counts, (figures["subgroup"] != ALL).to_numpy(), ["month", "metric"],
                                   ["numerator", "denominator", "sum_sq", "patients", "value", "ci_low", "ci_high"])
    names = {m.id: m.name for m in catalogue.measures} | COST_LABELS
    figures["metric_label"] = figures["metric"].map(names)
    complete = dict(zip(completeness["month"], completeness["complete"], strict=True))
    figures["claims_complete"] = figures["month"].map(complete).fillna(True).astype(bool)
    # a window of claims that have not run out is partial: never drawn, unless completed from paid-date lags
    estimated = set(completeness.loc[completeness["basis"] == runout.PAID_DATES, "month"]) if completed else set()
    claims = figures["metric"].isin([COST_EXTERNAL, COST_TOTAL])
    figures["partial"] = (claims & ~figures["claims_complete"] & ~figures["month"].isin(estimated)).astype(bool)
    figures = figures[["month", "subgroup", "metric", "metric_label", "kind", "value", "ci_low", "ci_high", "patients", "suppressed",
                       "claims_complete", "partial"]]  # fmt: skip
    mix = mix.rename(columns={"numerator": "members"})[["month", "subgroup", "members"]]
    totals = mix.groupby("month")["members"].sum()
    if suppress:
        mix = suppress_table(mix, ["members"], total=True, group_cols=["month"])
        mix, figures = _one_hidden_set(mix, figures)
    else:
        mix = mix.assign(suppressed=False)
    # share of ALL the unit's members of the month (not of the published ones: a team whose other
    # subgroups are suppressed is not 100 % one subgroup). The total may be published: complementary
    # suppression keeps the hidden parts from adding up to 1-10.
    month_total = mix["month"].map(totals)
    mix["share"] = mix["members"] / month_total.where(month_total > 0)
    return {"figures": figures.sort_values(["metric", "subgroup", "month"]).reset_index(drop=True),
            "mix": mix.sort_values(["month", "subgroup"]).reset_index(drop=True), "completeness": completeness}  # fmt: skip


def _completed_claims(sums: pd.DataFrame, completeness: pd.DataFrame) -> pd.DataFrame:
    """Monthly sums with claims completed for the run-out: external cost / completion factor,
    and total cost raised by the same amount (core.metrics.runout.completed_usd)."""
    out = sums.copy()
    external = out["metric"] == COST_EXTERNAL
    raised = runout.completed_usd(out.loc[external, "numerator"], out.loc[external, "month"], completeness)
    extra = (raised - out.loc[external, "numerator"]).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):  # squares scaled alike, for the interval (approximate)
        factor = np.where(out.loc[external, "numerator"] > 0, raised.to_numpy() / out.loc[external, "numerator"].to_numpy(), 1.0)
    out.loc[external, "sum_sq"] = out.loc[external, "sum_sq"].to_numpy() * factor**2
    out.loc[external, "numerator"] = raised.to_numpy()
    keys = out.loc[external, ["subgroup", "month"]].assign(extra=extra)
    total = out["metric"] == COST_TOTAL
    add = out.loc[total, ["subgroup", "month"]].merge(keys, on=["subgroup", "month"], how="left")["extra"].fillna(0.0).to_numpy()
    before = out.loc[total, "numerator"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(before > 0, (before + add) / before, 1.0)
    out.loc[total, "sum_sq"] = out.loc[total, "sum_sq"].to_numpy() * factor**2
    out.loc[total, "numerator"] = before + add
    return out



def _one_hidden_set(mix: pd.DataFrame, figures: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A subgroup's members are also the patients of its cost figures: a subgroup-month hidden in
    either is hidden in both (each set alone holds against the month's total, so their union does)."""
    cost = (figures["kind"] == COST_KIND).to_numpy()
    hidden = set(zip(mix.loc[mix["suppressed"], "month"], mix.loc[mix["suppressed"], "subgroup"], strict=True))
    hidden |= set(zip(figures.loc[cost & figures["suppressed"], "month"], figures.loc[cost & figures["suppressed"], "subgroup"],
                      strict=True))  # fmt: skip
    in_mix = np.array([k in hidden for k in zip(mix["month"], mix["subgroup"], strict=True)], dtype=bool)
    in_figures = cost & np.array([k in hidden for k in zip(figures["month"], figures["subgroup"], strict=True)], dtype=bool)
    mix = mix.assign(members=mix["members"].where(~in_mix), suppressed=in_mix)
    figures = figures.copy()
    figures.loc[in_figures, ["value", "ci_low", "ci_high", "patients"]] = np.nan
    figures.loc[in_figures, "suppressed"] = True
    return mix, figures


def outcomes_with_data(figures: pd.DataFrame) -> list[str]:
    """The outcome metrics of ``figures`` (not cost), those with the most data first: ordered by the
    share of their month-subgroup points that are published and non-zero (a line of zeros and
    gaps last), then as listed. The trends page opens on the first."""
    part = figures.loc[figures["kind"] != COST_KIND]
    if part.empty:
        return []
    order = list(dict.fromkeys(part["metric"]))
    score = part.assign(shown=part["value"].notna() & (part["value"].fillna(0) != 0)).groupby("metric")["shown"].mean()
    return sorted(order, key=lambda m: (-round(float(score.get(m, 0.0)), 6), order.index(m)))
