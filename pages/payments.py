"""Executive: payment models side by side per subgroup, and the ACO performance-year projection.

Every setting is prefilled from core/config/payments.toml; changes here are what-ifs, never saved.
"""

from dataclasses import replace

import streamlit as st

from core.access.suppression import suppression_policy
from core.derive.costs import costing_status, show_not_costed
from core.metrics.payments import load_payment_settings, with_overrides
from core.store.months import window_months
from core.store.queries import organisation
from core.views.charts import MODEL_LABELS, payment_bars_figure
from core.views.columns import label_from_name
from core.views.format import csv_export, usd
from core.views.payment_models import (
    aco_inputs,
    aco_projection,
    aco_quality,
    aco_year_projection,
    aco_year_table,
    payment_comparison,
    payment_inputs,
    payment_settings_with,
    payment_table_labels,
    quality_parts_table,
    settle_year,
)
from core.views.scope import scope_units, unit_filters
from core.views.true_costs import capacity_use, idle_capacity_by_team
from ui.auth import audited_file, require
from ui.data import query
from ui.labels import subgroup_labels
from ui.tables import show_table
from ui.widgets import month_label, select_month

scope = require("payments")
st.title("Payment models and ACO")
labels = subgroup_labels()
base = load_payment_settings()
with st.sidebar:
    month = select_month()
months = tuple(window_months(month, "12m"))
teams = None if scope.network else scope.team_ids
policy = suppression_policy(scope, teams)
st.caption(policy.caption)
if policy.suppress:
    st.caption("12-month windows: the tables show PMPMs and shares, not member-months or dollar totals (two neighbouring "
               "windows and the month leaving them would give a month's member-months back).")  # fmt: skip
models_tab, aco_tab = st.tabs(["Payment models", "ACO projection"])

