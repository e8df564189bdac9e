"""Executive: teams compared fairly on one measure (caterpillar and funnel plots), and the value map."""

import streamlit as st

from core.access.suppression import suppression_policy
from core.store.months import WINDOW_LABELS
from core.store.queries import organisation
from core.views.charts import caterpillar_figure, funnel_figure, value_map_figure
from core.views.compare import comparison_measures, standardised_comparison, team_comparison, value_map_data
from core.views.executive_settings import load_executive_settings
from core.views.format import csv_export, format_figure
from ui.auth import audited_file, require
from ui.data import query
from ui.labels import subgroup_labels
from ui.tables import show_table
from ui.widgets import month_label, select_month, select_window

NUMBER = st.column_config.NumberColumn
TEXT = st.column_config.TextColumn

scope = require("compare")
st.title("Team comparison")
labels = subgroup_labels()
org = query(organisation)
team_labels = {r.team_id: f"{r.practice} · {r.team}" for r in org.itertuples()}
measures = comparison_measures()
teams = None if scope.network else scope.team_ids
policy = suppression_policy(scope, None)  # every team is compared with the network value
st.caption(policy.caption)
with st.sidebar:
    month = select_month()
    window = select_window("compare_window")

data = query(value_map_data, month, window, teams)
compare_tab, map_tab = st.tabs(["Teams against the network", "Value map"])
with compare_tab:
    left, right = st.columns(2)
    default = list(measures).index(load_executive_settings().default_compare_measure)
    measure_id = left.selectbox("Measure (outcomes, utilisation, cost PMPM)", list(measures), index=default, key="compare_measure",
                                format_func=lambda m: measures[m].name)  # fmt: skip
    measure = measures[measure_id]
    # opens on the subgroup with the most teams published on the value map (the most to compare)
    published = data["points"].loc[~data["points"]["suppressed"], "subgroup"].value_counts()
    choices = sorted((s for s in labels if measure.applies_to(s)), key=lambda s: -published.get(s, 0)) + [None]
    subgroup = right.selectbox("Compared within", choices, key="compare_subgroup",
                               format_func=lambda s: "All subgroups (observed / expected)" if s is None else labels[s],
                               help="Teams are compared with the network's patients of the same subgroup. Across subgroups, "
                                    "each team's value is set against what the network achieves with patients of the same "
                                    "subgroup, age band and risk score (observed / expected).")  # fmt: skip
    period_text = f"{WINDOW_LABELS[window].lower()} to {month_label(month)}"
    if subgroup is not None:
        result = query(team_comparison, measure_id, month, window, subgroup, teams, policy.suppress)
        net = result["network"]
        shown_teams = result["teams"]
        net_text = "suppressed" if net["suppressed"] else (f"{format_figure(net['value'])} {measure.unit} (95% CI "
                                                             f"{format_figure(net['ci_low'])} to {format_figure(net['ci_high'])})")  # fmt: skip
        st.markdown(f"**Network: {net_text}** · {labels[subgroup]} patients · {period_text}. "
                    "A team is flagged only when the network value lies outside its 95% interval.")  # fmt: skip
        x_title, y_title, centre = f"Volume ({measure.volume_label})", measure.unit, net["value"]
        plotted = shown_teams
    else:
        result = query(standardised_comparison, measure_id, month, window, teams, policy.suppress)
        shown_teams = result["teams"]
        st.markdown(f"**Observed / expected** · all subgroups the measure applies to · {period_text}. Expected = what the "
                    "network achieves with patients of the same subgroup, age band" + (" and risk score" if measure.risk_adjust else "")
                    + ". 1 = as expected for the team's patients"
                    + (" (below 1 is better)." if measure.direction == "lower" else " (above 1 is better).")
                    + " A team is flagged only when 1 lies outside its 95% interval.")  # fmt: skip
        x_title, y_title, centre = f"Volume ({result['volume_label']})", "Observed / expected", 1.0
        plotted = shown_teams.drop(columns="value").rename(columns={"oe": "value", "oe_low": "ci_low", "oe_high": "ci_high"})
    caterpillar, funnel = st.columns(2)
    caterpillar.plotly_chart(caterpillar_figure(plotted, centre, team_labels, y_title), key="caterpillar")
    funnel.plotly_chart(funnel_figure(plotted, result["funnel"], centre, team_labels, y_title, x_title), key="funnel")
    st.caption("Funnel: the lines are the 95% and 99.8% control limits around the network value, by volume: a team "
               "outside them differs by more than chance would explain. Limits: normal approximation to the binomial "
               "for percentages, exact Poisson for rates and observed / expected counts, normal for means and costs. "
               + ("" if not policy.suppress else "Volumes of windows longer than a month are rounded to two significant figures."))  # fmt: skip
    shown = shown_teams.assign(team=shown_teams["team_id"].map(team_labels)).drop(columns="team_id")
    shown = shown[["team", *[c for c in shown.columns if c != "team"]]]
    unit = measure.unit
    config = {"team": TEXT("Team"), "numerator": NUMBER("Numerator", format="%d"), "denominator": NUMBER("Denominator", format="%.1f"),
              "patients": NUMBER("Patients", format="%d"), "value": NUMBER(f"Value ({unit})", format="%.1f"),
              "ci_low": NUMBER("95% CI low", format="%.1f"), "ci_high": NUMBER("95% CI high", format="%.1f"),
              "expected_value": NUMBER(f"Expected for its patients ({unit})", format="%.1f"),
              "oe": NUMBER("Observed / expected", format="%.2f"), "oe_low": NUMBER("O/E 95% CI low", format="%.2f"),
              "oe_high": NUMBER("O/E 95% CI high", format="%.2f"), "volume": NUMBER(x_title, format="%.1f"),
              "funnel_position": TEXT("Funnel"), "flag": TEXT("Against the network"), "suppressed": "Suppressed"}  # fmt: skip
    show_table(shown, hide_index=True, key="compare_table", placeholder="suppressed", column_config=config)
    st.download_button("Download comparison (CSV)",
                       audited_file(scope, "compare", f"{measure_id} {subgroup or 'all'} {month:%Y-%m} {window}",
                                    lambda frame=shown: csv_export(frame)),
                       file_name=f"compare_{measure_id}_{month:%Y-%m}.csv", mime="text/csv", key="dl_compare", on_click="ignore")  # fmt: skip

