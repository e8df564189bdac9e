"""Data of the equity page: one measure stratified by an equity dimension, with the gap of each
group to a reference group (from core.metrics.scorecard.build_scorecard)."""

from __future__ import annotations

from datetime import date
from functools import cache

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from core.config import load_toml
from core.derive.cells import STRATA_PATH
from core.metrics.scorecard import Selection, build_scorecard, window_counts_published
from core.metrics.stats import intervals_differ
from core.views.executive_settings import load_executive_settings


@cache
def stratum_value_labels() -> dict[str, dict[str, str]]:
    """Labels of stratum values stored as codes (core/config/strata.toml [value_labels.<stratum>])."""
    raw = load_toml(STRATA_PATH).get("value_labels", {})
    return {str(stratum): {str(k): str(v) for k, v in values.items()} for stratum, values in raw.items()}


def stratum_value_label(stratum: str, value: str) -> str:
    """A stratum value as people read it: its label in strata.toml, or the value as stored."""
    return stratum_value_labels().get(stratum, {}).get(str(value), str(value))


def reference_group(card: pd.DataFrame, direction: str, rule: str, min_patients: float, not_a_group=()) -> str | None:
    """The stratum value every gap is measured against, among published real groups (not
    ``not_a_group``): ``largest`` = the most patients; ``best_above_minimum`` = the best value
    among groups with at least ``min_patients`` patients, the largest group when none has that many.
    None when no group is published."""
    real = ~card["stratum_value"].isin(list(not_a_group))
    candidates = card.loc[~card["suppressed"].astype(bool) & card["value"].notna() & real]
    if candidates.empty:
        return None
    largest = candidates.sort_values(["patients", "stratum_value"], ascending=[False, True]).iloc[0]["stratum_value"]
    if rule == "largest":
        return largest
    big = candidates.loc[candidates["patients"] >= min_patients]
    if big.empty:
        return largest
    return big.loc[big["value"].idxmax() if direction == "higher" else big["value"].idxmin(), "stratum_value"]


def equity_table(engine: Engine, measure_id: str, stratum: str, period: date, window: str = "12m",
                 subgroup: str | None = None, team_ids: tuple[str, ...] | None = None,
                 suppress: bool = True) -> pd.DataFrame:  # fmt: skip
    """One measure stratified by an equity dimension, with the gap to the reference group.

    From core.metrics.scorecard.build_scorecard (cells, intervals, complementary suppression across the
    stratum values). Reference group: :func:`reference_group` with the rule and minimum size of
    core/config/executive.toml [equity] (a group of 18 people cannot set the bar). Columns:
    stratum_value (as stored), group (its label, core/config/strata.toml), numerator,
    denominator, patients, value, ci_low, ci_high, network_value (the value of every patient of
    the whole network in the subgroup, all groups together), best_value (the reference group's
    value), gap_to_best (value - reference, in the measure's unit), gap_is_real (the two
    intervals do not overlap), best (the reference group), unit, suppressed. Grain: stratum value.
    ``suppress`` False: exact figures (a user with patient-level access to every team of the figures).
    """
    settings = load_executive_settings()
    card = build_scorecard(engine, Selection(period=period, window=window, subgroup=subgroup, stratum=stratum), team_ids=team_ids,
                           suppress=suppress)
    card = card.loc[card["measure_id"] == measure_id].reset_index(drop=True)
    if card.empty:
        return card
    network = build_scorecard(engine, Selection(period=period, window=window, subgroup=subgroup), suppress=suppress)
    network = network.loc[network["measure_id"] == measure_id]
    network_value = float(network["value"].iloc[0]) if len(network) and not bool(network["suppressed"].iloc[0]) else np.nan
    direction = card["direction"].iloc[0]
    reference = reference_group(card, direction, settings.equity_reference, settings.reference_min_patients, settings.not_a_group)
    if reference is None:
        card = card.assign(best_value=np.nan, gap_to_best=np.nan, gap_is_real=False, best=False)
    else:
        best = card.loc[card["stratum_value"] == reference].iloc[0]
        differ = np.asarray(intervals_differ(card["ci_low"], card["ci_high"], best["ci_low"], best["ci_high"]), dtype=bool)
        card = card.assign(best_value=best["value"], gap_to_best=card["value"] - best["value"],
                           gap_is_real=differ & ~card["suppressed"].to_numpy(dtype=bool),
                           best=card["stratum_value"] == reference)  # fmt: skip
    card["network_value"] = network_value
    card["group"] = [stratum_value_label(stratum, v) for v in card["stratum_value"]]
    if suppress and not window_counts_published(window):
        card[["numerator", "denominator"]] = np.nan
    return card[["stratum_value", "group", "numerator", "denominator", "patients", "value", "ci_low", "ci_high", "network_value",
                 "best_value", "gap_to_best", "gap_is_real", "best", "unit", "suppressed"]]  # fmt: skip
