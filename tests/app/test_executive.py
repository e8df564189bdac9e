"""The executive views (AppTest on the small sample network): each shows the core's results, and
no count of 1-10 appears anywhere on these pages or in their CSV downloads."""

import dataclasses
import io
import re

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select
from streamlit.runtime.media_file_storage import MediaFileKind
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

from core.access.policy import load_access_rules
from core.metrics.payments import load_payment_settings
from core.store.db import make_engine
from core.store.models import AuditEvent
from core.store.months import window_months
from core.store.queries import months_available, organisation, read_frame
from core.views.columns import label_of
from core.views.compare import standardised_comparison, team_comparison, value_map_data
from core.views.econsults import econsults
from core.views.equity import equity_table
from core.views.format import format_figure, usd
from core.views.payment_models import aco_inputs, aco_projection, payment_comparison, payment_inputs, payment_settings_with
from core.views.trends import trends
from tests import attack

EXECUTIVE_PAGES = [p.file for p in load_access_rules().pages.values() if p.section == "Executive"]
# Columns that hold counts of people, member-months or events (never 1-10 when published).
COUNT_COLUMNS = re.compile(r"^(numerator|denominator|patients|members|member_months|econsults|responded|resolved|count)$", re.I)
# Counts written in text: "7 patients", "3 e-consults", "E-consults: 4" ...
COUNT_TEXT = re.compile(r"(?<![\d.,$-])(?:[1-9]|10)\s+(?:patients?|members?|member-months|e-consults?|people)\b", re.I)
COUNT_METRICS = re.compile(r"e-consults|patients|members", re.I)
PACKS_MADE_ON_CLICK = {"exec_pack_pdf", "exec_pack_xlsx"}


@pytest.fixture(autouse=True)
def downloads(monkeypatch) -> list:
    """Keep the in-memory file stores and managers AppTest creates, so tests can read what a download button serves."""
    return attack.record_media(monkeypatch)


def download_text(stores, button) -> str:
    data = attack.download_bytes(stores, button)
    assert data is not None, f"download {button.label!r} not found"
    return data.decode()


def small_counts_on_page(at, stores) -> list[str]:
    """Every count of 1-10 on the page: dataframe count columns, count metrics, text, CSV downloads."""
    found = []

    def scan(frame: pd.DataFrame, where: str):
        for col in frame.columns:
            if COUNT_COLUMNS.match(str(col)):
                values = pd.to_numeric(frame[col], errors="coerce").dropna()
                found.extend(f"{where}: {col}={v}" for v in values if 1 <= v <= 10)

    for i, df in enumerate(at.dataframe):
        scan(df.value, f"dataframe {i}")
    for metric in at.metric:
        number = pd.to_numeric(re.sub(r"[$,%]", "", metric.value), errors="coerce")
        if COUNT_METRICS.search(metric.label) and "%" not in metric.value and "days" not in metric.label and 1 <= number <= 10:
            found.append(f"metric {metric.label}={metric.value}")
    for element in [*at.markdown, *at.caption, *at.info, *at.warning]:
        found.extend(f"text: {m}" for m in COUNT_TEXT.findall(element.value))
    for button in at.get("download_button"):
        if getattr(button, "key", None) in PACKS_MADE_ON_CLICK:  # PDF/XLSX made on click: tests/unit/test_packs.py reads them back
            continue
        text = download_text(stores, button)
        scan(pd.read_csv(io.StringIO(text)), f"download {button.label}")
        found.extend(f"download text: {m}" for m in COUNT_TEXT.findall(text))
    return found


def open_page(app, page, role="executive"):
    app.session_state["demo_role"] = role
    app.run()
    app.switch_page(page).run()
    assert not app.exception, app.exception
    return app


