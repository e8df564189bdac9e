"""Executive: payment models side by side per subgroup, and the ACO performance-year projection.

Every setting is prefilled from core/config/payments.toml; changes here are what-ifs, never saved.
"""

import streamlit as st

from core.access.suppression import suppression_policy
from core.derive.costs import costing_status, show_not_costed
from core.metrics.payments import load_payment_settings, with_overrides
from core.store.months import window_months
from core.store.queries import organisation
from core.views.charts import MODEL_LABELS, payment_bars_figure
from core.views.columns import label_from_name
from core.views.format import csv_export, usd
from core.views.payment_models import aco_inputs, aco_projection, payment_comparison, payment_inputs, payment_settings_with
from core.views.scope import scope_units, unit_filters
from ui.auth import audit_export, require
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
st.caption(policy.caption if policy.suppress else "Counts of 1-10 are suppressed on this page for every audience.")
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
    result = payment_comparison(query(payment_inputs, months, teams), settings, int(targets), costing.costed)
    st.caption(f"12 months to {month_label(month)} · cost basis: bundled {settings.bundled_cost_basis}, fee-for-service "
               f"{settings.ffs_cost_basis}, PCMH {settings.pcmh_cost_basis} · suppressed: subgroups with 1-10 member-months")  # fmt: skip
    if costing.note():
        st.warning(costing.note().capitalize() + ".", icon=":material/warning:")
    cols = st.columns(len(result["total"]))
    for col, row in zip(cols, result["total"].itertuples(), strict=True):
        if costing.costed:
            col.metric(f"{MODEL_LABELS[row.model]}: margin", usd(row.margin_usd), f"{usd(row.margin_pmpm_usd, 2)} PMPM", border=True)
        else:
            col.metric(f"{MODEL_LABELS[row.model]}: margin", "not costed", f"revenue {usd(row.revenue_usd)}", delta_color="off", border=True)
    st.plotly_chart(payment_bars_figure(result["by_subgroup"].dropna(subset=["revenue_usd"]), labels), key="payment_bars")
    for name, frame in (("by_subgroup", result["by_subgroup"]), ("total", result["total"]), ("mix_sensitivity", result["mix_sensitivity"])):
        frame = show_not_costed(frame, ["cost_usd", "margin_usd", "cost_pmpm_usd", "margin_pmpm_usd"], costing)
        shown = frame.assign(subgroup=frame["subgroup"].map(lambda s: labels.get(s, s))) if "subgroup" in frame else frame
        show_table(shown, key=f"pay_{name}", placeholder="suppressed")
        st.download_button(f"Download {name.replace('_', ' ')} (CSV)", csv_export(shown), file_name=f"payments_{name}_{month:%Y-%m}.csv",
                           mime="text/csv", key=f"dl_pay_{name}", on_click=audit_export, args=(scope, "payments", f"{name} csv"))  # fmt: skip

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
    a, b, c, d = st.columns(4)
    changes["quality_threshold"] = a.number_input("Quality threshold", 0.0, 100.0, track.quality_threshold, key=f"aco_{preset}_qt")
    quality = b.number_input("Quality score", 0.0, 100.0, 100.0, key="aco_quality")
    benchmark = c.number_input("Benchmark $ per member-year (0 = baseline year's claims)", 0.0, value=0.0, key="aco_benchmark")
    coding = d.slider("Coding-growth what-if: extra risk-score growth, %", -5.0, 10.0, 0.0, 0.5, key="aco_coding")
    inputs, note = query(aco_inputs, months, *unit_filters(unit), benchmark or None, quality, teams)
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
        show_table(table, key="aco_table")
        st.download_button("Download ACO projection (CSV)", csv_export(table), file_name=f"aco_{month:%Y-%m}.csv", mime="text/csv",
                           key="dl_aco", on_click=audit_export, args=(scope, "aco", f"{unit} {preset} csv"))  # fmt: skip
