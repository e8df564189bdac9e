"""Imported text stays text on the pages; patient rows, refused lookups and downloads leave an audit trail."""

import tomllib
from pathlib import Path

from sqlalchemy import update
from streamlit.testing.v1 import AppTest

from core.access.audit import search_events
from core.access.policy import resolve_scope
from core.store.models import Patient, Team
from core.store.queries import organisation
from tests.app.conftest import DASHBOARD
from tests.app.test_patient import open_patient
from tests.app.test_worklist import open_worklist, tiny_db  # noqa: F401  (fixture)
from ui.labels import plain

BEACON = "![b](http://host/beacon.png?who=X)"


def test_a_name_is_shown_as_text_not_as_markdown(tiny_db):  # noqa: F811
    with tiny_db.begin() as conn:
        conn.execute(update(Patient).where(Patient.patient_id == "P_CALM").values(given_name=BEACON, family_name="<b>x</b>"))
        conn.execute(update(Team).where(Team.team_id == "A1").values(name="[click](http://evil.example) **now**"))
    at = open_patient("P_CALM")
    title = at.title[0].value
    assert title == plain(f"{BEACON} <b>x</b>") and "![" not in title and "<b>" not in title
    about = next(m.value for m in at.markdown if "**Team:**" in m.value)
    assert "[click]" not in about and "\\[click\\]" in about and "\\*\\*now\\*\\*" in about
    worklist = open_worklist()
    assert any("\\[click\\](http://evil.example)" in c.value for c in worklist.caption)


def test_plain_escapes_every_markdown_construct():
    assert plain("![x](http://h/i.png)") == "\\!\\[x\\](http://h/i.png)"
    assert plain("<img src=x onerror=y>") == "\\<img src=x onerror=y\\>"
    assert plain("# heading") == "\\# heading" and plain("- item") == "\\- item" and plain("1. item") == "1\\. item"
    assert plain(":red[alarm] $x$ `code` _em_ a|b ~~s~~ &amp;") == (
        ":red\\[alarm\\] \\$x\\$ \\`code\\` \\_em\\_ a\\|b \\~\\~s\\~\\~ \\&amp;")
    assert plain("line\nbreak") == "line break" and plain("O'Brien-Smith, person:10113 (1944)") == "O'Brien-Smith, person:10113 (1944)"


def test_refused_patient_lookup_is_audited(tiny_db):  # noqa: F811
    at = open_patient("P_OTHER")
    assert at.title[0].value == "Patient"
    events = search_events(tiny_db, action="refused_lookup")
    assert events["target"].tolist() == ["P_OTHER"] and events["user_key"].tolist() == ["demo-clinician"]


def test_worklist_download_is_made_on_click_and_audited(tiny_db):  # noqa: F811
    from ui.auth import audited_file

    at = open_worklist("team_leader")
    button = at.get("download_button")[0]
    assert button.proto.label == "Download CSV" and not button.proto.url  # no file is published with the page
    assert search_events(tiny_db, action="export").empty
    scope = resolve_scope(user_key="lead@example.org", name="Lead", role="team_leader", practice_ids="", team_ids="A1",
                          patient_level=None, organisation=organisation(tiny_db))  # fmt: skip
    data = audited_file(scope, "A1", "worklist csv", lambda: "=1+1")
    assert search_events(tiny_db, action="export").empty  # nothing until the click asks for the file
    assert data() == "=1+1"
    events = search_events(tiny_db, action="export")
    assert events[["user_key", "target"]].values.tolist() == [["lead@example.org", "A1"]]


def test_review_lists_of_patients_are_audited(private_db):
    def lead_views():
        return search_events(private_db, user_key="demo-team-leader", action="view_patients")

    before = len(lead_views())
    at = AppTest.from_file(DASHBOARD, default_timeout=120)
    at.session_state["demo_role"] = "team_leader"
    at.run()
    assert not at.exception and at.title[0].value == "Monthly review"
    seen = len(lead_views())
    assert seen > before
    at.run()  # a rerun of the same view is not a new view
    assert len(lead_views()) == seen


def test_demo_mode_does_not_save_rules(private_db):
    at = AppTest.from_file(DASHBOARD, default_timeout=60)
    at.session_state["demo_role"] = "admin"
    at.run()
    at.switch_page("pages/admin_rules.py").run()
    assert not at.exception
    assert next(b for b in at.button if b.label == "Save and re-assign").disabled


def test_table_toolbars_offer_no_download():
    config = tomllib.loads((Path(DASHBOARD).parent / ".streamlit" / "config.toml").read_text())
    assert config["client"]["disableDataExport"] is True


def test_admin_overrides_list_and_rule_saves_are_audited(private_db, tmp_path, monkeypatch):
    from core.access.users import save_user
    from core.derive.subgroups import rules as subgroup_rules
    from core.derive.subgroups.overrides import set_override
    from core.store.queries import months_available, team_patients
    from tests.app.test_access_app import AUTH

    saved = tmp_path / "subgroup_rules.toml"  # never the installation's own saved rules
    original = subgroup_rules.save_rules
    monkeypatch.setattr(subgroup_rules, "save_rules", lambda text: original(text, saved))
    month = months_available(private_db)[-1]
    admin = resolve_scope(user_key="analyst@example.org", name="A", role="admin", practice_ids="", team_ids="",
                          patient_level=None, organisation=organisation(private_db))  # fmt: skip
    set_override(private_db, admin, team_patients(private_db, month, None)["patient_id"].iloc[0], "complex", month, "test")
    save_user(private_db, "analyst@example.org", "admin")
    at = AppTest.from_file(DASHBOARD, default_timeout=120)
    at.secrets["auth"] = AUTH
    at.user = {"is_logged_in": True, "email": "analyst@example.org", "email_verified": True, "sub": "an-1"}
    at.run()
    at.switch_page("pages/admin_rules.py").run()
    assert not at.exception, at.exception
    assert search_events(private_db, user_key="analyst@example.org", action="view_patients")["target"].tolist() == ["overrides"]
    next(b for b in at.button if b.label == "Save and re-assign").click().run()
    assert not at.exception, at.exception
    assert len(search_events(private_db, user_key="analyst@example.org", action="rule_save")) == 1 and saved.exists()
