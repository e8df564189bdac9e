"""Data of the team comparison page: every team's value of one measure against the network, and
the value map positions (cost PMPM and outcome index) of each team and subgroup, now and a year
earlier. Summed from the additive cells; every figure goes through the CMS cell-size rule."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from core.derive.costs import COST_TOTAL
from core.derive.measures import load_measures
from core.metrics.scorecard import (
    RISK_METRIC,
    SCALE,
    is_small,
    rounded_numerators,
    suppress_table,
    window_counts_published,
    window_rounding_base,
)
from core.metrics.stats import funnel_limits, indirect_standardisation, poisson_exact_interval, t_interval, value_outside
from core.metrics.value import VALUE_INDEX_TARGET, value_index, value_map
from core.store.months import WINDOWS, add_months
from core.views.cells_read import ALL, COST_KIND, COST_LABELS, add_figures, cell_sums_by, window_sums
from core.views.executive_settings import load_executive_settings

FUNNEL_LEVELS = (0.95, 0.998)
FUNNEL_POINTS = 80
COST_UNIT = "USD per member per month"


@dataclass(frozen=True)
class Compared:
    """What is compared: an outcome measure of core/config/measures.toml or a cost PMPM metric."""

    id: str
    name: str
    kind: str  # proportion | rate_per_1000_member_years | mean | cost_pmpm
    unit: str
    direction: str
    risk_adjust: bool
    subgroups: tuple[str, ...]

    def applies_to(self, subgroup: str | None) -> bool:
        return subgroup is None or "all" in self.subgroups or subgroup in self.subgroups

    @property
    def scale(self) -> float:
        return SCALE.get(self.kind, 1.0)

    @property
    def volume_label(self) -> str:
        return {"proportion": "eligible patients", "rate_per_1000_member_years": "member-years",
                "mean": "patients with a value", COST_KIND: "member-months"}[self.kind]  # fmt: skip


def comparison_measures() -> dict[str, Compared]:
    """Everything the team comparison offers: the outcome measures (utilisation among them: ED
    visits, admissions) and the cost PMPM metrics (core/views/cells_read.COST_LABELS; lower is
    better, risk-adjusted like utilisation)."""
    out = {m.id: Compared(m.id, m.name, m.kind, m.unit, m.direction, m.risk_adjust, m.subgroups) for m in load_measures().measures}  # fmt: skip
    for metric, label in COST_LABELS.items():
        out[metric] = Compared(metric, label, COST_KIND, COST_UNIT, "lower", True, ("all",))
    return out


def _figures(frame: pd.DataFrame, compared: Compared, suppress: bool, months: int = 1) -> pd.DataFrame:
    """Published figures of summed cells of a window of ``months``: measures through add_figures
    (rounded numerators over longer windows); a cost PMPM with its t interval (every member-month
    one observation: cost sums, squares and member-months are additive)."""
    out = add_figures(frame.assign(metric=compared.id) if "metric" not in frame else frame, suppress=suppress, months=months)
    if compared.kind == COST_KIND:
        _, low, high = t_interval(frame["numerator"].to_numpy(), frame["denominator"].to_numpy(), frame["sum_sq"].to_numpy())
        hidden = out["suppressed"].to_numpy(dtype=bool)
        out["ci_low"] = np.where(hidden, np.nan, low)
        out["ci_high"] = np.where(hidden, np.nan, high)
    return out


def _shown_volume(volume: pd.Series, exact: bool) -> pd.Series:
    """The funnel's x position: exact where window counts are published, else rounded to two
    significant figures (a window's volume, like its counts, would give a month back by subtraction)."""
    v = volume.astype("float64")
    if exact:
        return v
    digits = np.floor(np.log10(v.where(v > 0)))
    step = 10.0 ** (digits - 1)
    return (np.round(v / step) * step).where(v > 0, v)


def _funnel(kind: str, centre: float, max_volume: float, scale: float, sd: float | None = None) -> pd.DataFrame:
    """Control limits (core.metrics.stats.funnel_limits) at 95 % and 99.8 % from volume 1 to
    ``max_volume``, in the unit shown (``scale`` x). Columns: volume, low_95, high_95, low_998, high_998."""
    if not np.isfinite(centre) or not np.isfinite(max_volume) or max_volume <= 0:
        return pd.DataFrame(columns=["volume", "low_95", "high_95", "low_998", "high_998"])
    volume = np.unique(np.geomspace(1.0, max(max_volume * 1.15, 2.0), FUNNEL_POINTS))
    out = pd.DataFrame({"volume": volume})
    for level, tag in zip(FUNNEL_LEVELS, ("95", "998"), strict=True):
        low, high = funnel_limits(kind, centre, volume, level, sd)
        out[f"low_{tag}"], out[f"high_{tag}"] = np.asarray(low) * scale, np.asarray(high) * scale
    return out


def _funnel_position(value, low_95, high_95, low_998, high_998) -> np.ndarray:
    v = np.asarray(value, dtype="float64")
    with np.errstate(invalid="ignore"):
        outside_998 = (v < low_998) | (v > high_998)
        outside_95 = (v < low_95) | (v > high_95)
    return np.select([np.isnan(v), outside_998, outside_95], ["suppressed", "outside 99.8% limits", "outside 95% limits"],
                     "within 95% limits")  # fmt: skip


def _funnel_kind(kind: str) -> str:
    return {"proportion": "proportion", "rate_per_1000_member_years": "rate"}.get(kind, "mean")


def team_comparison(engine: Engine, measure_id: str, period: date, window: str = "12m", subgroup: str | None = None,
                    team_ids: tuple[str, ...] | None = None, suppress: bool = True) -> dict:  # fmt: skip
    """Every team's value of one measure (or cost PMPM) with its 95 % interval against the network value.

    A team is an outlier (``flag`` ``better`` / ``worse``) only when the network value lies
    outside the team's interval (a caterpillar plot: an interval that crosses the network line is
    noise). ``subgroup`` None adds up every subgroup (crude: case mix is not taken into account;
    the page shows :func:`standardised_comparison` instead). Returns ``teams`` (grain: team_id;
    numerator, denominator, patients, value, ci_low, ci_high, volume (the funnel's x: see
    :meth:`Compared.volume_label`), funnel_position, flag, suppressed; complementary
    suppression, as parts of the network total), ``network`` (a dict: value, ci_low, ci_high,
    suppressed), ``funnel`` (control limits by volume around the network value,
    core.metrics.stats.funnel_limits) and ``measure`` (:class:`Compared`). ``suppress`` False:
    exact figures (a user with patient-level access to every team); counts of windows longer
    than a month are published only then (:func:`core.metrics.scorecard.window_counts_published`).
    """
    catalogue = load_measures()
    measure = comparison_measures()[measure_id]
    n = WINDOWS[window]
    first = add_months(period, -(n - 1))
    sums = cell_sums_by(engine, ["team_id"], [measure_id], first, period, subgroup=subgroup)
    per_team = window_sums(sums, ["team_id"], period, n, catalogue)
    net = window_sums(sums.assign(team_id=ALL), ["team_id"], period, n, catalogue)
    network = _figures(net, measure, suppress, n)
    if team_ids is not None:
        per_team = per_team.loc[per_team["team_id"].isin(team_ids)]
    count_cols = {"rate_per_1000_member_years": ["numerator", "patients"], COST_KIND: ["denominator", "patients"]}.get(
        measure.kind, ["numerator", "denominator", "patients"])  # fmt: skip
    if measure.kind == "proportion":
        per_team = per_team.assign(non_numerator=per_team["denominator"] - per_team["numerator"])
        count_cols.append("non_numerator")
    raw = per_team.copy()
    teams = _figures(per_team, measure, suppress, n)
    if suppress:
        teams["suppressed"] = suppress_table(raw.assign(suppressed=teams["suppressed"].to_numpy()), count_cols, total=True)["suppressed"].to_numpy()  # fmt: skip
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
    # funnel: the network value with limits by volume (volume = the denominator of the figure)
    kind = _funnel_kind(measure.kind)
    sd = None
    if kind == "mean" and len(net) and float(net["denominator"].iloc[0]) > 1:
        total, n_all, q_all = (float(net[c].iloc[0]) for c in ("numerator", "denominator", "sum_sq"))
        sd = float(np.sqrt(max(q_all - total * total / n_all, 0.0) / (n_all - 1)))
    volume = raw["denominator"].astype("float64").to_numpy()
    teams["volume"] = np.where(hidden, np.nan, volume)
    funnel = _funnel(kind, net_value / measure.scale, np.nanmax(teams["volume"]) if teams["volume"].notna().any() else np.nan,
                     measure.scale, sd)  # fmt: skip
    limits = {tag: funnel_limits(kind, net_value / measure.scale, teams["volume"].to_numpy(), level, sd)
              for level, tag in zip(FUNNEL_LEVELS, ("95", "998"), strict=True)}  # fmt: skip
    teams["funnel_position"] = _funnel_position(teams["value"] / measure.scale, *limits["95"], *limits["998"])
    exact = not suppress or window_counts_published(window)
    teams["volume"] = _shown_volume(teams["volume"], exact)
    if not exact:
        teams[["numerator", "denominator"]] = np.nan
    teams = teams[["team_id", "numerator", "denominator", "patients", "value", "ci_low", "ci_high", "volume", "funnel_position", "flag",
                   "suppressed"]]  # fmt: skip
    network_dict = {"value": net_value, "ci_low": float(net_row["ci_low"]) if net_row is not None else np.nan,
                    "ci_high": float(net_row["ci_high"]) if net_row is not None else np.nan,
                    "suppressed": bool(net_row["suppressed"]) if net_row is not None else True}  # fmt: skip
    return {"teams": teams.sort_values("value", na_position="last").reset_index(drop=True), "network": network_dict,
            "funnel": funnel, "measure": measure}  # fmt: skip


def standardised_comparison(engine: Engine, measure_id: str, period: date, window: str = "12m",
                            team_ids: tuple[str, ...] | None = None, suppress: bool = True) -> dict:  # fmt: skip
    """Every team across subgroups as observed / expected (indirect standardisation).

    Strata: subgroup x age band (the ``age_band`` cells; bands in core/config/strata.toml), over
    the subgroups the measure applies to. A team's expected = the sum over its strata of its
    volume x the network's value in the stratum (core.metrics.stats.indirect_standardisation);
    for risk-adjusted rates and costs each stratum's expected is also scaled by the team's mean
    risk score over the network's in that stratum. O/E = 1: as the network would do with the
    team's patients; the network line is 1. Intervals: exact Poisson for counts (events,
    successes), normal from the network's within-stratum variance for means and costs.

    Returns ``teams`` (grain team_id: patients, value (the team's own, crude), expected_value (what
    the network would achieve with its case mix, same unit), oe, oe_low, oe_high, volume (the
    funnel's x: the expected count for counts, else the volume), funnel_position, flag,
    suppressed; suppression as :func:`team_comparison`), ``network`` (value 1), ``funnel``
    (limits around 1) and ``measure``.
    """
    measure = comparison_measures()[measure_id]
    crude = team_comparison(engine, measure_id, period, window, None, team_ids, suppress)
    catalogue = load_measures()
    n = WINDOWS[window]
    first = add_months(period, -(n - 1))
    sums = cell_sums_by(engine, ["team_id", "subgroup", "stratum_value"], [measure_id, RISK_METRIC], first, period, stratum="age_band")  # fmt: skip
    sums = sums.loc[[measure.applies_to(s) for s in sums["subgroup"]]]
    win = window_sums(sums, ["team_id", "subgroup", "stratum_value"], period, n, catalogue)
    keys = ["team_id", "subgroup", "stratum_value"]
    rows = win.loc[win["metric"] == measure_id, [*keys, "numerator", "denominator", "sum_sq"]]
    risk = win.loc[win["metric"] == RISK_METRIC, [*keys, "numerator", "denominator"]].rename(columns={"numerator": "risk_sum", "denominator": "risk_n"})  # fmt: skip
    rows = rows.merge(risk, on=keys, how="left").fillna({"risk_sum": 0.0, "risk_n": 0.0})
    count = measure.kind in ("proportion", "rate_per_1000_member_years")
    adjust = measure.risk_adjust and measure.kind in ("rate_per_1000_member_years", COST_KIND)
    std = indirect_standardisation(rows, "team_id", ["subgroup", "stratum_value"], count=count, risk=adjust)
    base = window_rounding_base(suppress, n)
    summed = measure_id in catalogue.by_id() and catalogue.by_id()[measure_id].window != "end"
    if count and base > 1 and summed:  # O/E x expected = observed: from the rounded observed count
        observed = rounded_numerators(measure.kind, std["observed"], np.inf, base)
        e = std["expected"].where(std["expected"] > 0).to_numpy(dtype="float64")
        low, high = poisson_exact_interval(observed, e)
        with np.errstate(divide="ignore", invalid="ignore"):
            std = std.assign(oe=observed / e, oe_low=low, oe_high=high)
    teams = crude["teams"].merge(std[["team_id", "expected", "volume", "oe", "oe_low", "oe_high", "expected_sd"]].rename(
        columns={"volume": "std_volume"}), on="team_id", how="left")  # fmt: skip
    hidden = teams["suppressed"].to_numpy(dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        teams["expected_value"] = teams["expected"] / teams["std_volume"].where(teams["std_volume"] > 0) * measure.scale
    for col in ("expected_value", "oe", "oe_low", "oe_high"):
        teams[col] = teams[col].where(~hidden, np.nan)
    outside = np.asarray(value_outside(teams["oe_low"], teams["oe_high"], 1.0), dtype=bool)
    better = (teams["oe"] > 1.0) if measure.direction == "higher" else (teams["oe"] < 1.0)
    teams["flag"] = np.where(outside, np.where(better, "better", "worse"), "as expected")
    teams.loc[hidden, "flag"] = "suppressed"
    # funnel around 1: counts by the expected count (Poisson); means and costs by volume with the
    # network's pooled within-stratum coefficient of variation (1 +/- z cv / sqrt(n))
    if count:
        x = teams["expected"].where(~hidden)
        funnel = _funnel("oe", 1.0, x.max() if x.notna().any() else np.nan, 1.0)
        limits = {tag: funnel_limits("oe", 1.0, x.to_numpy(), level) for level, tag in zip(FUNNEL_LEVELS, ("95", "998"), strict=True)}  # fmt: skip
    else:
        x = teams["std_volume"].where(~hidden)
        net_mean = rows["numerator"].sum() / rows["denominator"].sum() if rows["denominator"].sum() > 0 else np.nan
        pooled_var = (std["expected_sd"] ** 2).sum() / std["volume"].sum() if std["volume"].sum() > 0 else np.nan
        cv = float(np.sqrt(pooled_var) / net_mean) if net_mean else np.nan
        funnel = _funnel("mean", 1.0, x.max() if x.notna().any() else np.nan, 1.0, cv)
        limits = {tag: funnel_limits("mean", 1.0, x.to_numpy(), level, cv) for level, tag in zip(FUNNEL_LEVELS, ("95", "998"), strict=True)}  # fmt: skip
    teams["funnel_position"] = _funnel_position(teams["oe"], *limits["95"], *limits["998"])
    teams["volume"] = _shown_volume(x, not suppress or window_counts_published(window))
    teams = teams[["team_id", "patients", "value", "expected_value", "oe", "oe_low", "oe_high", "volume", "funnel_position", "flag",
                   "suppressed"]]  # fmt: skip
    return {"teams": teams.sort_values("oe", na_position="last").reset_index(drop=True),
            "network": {"value": 1.0, "ci_low": np.nan, "ci_high": np.nan, "suppressed": False, "crude": crude["network"]},
            "funnel": funnel, "measure": measure, "volume_label": "expected count" if count else measure.volume_label}  # fmt: skip


# --- value map -------------------------------------------------------------------------------


def value_positions(engine: Engine, period: date, window: str = "12m", team_ids: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The points of :func:`value_map_data`."""
    return value_map_data(engine, period, window, team_ids)["points"]


def value_map_data(engine: Engine, period: date, window: str = "12m", team_ids: tuple[str, ...] | None = None) -> dict[str, pd.DataFrame]:  # fmt: skip
    """Value map: cost PMPM and value index (core.metrics.value.value_index: measures scored against
    their targets, on one measure set for every team of a subgroup) per team and subgroup, now and
    12 months earlier (same window length), for the movement arrows.

    Returns ``points`` (grain: team_id, subgroup. Columns: cost_pmpm_usd, outcome_index (the value
    index, 100 = targets met on average), index_low, index_high (95 %), measures_in_index,
    member_months, cost_ratio_to_peers, quadrant, previous_cost_pmpm_usd, previous_outcome_index,
    suppressed: a point whose largest monthly patient count is 1-10 is hidden, and so is its
    previous position), ``parts`` (grain team_id, subgroup, measure_id: value, target, score,
    score_low, score_high, weight, weight_share; of the published points) and ``excluded`` (grain
    subgroup, measure_id: teams_with_value, teams: measures left out of a subgroup's index because
    a team has no published value with at least ``min_denominator`` patients).
    """
    settings = load_executive_settings()
    catalogue = load_measures()
    by_id = catalogue.by_id()
    n = WINDOWS[window]
    metrics = [m.id for m in catalogue.measures] + [COST_TOTAL, "member_months"]
    sums = cell_sums_by(engine, ["team_id", "subgroup"], metrics, add_months(period, -(n - 1) - 12), period, team_ids)
    results = []
    for end in (period, add_months(period, -12)):
        win = window_sums(sums, ["team_id", "subgroup"], end, n, catalogue)
        cost = win.loc[win["metric"] == COST_TOTAL, ["team_id", "subgroup", "numerator", "denominator", "patients"]]
        cost = cost.assign(cost_total_pmpm_usd=cost["numerator"] / cost["denominator"].where(cost["denominator"] > 0),
                           member_months=cost["denominator"])  # fmt: skip
        small = is_small(cost["patients"].fillna(0)) | cost["patients"].isna()
        compared = cost.loc[~small & (cost["member_months"] > 0), ["team_id", "subgroup"]]
        measures = win.loc[win["metric"].isin(list(by_id))]
        measures = measures.loc[[by_id[m].applies_to(s) for m, s in zip(measures["metric"], measures["subgroup"], strict=True)]]
        measures = add_figures(measures, catalogue, months=n).rename(columns={"metric": "measure_id"})
        few = measures["denominator"].isna() | (measures["denominator"] < settings.min_denominator)
        measures[["value", "ci_low", "ci_high"]] = measures[["value", "ci_low", "ci_high"]].where(~(measures["suppressed"] | few))
        measures = measures.merge(compared, on=["team_id", "subgroup"])
        ms = measures["measure_id"].map(by_id)
        measures = measures.assign(target=[m.target for m in ms], higher_is_better=[m.direction == "higher" for m in ms],
                                   weight=[settings.tier_weights.get(m.tier, 1.0) for m in ms])  # fmt: skip
        measures = measures.loc[measures["target"].notna()]
        result = value_index(measures, by=("subgroup",), cap=settings.score_cap, teams=compared)
        vm = value_map(result["index"], cost, by=("subgroup",), centre=VALUE_INDEX_TARGET, index_column="value_index")
        vm = vm.merge(cost[["team_id", "subgroup", "patients"]], on=["team_id", "subgroup"], how="left")
        vm["suppressed"] = is_small(vm["patients"].fillna(0)) | vm["patients"].isna()
        results.append((vm.rename(columns={"value_index": "outcome_index"}), result))
    (now, result), (before, _) = results
    before = before.loc[~before["suppressed"], ["team_id", "subgroup", "cost_pmpm_usd", "outcome_index"]]
    out = now.merge(before.rename(columns={"cost_pmpm_usd": "previous_cost_pmpm_usd", "outcome_index": "previous_outcome_index"}),
                    on=["team_id", "subgroup"], how="left")  # fmt: skip
    hidden = out["suppressed"].to_numpy(dtype=bool)
    for col in ("cost_pmpm_usd", "outcome_index", "index_low", "index_high", "measures", "member_months", "previous_cost_pmpm_usd",
                "previous_outcome_index", "cost_ratio_to_peers"):  # fmt: skip
        out[col] = out[col].astype("float64").where(~hidden, np.nan)
    out.loc[hidden, "quadrant"] = "suppressed"
    if not window_counts_published(window):
        out["member_months"] = np.nan
    out = out.drop(columns=["patients"]).rename(columns={"measures": "measures_in_index"})
    cols = ["team_id", "subgroup", "cost_pmpm_usd", "outcome_index", "index_low", "index_high", "measures_in_index", "member_months",
            "cost_ratio_to_peers", "quadrant", "previous_cost_pmpm_usd", "previous_outcome_index", "suppressed"]  # fmt: skip
    shown = out.loc[~out["suppressed"], ["team_id", "subgroup"]]
    parts = result["parts"].merge(shown, on=["team_id", "subgroup"])
    return {"points": out[cols].sort_values(["subgroup", "team_id"]).reset_index(drop=True), "parts": parts,
            "excluded": result["excluded"]}  # fmt: skip
