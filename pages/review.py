"""Team leader: the monthly value review of one team and subgroup."""

import streamlit as st

from core.access.suppression import suppression_policy
from core.derive.measures import catalogue_frame
from core.store.months import WINDOW_LABELS
from core.views import charts
from core.views.format import usd
from core.views.printable import PAGE_SIZES
from core.views.review import (
    headline_metrics,
    idle_capacity_of_subgroup,
    payment_summary,
    review_data,
    scorecard_note,
    with_fully_loaded,
)
from core.views.review_log import add_entry, close_entry, review_log
from core.views.review_pack import PACK_TABLES, pack_file, review_pack_html, review_pack_pdf
from ui.auth import audit_view, audited_file, require
from ui.data import engine, query
from ui.labels import plain, subgroup_labels
from ui.tables import show_table
from ui.widgets import from_url, month_label, select_month, select_team, select_window

scope = require("review")
st.title("Monthly review")
labels = subgroup_labels()
with st.sidebar:
    team = select_team(allowed=scope.team_ids)
    wanted = from_url("subgroup", labels)
    if st.session_state.get("_review_team") not in (None, team["team_id"]) or wanted is None:
        wanted = team["team_subgroup"] if team["team_subgroup"] in labels else next(iter(labels))  # the team's own
    st.session_state["subgroup"] = wanted
    st.session_state["_review_team"] = team["team_id"]
    subgroup = st.selectbox("Subgroup", list(labels), key="subgroup", format_func=labels.get, bind="query-params")
    month = select_month()
    st.session_state.setdefault("review_window", "month")  # a monthly review unless a longer window is picked
    window = select_window("review_window")
team_id, team_label = team["team_id"], f"{team['practice']} · {team['team']}"
policy = suppression_policy(scope, [team_id])
data = query(review_data, team_id, subgroup, month, scope.team_ids, scope.patient_level, policy.suppress, window)
loaded = st.toggle("Fully loaded margin: add the cost of idle (unused) capacity", key="review_fully_loaded",
                   help="Activity-based cost counts only the staff minutes used; the practice pays for every minute it "
                        "supplies. Fully loaded cost = activity cost + this subgroup's share (by member-months) of the "
                        "team's unused capacity cost (see True costs).")  # fmt: skip
idle = query(idle_capacity_of_subgroup, team_id, subgroup, tuple(data.headline["month"])) if loaded else None
if loaded:
    data = with_fully_loaded(data, idle)
span = month_label(month) if window == "month" else f"{WINDOW_LABELS[window].lower()} to {month_label(month)}"
st.caption(f"{plain(team_label)} · {labels[subgroup]} · scorecard: {span}")
st.caption(policy.caption)
with st.container(border=True):
    st.markdown("**What moved**\n" + "".join(f"\n- {plain(line)}" for line in data.summary))

cols = st.columns(3)  # three a row: a measure's name fits its card at 1440 px
for i, m in enumerate(headline_metrics(data)):
    cols[i % 3].metric(m["label"], m["value"], m["delta"], delta_color="inverse" if m["inverse"] else "normal",
                       chart_data=m["chart"] or None, border=True, delta_description="vs last month")  # fmt: skip
pay = payment_summary(data)
keys = ("payment_usd", "cost_usd", "margin_usd", *(("idle_capacity_usd", "fully_loaded_cost_usd", "fully_loaded_margin_usd") if loaded else ()))  # fmt: skip
money = {k: usd(pay[k]) if pay["costed"] or k == "payment_usd" else "not costed" for k in keys}
c1, c2, c3 = st.columns(3)
c1.metric(f"Bundled payment ({usd(pay['rate_usd'])} PMPM)", money["payment_usd"])
if loaded:
    c2.metric(f"Fully loaded cost ({pay['cost_basis']} + unused capacity)", money["fully_loaded_cost_usd"],
              f"of which unused capacity {money['idle_capacity_usd']}", delta_color="off")  # fmt: skip
    c3.metric("Fully loaded margin", money["fully_loaded_margin_usd"], f"activity-based {money['margin_usd']}", delta_color="off")
