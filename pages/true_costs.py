"""Executive: true costs (capacity cost rates and their parts, process maps, capacity used against
supplied, unused capacity, fully loaded margins) and leakage (out-of-network spend).

Settings: core/config/costing.toml (rates, space and equipment, process maps) and payments.toml.
"""

import pandas as pd
import streamlit as st

from core.derive.costs import costing_status
from core.metrics.payments import load_payment_settings
from core.store.months import window_months
from core.store.queries import months_available
from core.views.charts import MODEL_LABELS
from core.views.format import csv_export, usd
from core.views.payment_models import payment_comparison, payment_inputs
from core.views.true_costs import (
    annualised,
    capacity_summary,
    capacity_use,
    idle_capacity_by_team,
    labelled,
    leakage_note,
    leakage_report,
    process_map_table,
    rate_table,
    team_names,
)
from ui.auth import audited_file, require
from ui.data import query
from ui.widgets import month_label, select_month

scope = require("true_costs")
st.title("True costs and leakage")
with st.sidebar:
    month = select_month()
months = tuple(window_months(month, "12m"))
teams = None if scope.network else scope.team_ids
costing = query(costing_status)
# Capacity of every month is read once (cached with the data) and cut to the window, so a month change is quick.
every_month = tuple(query(months_available))
use = query(capacity_use, every_month, teams)
use = use[use["month"].isin(months)].reset_index(drop=True)
leak = query(leakage_report, months, teams)
st.caption(f"12 months to {month_label(month)} · rates from the staff roster and core/config/costing.toml · "
           "counts of 1-10 claims are suppressed on this page")  # fmt: skip
if costing.note():
    st.warning(costing.note().capitalize() + ".", icon=":material/warning:")

network = capacity_summary(use, []) if costing.costed and len(use) else None
m1, m2, m3, m4 = st.columns(4)
if network is not None:
    row = network.iloc[0]
    m1.metric("Unused capacity, $ a year", usd(annualised(row["unused_cost_usd"], len(months))), border=True)
    m2.metric("Capacity used", f"{row['utilisation']:.0%}", f"of {row['capacity_hours']:,.0f} hours supplied", delta_color="off",
              border=True)  # fmt: skip
else:
    m1.metric("Unused capacity, $ a year", "not costed", border=True)
    m2.metric("Capacity used", "not costed", border=True)
leak_note = leakage_note(leak)
if leak and leak_note:
    m3.metric("Out-of-network spend", "unknown", "no claim flagged out of network", delta_color="off", border=True)
elif leak:
    total = leak["total"].iloc[0]
    m3.metric("Out-of-network spend", usd(total["out_of_network_usd"]), f"{usd(total['out_of_network_pmpm_usd'], 2)} PMPM",
              delta_color="off", border=True)  # fmt: skip
    share = total["out_of_network_share"]
    m4.metric("Out of network, share of claims paid", "suppressed" if pd.isna(share) else f"{share:.1%}", border=True)


def table(frame, name: str, key: str) -> None:
    """A table with human labels, money and percentages formatted, and its audited CSV download."""
    shown = labelled(frame)
    config = {c: st.column_config.NumberColumn(format="dollar") for c in shown.columns if "$" in c}
    config |= {c: st.column_config.NumberColumn(format="percent") for c in shown.columns if c.endswith("%")}
    config |= {c: st.column_config.NumberColumn(format="%.1f") for c in shown.columns
               if "hours" in c.lower() or c in ("FTE", "Space, m²", "Standard minutes")}  # fmt: skip
    st.dataframe(shown, hide_index=True, key=key, column_config=config, placeholder="suppressed")
    st.download_button(f"Download {name} (CSV)", audited_file(scope, "true_costs", f"{key} csv", lambda frame=shown: csv_export(frame)),
                       file_name=f"true_costs_{key}_{month:%Y-%m}.csv", mime="text/csv", key=f"dl_{key}", on_click="ignore")  # fmt: skip


rates_tab, maps_tab, use_tab, margin_tab, leak_tab = st.tabs(
    ["Capacity cost rates", "Process maps", "Capacity used", "Fully loaded margins", "Leakage"])  # fmt: skip

