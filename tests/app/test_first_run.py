"""First run on an empty embedded database: the sample network is generated, loaded and shown."""

from streamlit.testing.v1 import AppTest

from core.store.db import make_engine
from core.store.queries import data_status
from sample_data.generator import NetworkSpec
from tests.app.conftest import DASHBOARD
from tests.app.test_smoke import assert_shows


def test_first_run_builds_the_sample_network(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setattr("ui.first_run.FIRST_RUN_SPEC", NetworkSpec(patients=300, months=13, seed=3))
    monkeypatch.setattr("ui.first_run.SAMPLE_BUNDLE_DIR", tmp_path / "bundle")
    at = AppTest.from_file(DASHBOARD, default_timeout=180).run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Monthly review"  # after the build the app reruns with its navigation
    assert_shows(at, "pages/review.py")  # with figures of the new network
    status = data_status(make_engine(url))
    assert status["counts"]["patient"] == 300 and status["origins"] == ["sample"]
    assert status["counts"]["subgroup_assignment"] == status["counts"]["attribution"] > 0
    assert status["counts"]["cell"] > 0