else:
    c2.metric(f"Cost ({pay['cost_basis']})", money["cost_usd"])
    c3.metric("Margin", money["margin_usd"])
if data.costing_note:
    st.caption(data.costing_note.capitalize() + ".")
if data.claims_note:
    st.warning(data.claims_note.capitalize() + ": cost and acute events of these months will still rise.", icon=":material/schedule:")


def patient_rows(frame, key: str) -> None:
    """Patient rows (scope allowing): selecting a row opens the patient page."""
    if not scope.patient_level:
        st.caption("Patient rows are shown to users with patient-level access only.")
        return
    audit_view(scope, "view_patients", team_id, f"review {key} {subgroup} {month:%Y-%m}")
    event = show_table(frame, key=key, on_select="rerun", selection_mode="single-row")
    if event.selection.rows:
        st.switch_page("pages/patient.py", query_params={"patient": frame.iloc[event.selection.rows[0]]["patient_id"]})


card_tab, moved_tab, value_tab, log_tab, pack_tab = st.tabs(["Scorecard", "What moved", "Value map", "Review log", "Review pack"])
with card_tab:
    show_table(data.scorecard, key="scorecard", column_order=list(data.scorecard.columns[1:]))
    st.caption(scorecard_note(data))
    with st.expander("Measure definitions"):
        defs = catalogue_frame()
        show_table(defs[defs["id"].isin(data.card["measure_id"])][["name", "definition", "numerator", "denominator",
                   "exclusions", "unit", "direction", "target"]], column_config={"name": "Measure", "numerator": st.column_config.TextColumn("Numerator"),
                   "denominator": st.column_config.TextColumn("Denominator")})  # fmt: skip
with moved_tab:
    st.subheader("Measures that changed significantly")
    flagged = data.scorecard[data.scorecard["Significant"] != ""]
    for row in flagged.itertuples():
        st.markdown(f"- **{row.Measure}**: {row.Value} ({row.Unit}) · {row.Significant}")
    if flagged.empty:
        st.write("No measure changed significantly (the 95 % intervals overlap).")
    if len(data.across_teams) and len(scope.team_ids) > 1:
        st.caption("Significant changes and gaps of every team in your scope for this subgroup")
        show_table(data.across_teams, key="across_teams")
    st.subheader("Patients entering and leaving the subgroup")
    show_table(data.moves["summary"], key="moves_summary",
                 placeholder="suppressed")
    patient_rows(data.moves["patients"], "moves")
    st.subheader("ED visits and admissions this month")
    patient_rows(data.acute, "acute")
    st.subheader("Largest cost drivers")
    show_table(data.drivers["by_category"], key="cost_categories", placeholder="suppressed")
    patient_rows(data.drivers["by_patient"], "cost_patients")
with value_tab:
    now = data.value_map[data.value_map["month"] == month]
    st.caption("Every team serving this subgroup this month, other teams included: total cost per member per month "
               "against the value index, as on the team comparison. The index scores each measure against its target "
               "(100 = on target, 0 to 200) and averages the scores with the weights of executive.toml, on the same "
               "measures for every team shown; the bar is its 95% interval. Teams with 1-10 member-months are not shown.")  # fmt: skip
    st.plotly_chart(charts.review_value_map_figure(now, team_id, f"Value map, {month_label(month)}: this team against peer teams"),
                    key="value_map")  # fmt: skip
    show_table(now[["team", "value_index", "index_low", "index_high", "measures_in_index", "cost_pmpm_usd", "member_months",
                    "cost_ratio_to_peers", "quadrant"]], key="value_map_table", placeholder="suppressed")  # fmt: skip
    st.subheader("Parts of the index")
    parts = data.value_parts[data.value_parts["month"] == month]
    show_table(parts[["team", "measure", "value", "target", "score", "score_low", "score_high", "weight_share"]], key="value_parts",
               placeholder="suppressed")  # fmt: skip
    left_out = data.value_excluded[(data.value_excluded["month"] == month) & (data.value_excluded["teams_with_value"] > 0)]
    if len(left_out):
        st.caption("Left out for every team this month, because at least one team has no published value with enough "
                   "patients: " + "; ".join(f"{plain(r.measure)} ({r.teams_with_value} of {r.teams} teams)"
                                            for r in left_out.itertuples()) + ".")  # fmt: skip
    st.plotly_chart(charts.review_value_trend_figure(data.value_map, team_id, "This team on the value map, month by month"),
                    key="value_trend")  # fmt: skip