with rates_tab:
    st.caption("Capacity cost rate = (salary + benefits + space and equipment) / practical capacity (80 % of paid hours). "
               "Space and equipment are carried per full-time equivalent (square metres of the role x cost per m², plus "
               "equipment), so a part-time post carries its share only.")  # fmt: skip
    if costing.costed:
        table(query(rate_table), "network rates", "rates")
        with st.expander("Rates per team (each team's own staff mix and salaries)"):
            table(query(rate_table, teams, False), "team rates", "team_rates")
    else:
        st.info("Not costed: no staff roster in the data.")

with maps_tab:
    st.caption("Standard minutes by role per activity, used where an activity has no recorded minutes; cost at the network rate.")
    table(query(process_map_table), "process maps", "process_maps")

with use_tab:
    if not costing.costed or use.empty:
        st.info("Not costed: no staff roster in the data.")
    else:
        names = query(team_names)
        by_team = capacity_summary(use, ["team_id"]).assign(team_id=lambda f: f["team_id"].map(names).fillna(f["team_id"]))
        table(by_team, "capacity by team", "capacity_team")
        by_month = capacity_summary(use, ["team_id", "month"])
        st.caption("Minutes used against minutes supplied, per team and month (used: recorded minutes, else the process map).")
        used = by_month.assign(
            team=by_month["team_id"].map(names).fillna(by_month["team_id"]), used_pct=by_month["utilisation"] * 100
        )
        st.line_chart(used.pivot_table(index="month", columns="team", values="used_pct"), x_label="Month",
                      y_label="Capacity used, % of hours supplied")  # fmt: skip
        by_month = by_month.assign(team_id=by_month["team_id"].map(names).fillna(by_month["team_id"]),
                                   month=by_month["month"].map(month_label))  # fmt: skip
        table(by_month, "capacity by team and month", "capacity_month")

with margin_tab:
    if not costing.costed or use.empty:
        st.info("Not costed: no staff roster in the data.")
    else:
        # the network or scope totals as before (suppress=False keeps the 12-month dollar totals, which the
        # payment models page withholds where suppression applies: see the README's known gaps)
        result = payment_comparison(query(payment_inputs, months, teams), load_payment_settings(), 0, True,
                                    idle_capacity_by_team(use), suppress=False)["total"]  # fmt: skip
        st.caption("Activity-based cost counts the minutes used; fully loaded cost adds each team's unused capacity, "
                   "which the practice pays for all the same (spread over the team's subgroups by member-months).")  # fmt: skip
        cols = st.columns(len(result))
        for col, row in zip(cols, result.itertuples(), strict=True):
            col.metric(f"{MODEL_LABELS[row.model]}: fully loaded margin", usd(row.fully_loaded_margin_usd),
                       f"activity-based {usd(row.margin_usd)}", delta_color="off", border=True)  # fmt: skip
        shown = result.assign(model=result["model"].map(MODEL_LABELS))[
            [
                "model",
                "revenue_usd",
                "cost_usd",
                "margin_usd",
                "idle_capacity_usd",
                "fully_loaded_cost_usd",
                "fully_loaded_margin_usd",
            ]
        ]
        table(shown.rename(columns={"model": "Payment model", "revenue_usd": "Revenue, $", "cost_usd": "Activity-based cost, $",
                                    "margin_usd": "Activity-based margin, $", "idle_capacity_usd": "Idle capacity, $",
                                    "fully_loaded_cost_usd": "Fully loaded cost, $",
                                    "fully_loaded_margin_usd": "Fully loaded margin, $"}), "margins", "margins")  # fmt: skip

with leak_tab:
    if leak_note:
        st.info(leak_note[0].upper() + leak_note[1:] + ".")
    else:
        st.caption("Claims paid to providers outside the network, by the team the patient was attributed to in the month "
                   "of service. Rows with 1-10 out-of-network claims are suppressed, and so is the next smallest row.")  # fmt: skip
        trend = leak["by_month"]
        st.line_chart(trend.assign(Month=trend["month"].map(month_label)).set_index("Month")["out_of_network_pmpm_usd"],
                      y_label="Out of network, $ PMPM", x_label="Month")  # fmt: skip
        table(leak["by_month"].assign(month=leak["by_month"]["month"].map(month_label)), "leakage by month", "leak_month")
        table(leak["by_category"], "leakage by category", "leak_category")
        table(leak["by_specialty"], "leakage by specialty", "leak_specialty")
        table(leak["by_facility"], "leakage by facility", "leak_facility")
        table(leak["by_team"], "leakage by team", "leak_team")
