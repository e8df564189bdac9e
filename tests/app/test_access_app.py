"""Demo mode both ways, the login screen, unknown identities, and role-based navigation (AppTest)."""

import json
import shutil
from datetime import date

import pytest
from streamlit.testing.v1 import AppTest

from core.access.audit import search_events
from core.access.demo import is_sample_store
from core.access.users import find_user, list_users, save_user
from core.ingest import import_path
from core.store.db import create_schema, make_engine
from core.store.queries import organisation
from core.views.worklist import team_worklist
from tests.app.conftest import DASHBOARD

AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32, "client_id": "c",
        "client_secret": "s", "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration"}  # fmt: skip


def test_demo_mode_on_sample_data_offers_every_role(app, sample_db_url):
    app.run()
    assert not app.exception
    role = app.sidebar.selectbox(key="demo_role")
    assert role.options == ["Team leader", "Clinician", "Executive", "Admin / analyst"]
    assert any("Demo mode" in w.value for w in app.sidebar.warning)
    role.select("clinician").run()
    assert app.title[0].value == "My subgroup"
    team = app.sidebar.selectbox(key="demo_team").value
    shown = app.dataframe[0].value  # the team's patients of the month (the grid has no team column)
    month, subgroup = date.fromisoformat(app.sidebar.selectbox(key="month").value + "-01"), app.sidebar.selectbox(key=f"subgroup_{team}").value
    expected = team_worklist(make_engine(sample_db_url), month, (team,), subgroup)
    assert len(shown) > 0 and sorted(shown["patient_id"]) == sorted(expected["patient_id"])
    with pytest.raises(ValueError):  # not registered for a clinician
        app.switch_page("pages/data_status.py")


def test_real_data_without_login_shows_no_patient_data(private_db, sample_bundle):
    assert import_path(private_db, sample_bundle).ok  # any import of files: no longer only the first run's sample
    at = AppTest.from_file(DASHBOARD, default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Login required"
    assert len(at.dataframe) == 0 and "secrets.toml" in at.markdown[0].value


@pytest.mark.parametrize("setting", [None, "1"])
def test_a_bundle_that_declares_the_sample_generator_does_not_turn_demo_mode_on(setting, sample_bundle, tmp_path, monkeypatch):
    """A generated bundle with other names swapped in, its manifest kept, imported into a fresh store."""
    bundle = shutil.copytree(sample_bundle, tmp_path / "bundle")
    assert json.loads((bundle / "manifest.json").read_text())["generator"]
    patients = (bundle / "patients.csv").read_text().splitlines()
    header, first = patients[0].split(","), patients[1].split(",")
    first[header.index("family_name")] = "Realname"
    (bundle / "patients.csv").write_text("\n".join([patients[0], ",".join(first), *patients[2:]]) + "\n")
    url = f"sqlite:///{tmp_path / 'real.db'}"
    engine = make_engine(url)
    create_schema(engine)
    assert import_path(engine, bundle).ok
    assert not is_sample_store(engine)
    monkeypatch.setenv("DATABASE_URL", url)
    if setting:
        monkeypatch.setenv("SCORECARDS_DEMO", setting)
    at = AppTest.from_file(DASHBOARD, default_timeout=60)
    at.query_params["patient"] = "x"
    at.run()
    assert not at.exception
    assert at.title[0].value == ("Demo mode refused" if setting else "Login required")
    assert len(at.dataframe) == 0 and not at.sidebar.selectbox
    engine.dispose()


def test_demo_mode_off_by_the_operator_on_the_sample(private_db, monkeypatch):
    monkeypatch.setenv("SCORECARDS_DEMO", "0")
    at = AppTest.from_file(DASHBOARD, default_timeout=60).run()
    assert at.title[0].value == "Login required" and len(at.dataframe) == 0


def test_what_a_demo_admin_adds_does_not_survive_real_data(private_db, sample_bundle):
    at = AppTest.from_file(DASHBOARD, default_timeout=60).run()
    at.sidebar.selectbox(key="demo_role").select("admin").run()
    at.switch_page("pages/admin_users.py").run()
    at.text_input[0].input("attacker@evil.example")
    at.selectbox[0].select("admin")
    at.checkbox[0].check()
    at.button[0].click().run()
    assert not at.exception
    assert find_user(private_db, subject="evil", email="attacker@evil.example", email_verified=True) is not None
    assert search_events(private_db, action="user_change", target="attacker@evil.example")["user_key"].tolist() == ["demo-admin"]
    # real data arrive, login is configured
    report = import_path(private_db, sample_bundle)
    assert report.ok and "demo mode ends" in report.to_text() and "1 app_user" in report.to_text()
    assert list_users(private_db).empty
    login = AppTest.from_file(DASHBOARD, default_timeout=60)
    login.secrets["auth"] = AUTH
    login.user = {"is_logged_in": True, "email": "attacker@evil.example", "email_verified": True, "sub": "evil"}
    login.run()
    assert login.title[0].value == "Not authorised" and len(login.dataframe) == 0


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
    at.user = {"is_logged_in": True, "email": "stranger@example.org", "email_verified": True, "sub": "zzz"}
    at.run()
    assert at.title[0].value == "Not authorised" and len(at.dataframe) == 0


def test_signed_in_clinician_gets_own_team_from_the_users_table(private_db):
    team = organisation(private_db)["team_id"].iloc[-1]
    save_user(private_db, "doc@example.org", "clinician", team_ids=team, patient_level=True)
    at = AppTest.from_file(DASHBOARD, default_timeout=60)
    at.secrets["auth"] = AUTH
    at.user = {"is_logged_in": True, "email": "doc@example.org", "email_verified": True, "sub": "doc-1"}
    at.query_params["team"] = organisation(private_db)["team_id"].iloc[0]  # another team, by URL
    at.run()
    assert not at.exception
    assert at.title[0].value == "My subgroup"
    assert set(at.dataframe[0].value["patient_id"]) and at.sidebar.selectbox(key="team").value == team


def test_unverified_email_claim_is_not_authorised(private_db):
    save_user(private_db, "doc@example.org", "clinician", team_ids=organisation(private_db)["team_id"].iloc[0])
    at = AppTest.from_file(DASHBOARD, default_timeout=60)
    at.secrets["auth"] = AUTH
    at.user = {"is_logged_in": True, "email": "doc@example.org", "sub": "attacker-1"}  # no email_verified
    at.run()
    assert at.title[0].value == "Not authorised" and len(at.dataframe) == 0
    assert "sub:attacker-1" in at.text[0].value
