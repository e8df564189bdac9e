"""Value = outcomes relative to cost (Porter, NEJM 2010): a value index per team and subgroup
next to its cost per member per month, for a value map (team comparison, monthly review) and its
trend. Porter's value agenda (Porter, "What is value in health care?", NEJM 2010) defines value as
outcomes per dollar; this index scores outcomes against targets, it is not a dollar value of health.

Value index (:func:`value_index`, the value maps of the team comparison and the monthly review): each measure is scored
against its **target** (core/config/measures.toml), 100 = exactly on target:
higher is better: score = 100 x value / target; lower is better: score = 100 x (2 - value / target),
clipped to [0, ``cap``] (200 by default: twice the target, or none of the events, earns no more).
A team's index is the weighted mean of its measure scores (weights per tier, executive.toml
[value_index]), on the **same measure set for every team compared** (teams of one subgroup): a
measure missing, suppressed or under the minimum denominator for any of them is left out for all
(and reported). Its interval is propagated from the per-measure 95 % intervals: each measure's
score interval is the score of its value's interval ends, its standard error (high - low) / (2 x
1.96); the index's standard error is sqrt(sum(w^2 se^2)) / sum(w), measures taken as independent
(they share patients, so the interval is if anything too narrow). The index does not depend on
how many teams are compared: two teams no longer sit at 53.5 and 46.5 by construction.
"""

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd


def value_map(index: pd.DataFrame, cost_pmpm: pd.DataFrame, by: Sequence[str] = ("subgroup",), cost_column: str = "cost_total_pmpm_usd",
              centre: float = 100.0, index_column: str = "value_index") -> pd.DataFrame:  # fmt: skip
    """Value index against cost PMPM per team, with each team's cost relative to its peers.

    In: index (team_id, *by, ``index_column``, ...: the ``index`` of :func:`value_index`); cost_pmpm
    (team_id, *by, ``cost_column``, member_months).
    Out grain: team_id, *by. Columns: those of ``index``, cost_pmpm_usd, member_months,
    cost_ratio_to_peers (cost / member-month-weighted peer mean of the ``by`` group), quadrant
    ("better outcomes" = ``index_column`` at or above ``centre``: 100 = targets met on average).
    """
    keys = ["team_id", *by]
    out = index.merge(cost_pmpm[[*keys, cost_column, "member_months"]], on=keys, how="outer")
    out = out.rename(columns={cost_column: "cost_pmpm_usd"})
    weighted = out.assign(_cost=out["cost_pmpm_usd"] * out["member_months"])
    if by:
        peer = weighted.groupby(list(by))[["_cost", "member_months"]].transform("sum")
    else:
        peer = pd.DataFrame({"_cost": weighted["_cost"].sum(), "member_months": weighted["member_months"].sum()}, index=weighted.index)
    peer_cost = peer["_cost"] / peer["member_months"].replace(0.0, np.nan)
    out["cost_ratio_to_peers"] = out["cost_pmpm_usd"] / peer_cost
    tolerance = 1e-9  # the peer average itself counts as "better" and "lower", whatever the rounding
    better = out[index_column] >= centre - tolerance
    cheaper = out["cost_ratio_to_peers"] <= 1.0 + tolerance
    out["quadrant"] = np.select(
        [better & cheaper, better & ~cheaper, ~better & cheaper],
        ["better outcomes, lower cost", "better outcomes, higher cost", "worse outcomes, lower cost"],
        "worse outcomes, higher cost",
    )
    out.loc[out[index_column].isna() | out["cost_ratio_to_peers"].isna(), "quadrant"] = "not enough data"
    return out.sort_values(keys).reset_index(drop=True)


VALUE_INDEX_TARGET = 100.0
Z95 = 1.959963984540054


