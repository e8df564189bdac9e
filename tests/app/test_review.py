"""The monthly review page: selections, numbers against the core scorecard, the review log
surviving a restart, and the planted admission spike flagged."""

import shutil
from datetime import date

import pytest
from streamlit.testing.v1 import AppTest

from core.derive.subgroups.rules import active_rules_path, load_rules
from core.metrics.scorecard import Selection, build_scorecard
from core.store.db import create_schema, make_engine
from core.store.queries import months_available
from core.views.format import format_figure
from core.views.review import acute_events
from core.views.review_log import review_log
from tests.app.conftest import DASHBOARD

SPIKE_END = date(2026, 10, 1)


def _open(app, role="team_leader", team=None):
    app.session_state["demo_role"] = role
    if team:
        app.session_state["demo_team"] = team
    app.run()
    if role != "team_leader":
        app.switch_page("pages/review.py").run()
    assert not app.exception, app.exception
    assert app.title[0].value == "Monthly review"
    return app


def _table(app, *columns):
    """The shown dataframe with these columns (dataframes without selections carry no key in AppTest)."""
    return next(df.value for df in app.dataframe if set(columns) <= set(df.value.columns))


def _scorecard_frame(app):
    return _table(app, "95% interval")


def _check_against_core(app, engine, team_id, subgroup, month, suppress=True):
    """The shown scorecard is the core's; ``suppress`` False for a team leader's own team (exact counts)."""
    card = build_scorecard(engine, Selection(team_id=team_id, subgroup=subgroup, period=month), suppress=suppress)
    shown = _scorecard_frame(app).set_index("measure_id")
    assert list(shown.index) == list(card["measure_id"])
    for r in card.to_dict("records"):
        row = shown.loc[r["measure_id"]]
        assert row["Value"] == format_figure(r["value"], r["suppressed"]), r["measure_id"]
        assert row["Previous"] == format_figure(r["previous_value"])
        assert row["Network"] == format_figure(r["network_value"])
        if r["suppressed"]:
            assert row["Value"] == "suppressed" and row["Significant"] == ""
        flagged = any(r[c] for c in ("change_vs_previous", "change_vs_last_year", "gap_vs_network"))
        assert bool(row["Significant"]) == (flagged and not r["suppressed"])


def test_default_view_is_the_team_leaders_team_and_subgroup(app, sample_engine):
    _open(app, team="TM04")
    month = months_available(sample_engine)[-1]
    assert app.selectbox(key="team").value == "TM04"
    assert app.selectbox(key="subgroup").value == "complex"  # the team's own subgroup
    _check_against_core(app, sample_engine, "TM04", "complex", month, suppress=False)
    metrics = {m.label: m for m in app.metric}
    assert "Total cost PMPM" in metrics and "Hospital admissions, all causes" in metrics


def test_selections_change_the_numbers(app, sample_engine):
    """Executive (whole network): pick another team, subgroup and month; the table follows the core."""
    _open(app, role="executive")
    months = months_available(sample_engine)
    app.selectbox(key="team").select("TM07").run()
    first = next(iter(load_rules(active_rules_path()).subgroup_names))
    assert app.selectbox(key="subgroup").value == first  # TM07 serves several subgroups: the first one
    app.selectbox(key="subgroup").select("chronic").run()
    app.selectbox(key="month").select(months[-3].strftime("%Y-%m")).run()
    assert not app.exception, app.exception
    _check_against_core(app, sample_engine, "TM07", "chronic", months[-3])
    # executives see aggregates only: no patient rows
    assert "Patient rows are shown to users with patient-level access only." in [c.value for c in app.caption]


def test_url_opens_the_same_view(app, sample_engine):
    months = months_available(sample_engine)
    # as the browser writes them: bound widgets with a format_func put the shown label in the URL
    app.query_params["team"] = "Riverside Chronic Care Team · Riverside Family Medicine"
    app.query_params["subgroup"] = "Complex"  # not the team's own subgroup (chronic)
    app.query_params["month"] = months[-2].strftime("%b %Y")
    _open(app, team="TM03")
    assert app.selectbox(key="team").value == "TM03"
    assert app.selectbox(key="subgroup").value == "complex"
    assert app.selectbox(key="month").value == months[-2].strftime("%Y-%m")
    _check_against_core(app, sample_engine, "TM03", "complex", months[-2], suppress=False)


