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
_MONEY_TOTALS = ["revenue_usd", "cost_usd", "margin_usd", "idle_capacity_usd", "fully_loaded_cost_usd", "fully_loaded_margin_usd"]
WINDOW_TOTALS = {"by_subgroup": ["member_months", *_MONEY_TOTALS], "total": ["member_months", *_MONEY_TOTALS],
                 "mix_sensitivity": ["member_months", "members", "annual_revenue_usd", "revenue_change_per_point_usd"]}  # fmt: skip


def payment_comparison(inputs: dict[str, pd.DataFrame], settings: payments.PaymentSettings, targets_met: int = 0,
                       internal_costed: bool = True, idle_capacity: pd.DataFrame | None = None,
                       suppress: bool = True) -> dict[str, pd.DataFrame]:  # fmt: skip
    """Payment models side by side per subgroup and in total, suppressed.

    ``by_subgroup`` grain: subgroup, model; ``total`` grain: model (columns of
    core.metrics.payments.summarise_models: member_months, revenue_usd, cost_usd, margin_usd and PMPMs).
    A subgroup whose member-months are 1-10 is suppressed, with complementary suppression within
    each model (the subgroups add up to the total). ``internal_costed`` False (no staff roster,
    core.derive.costs.costing_status): costs and margins are NaN, shown as not costed. ``idle_capacity`` (team_id,
    idle_capacity_usd; core.views.true_costs.idle_capacity_by_team): adds the fully loaded cost and margin
    (core.metrics.payments.add_idle_capacity). ``mix_sensitivity``: annual bundled revenue
    of the average panel by subgroup (core.metrics.payments.revenue_mix_sensitivity), same suppression.

    ``suppress`` False: exact figures (a user with patient-level access to every team). With
    ``suppress`` and more than one month, the tables publish PMPMs and shares but no window totals
    (:data:`WINDOW_TOTALS`, the columns are dropped): two neighbouring windows and the month
    leaving them would give a month's member-months back
    (:func:`core.metrics.scorecard.window_counts_published`), and revenue / revenue PMPM is the
    member-months.
    """
    comparison = payments.compare_payment_models(inputs["member_months"], inputs["activities"], inputs["costs"], settings, targets_met,
                                                 internal_costed, idle_capacity)  # fmt: skip
    by_subgroup = payments.summarise_models(comparison, ("subgroup",))
    money = ["revenue_usd", "cost_usd", "margin_usd", "revenue_pmpm_usd", "cost_pmpm_usd", "margin_pmpm_usd"]
    money += [c for c in (*payments.FULLY_LOADED, "fully_loaded_margin_usd", "fully_loaded_margin_pmpm_usd") if c in by_subgroup]
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


