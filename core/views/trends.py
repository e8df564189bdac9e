"""Data of the trends page: cost PMPM, key outcomes and the subgroup mix, month by month, summed
from the additive cells (GROUP BY in SQL). Every figure goes through the CMS cell-size rule."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Engine

from core.derive.measures import load_measures
from core.metrics.scorecard import suppress_table
from core.store.months import add_months
from core.views.cells_read import ALL, COST_LABELS, SUMS, add_figures, cell_sums_by, last_cell_month, window_sums
from core.views.executive_settings import load_executive_settings


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
    last = last_cell_month(engine)
    if last is None:
        return {"figures": pd.DataFrame(), "mix": pd.DataFrame()}
    first = add_months(last, -((months or settings.trend_months) - 1))
    metrics = [*COST_LABELS, *settings.key_outcomes, "member_months"]
    sums = cell_sums_by(engine, ["subgroup"], metrics, add_months(first, -(rolling - 1)), last, team_ids, practice_id, team_id)
    total = sums.groupby(["metric", "month"], as_index=False)[SUMS].sum().assign(subgroup=ALL)
    both = pd.concat([sums, total], ignore_index=True)
    mix = both.loc[(both["metric"] == "member_months") & (both["subgroup"] != ALL) & (both["month"] >= first)]
    outcomes = both.loc[both["metric"] != "member_months"]
    present = sorted(m for m in set(outcomes["month"]) if m >= first)
    rolled = [window_sums(outcomes, ["subgroup"], m, rolling, catalogue).assign(month=m) for m in present]
    figures = add_figures(pd.concat(rolled, ignore_index=True) if rolled else outcomes, catalogue)
    names = {m.id: m.name for m in catalogue.measures} | COST_LABELS
    figures["metric_label"] = figures["metric"].map(names)
    figures = figures[["month", "subgroup", "metric", "metric_label", "kind", "value", "ci_low", "ci_high", "patients", "suppressed"]]
    mix = mix.rename(columns={"numerator": "members"})[["month", "subgroup", "members"]]
    mix = suppress_table(mix, ["members"], total=True, group_cols=["month"])
    month_total = mix.groupby("month")["members"].transform("sum")
    mix["share"] = mix["members"] / month_total.where(month_total > 0)
    return {"figures": figures.sort_values(["metric", "subgroup", "month"]).reset_index(drop=True),
            "mix": mix.sort_values(["month", "subgroup"]).reset_index(drop=True)}  # fmt: skip