def measure_score(value, target, higher_is_better, cap: float = 200.0):
    """Score of a measure value against its target (100 = on target; see the module doc). NaN where
    the value is missing or the target is not positive."""
    v, t = np.asarray(value, dtype="float64"), np.asarray(target, dtype="float64")
    higher = np.asarray(higher_is_better, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(t > 0, v / t, np.nan)
        score = np.where(higher, 100.0 * ratio, 100.0 * (2.0 - ratio))
    return np.clip(score, 0.0, cap)


def value_index(measure_values: pd.DataFrame, by: Sequence[str] = ("subgroup",), cap: float = 200.0,
                teams: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:  # fmt: skip
    """Value index per team within each ``by`` group, scored against targets on a common measure set.

    In: measure_values (team_id, *by, measure_id, value, ci_low, ci_high, target, higher_is_better,
    optional weight (default 1)); a row with NaN value is a measure the team has but cannot
    publish (suppressed, too few patients). ``teams`` (team_id, *by): the teams compared in each
    group (default: every team of ``measure_values``). A measure enters a group's index only when
    every team of the group has a value for it.

    Returns ``index`` (grain team_id, *by: value_index, index_low, index_high, measures),
    ``parts`` (grain team_id, *by, measure_id: value, target, score, score_low, score_high,
    weight, weight_share) and ``excluded`` (grain *by, measure_id: teams_with_value, teams).
    """
    by = list(by)
    frame = measure_values.copy()
    if "weight" not in frame:
        frame["weight"] = 1.0
    if teams is None:
        teams = frame[["team_id", *by]].drop_duplicates()
    n_teams = teams.groupby(by).size().rename("teams").reset_index() if by else pd.DataFrame({"teams": [teams["team_id"].nunique()]})  # fmt: skip
    have = frame.dropna(subset=["value"]).merge(teams, on=["team_id", *by])
    counted = have.groupby([*by, "measure_id"])["team_id"].nunique().rename("teams_with_value").reset_index()
    measures = frame[[*by, "measure_id"]].drop_duplicates().merge(counted, on=[*by, "measure_id"], how="left")
    measures = measures.merge(n_teams, on=by, how="left") if by else measures.assign(teams=int(n_teams["teams"].iloc[0]))
    measures["teams_with_value"] = measures["teams_with_value"].fillna(0).astype(int)
    common = measures["teams_with_value"] >= measures["teams"]
    excluded = measures.loc[~common, [*by, "measure_id", "teams_with_value", "teams"]].reset_index(drop=True)
    parts = have.merge(measures.loc[common, [*by, "measure_id"]], on=[*by, "measure_id"])
    higher = parts["higher_is_better"].astype(bool).to_numpy()
    parts["score"] = measure_score(parts["value"], parts["target"], higher, cap)
    ends = np.stack([measure_score(parts["ci_low"], parts["target"], higher, cap),
                     measure_score(parts["ci_high"], parts["target"], higher, cap)])  # fmt: skip
    with warnings.catch_warnings():  # a value without an interval (NaN ends) keeps a NaN score interval
        warnings.simplefilter("ignore", RuntimeWarning)
        parts["score_low"], parts["score_high"] = np.nanmin(ends, axis=0) if len(parts) else [], np.nanmax(ends, axis=0) if len(parts) else []  # fmt: skip
    se = (parts["score_high"] - parts["score_low"]) / (2 * Z95)
    parts = parts.assign(_w=parts["weight"].astype(float), _ws=parts["weight"].astype(float) * parts["score"],
                         _v=(parts["weight"].astype(float) * se.fillna(0.0)) ** 2)  # fmt: skip
    keys = ["team_id", *by]
    index = parts.groupby(keys, as_index=False).agg(w=("_w", "sum"), ws=("_ws", "sum"), v=("_v", "sum"), measures=("measure_id", "nunique"))  # fmt: skip
    index["value_index"] = index["ws"] / index["w"].where(index["w"] > 0)
    half = Z95 * np.sqrt(index["v"]) / index["w"].where(index["w"] > 0)
    index["index_low"], index["index_high"] = index["value_index"] - half, index["value_index"] + half
    parts["weight_share"] = parts["_w"] / parts.groupby(keys)["_w"].transform("sum")
    parts = parts[[*keys, "measure_id", "value", "target", "score", "score_low", "score_high", "weight", "weight_share"]]
    return {"index": index[[*keys, "value_index", "index_low", "index_high", "measures"]],
            "parts": parts.sort_values([*keys, "measure_id"]).reset_index(drop=True),
            "excluded": excluded.sort_values([*by, "measure_id"]).reset_index(drop=True)}  # fmt: skip
