"""Reading the additive cells for the executive views: sums grouped in SQL, reduced to a window,
and turned into published figures.

Every figure goes through the CMS cell-size rule of core/metrics/scorecard.py (counts of 1-10 are
never published). Cells are summed with GROUP BY in SQL, so these readers cost the same at any
network size.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np
import pandas as pd
from sqlalchemy import Engine, func, select

from core.derive.costs import COST_EXTERNAL, COST_INTERNAL, COST_TOTAL
from core.derive.measures import MeasureCatalogue, load_measures
from core.metrics.scorecard import figure, is_small, rounded_numerators, small_figure, window_rounding_base
from core.store.models import Cell
from core.store.months import add_months, as_month
from core.store.queries import read_frame, where_selection

COST_LABELS = {COST_TOTAL: "Total cost PMPM", COST_INTERNAL: "Internal cost PMPM (TDABC)",
               COST_EXTERNAL: "External cost PMPM (claims)"}  # fmt: skip
COST_KIND = "cost_pmpm"
ALL = "all"
SUMS = ["numerator", "denominator", "sum_sq", "patients"]


def cell_sums_by(engine: Engine, by: Sequence[str], metrics: Sequence[str], first: date, last: date,
                 team_ids: tuple[str, ...] | None = None, practice_id: str | None = None, team_id: str | None = None,
                 subgroup: str | None = None, stratum: str = ALL) -> pd.DataFrame:  # fmt: skip
    """Cell sums grouped in SQL by ``by`` (any of practice_id, team_id, subgroup, stratum_value), metric and month.

    Grain: *by, metric, month. Columns: *by, metric, month (date), numerator, denominator, sum_sq, patients.
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
    frame["month"] = [as_month(m) for m in frame["month"]]
    return frame.astype({s: "float64" for s in SUMS})


def _kinds(metrics: Sequence[str], catalogue: MeasureCatalogue) -> dict[str, str]:
    by_id = catalogue.by_id()
    return {m: by_id[m].kind if m in by_id else COST_KIND for m in metrics}


def add_figures(sums: pd.DataFrame, catalogue: MeasureCatalogue | None = None, suppress: bool = True,
                months: int = 1) -> pd.DataFrame:  # fmt: skip
    """Add value, ci_low, ci_high (measure unit; cost PMPM in USD) and suppressed to summed cells
    (same grain as ``sums``).

    A measure is suppressed by core.metrics.scorecard.small_figure; a cost PMPM when its patient count
    is 1-10. Suppressed rows lose their counts and figures (NaN). ``suppress`` False: exact figures.
    ``months``: the length of the window the sums cover; with ``suppress`` and more than one month,
    values and intervals come from rounded numerators (core.metrics.scorecard.rounded_numerators;
    the counts columns and the small test stay exact).
    """
    catalogue = catalogue or load_measures()
    base = window_rounding_base(suppress, months)
    summed = {m.id for m in catalogue.measures if m.window != "end"}
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
            shown = rounded_numerators(kind, part["numerator"], part["denominator"], base, part["metric"].isin(summed).to_numpy())
            value, low, high = figure(kind, shown, part["denominator"], part["sum_sq"])
            small = small_figure(kind, part["numerator"], part["denominator"], part["patients"])
        out.loc[mask, "value"], out.loc[mask, "ci_low"], out.loc[mask, "ci_high"] = value, low, high
        out.loc[mask, "suppressed"] = small & suppress
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
    first = add_months(end, -(months - 1))
    part = sums.loc[(sums["month"] >= first) & (sums["month"] <= end)]
    part = part.loc[~part["metric"].isin(end_rule) | (part["month"] == end)]
    keys = [*by, "metric"]
    if part.empty:
        return pd.DataFrame(columns=[*keys, *SUMS])
    return part.groupby(keys, as_index=False).agg(numerator=("numerator", "sum"), denominator=("denominator", "sum"),
                                                  sum_sq=("sum_sq", "sum"), patients=("patients", "max"))  # fmt: skip


def last_cell_month(engine: Engine) -> date | None:
    with engine.connect() as conn:
        last = conn.execute(select(func.max(Cell.month)).where(Cell.metric == "member_months")).scalar_one_or_none()
    return None if last is None else as_month(last)
