"""Data of the team comparison page: every team's value of one measure against the network, and
the value map positions (cost PMPM and outcome index) of each team and subgroup, now and a year
earlier. Summed from the additive cells; every figure goes through the CMS cell-size rule."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from core.derive.costs import COST_TOTAL
from core.derive.measures import load_measures
from core.metrics.scorecard import is_small, suppress_table, window_counts_published
from core.metrics.stats import value_outside
from core.metrics.value import outcome_index, value_map
from core.store.months import WINDOWS, add_months
from core.views.cells_read import ALL, add_figures, cell_sums_by, window_sums
from core.views.executive_settings import load_executive_settings


def team_comparison(engine: Engine, measure_id: str, period: date, window: str = "12m", subgroup: str | None = None,
                    team_ids: tuple[str, ...] | None = None, suppress: bool = True) -> dict:  # fmt: skip
    """Every team's value of one measure with its 95 % interval against the network value.

    A team is an outlier (``flag`` ``better`` / ``worse``) only when the network value lies
    outside the team's interval (a caterpillar plot: an interval that crosses the network line is
    noise). Returns ``teams`` (grain: team_id; numerator, denominator, patients, value,
    ci_low, ci_high, flag, suppressed; complementary suppression, as parts of the network total)
    and ``network`` (a dict: value, ci_low, ci_high, suppressed). ``suppress`` False: exact
    figures (a user with patient-level access to every team); counts of windows longer than a
    month are published only then (:func:`core.metrics.scorecard.window_counts_published`).
    """
    catalogue = load_measures()
    measure = catalogue.by_id()[measure_id]
    n = WINDOWS[window]
    first = add_months(period, -(n - 1))
    sums = cell_sums_by(engine, ["team_id"], [measure_id], first, period, subgroup=subgroup)
    per_team = window_sums(sums, ["team_id"], period, n, catalogue)
    net = window_sums(sums.assign(team_id=ALL), ["team_id"], period, n, catalogue)
    network = add_figures(net, catalogue, suppress)
    if team_ids is not None:
        per_team = per_team.loc[per_team["team_id"].isin(team_ids)]
    count_cols = ["numerator", "denominator", "patients"] if measure.kind != "rate_per_1000_member_years" else ["numerator", "patients"]
    if measure.kind == "proportion":
        per_team = per_team.assign(non_numerator=per_team["denominator"] - per_team["numerator"])
        count_cols.append("non_numerator")
    raw = per_team.copy()
    teams = add_figures(per_team, catalogue, suppress)
    if suppress:
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
    if suppress and not window_counts_published(window):
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
    n = WINDOWS[window]
    metrics = [m.id for m in catalogue.measures] + [COST_TOTAL, "member_months"]
    sums = cell_sums_by(engine, ["team_id", "subgroup"], metrics, add_months(period, -(n - 1) - 12), period, team_ids)
    points = []
    for end in (period, add_months(period, -12)):
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