def test_an_admission_row_opens_the_patient_page(app, sample_engine):
    _open(app, team="TM04")
    month = months_available(sample_engine)[-1]
    events = acute_events(sample_engine, "TM04", "complex", month, ("TM04",))
    assert len(events), "the sample network has ED visits or admissions at TM04 in the last month"
    shown = next(df.value for df in app.dataframe if "kind" in df.value.columns)
    assert shown["patient_id"].tolist() == events["patient_id"].tolist()
    app.session_state["acute"] = {"selection": {"rows": [0], "columns": []}}
    app.run()
    assert not app.exception, app.exception
    assert app.title[0].value != "Monthly review"
    assert events["patient_id"].iloc[0] in " ".join(str(e.value) for e in app.main if hasattr(e, "value"))


@pytest.fixture
def copied_db(sample_db_url, tmp_path, monkeypatch):
    """A private copy of the sample database (the log test writes to it)."""
    target = tmp_path / "review.db"
    shutil.copy(sample_db_url.removeprefix("sqlite:///"), target)
    url = f"sqlite:///{target}"
    monkeypatch.setenv("DATABASE_URL", url)
    return url


def test_note_and_action_item_survive_a_restart(copied_db):
    app = _open(AppTest.from_file(DASHBOARD, default_timeout=60), team="TM04")
    app.selectbox(key="entry_kind").select("note")
    app.text_area(key="entry_text").input("Admissions up: review discharge follow-up calls")
    app.button[[b.label for b in app.button].index("Save")].click().run()
    app.selectbox(key="entry_kind").select("action")
    app.text_area(key="entry_text").input("Call every patient admitted this month")
    app.text_input(key="entry_owner").input("Nurse lead")
    app.button[[b.label for b in app.button].index("Save")].click().run()
    assert not app.exception, app.exception

    restarted = _open(AppTest.from_file(DASHBOARD, default_timeout=60), team="TM04")
    log = _table(restarted, "carried_forward")
    assert list(log["kind"]) == ["Note", "Action"]  # shown by their labels (core/config/columns.toml)
    assert list(log["status"]) == ["", "Open"]
    assert log["owner"].iloc[1] == "Nurse lead"

    # close the action item; it is done for good
    restarted.button(key="close_button").click().run()
    engine = make_engine(copied_db)
    month = months_available(engine)[-1]
    assert list(review_log(engine, ("TM04",), "TM04", "complex", month)["status"]) == ["", "done"]


# --- the planted signal: TM04's complex patients, last month ------------------------------


@pytest.fixture(scope="module")
def spike_db_url(tmp_path_factory):
    """The default sample network's 5,000 patients (seed 42) with a fixed last month, over 13
    months (the last month and the 12 before it; half the time of the default 24 months to build,
    and the planted spike is flagged as on 24).

    The small test network (600 patients) has too few complex patients at TM04 (about 20) for
    non-overlapping 95 % intervals; the default demo network is the one team leaders see.
    """
    from core.access.demo import mark_sample_store
    from core.derive.pipeline import load_bundle_and_derive
    from sample_data.generator import NetworkSpec, write_bundle

    folder = tmp_path_factory.mktemp("spike")
    write_bundle(NetworkSpec(months=13, end_month=SPIKE_END), folder / "bundle")
    url = f"sqlite:///{folder / 'spike.db'}"
    engine = make_engine(url)
    create_schema(engine)
    load_bundle_and_derive(engine, folder / "bundle")
    mark_sample_store(engine)  # as the first run marks its own sample: demo mode runs on it
    engine.dispose()
    return url


