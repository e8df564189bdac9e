"""Executive: any measure stratified by an equity dimension, with the gap to the best-served group."""

import streamlit as st

from core.access.suppression import suppression_policy
from core.derive.cells import load_strata
from core.derive.measures import load_measures
from core.store.months import WINDOW_LABELS
from core.views.charts import equity_gap_figure
from core.views.columns import label_of, vocabulary
from core.views.equity import equity_table
from core.views.executive_settings import load_executive_settings
from core.views.format import csv_export, format_figure
from ui.auth import audit_export, require
from ui.data import query
from ui.labels import plain, subgroup_labels
from ui.tables import show_table
from ui.widgets import month_label, select_month, select_window

scope = require("equity")
st.title("Equity")
labels = subgroup_labels()
measures = {m.id: m.name for m in load_measures().measures}
with st.sidebar:
    month = select_month()
    window = select_window("equity_window")
a, b, c = st.columns(3)
settings = load_executive_settings()
default = list(measures).index(settings.default_equity_measure)
measure_id = a.selectbox("Measure", list(measures), index=default, key="equity_measure", format_func=measures.get)
strata = load_strata()
stratum = b.selectbox("Stratified by", list(strata.labels), index=list(strata.labels).index(strata.default), key="equity_stratum",
                      format_func=strata.labels.get)  # fmt: skip
subgroup = c.selectbox("Subgroup", [None, *labels], key="equity_subgroup", format_func=lambda s: "All subgroups" if s is None else labels[s])

policy = suppression_policy(scope, None)  # each group is shown with its network value
st.caption(policy.caption)
table = query(equity_table, measure_id, stratum, month, window, subgroup, None if scope.network else scope.team_ids,
              policy.suppress)
if table.empty:
    st.info("This measure does not apply to the chosen subgroup.")
    st.stop()
unit = table["unit"].iloc[0]
best = table.loc[table["best"]]
st.markdown(f"**{measures[measure_id]}** by {strata.labels[stratum].lower()} · {WINDOW_LABELS[window].lower()} to {month_label(month)}. "
            + (f"Best-served group: **{plain(label_of(best['stratum_value'].iloc[0], 'strata'))}** ({format_figure(best['value'].iloc[0])} {unit}). " if len(best) else "")
            + "A gap is marked real only when the two 95% intervals do not overlap.")  # fmt: skip
groups = vocabulary("strata")
st.plotly_chart(equity_gap_figure(table, unit, group_title=strata.labels[stratum], group_labels=groups,
                                  title=f"{measures[measure_id]} by {strata.labels[stratum].lower()}"), key="equity_chart")  # fmt: skip
shown = table.drop(columns=["unit"])
show_table(shown, key="equity_table", placeholder="suppressed", labels={"value": f"Value, {unit}", "stratum_value": strata.labels[stratum]})
st.download_button("Download equity table (CSV)", csv_export(shown), file_name=f"equity_{measure_id}_{stratum}_{month:%Y-%m}.csv",
                   mime="text/csv", key="dl_equity", on_click=audit_export,
                   args=(scope, "equity", f"{measure_id} {stratum} {subgroup or 'all'} {month:%Y-%m} {window}"))  # fmt: skip