with models_tab:
    with st.expander("What-if settings (not saved; defaults from core/config/payments.toml)", expanded=False):
        st.caption("Bundled payment per member per month, $")
        cols = st.columns(len(base.bundled_pmpm_usd))
        bundled = {s: col.number_input(labels.get(s, s), min_value=0.0, value=v, key=f"pay_bundle_{s}")
                   for col, (s, v) in zip(cols, base.bundled_pmpm_usd.items(), strict=True)}  # fmt: skip
        cols = st.columns(4)
        fees = {k: cols[i % 4].number_input(f"Fee {k.replace('_', ' ')}, $", min_value=0.0, value=v, key=f"pay_fee_{k}")
                for i, (k, v) in enumerate(base.fee_usd.items())}  # fmt: skip
        a, b, c, d = st.columns(4)
        enhancement = a.number_input("PCMH fee enhancement, %", min_value=0.0, value=base.pcmh_fee_schedule_enhancement_pct, key="pay_enh")
        cm = b.number_input("PCMH care management, $ PMPM", min_value=0.0, value=base.pcmh_care_management_pmpm_usd, key="pay_cm")
        p4p = c.number_input("P4P bonus per target met, $ PMPM", min_value=0.0, value=base.pcmh_p4p_bonus_pmpm_usd_per_target_met, key="pay_p4p")
        targets = d.number_input("Measure targets met", min_value=0, value=0, step=1, key="pay_targets")
    settings = payment_settings_with(base, bundled, fees, pcmh_fee_schedule_enhancement_pct=enhancement,
                                     pcmh_care_management_pmpm_usd=cm, pcmh_p4p_bonus_pmpm_usd_per_target_met=p4p)  # fmt: skip
    costing = query(costing_status)
    loaded = st.toggle("Fully loaded margin: add the cost of idle (unused) capacity", key="pay_fully_loaded",
                       help="Activity-based cost counts only the staff minutes used; the practice pays for every minute it "
                            "supplies. Fully loaded cost = activity cost + each team's unused capacity cost (see True costs).")  # fmt: skip
    idle = idle_capacity_by_team(query(capacity_use, months, teams)) if loaded else None
    result = payment_comparison(query(payment_inputs, months, teams), settings, int(targets), costing.costed, idle,
                                policy.suppress)
    st.caption(f"12 months to {month_label(month)} · cost basis: bundled {settings.bundled_cost_basis}, fee-for-service "
               f"{settings.ffs_cost_basis}, PCMH {settings.pcmh_cost_basis} · suppressed: subgroups with 1-10 member-months")  # fmt: skip
    if costing.note():
        st.warning(costing.note().capitalize() + ".", icon=":material/warning:")
    cols = st.columns(len(result["total"]))
    totals_shown = "margin_usd" in result["total"]
    for col, row in zip(cols, result["total"].itertuples(), strict=True):
        if costing.costed and loaded and totals_shown:
            col.metric(f"{MODEL_LABELS[row.model]}: fully loaded margin", usd(row.fully_loaded_margin_usd),
                       f"{usd(row.fully_loaded_margin_pmpm_usd, 2)} PMPM; activity-based {usd(row.margin_usd)}", border=True)  # fmt: skip
        elif costing.costed and loaded:
            col.metric(f"{MODEL_LABELS[row.model]}: fully loaded margin PMPM", usd(row.fully_loaded_margin_pmpm_usd, 2),
                       f"activity-based {usd(row.margin_pmpm_usd, 2)} PMPM", border=True)  # fmt: skip
        elif costing.costed and totals_shown:
            col.metric(f"{MODEL_LABELS[row.model]}: margin", usd(row.margin_usd), f"{usd(row.margin_pmpm_usd, 2)} PMPM", border=True)
        elif costing.costed:
            col.metric(f"{MODEL_LABELS[row.model]}: margin PMPM", usd(row.margin_pmpm_usd, 2), border=True)
        elif totals_shown:
            col.metric(f"{MODEL_LABELS[row.model]}: margin", "not costed", f"revenue {usd(row.revenue_usd)}", delta_color="off", border=True)
        else:
            col.metric(f"{MODEL_LABELS[row.model]}: margin", "not costed", f"revenue {usd(row.revenue_pmpm_usd, 2)} PMPM", delta_color="off",
                       border=True)  # fmt: skip
    st.plotly_chart(payment_bars_figure(result["by_subgroup"].dropna(subset=["revenue_pmpm_usd"]), labels), key="payment_bars")
    for name, frame in (("by_subgroup", result["by_subgroup"]), ("total", result["total"]), ("mix_sensitivity", result["mix_sensitivity"])):
        frame = show_not_costed(frame, ["cost_usd", "margin_usd", "cost_pmpm_usd", "margin_pmpm_usd", "idle_capacity_usd",
                                        "fully_loaded_cost_usd", "fully_loaded_margin_usd", "fully_loaded_margin_pmpm_usd"], costing)  # fmt: skip
        shown = frame.assign(subgroup=frame["subgroup"].map(lambda s: labels.get(s, s))) if "subgroup" in frame else frame
        shown = payment_table_labels(shown)
        show_table(shown, hide_index=True, key=f"pay_{name}", placeholder="suppressed",
                     column_config={c: st.column_config.NumberColumn(format="dollar") for c in shown.columns
                                    if "$" in c and shown[c].dtype.kind == "f"}
                     | {c: st.column_config.NumberColumn(format="percent") for c in shown.columns if c == "Share of the panel"})  # fmt: skip
        st.download_button(f"Download {name.replace('_', ' ')} (CSV)", audited_file(scope, "payments", f"{name} csv",
                                                                                    lambda frame=shown: csv_export(frame)),
                           file_name=f"payments_{name}_{month:%Y-%m}.csv", mime="text/csv", key=f"dl_pay_{name}", on_click="ignore")  # fmt: skip

