"""Demo mode both ways, the login screen, unknown identities, and role-based navigation (AppTest)."""

import pytest
from sqlalchemy import update
from streamlit.testing.v1 import AppTest

from core.access.users import save_user
from core.store.models import ImportRun
from core.store.queries import organisation
from tests.app.conftest import DASHBOARD

AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32, "client_id": "c",
        "client_secret": "s", "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration"}  # fmt: skip


def test_demo_mode_on_sample_data_offers_every_role(app):
    app.run()
    assert not app.exception
    role = app.sidebar.selectbox(key="demo_role")
    assert role.options == ["Team leader", "Clinician", "Executive", "Admin / analyst"]
    assert any("Demo mode" in w.value for w in app.sidebar.warning)
    role.select("clinician").run()
    assert app.title[0].value == "My subgroup"
    team = app.sidebar.selectbox(key="demo_team").value
    shown = app.dataframe[0].value
    assert len(shown) > 0 and set(shown["team_id"]) == {team}
    with pytest.raises(ValueError):  # not registered for a clinician
        app.switch_page("pages/data_status.py")


def test_real_data_without_login_shows_no_patient_data(private_db):
    with private_db.begin() as conn:
        conn.execute(update(ImportRun).values(origin="real"))
    at = AppTest.from_file(DASHBOARD, default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Login required"
    assert len(at.dataframe) == 0 and "secrets.toml" in at.markdown[0].value


def test_login_configured_shows_login_screen_first(private_db):
    at = AppTest.from_file(DASHBOARD, default_timeout=60)
    at.secrets["auth"] = AUTH
    at.user = {"is_logged_in": False}
    at.run()
    assert not at.exception
    assert at.button[0].label == "Log in" and len(at.dataframe) == 0


def test_unknown_identity_is_not_authorised(private_db):
    at = AppTest.from_file(DASHBOARD, default_timeout=60)
    at.secrets["auth"] = AUTH
    at.user = {"is_logged_in": True, "email": "stranger@example.org", "sub": "zzz"}
    at.run()
    assert at.title[0].value == "Not authorised" and len(at.dataframe) == 0


def test_signed_in_clinician_gets_own_team_from_the_users_table(private_db):
    team = organisation(private_db)["team_id"].iloc[-1]
    save_user(private_db, "doc@example.org", "clinician", team_ids=team, patient_level=True)
    at = AppTest.from_file(DASHBOARD, default_timeout=60)
    at.secrets["auth"] = AUTH
    at.user = {"is_logged_in": True, "email": "doc@example.org", "sub": "doc-1"}
    at.query_params["team"] = organisation(private_db)["team_id"].iloc[0]  # another team, by URL
    at.run()
    assert not at.exception
    assert at.title[0].value == "My subgroup"
    assert set(at.dataframe[0].value["patient_id"]) and at.sidebar.selectbox(key="team").value == team