def test_page_flags_the_admission_spike(spike_db_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", spike_db_url)
    engine = make_engine(spike_db_url)
    card = build_scorecard(engine, Selection(team_id="TM04", subgroup="complex", period=SPIKE_END)).set_index("measure_id")
    assert card.loc["admissions", "change_vs_previous"] == "worse" or card.loc["admissions", "gap_vs_network"] == "worse"

    app = _open(AppTest.from_file(DASHBOARD, default_timeout=120), role="executive")
    app.selectbox(key="team").select("TM04").run()
    assert app.selectbox(key="subgroup").value == "complex"
    shown = _scorecard_frame(app).set_index("measure_id")
    assert "↑ worse vs" in shown.loc["admissions", "Significant"]
    assert any("Hospital admissions, all causes" in m.value and "↑ worse" in m.value for m in app.markdown)
    # found from any team: the across-teams list of the complex subgroup names TM04's admissions
    app.selectbox(key="team").select("TM07").run()
    app.selectbox(key="subgroup").select("complex").run()
    across = _table(app, "team", "Significant")
    assert ((across["team_id"] == "TM04") & (across["measure_id"] == "admissions")).any()


def test_the_window_selector_changes_the_scorecard_and_summary(app, sample_engine):
    """Month (the default), quarter and 12 months: the scorecard is the core's of that window; an
    executive (aggregates only) sees the numerators and denominators of a month, not of longer windows."""
    _open(app, role="executive")
    app.selectbox(key="team").select("TM04").run()
    app.selectbox(key="subgroup").select("complex").run()
    month = months_available(sample_engine)[-1]
    assert app.selectbox(key="review_window").value == "month"
    summary = next(m.value for m in app.markdown if m.value.startswith("**What moved**"))
    assert summary.count("\n- ") == 3 and f"in {month:%b %Y}, " in summary
    for window, label in (("quarter", "quarter to"), ("12m", "12 months to")):
        app.selectbox(key="review_window").select(window).run()
        assert not app.exception, app.exception
        card = build_scorecard(sample_engine, Selection(team_id="TM04", subgroup="complex", period=month, window=window))
        shown = _scorecard_frame(app).set_index("measure_id")
        for r in card.to_dict("records"):
            assert shown.loc[r["measure_id"], "Value"] == format_figure(r["value"], r["suppressed"]), (window, r["measure_id"])
        assert set(shown["Numerator"]) <= {"suppressed", "–"}  # counts of longer windows stay unpublished
        assert any(label in c.value for c in app.caption)
        assert any("two neighbouring windows would give a month's count back" in c.value for c in app.caption)
        summary = next(m.value for m in app.markdown if m.value.startswith("**What moved**"))
        assert f"the {label} {month:%b %Y}" in summary
    app.selectbox(key="review_window").select("month").run()
    shown = _scorecard_frame(app)
    assert not (set(shown["Numerator"]) <= {"suppressed", "–"})  # a month's counts of 11 or more are shown


def test_a_team_leader_sees_the_counts_of_every_window(app, sample_engine):
    _open(app, team="TM04")
    month = months_available(sample_engine)[-1]
    app.selectbox(key="review_window").select("12m").run()
    card = build_scorecard(sample_engine, Selection(team_id="TM04", subgroup="complex", period=month, window="12m"),
                           suppress=False).set_index("measure_id")  # fmt: skip
    shown = _scorecard_frame(app).set_index("measure_id")
    assert shown.loc["admissions", "Numerator"] == format_figure(card.loc["admissions", "numerator"], digits=0)
    assert shown.loc["admissions", "O/E"] == format_figure(card.loc["admissions", "observed_expected"], digits=2)


def test_value_map_shows_the_value_index_with_its_parts_and_the_fully_loaded_margin(app, sample_engine):
    from core.views.review import value_map_data

    _open(app, team="TM04")
    month = months_available(sample_engine)[-1]
    points = value_map_data(sample_engine, "complex", month)["points"]
    shown = _table(app, "value_index", "index_low", "index_high", "measures_in_index")
    now = points[points["month"] == month]
    assert sorted(shown["value_index"].round(6)) == sorted(now["value_index"].round(6))
    assert len(_table(app, "measure", "score", "weight_share")) > 0  # the parts of the index
    metrics = {m.label: m for m in app.metric}
    assert "Margin" in metrics and "Fully loaded margin" not in metrics  # activity-based by default
    app.toggle(key="review_fully_loaded").set_value(True).run()
    assert not app.exception, app.exception
    metrics = {m.label: m for m in app.metric}
    assert "Fully loaded margin" in metrics and metrics["Fully loaded margin"].value.startswith(("$", "-$"))
    assert metrics["Fully loaded margin"].value != metrics["Fully loaded margin"].delta.removeprefix("activity-based ")


def test_review_pack_files_are_built_on_click_with_their_audit_event(private_db, monkeypatch):
    """No file of the pack is built or published with the page; a click makes the file and its
    audit event together, the event naming that file (before: built at render, audited on click)."""
    import io

    import pandas as pd

    from core.access.audit import search_events
    from tests import attack

    media = attack.record_media(monkeypatch)
    app = _open(AppTest.from_file(DASHBOARD, default_timeout=60), team="TM04")
    buttons = {b.key: b for b in app.get("download_button")}
    assert {"pack_html", "pack_xlsx", "csv_scorecard"} <= set(buttons)
    assert all(not b.proto.url and b.proto.deferred_file_id for b in buttons.values())  # nothing published with the page
    before = len(search_events(private_db, action="export"))
    data = attack.download_bytes(media, buttons["pack_xlsx"])  # the click
    events = search_events(private_db, action="export")
    assert len(events) == before + 1
    assert events["detail"].iloc[0] == "review pack xlsx" and events["target"].iloc[0].startswith("review-TM04-")
    assert "Scorecard" in pd.read_excel(io.BytesIO(data), sheet_name=None)
    csv = attack.download_bytes(media, buttons["csv_scorecard"]).decode()
    assert len(search_events(private_db, action="export")) == before + 2 and "Value" in csv.splitlines()[0]
