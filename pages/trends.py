"""Executive: cost PMPM and key outcomes per subgroup over 24 months, and the subgroup mix."""

import streamlit as st

from core.access.suppression import suppression_policy
from core.metrics.runout import PAID_DATES, incomplete_note
from core.store.queries import organisation
from core.views.cells_read import COST_LABELS
from core.views.charts import member_mix_figure, trend_lines_figure
from core.views.executive_pack import executive_figures, executive_pack_pdf, executive_pack_xlsx
from core.views.format import csv_export
from core.views.printable import PAGE_SIZES
from core.views.scope import scope_units, unit_filters, unit_teams
from core.views.trends import outcomes_with_data, trends
from ui.auth import audited_file, require
from ui.data import engine, query
from ui.labels import subgroup_labels
from ui.tables import show_table

ROLLING = {1: "Each month", 3: "Rolling 3 months", 12: "Rolling 12 months"}

scope = require("trends")
st.title("Trends")
labels = subgroup_labels()
org = query(organisation)
units = scope_units(org, scope.team_ids, scope.network)
with st.sidebar:
    unit = st.selectbox("Network, practice or team", list(units), key="trend_unit", format_func=units.get)
    rolling = st.selectbox("Each point shows", list(ROLLING), key="trend_rolling", format_func=ROLLING.get)
    completed = st.checkbox("Completed claims (estimated from paid-date lags)", key="trend_completed",
                            help="Claims of recent months divided by their completion factor; needs paid dates in the claims.")  # fmt: skip

practice_id, team_id = unit_filters(unit)
policy = suppression_policy(scope, unit_teams(org, scope.team_ids, scope.network, practice_id, team_id))
data = query(trends, None if scope.network else scope.team_ids, practice_id, team_id, None, rolling, completed,
             policy.suppress)
figures, mix = data["figures"], data["mix"]
if figures.empty:
    st.info("No full window of data yet: import data first, or show fewer months per point.")
    st.stop()
st.caption(f"{units[unit]} · {figures['month'].min():%b %Y} to {figures['month'].max():%b %Y} · {policy.caption}"
           + (" Gaps in a line are suppressed figures." if policy.suppress else ""))  # fmt: skip
incomplete = incomplete_note(data["completeness"].loc[data["completeness"]["month"] >= figures["month"].min()])
if incomplete:
    st.warning(f"{incomplete.capitalize()} (shaded).", icon=":material/schedule:")
if completed and not (data["completeness"]["basis"] == PAID_DATES).any():
    st.caption("No paid dates in the claims: completed claims cannot be estimated, paid amounts are shown.")
shade_from = figures.loc[~figures["claims_complete"], "month"].min() if (~figures["claims_complete"]).any() else None

drawn = figures.loc[~figures["partial"]]  # a window of claims that have not run out is never drawn
st.subheader("Cost per member per month")
if figures["partial"].any():
    st.caption("Claims costs of months whose claims have not run out are not drawn (they would dip for want of "
               "late claims); tick *Completed claims* to draw them completed from the paid-date lags.")  # fmt: skip
for tab, metric in zip(st.tabs(list(COST_LABELS.values())), COST_LABELS, strict=True):
    part = drawn.loc[drawn["metric"] == metric]
    shade = shade_from if len(part) and shade_from is not None and part["month"].max() >= shade_from else None
    tab.plotly_chart(trend_lines_figure(part, labels, title=COST_LABELS[metric], y_title="USD per member per month", incomplete_from=shade),
                     key=f"cost_{metric}")  # fmt: skip

st.subheader("Key outcomes")
order = outcomes_with_data(figures)  # the outcome with the most published, non-zero points first
names = dict(figures[["metric", "metric_label"]].drop_duplicates().itertuples(index=False))
measure = st.selectbox("Outcome", order, key="trend_measure", format_func=names.get,
                       help="Outcomes are listed with the most data first: a line of zeros and suppressed gaps last.")  # fmt: skip
st.plotly_chart(trend_lines_figure(drawn.loc[drawn["metric"] == measure], labels, y_title=names.get(measure, ""),
                                   incomplete_from=shade_from), key="outcome")  # fmt: skip
st.caption("Shaded bands: 95% intervals (Wilson for percentages, exact Poisson for rates, t for means and costs).")

