"""The patient page shows what the database holds for the patient; scope, audit and overrides."""

import pytest
from streamlit.testing.v1 import AppTest

from core.access.audit import search_events
from core.derive.subgroups.overrides import list_overrides
from core.views.patient import patient_view
from tests.app.conftest import DASHBOARD
from tests.app.test_worklist import tiny_db  # noqa: F401  (fixture)
from tests.worklist_network import MONTH


def open_patient(patient_id: str, role: str = "clinician") -> AppTest:
    at = AppTest.from_file(DASHBOARD, default_timeout=60)
    at.session_state["demo_role"] = role
    at.run()
    at.switch_page("pages/patient.py")
    at.query_params["patient"] = patient_id
    at.run()
    assert not at.exception, at.exception
    return at


def frame_with(at, column):
    return next(df.value for df in at.dataframe if column in df.value.columns)


def test_patient_page_shows_the_database_rows(tiny_db):  # noqa: F811
    at = open_patient("P_CALM")
    view = patient_view(tiny_db, "P_CALM", ("A1",))
    assert at.title[0].value == "Given Calm"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Subgroup": "Complex", "As of": f"{MONTH:%b %Y}"}
    about = next(m.value for m in at.markdown if "**Team:**" in m.value)
    assert "Complex team" in about and "Dr One" in about and "hand-built complex" in about
    assert frame_with(at, "from_month")[["months", "subgroup"]].values.tolist() == [[10, "Complex"]]
    assert frame_with(at, "response_days")[["specialty", "response_days"]].values.tolist() == [["Cardiology", 3]]  # codes read as words
    assert frame_with(at, "code")["description"].tolist() == ["Essential hypertension"]
    costs = frame_with(at, "category")
    assert costs["cost_usd"].sum() == pytest.approx(view.costs["cost_usd"].sum()) and costs["cost_usd"].sum() > 0
    assert set(frame_with(at, "activity")["activity"]) == {"Office visit", "E-consult"}
    assert frame_with(at, "role_label")["name"].tolist()[0] == "Dr One"
    assert len(at.get("plotly_chart")) >= 3  # measurements with targets, timeline, costs
    assert not [b for b in at.button if b.label == "Override subgroup"]  # clinicians cannot override
    assert search_events(tiny_db, action="view_patient")["target"].tolist() == ["P_CALM"]


def test_patient_outside_scope_is_refused(tiny_db):  # noqa: F811
    at = open_patient("P_OTHER")  # team A2's patient; the demo clinician is on A1
    assert at.title[0].value == "Patient" and "outside your teams" in at.info[0].value
    assert len(at.dataframe) == 0 and search_events(tiny_db, action="view_patient").empty


def test_team_leader_overrides_and_lifts_a_subgroup(tiny_db):  # noqa: F811
    at = open_patient("P_CALM", role="team_leader")
    next(s for s in at.selectbox if s.label == "Pin to subgroup").select("chronic")
    at.text_area[0].input("Stable on treatment; follow in the chronic team")
    next(b for b in at.button if b.label == "Override subgroup").click().run()
    assert not at.exception, at.exception
    overrides = list_overrides(tiny_db, patient_id="P_CALM")
    assert overrides["subgroup"].tolist() == ["chronic"] and overrides["created_by"].tolist() == ["demo-team-leader"]
    assert search_events(tiny_db, action="override")["target"].tolist() == ["P_CALM"]
    assert any("saved" in s.value for s in at.success)
    assert {m.label: m.value for m in at.metric}["Subgroup"] == "Chronic (override)"
    next(b for b in at.button if b.label == "Lift override").click().run()
    assert not at.exception, at.exception
    assert list_overrides(tiny_db, patient_id="P_CALM").empty
    assert len(search_events(tiny_db, action="override")) == 2