def aco_year_projection(engine: Engine, month: date, practice_id: str | None = None, team_id: str | None = None,
                        benchmark_pmpy_usd: float | None = None, team_ids: tuple[str, ...] | None = None,
                        settings: payments.PaymentSettings | None = None):  # fmt: skip
    """What the projection of the performance year that contains ``month`` needs, from cells.

    Performance year: the 12 months from ``[aco.projection] performance_year_start_month``;
    observed = its months up to ``month``; baseline = the 12 months before it (its claims per
    member-year, unless a benchmark is given, trended by :func:`core.metrics.payments.trended_benchmark_pmpy`).
    Completion of each observed month from core.metrics.runout (paid-dates basis: the factor;
    run-out-setting basis: 1.0 when complete, unknown otherwise). Quality score from the 12-month
    scorecard of the population through ``[aco.quality.measures]``.

    Returns (inputs or None, note). inputs: monthly (month, member_months, paid_usd, completion),
    months_remaining, baseline_pmpy_usd, baseline_risk, performance_risk, quality_score,
    quality_parts, benchmark_given. None (with the reason) as :func:`aco_inputs` refuses.
    """
    settings = settings or payments.load_payment_settings()
    proj = settings.aco_projection
    observed, remaining = payments.performance_year_months(month, proj.performance_year_start_month)
    baseline = tuple(add_months(observed[0], i - 12) for i in range(12))

    def monthly(window) -> pd.DataFrame:
        sums = cell_sums_by(engine, [], [COST_EXTERNAL, "risk_score_sum", "member_months"], min(window), max(window), team_ids,
                            practice_id, team_id)  # fmt: skip
        sums = sums.loc[sums["month"].isin(window)]
        num = sums.pivot_table(index="month", columns="metric", values="numerator", aggfunc="sum")
        den = sums.pivot_table(index="month", columns="metric", values="denominator", aggfunc="sum")
        out = pd.DataFrame({"month": list(window)}).set_index("month")
        out["member_months"] = num.get("member_months", pd.Series(dtype=float)).reindex(out.index).fillna(0.0)
        out["paid_usd"] = num.get(COST_EXTERNAL, pd.Series(dtype=float)).reindex(out.index).fillna(0.0)
        out["risk_sum"] = num.get("risk_score_sum", pd.Series(dtype=float)).reindex(out.index).fillna(0.0)
        out["risk_n"] = den.get("risk_score_sum", pd.Series(dtype=float)).reindex(out.index).fillna(0.0)
        return out.reset_index()

    now, before = monthly(tuple(observed)), monthly(baseline)
    mm_now, mm_before = float(now["member_months"].sum()), float(before["member_months"].sum())
    if not mm_now:
        return None, "no attributed member-months in the performance year"
    if bool(is_small(mm_now)):
        return None, "suppressed: 1-10 member-months in the selection"
    refusal = payments.aco_refusal(mm_now, float(now["paid_usd"].sum()), mm_before, float(before["paid_usd"].sum()),
                                   settings.aco_evidence, benchmark_given=benchmark_pmpy_usd is not None)  # fmt: skip
    if refusal:
        return None, refusal
    note = [f"performance year {observed[0]:%b %Y} to {add_months(observed[0], 11):%b %Y}: {len(observed)} months observed, "
            f"{remaining} to come"]  # fmt: skip
    completeness = runout.claims_completeness(engine, observed)
    factor = completeness.set_index("month")
    completion = []
    for m in observed:
        row = factor.loc[m]
        if row["basis"] == runout.PAID_DATES:
            completion.append(float(row["completion"]))
        else:
            completion.append(1.0 if bool(row["complete"]) else float("nan"))
    now["completion"] = completion
    unknown = int(now["completion"].isna().sum())
    if unknown:
        note.append(f"{unknown} recent months without paid dates are estimated at the run rate")
    if benchmark_pmpy_usd is None:
        baseline_pmpy = float(before["paid_usd"].sum()) * 12 / mm_before
        note.append(f"benchmark = baseline year's claims per member-year, trended {proj.trend_pct_per_year:g} % a year, "
                    f"regional adjustment {proj.regional_adjustment_pct:+g} %")  # fmt: skip
    else:
        baseline_pmpy = float(benchmark_pmpy_usd)
        note.append("benchmark entered (trend and regional adjustment are applied to it)")
    if now["risk_n"].sum() and before["risk_n"].sum():
        perf_risk = float(now["risk_sum"].sum() / now["risk_n"].sum())
        base_risk = float(before["risk_sum"].sum() / before["risk_n"].sum())
    else:
        perf_risk = base_risk = 1.0
        note.append("no risk scores for both years: risk ratio 1.0")
    score, parts = aco_quality(engine, month, practice_id, team_id, team_ids)
    if score is None:
        note.append("no mapped quality measure has a published value: quality score 0")
    return {
        "monthly": now[["month", "member_months", "paid_usd", "completion"]], "months_remaining": remaining,
        "baseline_pmpy_usd": baseline_pmpy, "baseline_risk": base_risk, "performance_risk": perf_risk,
        "quality_score": 0.0 if score is None else score, "quality_parts": parts, "observed": observed,
    }, "; ".join(note)


def aco_quality(engine: Engine, month: date, practice_id: str | None = None, team_id: str | None = None,
                team_ids: tuple[str, ...] | None = None) -> tuple[float | None, pd.DataFrame]:  # fmt: skip
    """Quality score of the population from its 12-month scorecard to ``month`` through
    ``[aco.quality.measures]`` (core.metrics.payments.quality_score): (score or None, parts)."""
    from core.metrics.scorecard import Selection, build_scorecard

    weights = payments.load_payment_settings().aco_projection.quality_measures
    card = build_scorecard(engine, Selection(practice_id=practice_id, team_id=team_id, period=month, window="12m"), team_ids)
    return payments.quality_score(card, weights)


