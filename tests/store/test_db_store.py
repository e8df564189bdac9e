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
