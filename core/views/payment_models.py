"""Data of the payment models page: the inputs of core.metrics.payments as aggregates of a
selection (member-months and costs from cells, activities from the derived team-month table),
the models side by side with suppression, what-if settings, and the ACO projection.

ACO inputs are the figures of core.metrics.payments.aco_inputs_from_store, summed from cells.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pandas as pd
from sqlalchemy import Engine, func, select

from core.derive.costs import COST_EXTERNAL, COST_INTERNAL
from core.metrics import payments, runout
from core.metrics.scorecard import is_small, suppress_table, window_counts_published
from core.store.models import TeamMonthActivity
from core.store.months import add_months
from core.store.queries import read_frame
from core.views.cells_read import cell_sums_by
from core.views.format import format_figure


def payment_inputs(engine: Engine, months: tuple[date, ...], team_ids: tuple[str, ...] | None = None) -> dict[str, pd.DataFrame]:
    """What core.metrics.payments.compare_payment_models needs, as aggregates of the selection's months.

    ``member_months`` and ``costs`` (grain: team_id, subgroup) from cells; ``activities`` (grain:
    team_id, subgroup, kind): internal activities of attributed patient-months, summed from the derived
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


# Window totals the payment tables withhold where suppression applies to a window longer than a month:
# member-months, and every total a published PMPM or rate turns back into member-months.
WINDOW_TOTALS = {"by_subgroup": ["member_months", "revenue_usd", "cost_usd", "margin_usd"],
                 "total": ["member_months", "revenue_usd", "cost_usd", "margin_usd"],
                 "mix_sensitivity": ["member_months", "members", "annual_revenue_usd", "revenue_change_per_point_usd"]}  # fmt: skip


def payment_comparison(inputs: dict[str, pd.DataFrame], settings: payments.PaymentSettings, targets_met: int = 0,
                       internal_costed: bool = True, suppress: bool = True) -> dict[str, pd.DataFrame]:  # fmt: skip
    """Payment models side by side per subgroup and in total, suppressed.

    ``by_subgroup`` grain: subgroup, model; ``total`` grain: model (columns of
    core.metrics.payments.summarise_models: member_months, revenue_usd, cost_usd, margin_usd and PMPMs).
    A subgroup whose member-months are 1-10 is suppressed, with complementary suppression within
    each model (the subgroups add up to the total). ``internal_costed`` False (no staff roster,
    core.derive.costs.costing_status): costs and margins are NaN, shown as not costed. ``mix_sensitivity``: annual bundled revenue
    of the average panel by subgroup (core.metrics.payments.revenue_mix_sensitivity), same suppression.

    ``suppress`` False: exact figures (a user with patient-level access to every team). With
    ``suppress`` and more than one month, the tables publish PMPMs and shares but no window totals
    (:data:`WINDOW_TOTALS`, the columns are dropped): two neighbouring windows and the month
    leaving them would give a month's member-months back
    (:func:`core.metrics.scorecard.window_counts_published`), and revenue / revenue PMPM is the
    member-months.
    """
    comparison = payments.compare_payment_models(inputs["member_months"], inputs["activities"], inputs["costs"], settings, targets_met,
                                                 internal_costed)  # fmt: skip
    by_subgroup = payments.summarise_models(comparison, ("subgroup",))
    money = ["revenue_usd", "cost_usd", "margin_usd", "revenue_pmpm_usd", "cost_pmpm_usd", "margin_pmpm_usd"]
    if suppress:
        by_subgroup = suppress_table(by_subgroup, ["member_months"], total=True, group_cols=["model"], value_cols=money)
    else:
        by_subgroup = by_subgroup.assign(suppressed=False)
    total = payments.summarise_models(comparison, ())
    mm = inputs["member_months"].groupby("subgroup")["member_months"].sum()
    mm = mm.loc[mm.index.isin(list(settings.bundled_pmpm_usd)) & (mm > 0)]
    sensitivity = pd.DataFrame()
    if mm.sum() > 0:
        n_months = max(len(inputs["months"]), 1)
        sensitivity = payments.revenue_mix_sensitivity(float(mm.sum()) / n_months, (mm / mm.sum()).to_dict(), settings.bundled_pmpm_usd)
        small = is_small(mm.reindex(sensitivity["subgroup"]).to_numpy())
        sensitivity = sensitivity.assign(member_months=mm.reindex(sensitivity["subgroup"]).to_numpy(), suppressed=small & suppress)
        if suppress:
            sensitivity = suppress_table(sensitivity, ["member_months", "members"], total=True,
                                         value_cols=["share", "members", "annual_revenue_usd", "revenue_change_per_point_usd"])  # fmt: skip
    out = {"by_subgroup": by_subgroup, "total": total, "mix_sensitivity": sensitivity}
    if suppress and not window_counts_published(len(inputs["months"])):
        out = {name: frame.drop(columns=[c for c in WINDOW_TOTALS[name] if c in frame]) for name, frame in out.items()}
    return out