@pytest.fixture
def engine(sample_db_url):
    eng = make_engine(sample_db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def period(engine):
    return months_available(engine)[-1]


def numbers(frame: pd.DataFrame, cols) -> np.ndarray:
    return frame[list(cols)].to_numpy(dtype="float64")


# --- each view against the core -------------------------------------------------------------


def test_trends_show_the_core_trends(app, engine):
    open_page(app, "pages/trends.py")
    core = trends(engine)
    table = app.dataframe[0].value
    assert len(table) == len(core["figures"])
    np.testing.assert_allclose(numbers(table, ["value", "patients"]), numbers(core["figures"], ["value", "patients"]), equal_nan=True)
    mix = app.dataframe[1].value
    np.testing.assert_allclose(numbers(mix, ["members", "share"]), numbers(core["mix"], ["members", "share"]), equal_nan=True)
    assert len(app.get("plotly_chart")) == 5  # three cost tabs, the outcome, the mix


def test_trends_of_one_team(app, engine):
    open_page(app, "pages/trends.py")
    app.sidebar.selectbox(key="trend_unit").select("team:TM02").run()
    core = trends(engine, None, None, "TM02")
    np.testing.assert_allclose(numbers(app.dataframe[0].value, ["value"]), numbers(core["figures"], ["value"]), equal_nan=True)


def test_team_comparison_shows_every_team_against_the_network(app, engine, period):
    open_page(app, "pages/compare.py")
    subgroup = app.selectbox(key="compare_subgroup").value
    assert subgroup is not None  # within one subgroup by default
    core = team_comparison(engine, "ed_visits", period, "12m", subgroup)
    table = app.dataframe[0].value
    assert len(table) == len(core["teams"]) > 0
    np.testing.assert_allclose(numbers(table, ["value", "ci_low", "ci_high"]), numbers(core["teams"], ["value", "ci_low", "ci_high"]),
                               equal_nan=True)  # fmt: skip
    assert list(table["flag"]) == [label_of(f, "flags") for f in core["teams"]["flag"]]  # shown by their labels
    assert f"Network: {core['network']['value']:,.1f}" in app.markdown[0].value
    assert len(app.get("plotly_chart")) >= 2  # caterpillar and funnel side by side


def test_team_comparison_across_subgroups_is_observed_over_expected(app, engine, period):
    open_page(app, "pages/compare.py")
    app.selectbox(key="compare_measure").select("cost_total_usd").run()
    within = app.selectbox(key="compare_subgroup")
    within.select_index(len(within.options) - 1).run()  # the last choice: all subgroups, observed / expected
    core = standardised_comparison(engine, "cost_total_usd", period, "12m")
    table = app.dataframe[0].value
    assert "oe" in table.columns, app.markdown[0].value
    assert len(table) == 7
    np.testing.assert_allclose(numbers(table, ["oe", "oe_low", "oe_high"]), numbers(core["teams"], ["oe", "oe_low", "oe_high"]),
                               equal_nan=True)  # fmt: skip
    assert "Observed / expected" in app.markdown[0].value


def test_value_map_shows_the_core_positions(app, engine, period):
    open_page(app, "pages/compare.py")
    data = value_map_data(engine, period, "12m")
    table = app.dataframe[1].value
    cols = ["cost_pmpm_usd", "outcome_index", "index_low", "index_high", "previous_cost_pmpm_usd", "previous_outcome_index"]
    np.testing.assert_allclose(numbers(table, cols), numbers(data["points"], cols), equal_nan=True)
    parts = app.dataframe[2].value
    assert len(parts) == len(data["parts"]) > 0
    # one measure set per subgroup: every published team of a subgroup is indexed on the same number of measures
    shown = data["points"].loc[~data["points"]["suppressed"]]
    assert (shown.groupby("subgroup")["measures_in_index"].nunique() == 1).all()


def test_payment_models_with_a_what_if_setting(app, engine, period):
    open_page(app, "pages/payments.py")
    months = tuple(window_months(period, "12m"))
    inputs = payment_inputs(engine, months)
    base = load_payment_settings()
    core = payment_comparison(inputs, base, 0)["total"].set_index("model")
    assert "margin_usd" not in core  # an executive: 12-month totals would give member-months back
    shown = {m.label: m.value for m in app.metric}
    assert shown["Bundled per subgroup: margin PMPM"] == usd(core.loc["bundled", "margin_pmpm_usd"], 2)
    app.number_input(key="pay_bundle_complex").set_value(150.0).run()
    what_if = payment_comparison(inputs, payment_settings_with(base, {"complex": 150.0}), 0)["total"].set_index("model")
    shown = {m.label: m.value for m in app.metric}
    assert shown["Bundled per subgroup: margin PMPM"] == usd(what_if.loc["bundled", "margin_pmpm_usd"], 2)
    assert what_if.loc["bundled", "margin_pmpm_usd"] > core.loc["bundled", "margin_pmpm_usd"]
    exact = payment_comparison(inputs, base, 0, suppress=False)["total"].set_index("model")
    assert exact.loc["bundled", "margin_usd"] == pytest.approx(exact.loc["bundled", "margin_pmpm_usd"] * exact.loc["bundled", "member_months"])
    assert load_payment_settings().bundled_pmpm_usd["complex"] == 100.0  # nothing saved


def test_aco_projection_refuses_a_short_baseline_and_settles_with_a_benchmark(app, engine, period):
    open_page(app, "pages/payments.py")
    months = tuple(window_months(period, "12m"))
    # the small network holds 15 months: the baseline year of the last 12 has 3 months of members
    assert aco_inputs(engine, months)[0] is None
    assert any("No ACO projection" in i.value and "member-months" in i.value for i in app.info)
    assert not any(m.label == "Benchmark" for m in app.metric)
    app.number_input(key="aco_benchmark").set_value(12_000.0).run()
    inputs, _ = aco_inputs(engine, months, benchmark_pmpy_usd=12_000.0)
    track = load_payment_settings().aco_presets["mssp_enhanced"]
    result, _ = aco_projection(inputs, track, 0.0)
    shown = {m.label: m.value for m in app.metric}
    assert shown["Benchmark"] == usd(result.benchmark_usd) and shown["Actual spend"] == usd(result.actual_spend_usd)
    app.slider(key="aco_coding").set_value(5.0).run()
    coded, _ = aco_projection(inputs, track, 5.0)
    shown = {m.label: m.value for m in app.metric}
    assert shown["Gross savings"] == usd(coded.gross_savings_usd)
    assert coded.risk_cap_binds


def test_true_costs_page_shows_the_core_figures(app, engine, period):
    from core.views.true_costs import annualised, capacity_summary, capacity_use, leakage_report, rate_table

    open_page(app, "pages/true_costs.py")
    months = tuple(window_months(period, "12m"))
    shown = {m.label: m.value for m in app.metric}
    network = capacity_summary(capacity_use(engine, months), []).iloc[0]
    assert shown["Unused capacity, $ a year"] == usd(annualised(network["unused_cost_usd"], 12))
    assert network["unused_cost_usd"] > 0 and 0 < network["utilisation"] < 1
    leak = leakage_report(engine, months)["total"].iloc[0]
    assert shown["Out-of-network spend"] == usd(leak["out_of_network_usd"])
    rates = app.dataframe[0].value
    assert "Capacity cost rate, $ per hour" in rates.columns and "Space and equipment, $ a year" in rates.columns
    np.testing.assert_allclose(rates["Capacity cost rate, $ per hour"], rate_table(engine)["rate_usd_per_hour"])
    # every column is labelled for people: no snake_case ids
    assert not [c for df in app.dataframe for c in df.value.columns if "_" in str(c)]
    facilities = next(df.value for df in app.dataframe if "Facility (name or NPI)" in df.value.columns)
    assert len(facilities) > 1 and "Out of network, $" in facilities.columns  # leakage by facility
    fully_loaded = [m for m in app.metric if m.label.endswith("fully loaded margin")]
    assert len(fully_loaded) == 3 and all("activity-based" in m.delta for m in fully_loaded)


def test_fully_loaded_margin_on_the_payment_models(app, engine, period):
    from core.views.true_costs import capacity_use, idle_capacity_by_team

    open_page(app, "pages/payments.py")
    app.toggle(key="pay_fully_loaded").set_value(True).run()
    assert not app.exception
    months = tuple(window_months(period, "12m"))
    idle = idle_capacity_by_team(capacity_use(engine, months))
    inputs = payment_inputs(engine, months)
    core = payment_comparison(inputs, load_payment_settings(), 0, True, idle)["total"].set_index("model")
    shown = {m.label: m.value for m in app.metric}
    ffs = core.loc["fee_for_service"]
    # an executive: 12-month dollar totals are withheld (they give member-months back), PMPMs are shown
    assert "fully_loaded_margin_usd" not in core
    assert shown["Fee-for-service: fully loaded margin PMPM"] == usd(ffs["fully_loaded_margin_pmpm_usd"], 2)
    exact = payment_comparison(inputs, load_payment_settings(), 0, True, idle, suppress=False)["total"].set_index("model")
    ffs = exact.loc["fee_for_service"]
    assert ffs["fully_loaded_margin_usd"] == pytest.approx(ffs["margin_usd"] - idle["idle_capacity_usd"].sum())


def test_aco_year_projection_with_a_range(app, engine, period):
    from core.views.payment_models import aco_year_projection, settle_year

    open_page(app, "pages/payments.py")
    # the small network's baseline year is too short: refused until a benchmark is entered
    assert any("No projection of the performance year" in i.value for i in app.info)
    app.number_input(key="aco_benchmark").set_value(12_000.0).run()
    settings = load_payment_settings()
    inputs, _ = aco_year_projection(engine, period, benchmark_pmpy_usd=12_000.0)
    result = settle_year(inputs, settings.aco_presets[settings.aco_default_preset], settings.aco_projection)
    shown = {m.label: m.value for m in app.metric}
    assert shown["Projected settlement"] == usd(result.point.net_payment_usd)
    assert shown["Of the settlement, from risk-score growth"] == usd(result.point.net_payment_from_risk_growth_usd)
    assert result.spend.low_usd < result.spend.projected_usd < result.spend.high_usd
    assert shown["Quality score (from the scorecard)"] == f"{inputs['quality_score']:.1f}"
    app.number_input(key="aco_trend").set_value(0.0).run()
    flat = settle_year(inputs, settings.aco_presets[settings.aco_default_preset],
                       dataclasses.replace(settings.aco_projection, trend_pct_per_year=0.0))  # fmt: skip
    assert {m.label: m.value for m in app.metric}["Projected settlement"] == usd(flat.point.net_payment_usd)
    assert flat.benchmark_pmpy_usd < result.benchmark_pmpy_usd


def test_equity_shows_the_gap_to_the_reference_group(app, engine, period):
    open_page(app, "pages/equity.py")  # default measure: promis_physical_mean (executive.toml)
    core = equity_table(engine, "promis_physical_mean", "race_ethnicity", period, "12m")
    table = app.dataframe[0].value
    np.testing.assert_allclose(numbers(table, ["value", "gap_to_best"]), numbers(core, ["value", "gap_to_best"]), equal_nan=True)
    reference = core.loc[core["best"], "group"].iloc[0]
    assert f"**{reference}**" in app.markdown[0].value
    assert "hispanic_or_latino" not in set(table["group"])  # labels, not codes
    # the network's value of all patients, the same on every row (not each row's own value)
    assert table["network_value"].nunique() == 1
    assert not np.allclose(numbers(table.dropna(subset=["value"]), ["value"]), numbers(table.dropna(subset=["value"]), ["network_value"]))
    app.selectbox(key="equity_stratum").select("dual_status").run()
    dual = equity_table(engine, "promis_physical_mean", "dual_status", period, "12m")
    assert list(app.dataframe[0].value["group"]) == list(dual["group"])
    assert "dual" not in set(dual["group"]) and "not_dual" not in set(dual["group"])


def test_econsults_show_the_core_counts(app, engine, period):
    open_page(app, "pages/econsults.py")
    core = econsults(engine, tuple(window_months(period, "12m")))
    for i, name in enumerate(["by_specialty", "by_team", "spend"]):
        cols = [c for c in core[name].columns if c not in ("specialty", "team_id", "group", "suppressed")]
        np.testing.assert_allclose(numbers(app.dataframe[i].value, cols), numbers(core[name], cols), equal_nan=True)
    assert "econsults" not in core["by_team"] and "E-consults" not in {m.label for m in app.metric}  # 12 months: no counts
    assert any("windows longer than a month" in c.value for c in app.caption)
    app.sidebar.selectbox(key="econsult_window").select("month").run()
    month = econsults(engine, (period,))
    shown = format_figure(month["by_team"].iloc[-1]["econsults"], month["all_suppressed"]["econsults"], 0)
    assert {m.label: m.value for m in app.metric}["E-consults"] == shown


# --- no small counts, access and audit ------------------------------------------------------


@pytest.mark.parametrize("page", EXECUTIVE_PAGES)
def test_no_count_of_1_to_10_on_the_page_or_in_its_downloads(app, downloads, page):
    open_page(app, page)
    assert app.get("download_button"), "every table can be downloaded"
    assert small_counts_on_page(app, downloads) == []


@pytest.mark.parametrize("window", ["month", "quarter"])
def test_no_small_counts_in_short_windows(app, downloads, window):
    for page, key in (("pages/econsults.py", "econsult_window"), ("pages/equity.py", "equity_window")):
        open_page(app, page)
        app.sidebar.selectbox(key=key).select(window).run()
        assert not app.exception
        assert small_counts_on_page(app, downloads) == []


def test_the_scan_finds_small_counts():
    """The helper can fail: a count of 7 in a table, a metric, a text or a download is caught."""
    from types import SimpleNamespace as NS

    store = MemoryMediaFileStorage("/mock/media")
    file_id = store.load_and_get_id(b"team,patients\nA,7\nB,40\n", "text/csv", kind=MediaFileKind.DOWNLOADABLE, filename="x.csv")
    page = NS(dataframe=[NS(value=pd.DataFrame({"team": ["A"], "econsults": [7.0], "value": [3.0]}))],
              metric=[NS(label="E-consults", value="4")], markdown=[NS(value="only 4 patients, 12 patients")],
              caption=[], info=[], warning=[],
              get=lambda kind: [NS(label="csv", proto=NS(url=f"/mock/media/{file_id}.csv"))])  # fmt: skip
    assert small_counts_on_page(page, [store]) == ["dataframe 0: econsults=7.0", "metric E-consults=4", "text: 4 patients",
                                                   "download csv: patients=7"]  # fmt: skip


def test_team_leader_sees_trends_compare_equity_only(app):
    for page in ("pages/trends.py", "pages/compare.py", "pages/equity.py"):
        open_page(app, page, role="team_leader")
    for page in ("pages/payments.py", "pages/econsults.py"):
        with pytest.raises(ValueError):
            app.switch_page(page)


def test_team_leader_compare_is_limited_to_the_own_team(app, engine):
    open_page(app, "pages/compare.py", role="team_leader")
    team = app.sidebar.selectbox(key="demo_team").value
    org = organisation(engine).set_index("team_id")
    assert list(app.dataframe[0].value["team"]) == [f"{org.loc[team, 'practice']} · {org.loc[team, 'team']}"]


def test_downloads_are_built_and_audited_on_click(private_db, downloads):
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import DASHBOARD

    at = AppTest.from_file(DASHBOARD, default_timeout=60)
    open_page(at, "pages/econsults.py")

    def exports():
        return read_frame(private_db, select(AuditEvent.target, AuditEvent.detail).where(AuditEvent.action == "export"))

    before = len(exports())
    for page in EXECUTIVE_PAGES:  # no executive table is built or published with its page
        open_page(at, page)
        assert all(not b.proto.url and b.proto.deferred_file_id for b in at.get("download_button")), page
    assert len(exports()) == before
    open_page(at, "pages/econsults.py")
    button = at.get("download_button")[0]
    text = download_text(downloads, button)  # a click: the file is made now, with its event
    events = exports()
    assert len(events) == before + 1 and events["target"].iloc[-1] == "econsults" and "by_specialty" in events["detail"].iloc[-1]
    assert text.startswith("specialty,")


def test_views_handle_empty_selections(app, engine):
    open_page(app, "pages/compare.py")
    app.selectbox(key="compare_subgroup").select("healthy").run()
    app.selectbox(key="compare_measure").select("hba1c_control").run()  # diabetes control does not apply to the healthy
    assert not app.exception
    options = app.selectbox(key="compare_subgroup").options  # only subgroups the measure applies to (shown by label)
    assert not any(o.lower().startswith("healthy") for o in options) and any(o.lower().startswith("chronic") for o in options)
    assert app.selectbox(key="compare_subgroup").value != "healthy"
    assert len(app.dataframe) >= 2  # the comparison and the value map tab render
    open_page(app, "pages/econsults.py")
    app.sidebar.selectbox(key="month").select(months_available(engine)[0].strftime("%Y-%m")).run()
    app.sidebar.selectbox(key="econsult_window").select("month").run()
    assert not app.exception and (app.info or app.metric) and not any("nan" in m.value for m in app.metric)
    open_page(app, "pages/payments.py")
    app.sidebar.selectbox(key="month").select(months_available(engine)[0].strftime("%Y-%m")).run()
    assert not app.exception and "enter a benchmark" in app.info[0].value


def test_trends_mark_incomplete_claims(app):
    open_page(app, "pages/trends.py")
    # the sample's claims carry paid dates: completion estimated from their lag, completed cost available
    assert any("Claims incomplete" in w.value and "from paid dates" in w.value for w in app.warning)
    app.checkbox(key="trend_completed").check().run()
    assert not app.exception and not any("No paid dates" in c.value for c in app.caption)


def test_trends_mix_share_is_of_all_members_and_partial_claims_are_not_drawn(engine):
    found = False
    for team in organisation(engine)["team_id"]:
        shown, exact = trends(engine, None, None, team)["mix"], trends(engine, None, None, team, suppress=False)["mix"]
        total = exact.groupby("month")["members"].sum()
        published = shown.loc[~shown["suppressed"]]
        np.testing.assert_allclose(published["share"], published["members"] / published["month"].map(total))
        months = shown.groupby("month")["suppressed"].any()
        if months.any():  # a month with a suppressed subgroup: the published shares add up to less than 100 %
            found = True
            assert (published.loc[published["month"].isin(months[months].index)].groupby("month")["share"].sum() < 1 - 1e-9).all()
    assert found, "the sample has a team with a suppressed subgroup"
    figures = trends(engine)["figures"]
    claims = figures["metric"].isin(["cost_total_usd", "cost_external_usd"])
    assert figures.loc[claims & ~figures["claims_complete"], "partial"].all()
    assert not figures.loc[~claims, "partial"].any()
    costs = figures.loc[(figures["kind"] == "cost_pmpm") & figures["value"].notna()]
    assert costs[["ci_low", "ci_high"]].notna().all(axis=None)  # an interval on every cost line
    assert (costs["ci_low"] <= costs["value"]).all() and (costs["value"] <= costs["ci_high"]).all()
