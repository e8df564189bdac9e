"""Connection settings each backend gets from core.store.db.make_engine."""

from sqlalchemy import text


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

    def analyse(conn, tables):
        calls.append((threading.get_ident(), tuple(tables)))
        real(conn, tables)

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
