"""The command line end to end on a tiny network: generate, import, info, assign, scorecard."""

import json

import pytest

from core.cli.main import main
from core.store.db import make_engine
from core.store.queries import data_status


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'cli.db'}"


def test_generate_import_info_assign_scorecard(tmp_path, db_url, capsys):
    bundle = tmp_path / "bundle"
    assert main(["generate", "--patients", "250", "--months", "13", "--seed", "5", "--end-month", "2026-10", "--out", str(bundle)]) == 0
    assert (bundle / "manifest.json").exists()
    assert main(["import", str(bundle), "--database-url", db_url]) == 0
    engine = make_engine(db_url)
    first = data_status(engine)
    assert first["counts"]["patient"] == 250 and first["counts"]["cell"] > 0

    capsys.readouterr()
    assert main(["info", "--database-url", db_url, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["counts"]["attribution"] == first["counts"]["attribution"]
    assert info["last_month"] == "2026-10-01"

    assert main(["import", str(bundle), "--database-url", db_url]) == 0  # the same bundle again
    again = data_status(engine)
    assert {k: v for k, v in again["counts"].items() if k != "import_run"} == {
        k: v for k, v in first["counts"].items() if k != "import_run"
    }

    assert main(["assign", "--database-url", db_url]) == 0
    assert int(data_status(engine)["data_version"]) > int(again["data_version"])  # cells rebuilt, version bumped

    capsys.readouterr()
    assert main(["scorecard", "--period", "2026-10", "--window", "12m", "--format", "json", "--database-url", db_url]) == 0
    card = json.loads(capsys.readouterr().out)
    assert len(card) > 5


def test_import_of_a_bad_bundle_exits_non_zero_with_the_errors(tmp_path, db_url, capsys):
    (tmp_path / "practices.csv").write_text("practice_id,name\nA,Practice A\nA,again\n", encoding="utf-8")
    assert main(["import", str(tmp_path), "--database-url", db_url]) == 1
    out = capsys.readouterr().out
    assert "practices.csv:3:practice_id" in out and "patients.csv" in out
    assert data_status(make_engine(db_url))["counts"]["practice"] == 0
