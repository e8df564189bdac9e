"""Connection settings each backend gets from core.store.db.make_engine."""

from sqlalchemy import text


def test_connection_settings(store_engine):
    with store_engine.connect() as conn:
        if store_engine.dialect.name == "postgresql":
            assert conn.execute(text("SHOW jit")).scalar() == "off"  # short index reads: no JIT compile
        else:
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
