"""Admin upload page: a bad file is rejected with its row and column and nothing is written;
a valid data set lands whole, and with real data in the store demo mode ends."""

from streamlit.testing.v1 import AppTest

from core.store.queries import data_status
from tests.app.conftest import DASHBOARD
from tests.conftest import FIXTURES


def upload_page():
    at = AppTest.from_file(DASHBOARD, default_timeout=120)
    at.session_state["demo_role"] = "admin"
    at.run()
    at.switch_page("pages/admin_upload.py").run()
    return at


def test_invalid_upload_is_rejected_and_writes_nothing(private_db):
    before = data_status(private_db)["counts"]
    at = upload_page()
    bad = b"practice_id,name,network\nA,Practice A,\nA,Duplicate,\n"
    at.file_uploader(key="upload_files").set_value([("practices.csv", bad, "text/csv")]).run()
    at.button[0].click().run()
    assert not at.exception
    assert "Rejected" in at.error[0].value
    report = at.code[0].value
    assert "patients.csv" in report  # required files missing, named
    assert "practices.csv:3:practice_id" in report  # the duplicate key, with its line and column
    assert data_status(private_db)["counts"] == {**before, "audit_event": before["audit_event"] + 1}


def test_valid_tuva_upload_lands_and_ends_demo_mode(private_db):
    files = [(p.name, p.read_bytes(), "text/csv") for p in sorted((FIXTURES / "tuva_input_layer").glob("*.csv"))]
    at = upload_page()
    at.segmented_control(key="upload_format").set_value("tuva").run()
    at.file_uploader(key="upload_files").set_value(files).run()
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert "Imported" in at.success[0].value
    assert "real" in data_status(private_db)["origins"]
    again = AppTest.from_file(DASHBOARD, default_timeout=60).run()
    assert again.title[0].value == "Login required"


def test_pages_open_on_imported_people_for_a_signed_in_user(tmp_path, monkeypatch):
    """Only the Tuva fixture people in a fresh store: subgroups, cells and the pages work on them."""
    from core.access.users import save_user
    from core.derive.pipeline import derive_all
    from core.ingest import import_path
    from core.store.db import create_schema, make_engine
    from core.store.queries import organisation, team_patients
    from tests.app.test_access_app import AUTH

    url = f"sqlite:///{tmp_path / 'tuva.db'}"
    engine = make_engine(url)
    create_schema(engine)
    assert import_path(engine, FIXTURES / "tuva_input_layer", fmt="tuva").ok
    derive_all(engine)
    status = data_status(engine)
    assert status["origins"] == ["real"] and status["counts"]["subgroup_assignment"] == status["counts"]["attribution"] > 0
    assert status["counts"]["cell"] > 0
    save_user(engine, "exec@example.org", "executive", patient_level=True)
    monkeypatch.setenv("DATABASE_URL", url)
    person = team_patients(engine, status["last_month"], tuple(organisation(engine)["team_id"]))["patient_id"].iloc[0]

    at = AppTest.from_file(DASHBOARD, default_timeout=120)
    at.secrets["auth"] = AUTH
    at.user = {"is_logged_in": True, "email": "exec@example.org", "email_verified": True, "sub": "exec-1"}
    at.run()
    assert not at.exception, at.exception
    for page in ("pages/trends.py", "pages/review.py", "pages/compare.py", "pages/equity.py", "pages/worklist.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
    at.query_params["patient"] = person
    at.switch_page("pages/patient.py").run()
    assert not at.exception, at.exception
    assert person in at.caption[0].value or any(person in c.value for c in at.caption)