def test_who_may_override_is_what_the_rules_file_says(tiny_db, monkeypatch, tmp_path):  # noqa: F811
    import core.access.policy as policy
    import core.views.patient as patient_views

    shipped = policy.ACCESS_PATH.read_text()
    path = tmp_path / "access.toml"
    path.write_text(shipped.replace('[actions.override_subgroup]\nroles = ["team_leader"]',
                                    '[actions.override_subgroup]\nroles = ["clinician"]'))  # fmt: skip
    granted = policy.load_access_rules(path)
    for module in (policy, patient_views):
        monkeypatch.setattr(module, "load_access_rules", lambda path=None: granted)
    with pytest.raises(PermissionError, match="clinician of the patient's team"):  # the view checks it too
        patient_views.override_subgroup(tiny_db, _scope("team_leader"), "P_CALM", "chronic", MONTH, "why")
    at = open_patient("P_CALM")  # the demo clinician
    next(s for s in at.selectbox if s.label == "Pin to subgroup").select("chronic")
    at.text_area[0].input("Pinned by the clinician the rules file allows")
    next(b for b in at.button if b.label == "Override subgroup").click().run()
    assert not at.exception, at.exception
    assert list_overrides(tiny_db, patient_id="P_CALM")["created_by"].tolist() == ["demo-clinician"]
    leader = open_patient("P_CALM", role="team_leader")  # a role the file now leaves out: no override form
    assert not [b for b in leader.button if b.label in ("Override subgroup", "Lift override")]


def _scope(role):
    from core.access.policy import Scope

    return Scope("u", "U", role, ("A1",), ("A",), True, False)


def test_patient_page_links_back_to_the_worklist_it_came_from(tiny_db):  # noqa: F811
    from urllib.parse import parse_qs

    from streamlit.util import calc_hash

    at = AppTest.from_file(DASHBOARD, default_timeout=60)
    at.session_state["demo_role"] = "clinician"
    at.run()
    at.selectbox(key="subgroup_A1").select_index(0).run()  # "All" subgroups, not the team's default
    at.session_state["worklist"] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    assert not at.exception, at.exception
    link = next(e.proto for e in at.get("page_link") if e.proto.label == "Back to the worklist")
    assert link.page_script_hash == calc_hash("worklist")  # the page's url path
    assert parse_qs(link.query_string) == {"team": ["A1"], "month": [f"{MONTH:%Y-%m}"], "subgroup": ["all"]}
    # following it restores the list: same team, month and subgroup
    at.switch_page("pages/worklist.py")
    for key, values in parse_qs(link.query_string).items():
        at.query_params[key] = values[0]
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "My subgroup" and at.selectbox(key="subgroup_A1").value is None


def test_patient_page_opened_directly_still_links_to_the_worklist(tiny_db):  # noqa: F811
    at = open_patient("P_CALM")
    link = next(e.proto for e in at.get("page_link") if e.proto.label == "Back to the worklist")
    assert link.query_string == ""


def test_thin_history_shows_on_the_patient_page_and_the_worklist(tiny_db):  # noqa: F811
    from sqlalchemy import update

    from core.store.models import SubgroupAssignment as S
    from core.store.months import add_months
    from tests.app.test_worklist import open_worklist

    note = "Not enough history: 2 of 6 months of data"
    with tiny_db.begin() as conn:  # the latest two months of P_CALM rest on little data
        conn.execute(update(S).where(S.patient_id == "P_CALM", S.month >= add_months(MONTH, -1))
                     .values(thin_history=True, history_note=note))  # fmt: skip
    at = open_patient("P_CALM")
    assert any(note in w.value and "rests on little data" in w.value for w in at.warning)
    periods = frame_with(at, "from_month")
    assert periods[["months", "thin_history", "history_note"]].values.tolist() == [[8, False, ""], [2, True, note]]
    worklist = open_worklist()
    shown = frame_with(worklist, "history_note").set_index("patient_id")
    assert shown.loc["P_CALM", "subgroup"] == "Complex · thin history" and shown.loc["P_CALM", "history_note"] == note
    assert (shown.drop(index="P_CALM")["history_note"] == "").all()