with map_tab:
    points, parts, excluded = data["points"], data["parts"], data["excluded"]
    st.caption("Each point is a team serving a subgroup: total cost per member per month against its value index. "
               "The index scores each measure against its target (100 = on target, 0 to 200) and averages the scores "
               "with the weights of executive.toml, on the same measures for every team of the subgroup; the bar is "
               "its 95% interval. Arrows start at the position of the same window a year earlier. Points with 1-10 "
               "patients are suppressed.")  # fmt: skip
    st.plotly_chart(value_map_figure(points, labels, dict(zip(org["team_id"], org["team"], strict=True))), key="value_map")
    table = points.assign(team=points["team_id"].map(team_labels), subgroup=points["subgroup"].map(lambda s: labels.get(s, s)))
    table = table[["team", "subgroup", "cost_pmpm_usd", "outcome_index", "index_low", "index_high", "measures_in_index", "member_months",
                   "cost_ratio_to_peers", "quadrant", "previous_cost_pmpm_usd", "previous_outcome_index", "suppressed"]]  # fmt: skip
    show_table(table, hide_index=True, key="value_table", placeholder="suppressed",
                 column_config={"team": TEXT("Team"), "subgroup": TEXT("Subgroup"),
                                "cost_pmpm_usd": NUMBER("Cost PMPM (USD)", format="$%.0f"),
                                "outcome_index": NUMBER("Value index", format="%.1f"),
                                "index_low": NUMBER("Index 95% CI low", format="%.1f"),
                                "index_high": NUMBER("Index 95% CI high", format="%.1f"),
                                "measures_in_index": NUMBER("Measures in the index", format="%d"),
                                "member_months": NUMBER("Member-months", format="%d"),
                                "cost_ratio_to_peers": NUMBER("Cost / peers' cost", format="%.2f"),
                                "quadrant": TEXT("Quadrant"),
                                "previous_cost_pmpm_usd": NUMBER("Cost PMPM a year earlier (USD)", format="$%.0f"),
                                "previous_outcome_index": NUMBER("Value index a year earlier", format="%.1f"),
                                "suppressed": "Suppressed"})  # fmt: skip
    st.download_button("Download value map (CSV)", audited_file(scope, "value_map", f"{month:%Y-%m} {window}", lambda frame=table: csv_export(frame)),
                       file_name=f"value_map_{month:%Y-%m}.csv", mime="text/csv", key="dl_value_map", on_click="ignore")  # fmt: skip
    st.subheader("Parts of the index")
    names = {m: c.name for m, c in measures.items()}
    parts_shown = parts.assign(team=parts["team_id"].map(team_labels), subgroup=parts["subgroup"].map(lambda s: labels.get(s, s)),
                               measure=parts["measure_id"].map(names))  # fmt: skip
    parts_shown = parts_shown[["team", "subgroup", "measure", "value", "target", "score", "score_low", "score_high", "weight_share"]]  # fmt: skip
    show_table(parts_shown, hide_index=True, key="value_parts", placeholder="suppressed",
                 column_config={"team": TEXT("Team"), "subgroup": TEXT("Subgroup"), "measure": TEXT("Measure"),
                                "value": NUMBER("Value", format="%.1f"), "target": NUMBER("Target", format="%.1f"),
                                "score": NUMBER("Score (100 = on target)", format="%.0f"),
                                "score_low": NUMBER("Score 95% CI low", format="%.0f"),
                                "score_high": NUMBER("Score 95% CI high", format="%.0f"),
                                "weight_share": NUMBER("Weight", format="percent")})  # fmt: skip
    missing = excluded.loc[excluded["teams_with_value"] > 0]
    if len(missing):
        lines = [f"{labels.get(r.subgroup, r.subgroup)}: {names.get(r.measure_id, r.measure_id)} (published for "
                 f"{r.teams_with_value} of {r.teams} teams)" for r in missing.itertuples()]  # fmt: skip
        st.markdown("**Left out for every team of the subgroup**, because at least one team has no published value "
                    f"with {format_figure(load_executive_settings().min_denominator, digits=0)} or more patients:")  # fmt: skip
        show_table({"Left out": lines}, hide_index=True, key="value_excluded")
    st.caption("Targets and their sources: the measure catalogue (core/config/measures.toml). Interval: propagated from "
               "each measure's 95% interval, taking the measures as independent.")  # fmt: skip