def aco_inputs(engine: Engine, months: tuple[date, ...], practice_id: str | None = None, team_id: str | None = None,
               benchmark_pmpy_usd: float | None = None, quality_score: float = 100.0,
               team_ids: tuple[str, ...] | None = None,
               evidence: payments.AcoEvidence | None = None, suppress: bool = True) -> tuple[payments.AcoInputs | None, str]:  # fmt: skip
    """ACO inputs of a selection from cells: the same figures as core.metrics.payments.aco_inputs_from_store
    (performance = ``months``, baseline = the same months a year earlier; spend = claims paid per
    member-year; risk = mean monthly CMS-HCC score of the scored patient-months, 1.0 for both years
    when either has none; benchmark = the argument, else the baseline's claims per member-year),
    summed in SQL instead of rebuilt from encounters. (None, reason) when there is nothing to
    project, the selection has 1-10 member-months, or core.metrics.payments.aco_refusal refuses.
    Incomplete claims months (core.metrics.runout) are named in the note.

    The projection publishes totals of a 12-month window (benchmark and spend in dollars beside
    their per-member-year rates, so member-years follow), so with ``suppress`` it is refused
    when any month of the performance year has 1-10 member-months: neighbouring windows and the
    month leaving them would give that month back.
    """
    baseline = tuple(add_months(m, -12) for m in months)

    monthly: dict[tuple[date, ...], pd.Series] = {}

    def totals(window: tuple[date, ...]) -> pd.Series:
        sums = cell_sums_by(engine, [], [COST_EXTERNAL, "risk_score_sum", "member_months"], min(window), max(window), team_ids,
                            practice_id, team_id)  # fmt: skip
        sums = sums.loc[sums["month"].isin(window)]
        monthly[window] = sums.loc[sums["metric"] == "member_months"].groupby("month")["numerator"].sum()
        sums = sums.groupby("metric")[["numerator", "denominator"]].sum()
        return pd.Series({"member_months": sums["numerator"].get("member_months", 0.0),
                          "claims_usd": sums["numerator"].get(COST_EXTERNAL, 0.0),
                          "risk_sum": sums["numerator"].get("risk_score_sum", 0.0),
                          "risk_n": sums["denominator"].get("risk_score_sum", 0.0)})  # fmt: skip

    now, before = totals(tuple(months)), totals(baseline)
    if not now["member_months"]:
        return None, "no attributed member-months in the selection"
    if bool(is_small(now["member_months"])):
        return None, "suppressed: 1-10 member-months in the selection"
    if suppress and bool(is_small(monthly[tuple(months)].to_numpy()).any()):
        return None, "suppressed: a month of the selection has 1-10 member-months"
    refusal = payments.aco_refusal(float(now["member_months"]), float(now["claims_usd"]), float(before["member_months"]),
                                   float(before["claims_usd"]), evidence or payments.load_payment_settings().aco_evidence,
                                   benchmark_given=benchmark_pmpy_usd is not None)  # fmt: skip
    if refusal:
        return None, refusal
    note = []
    if benchmark_pmpy_usd is None:
        benchmark_pmpy_usd = float(before["claims_usd"]) * 12 / float(before["member_months"])
        note.append("benchmark = baseline-year claims per member-year")
    if now["risk_n"] and before["risk_n"]:
        perf_risk, base_risk = now["risk_sum"] / now["risk_n"], before["risk_sum"] / before["risk_n"]
    else:
        perf_risk = base_risk = 1.0
        note.append("no risk scores for both years: risk ratio 1.0")
    incomplete = runout.incomplete_note(runout.claims_completeness(engine, months))
    if incomplete:
        note.append(f"{incomplete}: actual spend is understated")
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
    table["value"] = [format_figure(v, digits=3 if abs(v) < 10 else 0) if isinstance(v, float) else str(v) for v in table["value"]]
    return result, table
