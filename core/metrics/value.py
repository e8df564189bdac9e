"""Value = outcomes relative to cost (Porter, NEJM 2010): an outcome index per team and subgroup
next to its cost per member per month, for a value map and its trend.

Outcome index (documented choice): for each subgroup (and month, when given) and each measure,
every team's value is standardised against the teams of the **same subgroup**
(z = (value - mean) / standard deviation across teams, sign flipped where lower is better), so
teams are compared only with peers serving similar patients. The index is 50 + 10 x the mean z
over the team's measures (a T-score scale: 50 = the peer average, 60 = one standard deviation
better on average). Measures with fewer than ``min_denominator`` patients are left out, and a
measure with one team or no spread contributes 0. Porter's value agenda (Porter, "What is value
in health care?", NEJM 2010) defines value as outcomes per dollar; this index is a relative
comparison, not a dollar value of health.
"""

from collections.abc import Sequence

import numpy as np
import pandas as pd

INDEX_CENTRE = 50.0
INDEX_SCALE = 10.0


def outcome_index(measure_values: pd.DataFrame, by: Sequence[str] = ("subgroup",), min_denominator: float = 0.0) -> pd.DataFrame:
    """Outcome index per team within each ``by`` group.

    In: measure_values (team_id, *by, measure_id, value, higher_is_better; optional denominator).
    Out grain: team_id, *by. Columns: outcome_index, measures (count used).
    """
    frame = measure_values.dropna(subset=["value"])
    if "denominator" in frame and min_denominator > 0:
        frame = frame.loc[frame["denominator"] >= min_denominator]
    group = [*by, "measure_id"]
    stats = frame.groupby(group)["value"].agg(mean="mean", sd="std").reset_index()
    frame = frame.merge(stats, on=group, how="left")
    sd = frame["sd"].astype(float)
    z = (frame["value"].astype(float) - frame["mean"].astype(float)) / sd.where(sd > 0)
    sign = np.where(frame["higher_is_better"].astype(bool), 1.0, -1.0)
    frame = frame.assign(z=(z * sign).fillna(0.0))
    out = frame.groupby(["team_id", *by], as_index=False).agg(mean_z=("z", "mean"), measures=("measure_id", "nunique"))
    out["outcome_index"] = INDEX_CENTRE + INDEX_SCALE * out["mean_z"]
    return out[["team_id", *by, "outcome_index", "measures"]]


def value_map(index: pd.DataFrame, cost_pmpm: pd.DataFrame, by: Sequence[str] = ("subgroup",), cost_column: str = "cost_total_pmpm_usd") -> pd.DataFrame:
    """Outcome index against cost PMPM per team, with each team's cost relative to its peers.

    In: index from :func:`outcome_index`; cost_pmpm (team_id, *by, ``cost_column``, member_months).
    Out grain: team_id, *by. Columns: outcome_index, measures, cost_pmpm_usd, member_months,
    cost_ratio_to_peers (cost / member-month-weighted peer mean of the ``by`` group), quadrant.
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
    better = out["outcome_index"] >= INDEX_CENTRE - tolerance
    cheaper = out["cost_ratio_to_peers"] <= 1.0 + tolerance
    out["quadrant"] = np.select(
        [better & cheaper, better & ~cheaper, ~better & cheaper],
        ["better outcomes, lower cost", "better outcomes, higher cost", "worse outcomes, lower cost"],
        "worse outcomes, higher cost",
    )
    out.loc[out["outcome_index"].isna() | out["cost_ratio_to_peers"].isna(), "quadrant"] = "not enough data"
    return out.sort_values(keys).reset_index(drop=True)
