"""Connection settings each backend gets from core.store.db.make_engine."""

import pytest
from sqlalchemy import Column, Index, Integer, MetaData, Table, insert, inspect, text
from sqlalchemy.exc import IntegrityError

from core.store.queries import create_indexes, drop_secondary_indexes


def test_connection_settings(store_engine):
    with store_engine.connect() as conn:
        if store_engine.dialect.name == "postgresql":
            assert conn.execute(text("SHOW jit")).scalar() == "off"  # short index reads: no JIT compile
        else:
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_a_write_that_starts_with_a_common_table_expression_is_part_of_its_transaction(store_engine):
    """Python's sqlite3 opens a transaction before INSERT, UPDATE, DELETE and REPLACE only, by the
    statement's first word: ``WITH ... INSERT`` (as SQLAlchemy compiles an insert from a select with
    a CTE) would otherwise commit at once, whatever the transaction around it does after."""
    with store_engine.begin() as conn:
        conn.execute(text("CREATE TABLE cte_probe (n INTEGER)"))
    for statement in ("WITH v(n) AS (SELECT 1) INSERT INTO cte_probe SELECT n FROM v",
                      "  with v(n) as (select 1) insert into cte_probe select n from v"):
        try:
            with store_engine.begin() as conn:
                conn.execute(text(statement))
                raise RuntimeError("the transaction fails after its first write")
        except RuntimeError:
            pass
        with store_engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM cte_probe")).scalar() == 0, statement
    with store_engine.begin() as conn:  # and a transaction that succeeds keeps its write
        conn.execute(text("WITH v(n) AS (SELECT 2) INSERT INTO cte_probe SELECT n FROM v"))
    with store_engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM cte_probe")).scalars().all() == [2]


def test_statistics_side_by_side_analyse_every_table_named_on_two_connections(store_engine, monkeypatch):
    """PostgreSQL: each named table analysed once, the tables dealt out by size between two
    connections (the largest alone here: it outweighs the others together). SQLite: nothing to do."""
    import threading

    from core.store import db
    from core.store.db import create_schema, refresh_statistics_side_by_side

    create_schema(store_engine)
    with store_engine.begin() as conn:  # 'team' far larger than 'practice' and 'staff' together
        conn.execute(text("INSERT INTO practice (practice_id, name, network) VALUES ('PR1', 'One', '')"))
        conn.execute(text("INSERT INTO team (team_id, practice_id, name) "
                          "SELECT 'T' || n, 'PR1', repeat('x', 190) FROM generate_series(1, 2000) AS n"
                          if store_engine.dialect.name == "postgresql" else "SELECT 1"))  # fmt: skip
    calls = []

    def analyse(conn, tables, changed=None):
        calls.append((threading.get_ident(), tuple(tables)))
        real(conn, tables, changed)

    real = db.refresh_statistics
    monkeypatch.setattr(db, "refresh_statistics", analyse)
    refresh_statistics_side_by_side(store_engine, ["team", "practice", "staff", "team"])

    if store_engine.dialect.name != "postgresql":
        assert calls == []
        return
    assert sorted(tables for _, tables in calls) == [("practice", "staff"), ("team",)]
    assert len({thread for thread, _ in calls}) == 2
    with store_engine.connect() as conn:
        analysed = conn.execute(text("SELECT relname FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL "
                                     "AND relname IN ('team', 'practice', 'staff') ORDER BY relname")).scalars().all()  # fmt: skip
    assert analysed == ["practice", "staff", "team"]