with log_tab:
    log = review_log(engine(), scope.team_ids, team_id, subgroup, month)
    show_table(log, key="review_log")
    with st.form("add_entry", clear_on_submit=True):
        kind = st.selectbox("Kind", ["note", "decision", "action"], key="entry_kind", format_func=str.capitalize)
        text = st.text_area("Text", key="entry_text")
        owner, due = st.text_input("Owner (action items)", key="entry_owner"), st.date_input("Due date", value=None, key="entry_due")
        if st.form_submit_button("Save"):
            try:
                add_entry(engine(), scope.team_ids, team_id=team_id, subgroup=subgroup, month=month, kind=kind, text=text,
                          owner=owner, due_date=due, created_by=scope.name)  # fmt: skip
                st.rerun()
            except ValueError as exc:
                st.error(str(exc))
    open_items = log[(log["kind"] == "action") & (log["status"] == "open")]
    if len(open_items):
        item = st.selectbox("Open action item", list(open_items["entry_id"]), key="close_item",
                            format_func=dict(zip(open_items["entry_id"], open_items["text"], strict=True)).get)  # fmt: skip
        if st.button("Mark done", key="close_button"):
            close_entry(engine(), scope.team_ids, int(item), scope.name)
            st.rerun()
with pack_tab:
    shared = st.toggle("For sharing outside the care team", key="pack_shared")
    pack_policy = suppression_policy(scope, [team_id], shared_export=shared)
    st.caption(pack_policy.caption)
    if pack_policy.suppress != policy.suppress:
        data = query(review_data, team_id, subgroup, month, scope.team_ids, scope.patient_level, pack_policy.suppress, window)
        data = with_fully_loaded(data, idle) if loaded else data
    stem = f"review-{team_id}-{subgroup}-{month:%Y-%m}{'' if window == 'month' else '-' + window}{'-shared' if shared else ''}"
    # every file of the pack is built when it is clicked, by the callable that writes its audit event
    paper = st.segmented_control("Paper size", list(PAGE_SIZES), default="letter", key="pack_paper", format_func=PAGE_SIZES.get)
    paper = paper or "letter"
    c1, c2, c3 = st.columns(3)
    c1.download_button("Review pack (PDF)", audited_file(scope, stem, f"review pack pdf {paper}", lambda: review_pack_pdf(
        data, log, labels, team_label, note=pack_policy.caption, page_size=paper)), f"{stem}-{paper}.pdf", "application/pdf",
        key="pack_pdf", on_click="ignore", icon=":material/picture_as_pdf:")  # fmt: skip
    c2.download_button("Review pack (HTML one-pager)", audited_file(scope, stem, "review pack html", lambda: review_pack_html(
        data, log, labels, team_label, note=pack_policy.caption)), f"{stem}.html", "text/html", key="pack_html",
        on_click="ignore", icon=":material/html:")  # fmt: skip
    c3.download_button("Tables (XLSX)", audited_file(scope, stem, "review pack xlsx", lambda d=data, lg=log: pack_file(d, lg, labels, "xlsx")),
                       f"{stem}.xlsx", key="pack_xlsx", on_click="ignore", icon=":material/table:",
                       mime="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")  # fmt: skip
    st.caption("Every file is made when you click (PDF and HTML charts take a few seconds). Tables as CSV, rounded as shown:")
    for name in PACK_TABLES:
        st.download_button(f"{name.replace('_', ' ').capitalize()} (CSV)",
                           audited_file(scope, f"{stem}-{name}", "review pack csv", lambda d=data, lg=log, n=name: pack_file(d, lg, labels, n)),
                           f"{stem}-{name}.csv", "text/csv", key=f"csv_{name}", on_click="ignore")  # fmt: skip
