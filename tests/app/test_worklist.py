"""The worklist page on a hand-built network: content and order, each flag, filters, scope, export."""

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.access.audit import search_events
from core.store.db import create_schema, make_engine
from core.views.worklist import FLAG_IDS, team_worklist
from tests.app.conftest import DASHBOARD
from tests.worklist_network import EXPECTED, MONTH, build_worklist_network


@pytest.fixture
def tiny_db(tmp_path, monkeypatch):
    """A hand-built network in an SQLite file (origin "sample", so demo mode applies)."""
    url = f"sqlite:///{tmp_path / 'tiny.db'}"
    engine = make_engine(url)
    create_schema(engine)
    build_worklist_network(engine)
    monkeypatch.setenv("DATABASE_URL", url)
    yield engine
    engine.dispose()


def open_worklist(role: str = "clinician") -> AppTest:
    at = AppTest.from_file(DASHBOARD, default_timeout=60)
    at.session_state["demo_role"] = role
    at.run()
    if role != "clinician":
        at.switch_page("pages/worklist.py").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "My subgroup"
    return at


def test_worklist_shows_the_team_in_priority_order(tiny_db):
    at = open_worklist()
    shown = at.dataframe[0].value
    assert shown["patient_id"].tolist() == [pid for pid, *_ in EXPECTED]  # P_OTHER is another team's
    expected = team_worklist(tiny_db, MONTH, ("A1",))
    assert shown["flags"].tolist() == expected["flags"].tolist()
    assert shown["cost_12m_usd"].tolist() == pytest.approx(expected["cost_12m_usd"].tolist())
    assert shown["bp"].tolist() == expected["bp"].tolist()
    # only the columns the grid shows reach the browser: not the flags one by one, the costs' parts or the reason
    assert {"name", "flags", "care_gaps", "last_outreach", "patient_id"} <= set(shown) and len(shown.columns) == 26
    assert not {"team_id", "reason", "recent_acute", "cost_internal_12m_usd", "gap_ids", "priority"} & set(shown)
    assert at.sidebar.selectbox(key="subgroup_A1").value == "complex"  # the team's own subgroup by default
    assert "11 patients, 8 with at least one flag" in at.markdown[0].value  # always the rows shown
    assert search_events(tiny_db, action="view_worklist")["target"].tolist() == ["A1"]


@pytest.mark.parametrize("flag", FLAG_IDS)
def test_each_flag_filter_shows_its_patient(tiny_db, flag):
    at = open_worklist()
    at.multiselect(key="flags").set_value([flag]).run()
    expected = [pid for pid, _f, _r, flags in EXPECTED if flag in flags]
    assert at.dataframe[0].value["patient_id"].tolist() == expected and len(expected) == 1


def test_search_by_name_or_id(tiny_db):
    at = open_worklist()
    at.text_input(key="search").input("sugar").run()
    assert at.dataframe[0].value["patient_id"].tolist() == ["P_DM"]
    at.text_input(key="search").input("p_ca").run()
    assert at.dataframe[0].value["patient_id"].tolist() == ["P_CALM"]


def test_a_search_with_no_hits_says_0_patients(tiny_db):
    at = open_worklist()
    at.text_input(key="search").input("nobody by that name").run()
    assert at.dataframe[0].value.empty
    count = next(m.value for m in at.markdown if "with at least one flag" in m.value)
    assert count == "**0 patients shown of 11 in the list, 0 with at least one flag**"
    assert "11 patients" not in " ".join(str(e.value) for e in at.main if hasattr(e, "value"))
    assert "No patient matches" in at.info[0].value
    at.text_input(key="search").input("").run()
    at.multiselect(key="flags").set_value(["phq9_high"]).run()
    assert next(m.value for m in at.markdown if "with at least one flag" in m.value).startswith("**1 patient shown of 11")


def test_selecting_a_row_opens_the_patient(tiny_db):
    at = open_worklist()
    at.session_state["worklist"] = {"selection": {"rows": [3], "columns": []}}  # the fourth row: P_DM
    at.run()
    assert not at.exception
    assert at.title[0].value == "Given Sugar"


def test_team_leader_worklist_and_csv_export(tiny_db):
    at = open_worklist("team_leader")
    assert at.dataframe[0].value["patient_id"].tolist()[0] == "P_ACUTE"
    button = at.get("download_button")[0]
    assert button.proto.label == "Download CSV"


def test_a_selection_over_the_size_limit_asks_for_a_subgroup(tiny_db, monkeypatch):
    """A worklist lists at most [size] max_patients patients: a larger selection shows how many it
    has and asks for a subgroup instead of building a list nobody works through."""
    import dataclasses

    import core.views.worklist

    small = dataclasses.replace(core.views.worklist.load_worklist_rules(), max_patients=5)
    monkeypatch.setattr(core.views.worklist, "load_worklist_rules", lambda *a: small)
    at = open_worklist()
    box = at.sidebar.selectbox(key="subgroup_A1")
    assert box.value is None and "Complex (11)" in box.options and "All (11)" in box.options  # nothing fits: all
    assert not at.dataframe and "has 11 patients in all subgroups in Oct 2026, more than the 5 a worklist" in at.info[0].value
    assert search_events(tiny_db, action="view_worklist").empty  # nothing was shown


def test_the_transitions_say_the_look_back_of_their_rules(tiny_db, monkeypatch):
    """The follow-up section names the days its rules look back (transitions.toml's
    look_back_days), not a fixed 30: with 7, the ED visit of 20 October is out of the list of
    October, and the page says the last 7 days; with 1, the last day."""
    import dataclasses

    import core.views.transitions

    at = open_worklist()
    assert any("ED visits of the last 30 days up to Oct 2026's end" in c.value for c in at.caption)
    assert "Acute, Given" in at.dataframe[1].value["name"].tolist()  # the ED visit of 20 October
    week = dataclasses.replace(core.views.transitions.load_transition_rules(), look_back_days=7)
    monkeypatch.setattr(core.views.transitions, "load_transition_rules", lambda *a: week)
    st.cache_data.clear()  # the reads are cached with the data; rules are read when the app starts
    at = open_worklist()
    assert any("ED visits of the last 7 days up to Oct 2026's end" in c.value for c in at.caption)
    assert len(at.dataframe) == 1 and at.info[-1].value == "No discharges or ED visits in the last 7 days."
    day = dataclasses.replace(week, look_back_days=1)  # one day reads as a day, not "1 days"
    monkeypatch.setattr(core.views.transitions, "load_transition_rules", lambda *a: day)
    st.cache_data.clear()
    at = open_worklist()
    assert any("ED visits of the last day up to Oct 2026's end" in c.value for c in at.caption)
    assert at.info[-1].value == "No discharges or ED visits in the last day."