def test_a_small_change_refreshes_the_statistics_of_the_date_columns_only(store_engine):
    """PostgreSQL: a table that changed by less than a tenth since its last analysis gets the
    statistics of its date columns (the ones a new month moves) and keeps the others; a larger
    change, a table never analysed or no ``changed`` analyses every column. SQLite: nothing."""
    from core.store.db import _analyze_targets, dated_columns, refresh_statistics

    assert dated_columns("econsult_month") == ["month"] and dated_columns("team") == []
    if store_engine.dialect.name != "postgresql":
        with store_engine.begin() as conn:
            refresh_statistics(conn, ["econsult_month"], {"econsult_month": 1})  # no statement on SQLite
        return

    def insert(conn, teams: int, month: str, rows: int) -> None:
        conn.execute(text("INSERT INTO econsult_month (month, team_id, specialty, econsults, responded, days_sum, "
                          "days_sq, resolved) SELECT CAST(:month AS date), 'T' || (n % :teams), 'S' || n, 1, 1, 1, 1, 0 "
                          "FROM generate_series(1, :rows) AS n"), {"month": month, "teams": teams, "rows": rows})  # fmt: skip

    def stats(conn) -> dict:
        rows = conn.execute(text("SELECT attname, n_distinct FROM pg_stats WHERE tablename = 'econsult_month' "
                                 "AND attname IN ('month', 'team_id')")).all()  # fmt: skip
        return dict(rows)

    with store_engine.begin() as conn:
        assert _analyze_targets(conn, ["econsult_month"], {"econsult_month": 1}) == ["econsult_month"]  # never analysed
        insert(conn, 5, "2026-10-01", 1000)
        refresh_statistics(conn, ["econsult_month"])
        assert stats(conn) == {"month": 1, "team_id": 5}
    with store_engine.begin() as conn:  # 50 rows of a new month and a new team: under a tenth
        conn.execute(text("INSERT INTO econsult_month (month, team_id, specialty, econsults, responded, days_sum, "
                          "days_sq, resolved) SELECT DATE '2026-11-01', 'TNEW', 'S' || n, 1, 1, 1, 1, 0 "
                          "FROM generate_series(1, 50) AS n"))  # fmt: skip
        assert _analyze_targets(conn, ["econsult_month", "team"], {"econsult_month": 50, "team": 1}) == [
            'econsult_month (month)', "team"]  # (a table without date columns: whole)
        refresh_statistics(conn, ["econsult_month"], {"econsult_month": 50})
        assert stats(conn) == {"month": 2, "team_id": 5}  # the month moved, the teams kept
    with store_engine.begin() as conn:  # a tenth or more, or a count the driver did not give (-1): every column
        assert _analyze_targets(conn, ["econsult_month"], {"econsult_month": -1}) == ["econsult_month"]
        assert _analyze_targets(conn, ["econsult_month"], {"econsult_month": 105}) == ["econsult_month"]
        refresh_statistics(conn, ["econsult_month"], {"econsult_month": 105})
        assert stats(conn) == {"month": 2, "team_id": 6}


def test_a_dropped_primary_key_is_put_back_and_finds_the_duplicates_the_write_let_in(store_engine):
    """``drop_secondary_indexes(primary_key=True)``: on PostgreSQL the key goes with the indexes
    and :func:`create_indexes` puts it back first, under its own name, failing on a duplicate
    (the transaction then rolls back with the key in place). SQLite keeps its key: the duplicate
    fails at once."""
    table = Table("keyed_probe", MetaData(), Column("a", Integer, primary_key=True), Column("b", Integer), Index("ix_keyed_probe_b", "b"))
    table.create(store_engine)
    postgresql = store_engine.dialect.name == "postgresql"

    def schema():
        found = inspect(store_engine)
        return found.get_pk_constraint("keyed_probe"), {i["name"] for i in found.get_indexes("keyed_probe")}

    before = schema()
    assert before[0]["constrained_columns"] == ["a"] and before[1] == {"ix_keyed_probe_b"}
    with pytest.raises(IntegrityError), store_engine.begin() as conn:
        dropped = drop_secondary_indexes(conn, table, primary_key=True)
        assert len(dropped) == (2 if postgresql else 1)
        conn.execute(insert(table), [{"a": 1, "b": 1}, {"a": 1, "b": 2}])  # SQLite: fails here
        create_indexes(conn, dropped)  # PostgreSQL: here
    assert schema() == before
    with store_engine.begin() as conn:
        dropped = drop_secondary_indexes(conn, table, primary_key=True)
        conn.execute(insert(table), [{"a": 1, "b": 1}, {"a": 2, "b": 1}])
        create_indexes(conn, dropped)
    assert schema() == before
    with pytest.raises(IntegrityError), store_engine.begin() as conn:  # the key is a key again
        conn.execute(insert(table), [{"a": 2, "b": 3}])
