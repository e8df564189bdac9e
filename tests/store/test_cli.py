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


def write_claims_only_tuva(folder) -> None:
    """A tiny Tuva input layer with claims and no EHR, staff or internal activity: two members,
    one enrolled from November 2024 and one from January 2025, with a few professional claims."""
    folder.mkdir()
    (folder / "eligibility.csv").write_text(
        "person_id,gender,birth_date,enrollment_start_date,enrollment_end_date\n"
        "A1,female,1950-03-02,2024-11-01,2025-12-31\n"
        "A2,male,1961-07-15,2025-01-01,2025-12-31\n", encoding="utf-8")  # fmt: skip
    (folder / "medical_claim.csv").write_text(
        "claim_id,claim_line_number,claim_type,person_id,claim_start_date,claim_end_date,place_of_service_code,paid_amount,diagnosis_code_1\n"
        "C1,1,professional,A1,2024-12-03,2024-12-03,11,120.00,I10\n"
        "C2,1,professional,A1,2025-03-10,2025-03-10,11,140.00,I10\n"
        "C3,1,professional,A2,2025-06-21,2025-06-21,23,650.00,R07.9\n"
        "C4,1,professional,A2,2025-11-02,2025-11-02,11,95.00,E11.9\n", encoding="utf-8")  # fmt: skip


def test_every_command_on_a_claims_only_tuva_store(tmp_path, db_url, capsys):
    folder = tmp_path / "tuva"
    write_claims_only_tuva(folder)
    assert main(["import", str(folder), "--format", "tuva", "--database-url", db_url]) == 0
    capsys.readouterr()
    assert main(["info", "--database-url", db_url]) == 0
    assert main(["assign", "--database-url", db_url]) == 0
    assert main(["scorecard", "--period", "2025-12", "--window", "12m", "--database-url", db_url]) == 0
    capsys.readouterr()
    assert main(["costs", "--period", "2025-12", "--window", "12m", "--database-url", db_url]) == 0
    out = capsys.readouterr().out
    assert "internal cost not costed: no staff roster" in out and "not costed" in out.split("== pmpm_total ==")[1]
    assert main(["payments", "--period", "2025-12", "--window", "12m", "--database-url", db_url]) == 0
    out = capsys.readouterr().out
    assert "internal cost not costed" in out and "not costed" in out.split("== total ==")[1]
    # baseline: A1 in Nov-Dec 2024 = 2 member-months against 24 in 2025
    assert "not computed: the baseline year has 2 member-months against 24" in out and "net_payment_usd" not in out
    assert main(["payments", "--period", "2025-12", "--window", "12m", "--benchmark-pmpy", "9000", "--database-url", db_url]) == 0
    assert "net_payment_usd" in capsys.readouterr().out
    assert main(["audit", "--database-url", db_url]) == 0
    capsys.readouterr()
    assert main(["info", "--quality", "--database-url", db_url]) == 0
    out = capsys.readouterr().out
    # the latest claim is of November: September to November (3-month run-out) and December (after it)
    assert "months with incomplete claims (run-out setting): 4  e.g. 2025-09, 2025-10, 2025-11, 2025-12" in out
    assert "missing staff: no staff roster" in out and "import #1 (tuva" in out


def test_every_command_on_an_empty_store(db_url, capsys):
    assert main(["info", "--database-url", db_url]) == 0
    capsys.readouterr()
    assert main(["info", "--quality", "--database-url", db_url]) == 0
    assert "no committed imports" in capsys.readouterr().out
    assert main(["scorecard", "--period", "2025-12", "--database-url", db_url]) == 0
    for command in (["costs"], ["payments"], ["assign"]):
        capsys.readouterr()
        assert main([*command, "--database-url", db_url]) == 1
        assert "no attributed" in capsys.readouterr().err
    assert main(["costs", "--period", "2025-12", "--database-url", db_url]) == 0
    assert main(["payments", "--period", "2025-12", "--database-url", db_url]) == 0
    assert "not computed: no attributed member-months" in capsys.readouterr().out
