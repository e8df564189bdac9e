"""PostgreSQL: a load into tables that hold rows checks their foreign keys as a set (one statement
per key, the parents locked) where its role may set ``session_replication_role``, and with
PostgreSQL's trigger per row where it may not; both stop a bad row and keep the parents it
refers to from being deleted until the load commits."""

import uuid
from datetime import date

import pandas as pd
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from core.ingest import import_path, loader
from core.ingest.loader import load_tables, open_load
from core.ingest.report import ImportReport
from core.store.db import make_engine
from tests.store.test_import_store import ENCOUNTER
from tests.unit.test_csv_import import table_contents, table_counts, write_bundle

pytestmark = pytest.mark.parametrize("store_engine", ["postgresql"], indirect=True)

BAD_ENCOUNTER = {"encounter": pd.DataFrame({"encounter_id": ["E7", "E8"], "patient_id": ["P1", "P404"], **{k: v * 2 for k, v in ENCOUNTER.items()}})}


@pytest.fixture
def plain_role(store_engine):
    """A new role that is not a superuser and may read and write every table, and an engine on the
    test database for it."""
    role = f"loader_{uuid.uuid4().hex[:8]}"
    with store_engine.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(text(f'GRANT ALL ON SCHEMA public TO "{role}"'))
        conn.execute(text(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"'))
        conn.execute(text(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{role}"'))
        conn.commit()
    engine = make_engine(store_engine.url.set(username=role, password=None).render_as_string(hide_password=False))
    yield role, engine
    engine.dispose()
    with store_engine.connect() as conn:
        conn.execute(text(f'DROP OWNED BY "{role}"'))  # its grants, here and on the parameter
        conn.execute(text(f'DROP ROLE "{role}"'))
        conn.commit()


def test_a_superuser_load_checks_keys_as_a_set(store_engine, tmp_path):
    assert import_path(store_engine, write_bundle(tmp_path / "b")).ok
    before = table_contents(store_engine), table_counts(store_engine)
    with store_engine.connect() as conn:
        assert loader._may_check_keys_as_a_set(conn)

    report = load_tables(store_engine, BAD_ENCOUNTER, ImportReport("frames", "test"))

    assert not report.ok and report.import_id is None
    assert report.errors[0].message.endswith("nothing was written: 1 encounter row(s) refer to rows that do not exist "
                                             "in patient (for example patient_id 'P404')")  # fmt: skip
    assert (table_contents(store_engine), table_counts(store_engine)) == before


def test_a_role_without_the_setting_keeps_the_trigger_per_row(store_engine, plain_role, tmp_path):
    role, engine = plain_role
    assert import_path(store_engine, write_bundle(tmp_path / "b")).ok  # (a first load drops keys: the owner's)
    before = table_contents(store_engine), table_counts(store_engine)
    with engine.connect() as conn:
        assert not loader._may_check_keys_as_a_set(conn)

    report = load_tables(engine, BAD_ENCOUNTER, ImportReport("frames", "test"))

    assert not report.ok and "violates foreign key constraint" in report.errors[0].message  # PostgreSQL's own
    assert "Key (patient_id)=(P404) is not present" in report.errors[0].message
    assert (table_contents(store_engine), table_counts(store_engine)) == before
    good = {"encounter": BAD_ENCOUNTER["encounter"].assign(patient_id=["P1", "P2"])}
    assert load_tables(engine, good, ImportReport("frames", "test")).ok


def test_a_role_granted_the_setting_checks_keys_as_a_set(store_engine, plain_role, tmp_path):
    role, engine = plain_role
    with store_engine.connect() as conn:
        conn.execute(text(f'GRANT SET ON PARAMETER session_replication_role TO "{role}"'))
        conn.commit()
    assert import_path(store_engine, write_bundle(tmp_path / "b")).ok
    with engine.connect() as conn:
        assert loader._may_check_keys_as_a_set(conn)

    report = load_tables(engine, BAD_ENCOUNTER, ImportReport("frames", "test"))

    assert not report.ok and "1 encounter row(s) refer to rows that do not exist in patient" in report.errors[0].message
    with store_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM encounter WHERE encounter_id IN ('E7', 'E8')")).scalar_one() == 0


@pytest.mark.parametrize("as_a_set", [True, False], ids=["as a set", "trigger per row"])
def test_the_parents_a_load_refers_to_stay_locked_until_it_commits(store_engine, tmp_path, monkeypatch, as_a_set):
    """A patient with no rows yet, deleted by another transaction while a load writes its first
    encounter: the delete waits for the load (here: gives up after its lock timeout)."""
    assert import_path(store_engine, write_bundle(tmp_path / "b")).ok
    patient = pd.DataFrame({"patient_id": ["P9"], "birth_date": [date(1990, 1, 1)], "sex": ["other"]})
    assert load_tables(store_engine, {"patient": patient}, ImportReport("frames", "test")).ok
    monkeypatch.setattr(loader, "_may_check_keys_as_a_set", lambda conn: as_a_set)
    report = ImportReport("frames", "test")

    with open_load(store_engine, report) as load:
        load.start_table("encounter")
        load.write(pd.DataFrame({"encounter_id": ["E9"], "patient_id": ["P9"], **ENCOUNTER}))
        # (waits until the batch is written and checked) the role is back to its own for the rest of the load
        assert load.conn.exec_driver_sql("SHOW session_replication_role").scalar_one() == "origin"
        with store_engine.connect() as other:
            other.execute(text("SET lock_timeout = '300ms'"))
            with pytest.raises(OperationalError, match="lock timeout"):
                other.execute(text("DELETE FROM patient WHERE patient_id = 'P9'"))
            other.rollback()
        load.commit()

    assert report.ok, report.to_text()
    with store_engine.connect() as conn:
        assert conn.execute(text("SELECT patient_id FROM encounter WHERE encounter_id = 'E9'")).scalar_one() == "P9"
        assert conn.execute(text("SELECT count(*) FROM patient WHERE patient_id = 'P9'")).scalar_one() == 1


@pytest.mark.parametrize("as_a_set", [True, False], ids=["as a set", "trigger per row"])
def test_the_imports_patient_rows_skip_the_trigger_per_row_only_where_keys_go_as_a_set(store_engine, tmp_path, monkeypatch,
                                                                                      as_a_set):  # fmt: skip
    """Every ``import_patient`` row refers to the ``import_run`` row its own transaction has just
    written, so a load that may set ``session_replication_role`` copies them without PostgreSQL's
    foreign-key trigger per row; one that may not keeps the trigger. Either way the rows are the
    import's patients, and the role is PostgreSQL's own again for what follows."""
    monkeypatch.setattr(loader, "_may_check_keys_as_a_set", lambda conn: as_a_set)
    roles = []

    def copy_rows(conn, table, columns, rows):
        if table == "import_patient":
            roles.append(conn.exec_driver_sql("SHOW session_replication_role").scalar_one())
        real_copy_rows(conn, table, columns, rows)

    real_copy_rows = loader.copy_rows
    monkeypatch.setattr(loader, "copy_rows", copy_rows)
    report = import_path(store_engine, write_bundle(tmp_path / "b"))

    assert report.ok, report.to_text()
    assert roles == ["replica" if as_a_set else "origin"]
    with store_engine.connect() as conn:
        rows = conn.execute(text("SELECT import_id, count(*) FROM import_patient GROUP BY import_id")).all()
        patients = conn.execute(text("SELECT count(*) FROM patient")).scalar_one()
        assert rows == [(report.import_id, patients)]
        conn.rollback()
        with conn.begin():  # the block's end gives the transaction its role back
            with loader._without_row_triggers(conn):
                assert conn.exec_driver_sql("SHOW session_replication_role").scalar_one() == "replica"
            assert conn.exec_driver_sql("SHOW session_replication_role").scalar_one() == "origin"


def test_parents_the_load_wrote_itself_are_not_looked_up_again_and_the_others_are(store_engine, tmp_path, monkeypatch):
    """A load that writes patients and then their encounters (a month's import): the encounters'
    patients written by the load are known to exist and are locked by its upsert, so only the
    other values are looked up; a missing one is still found, with the rows that refer to it."""
    assert import_path(store_engine, write_bundle(tmp_path / "b")).ok
    before = table_contents(store_engine), table_counts(store_engine)
    checks = []
    real_exec = loader.Connection.exec_driver_sql

    def exec_driver_sql(conn, statement, *args, **kwargs):
        if statement.startswith("WITH wanted AS"):
            checks.append(statement)
        return real_exec(conn, statement, *args, **kwargs)

    monkeypatch.setattr(loader.Connection, "exec_driver_sql", exec_driver_sql)
    patients = pd.DataFrame({"patient_id": ["P1", "P9"], "birth_date": [date(1990, 1, 1)] * 2, "sex": ["other"] * 2})
    encounters = pd.DataFrame({"encounter_id": ["E7", "E8", "E9"], "patient_id": ["P9", "P404", "P1"],
                               **{k: v * 3 for k, v in ENCOUNTER.items()}})  # fmt: skip

    report = load_tables(store_engine, {"patient": patients, "encounter": encounters}, ImportReport("frames", "test"))

    assert not report.ok and report.errors[0].message.endswith("1 encounter row(s) refer to rows that do not exist in patient "
                                                               "(for example patient_id 'P404')")  # fmt: skip
    assert (table_contents(store_engine), table_counts(store_engine)) == before
    checks.clear()
    report = load_tables(store_engine, {"patient": patients, "encounter": encounters[encounters["patient_id"] != "P404"]},
                         ImportReport("frames", "test"))  # fmt: skip
    assert report.ok, report.to_text()
    by_key = {key: [c for c in checks if f"b.{key} AS value" in c] for key in ("patient_id", "team_id")}
    assert len(by_key["patient_id"]) == 1 and "_written_patient" in by_key["patient_id"][0]
    assert len(by_key["team_id"]) == 1 and "_written" not in by_key["team_id"][0]  # no team sent: looked up
    with store_engine.connect() as conn:
        assert conn.execute(text("SELECT encounter_id, patient_id FROM encounter WHERE encounter_id IN ('E7', 'E9') "
                                 "ORDER BY 1")).all() == [("E7", "P9"), ("E9", "P1")]  # fmt: skip
