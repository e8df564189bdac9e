"""Executive: any measure stratified by an equity dimension, with the gap to the best-served group."""

import streamlit as st

from core.access.suppression import suppression_policy
from core.derive.cells import load_strata
from core.derive.measures import load_measures
from core.store.months import WINDOW_LABELS
from core.views.charts import equity_gap_figure
from core.views.equity import equity_table
from core.views.executive_settings import load_executive_settings
from core.views.format import csv_export, format_figure
from ui.auth import audited_file, require
from ui.data import query
from ui.labels import subgroup_labels
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
rule = ("the largest group" if settings.equity_reference == "largest" else
        f"the best-served group among those with at least {settings.reference_min_patients:,.0f} patients")  # fmt: skip
network_text = format_figure(table["network_value"].iloc[0])
st.markdown(f"**{measures[measure_id]}** by {strata.labels[stratum].lower()} · {WINDOW_LABELS[window].lower()} to {month_label(month)}. "
            f"All patients of the network: **{network_text}** {unit}. "
            + (f"Reference group ({rule}): **{best['group'].iloc[0]}** ({format_figure(best['value'].iloc[0])} {unit}). " if len(best) else "")
            + "A gap is marked real only when the two 95% intervals do not overlap.")  # fmt: skip
chart = table.assign(stratum_value=table["group"])
st.plotly_chart(equity_gap_figure(chart, unit, table["network_value"].iloc[0]), key="equity_chart")
shown = table.drop(columns=["unit", "stratum_value"])
NUMBER = st.column_config.NumberColumn
show_table(shown, hide_index=True, key="equity_table", placeholder="suppressed",
             column_config={"group": st.column_config.TextColumn(strata.labels[stratum]),
                            "numerator": NUMBER("Numerator", format="%.1f"), "denominator": NUMBER("Denominator", format="%.1f"),
                            "patients": NUMBER("Patients", format="%d"), "value": NUMBER(f"Value ({unit})", format="%.1f"),
                            "ci_low": NUMBER("95% CI low", format="%.1f"), "ci_high": NUMBER("95% CI high", format="%.1f"),
                            "network_value": NUMBER(f"All patients ({unit})", format="%.1f"),
                            "best_value": NUMBER(f"Reference group ({unit})", format="%.1f"),
                            "gap_to_best": NUMBER(f"Gap to the reference ({unit})", format="%+.1f"),
                            "gap_is_real": st.column_config.CheckboxColumn("Gap is real"),
                            "best": st.column_config.CheckboxColumn("Reference group"), "suppressed": "Suppressed"})  # fmt: skip
st.download_button("Download equity table (CSV)",
                   audited_file(scope, "equity", f"{measure_id} {stratum} {subgroup or 'all'} {month:%Y-%m} {window}",
                                lambda frame=shown: csv_export(frame)),
                   file_name=f"equity_{measure_id}_{stratum}_{month:%Y-%m}.csv", mime="text/csv", key="dl_equity", on_click="ignore")  # fmt: skip