def aco_year_table(projection: payments.AcoYearProjection) -> pd.DataFrame:
    """The projected settlement as rows (item, low, projected, high), money formatted: low is the
    settlement at the high end of spend, high at the low end."""
    spend = projection.spend
    results = (projection.low, projection.point, projection.high)

    def money(values) -> list[str]:
        return [format_figure(v, digits=0) if v is not None and pd.notna(v) else "" for v in values]

    def of(attr) -> list:
        return [getattr(r, attr) if r is not None else None for r in results]

    rows = [
        ("Claims paid so far, $", money([None, spend.paid_usd, None])),
        ("Claims completed for run-out (observed months), $", money([None, spend.completed_usd, None])),
        ("Projected spend of the year, $", money([spend.high_usd, spend.projected_usd, spend.low_usd])),
        ("Benchmark (trended, risk-adjusted), $", money(of("benchmark_usd"))),
        ("Gross savings (losses if negative), $", money(of("gross_savings_usd"))),
        ("Savings rate, %", [f"{v:.1%}" if v is not None else "" for v in of("savings_rate")]),
        ("Outcome", [str(v).replace("_", " ") if v is not None else "" for v in of("outcome")]),
        ("Settlement (to the ACO if positive), $", money(of("net_payment_usd"))),
        ("Of which from risk-score growth, $", money([r.net_payment_from_risk_growth_usd if r else None for r in results])),
    ]
    return pd.DataFrame([(item, *values) for item, values in rows], columns=["item", "low", "projected", "high"])


def settle_year(inputs: dict, track: payments.AcoSettings, projection: payments.AcoProjectionSettings) -> payments.AcoYearProjection:
    """The projected settlement of :func:`aco_year_projection`'s inputs under a track and projection settings."""
    spend = payments.project_spend(inputs["monthly"], inputs["months_remaining"], projection)
    return payments.project_aco_year(spend, inputs["baseline_pmpy_usd"], inputs["baseline_risk"], inputs["performance_risk"],
                                     inputs["quality_score"], track, projection)  # fmt: skip


def quality_parts_table(parts: pd.DataFrame) -> pd.DataFrame:
    """The quality score's parts with human labels."""
    out = parts.assign(direction=parts["direction"].map({"higher": "higher is better", "lower": "lower is better"}).fillna(""))
    return out[["name", "unit", "value", "target", "direction", "weight", "points"]].rename(columns={
        "name": "Measure", "unit": "Unit", "value": "Value (12 months)", "target": "Target", "direction": "Direction",
        "weight": "Weight", "points": "Points (0-100)"})  # fmt: skip


# Column id -> human label with its unit, for the payment model tables of the page and their downloads.
PAYMENT_COLUMN_LABELS = {
    "subgroup": "Subgroup", "model": "Model", "member_months": "Member-months", "revenue_usd": "Revenue, $",
    "cost_basis": "Cost basis", "cost_usd": "Cost, $", "margin_usd": "Margin, $", "revenue_pmpm_usd": "Revenue, $ PMPM",
    "cost_pmpm_usd": "Cost, $ PMPM", "margin_pmpm_usd": "Margin, $ PMPM", "idle_capacity_usd": "Idle capacity, $",
    "fully_loaded_cost_usd": "Fully loaded cost, $", "fully_loaded_margin_usd": "Fully loaded margin, $",
    "fully_loaded_margin_pmpm_usd": "Fully loaded margin, $ PMPM", "share": "Share of the panel", "members": "Members",
    "pmpm_usd": "Bundle, $ PMPM", "annual_revenue_usd": "Revenue a year, $",
    "revenue_change_per_point_usd": "Revenue change per point of mix, $", "suppressed": "Suppressed",
}  # fmt: skip


def payment_table_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """A payment-model table with human column labels and model names (same rows)."""
    from core.views.charts import MODEL_LABELS

    out = frame.assign(model=frame["model"].map(MODEL_LABELS).fillna(frame["model"])) if "model" in frame else frame
    return out.rename(columns=PAYMENT_COLUMN_LABELS)
