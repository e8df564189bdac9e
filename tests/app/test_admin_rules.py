"""The subgroup-rules page: an admin's override is stored and written to the audit log."""

from streamlit.testing.v1 import AppTest

from core.access.audit import search_events
from core.derive.subgroups.overrides import list_overrides
from tests.app.conftest import DASHBOARD
from tests.app.test_worklist import tiny_db  # noqa: F401  (fixture)


def open_rules_page() -> AppTest:
    at = AppTest.from_file(DASHBOARD, default_timeout=60)
    at.session_state["demo_role"] = "admin"
    at.run()
    at.switch_page("pages/admin_rules.py")
    at.run()
    assert not at.exception, at.exception
    return at


def test_admin_override_and_lift_are_audited(tiny_db):  # noqa: F811
    at = open_rules_page()
    next(t for t in at.text_input if t.label == "Patient id").input("P_CALM")
    next(s for s in at.selectbox if s.label == "Subgroup").select("chronic")
    next(t for t in at.text_area if t.label == "Why (required)").input("Stable on treatment")
    next(b for b in at.button if b.label == "Pin patient").click().run()
    assert not at.exception, at.exception
    overrides = list_overrides(tiny_db, patient_id="P_CALM")
    assert overrides["subgroup"].tolist() == ["chronic"] and overrides["created_by"].tolist() == ["demo-admin"]
    events = search_events(tiny_db, action="override")
    assert events[["user_key", "role", "target"]].values.tolist() == [["demo-admin", "admin", "P_CALM"]]
    assert events["detail"].str.startswith(f"set #{overrides['override_id'].iloc[0]}: chronic").all()

    next(n for n in at.number_input if n.label == "Override id").set_value(int(overrides["override_id"].iloc[0]))
    next(b for b in at.button if b.label == "Lift override").click().run()
    assert not at.exception, at.exception
    assert list_overrides(tiny_db, patient_id="P_CALM").empty
    assert search_events(tiny_db, action="override")["detail"].tolist()[0] == f"lifted #{overrides['override_id'].iloc[0]}"


def test_rules_page_states_the_thin_history_setting(tiny_db):  # noqa: F811
    at = open_rules_page()
    assert any("fewer than 3 of the 6 months" in c.value and "Not enough history" in c.value for c in at.caption)
