"""Data of the equity page: one measure stratified by an equity dimension, with the gap of each
group to the best-served group (from core.metrics.scorecard.build_scorecard)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from core.metrics.scorecard import Selection, build_scorecard, window_counts_published
from core.metrics.stats import intervals_differ
from core.views.executive_settings import load_executive_settings


def equity_table(engine: Engine, measure_id: str, stratum: str, period: date, window: str = "12m",
                 subgroup: str | None = None, team_ids: tuple[str, ...] | None = None,
                 suppress: bool = True) -> pd.DataFrame:  # fmt: skip
    """One measure stratified by an equity dimension, with the gap to the best-served group.

    From core.metrics.scorecard.build_scorecard (cells, intervals, complementary suppression across the
    stratum values). Best-served = the best published value among real groups (not
    ``not_a_group`` values such as unknown). Columns: stratum_value, numerator, denominator,
    patients, value, ci_low, ci_high, network_value, best_value, gap_to_best (value - best,
    in the measure's unit), gap_is_real (the two intervals do not overlap), best, suppressed.
    Grain: stratum value. ``suppress`` False: exact figures (a user with patient-level access to
    every team of the figures).
    """
    settings = load_executive_settings()
    card = build_scorecard(engine, Selection(period=period, window=window, subgroup=subgroup, stratum=stratum), team_ids=team_ids,
                           suppress=suppress)
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
    if suppress and not window_counts_published(window):
        card[["numerator", "denominator"]] = np.nan
    return card[["stratum_value", "numerator", "denominator", "patients", "value", "ci_low", "ci_high", "network_value",
                 "best_value", "gap_to_best", "gap_is_real", "best", "unit", "suppressed"]]  # fmt: skip
