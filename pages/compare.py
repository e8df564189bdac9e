"""Executive: every team against the network on one measure (caterpillar plot), and the value map."""

import streamlit as st

from core.access.suppression import suppression_policy
from core.derive.measures import load_measures
from core.store.months import WINDOW_LABELS
from core.store.queries import organisation
from core.views.charts import caterpillar_figure, value_map_figure
from core.views.compare import team_comparison, value_positions
from core.views.executive_settings import load_executive_settings
from core.views.format import csv_export, format_figure
from ui.auth import audit_export, require
from ui.data import query
from ui.labels import subgroup_labels
from ui.tables import show_table
from ui.widgets import month_label, select_month, select_window

scope = require("compare")
st.title("Team comparison")
labels = subgroup_labels()
org = query(organisation)
team_labels = {r.team_id: f"{r.practice} · {r.team}" for r in org.itertuples()}
measures = {m.id: m.name for m in load_measures().measures}
teams = None if scope.network else scope.team_ids
policy = suppression_policy(scope, None)  # every team is compared with the network value
st.caption(policy.caption)
with st.sidebar:
    month = select_month()
    window = select_window("compare_window")

compare_tab, map_tab = st.tabs(["Teams against the network", "Value map"])
with compare_tab:
    left, right = st.columns(2)
    default = list(measures).index(load_executive_settings().default_compare_measure)
    measure_id = left.selectbox("Measure", list(measures), index=default, key="compare_measure", format_func=measures.get)
    subgroup = right.selectbox("Subgroup", [None, *labels], key="compare_subgroup",
                               format_func=lambda s: "All subgroups" if s is None else labels[s])  # fmt: skip
    if not load_measures().by_id()[measure_id].applies_to(subgroup):
        st.info("This measure does not apply to the chosen subgroup.")
    else:
        result = query(team_comparison, measure_id, month, window, subgroup, teams, policy.suppress)
        net, measure = result["network"], result["measure"]
        net_text = "suppressed" if net["suppressed"] else f"{format_figure(net['value'])} (95% CI {format_figure(net['ci_low'])} to {format_figure(net['ci_high'])})"
        st.markdown(f"**Network: {net_text}** {measure.unit} · {WINDOW_LABELS[window].lower()} to {month_label(month)}. "
                    "A team is flagged only when the network value lies outside its 95% interval.")  # fmt: skip
        st.plotly_chart(caterpillar_figure(result["teams"], net["value"], team_labels, measure.unit), key="caterpillar")
        shown = result["teams"].assign(team=result["teams"]["team_id"].map(team_labels))
        shown = shown[["team", "numerator", "denominator", "patients", "value", "ci_low", "ci_high", "flag", "suppressed"]]
        show_table(shown, key="compare_table", placeholder="suppressed", labels={"value": f"Value, {measure.unit}"})
        st.download_button("Download comparison (CSV)", csv_export(shown), file_name=f"compare_{measure_id}_{month:%Y-%m}.csv",
                           mime="text/csv", key="dl_compare", on_click=audit_export,
                           args=(scope, "compare", f"{measure_id} {subgroup or 'all'} {month:%Y-%m} {window}"))  # fmt: skip

with map_tab:
    points = query(value_positions, month, window, teams)
    st.caption("Each point is a team serving a subgroup: total cost per member per month against its outcome index "
               "(50 = the average of teams serving the same subgroup; higher is better). Arrows start at the position "
               "of the same window a year earlier. Points with 1-10 patients are suppressed.")  # fmt: skip
    st.plotly_chart(value_map_figure(points, labels, dict(zip(org["team_id"], org["team"], strict=True))), key="value_map")
    table = points.assign(team=points["team_id"].map(team_labels), subgroup=points["subgroup"].map(lambda s: labels.get(s, s)))
    table = table[["team", "subgroup", "cost_pmpm_usd", "outcome_index", "measures_in_index", "member_months", "cost_ratio_to_peers",
                   "quadrant", "previous_cost_pmpm_usd", "previous_outcome_index", "suppressed"]]  # fmt: skip
    show_table(table, key="value_table", placeholder="suppressed")
    st.download_button("Download value map (CSV)", csv_export(table), file_name=f"value_map_{month:%Y-%m}.csv", mime="text/csv",
                       key="dl_value_map", on_click=audit_export, args=(scope, "value_map", f"{month:%Y-%m} {window}"))  # fmt: skip