st.subheader("Subgroup mix")
shown_mix = mix.loc[~mix["suppressed"]].rename(columns={"members": "member_months"})
st.plotly_chart(member_mix_figure(shown_mix, labels), key="mix")
if mix["suppressed"].any():
    st.caption("Shares are of all the unit's members in the month; suppressed subgroups are not drawn, so the "
               "published shares of a month can add up to less than 100%.")  # fmt: skip

st.subheader("All figures")
table = figures.assign(subgroup=figures["subgroup"].map(lambda s: labels.get(s, "All subgroups" if s == "all" else s)))
table = table[["month", "subgroup", "metric_label", "value", "ci_low", "ci_high", "patients", "suppressed", "claims_complete"]]
show_table(table, hide_index=True, key="trend_table", placeholder="suppressed",
             column_config={"month": st.column_config.DateColumn("Month", format="MMM YYYY"),
                            "subgroup": st.column_config.TextColumn("Subgroup"),
                            "metric_label": st.column_config.TextColumn("Figure"),
                            "suppressed": "Suppressed", "claims_complete": "Claims run out",
                            "value": st.column_config.NumberColumn("Value", format="%.1f"),
                            "ci_low": st.column_config.NumberColumn("95% CI low", format="%.1f"),
                            "ci_high": st.column_config.NumberColumn("95% CI high", format="%.1f"),
                            "patients": st.column_config.NumberColumn("Patients", format="%d")})  # fmt: skip
st.download_button("Download figures (CSV)", audited_file(scope, "trends", f"{unit} figures csv", lambda frame=table: csv_export(frame)),
                   file_name="trends.csv", mime="text/csv", key="dl_trends", on_click="ignore")  # fmt: skip
mix_table = mix.assign(subgroup=mix["subgroup"].map(lambda s: labels.get(s, s)))
show_table(mix_table, hide_index=True, key="mix_table", placeholder="suppressed",
             column_config={"month": st.column_config.DateColumn("Month", format="MMM YYYY"),
                            "subgroup": st.column_config.TextColumn("Subgroup"),
                            "members": st.column_config.NumberColumn("Members", format="%d"), "suppressed": "Suppressed",
                            "share": st.column_config.NumberColumn("Share of all members", format="percent")})  # fmt: skip
st.download_button("Download subgroup mix (CSV)", audited_file(scope, "trends", f"{unit} mix csv", lambda frame=mix_table: csv_export(frame)),
                   file_name="subgroup_mix.csv", mime="text/csv", key="dl_mix", on_click="ignore")  # fmt: skip

st.subheader("Executive pack")
st.caption(f"{units[unit]}: quarter to date and year to date against the same months of the prior year, as PDF and XLSX "
           "(made when you click).")  # fmt: skip
shared = st.toggle("For sharing outside the care team", key="exec_pack_shared", disabled=policy.suppress,
                   help="Suppresses counts of 1-10 in the pack even where you may see exact figures.")  # fmt: skip
pack_teams = unit_teams(org, scope.team_ids, scope.network, practice_id, team_id)
pack_policy = suppression_policy(scope, pack_teams, shared_export=shared)
paper = st.segmented_control("Paper size", list(PAGE_SIZES), default="letter", key="exec_paper", format_func=PAGE_SIZES.get)
paper, bound, pack_scope = paper or "letter", engine(), None if scope.network else scope.team_ids
stem = f"executive-pack-{unit.replace(':', '-')}{'-shared' if shared else ''}"


def pack_figures():
    return executive_figures(bound, pack_scope, practice_id, team_id, pack_policy.suppress)


c1, c2 = st.columns(2)
c1.download_button("Executive pack (PDF)", audited_file(scope, stem, f"executive pack pdf {paper}", lambda: executive_pack_pdf(
    pack_figures(), units[unit], labels, pack_policy.caption, paper)), f"{stem}-{paper}.pdf", "application/pdf",
    key="exec_pack_pdf", on_click="ignore", icon=":material/picture_as_pdf:")  # fmt: skip
c2.download_button("Executive pack (XLSX)", audited_file(scope, stem, "executive pack xlsx", lambda: executive_pack_xlsx(
    pack_figures(), labels)), f"{stem}.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    key="exec_pack_xlsx", on_click="ignore", icon=":material/table:")  # fmt: skip