with aco_tab:
    units = scope_units(query(organisation), scope.team_ids, scope.network)
    unit = st.selectbox("ACO population", list(units), key="aco_unit", format_func=units.get)
    preset = st.selectbox("Track", list(base.aco_presets), index=list(base.aco_presets).index(base.aco_default_preset),
                          key="aco_preset", format_func=lambda p: base.aco_presets[p].label)  # fmt: skip
    track = base.aco_presets[preset]
    rates = ("minimum_savings_rate", "minimum_loss_rate", "shared_savings_rate", "shared_loss_rate", "savings_cap_pct_of_benchmark",
             "loss_cap_pct_of_benchmark", "risk_growth_cap_up")  # fmt: skip
    cols = st.columns(4)
    changes = {r: cols[i % 4].number_input(label_from_name(r) + ", %", 0.0, 100.0, getattr(track, r) * 100,
                                           key=f"aco_{preset}_{r}") / 100 for i, r in enumerate(rates)}  # fmt: skip
    down = track.risk_growth_cap_down
    capped = cols[len(rates) % 4].checkbox("Cap falls in risk score", value=down is not None, key=f"aco_{preset}_down_on")
    changes["risk_growth_cap_down"] = (cols[(len(rates) + 1) % 4].number_input(
        "Risk growth cap down, %", 0.0, 100.0, (down or 0.03) * 100, key=f"aco_{preset}_down") / 100) if capped else None  # fmt: skip
    a, b, c, d = st.columns(4)
    changes["quality_threshold"] = a.number_input("Quality threshold", 0.0, 100.0, track.quality_threshold, key=f"aco_{preset}_qt")
    score, parts = query(aco_quality, month, *unit_filters(unit), teams)
    quality = score or 0.0
    b.metric("Quality score (from the scorecard)", "–" if score is None else f"{score:.1f}", border=True,
             help="Weighted mean of the points of the measures mapped in core/config/payments.toml [aco.quality.measures]")  # fmt: skip
    benchmark = c.number_input("Benchmark $ per member-year (0 = baseline year's claims)", 0.0, value=0.0, key="aco_benchmark")
    coding = d.slider("Coding-growth what-if: extra risk-score growth, %", -5.0, 10.0, 0.0, 0.5, key="aco_coding")
    with st.expander("Quality score: the mapped measures and their points"):
        show_table(quality_parts_table(parts), hide_index=True, key="aco_quality_parts", placeholder="suppressed")
    inputs, note = query(aco_inputs, months, *unit_filters(unit), benchmark or None, quality, teams, suppress=policy.suppress)
    if inputs is None:
        st.info(f"No ACO projection for this population: {note}.")
    else:
        result, table = aco_projection(inputs, with_overrides(track, **changes), coding)
        m1, m2, m3, m4 = st.columns(4)
        m1.metric("Benchmark", usd(result.benchmark_usd), border=True)
        m2.metric("Actual spend", usd(result.actual_spend_usd), border=True)
        m3.metric("Gross savings", usd(result.gross_savings_usd), f"{result.savings_rate:.1%}", border=True)
        m4.metric("Shared amount (net)", usd(result.net_payment_usd), result.outcome.replace("_", " "), delta_color="off", border=True)
        st.caption(f"Performance year: 12 months to {month_label(month)}; baseline: the 12 months before. {note}. "
                   f"Risk score {inputs.baseline_risk_score:.3f} → {inputs.performance_risk_score:.3f}; "
                   f"quality gate {'passed' if quality >= changes['quality_threshold'] else 'failed'}.")  # fmt: skip
        show_table(table, hide_index=True, key="aco_table")
        st.download_button("Download ACO projection (CSV)", audited_file(scope, "aco", f"{unit} {preset} csv", lambda frame=table: csv_export(frame)),
                           file_name=f"aco_{month:%Y-%m}.csv", mime="text/csv", key="dl_aco", on_click="ignore")  # fmt: skip

    st.subheader("Projected settlement of the performance year")
    proj = base.aco_projection
    a, b = st.columns(2)
    trend = a.number_input("Benchmark trend, % a year", -20.0, 50.0, proj.trend_pct_per_year, key="aco_trend")
    regional = b.number_input("Regional adjustment, %", -20.0, 20.0, proj.regional_adjustment_pct, key="aco_regional")
    year, year_note = query(aco_year_projection, month, *unit_filters(unit), benchmark or None, teams)
    if year is None:
        st.info(f"No projection of the performance year for this population: {year_note}.")
    else:
        settings_year = replace(proj, trend_pct_per_year=trend, regional_adjustment_pct=regional)
        projected = settle_year(year, with_overrides(track, **changes), settings_year)
        point, low, high = projected.point, projected.low, projected.high
        p1, p2, p3, p4 = st.columns(4)
        p1.metric("Projected settlement", usd(point.net_payment_usd), point.outcome.replace("_", " "), delta_color="off", border=True)
        p2.metric(f"Settlement range ({proj.interval:.0%})", f"{usd(low.net_payment_usd) if low else '–'} to "
                  f"{usd(high.net_payment_usd) if high else '–'}", border=True)  # fmt: skip
        p3.metric("Projected spend of the year", usd(projected.spend.projected_usd),
                  f"{usd(projected.spend.unpaid_estimate_usd)} not yet paid", delta_color="off", border=True)  # fmt: skip
        p4.metric("Of the settlement, from risk-score growth", usd(point.net_payment_from_risk_growth_usd), border=True)
        st.caption(f"{year_note}. Benchmark {usd(projected.benchmark_pmpy_usd)} per member-year (baseline "
                   f"{usd(projected.baseline_pmpy_usd)}); spend completed for claims run-out, the remaining months at the "
                   f"observed {usd(projected.spend.pmpm_usd, 2)} PMPM. Method: README, ACO projection.")  # fmt: skip
        year_table = aco_year_table(projected)
        show_table(year_table, hide_index=True, key="aco_year_table")
        st.download_button("Download projected settlement (CSV)",
                           audited_file(scope, "aco", f"{unit} {preset} year csv", lambda frame=year_table: csv_export(frame)),
                           file_name=f"aco_year_{month:%Y-%m}.csv", mime="text/csv", key="dl_aco_year", on_click="ignore")  # fmt: skip
