"""The benchmark's copy of a store (core/cli/bench.py): the new month runs several times, each on
the store as the full pipeline left it, so the copy must hold every committed row and be put back
whole over whatever a run wrote. On both databases."""

from sqlalchemy import select, text

from core.cli.bench import _drop_saved_store, _restore_store, _save_store
from core.store.db import make_engine
from core.store.models import AppSetting


def _settings(engine) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(select(AppSetting.key, AppSetting.value)).all())


def test_a_saved_store_is_put_back_over_what_a_run_wrote(store_engine):
    url = store_engine.url.render_as_string(hide_password=False)
    with store_engine.begin() as conn:
        conn.execute(AppSetting.__table__.insert(), [{"key": "kept", "value": "before"}])
    store_engine.dispose()  # no session may be open on a store that is copied

    saved = _save_store(url)
    try:
        for run in range(2):  # each run starts from the saved store, not from the run before
            engine = make_engine(url)
            assert _settings(engine) == {"kept": "before"}, run
            with engine.begin() as conn:
                conn.execute(AppSetting.__table__.update().values(value=f"run {run}"))
                conn.execute(AppSetting.__table__.insert(), [{"key": f"new {run}", "value": "x"}])
            assert _settings(engine) == {"kept": f"run {run}", f"new {run}": "x"}
            engine.dispose()
            _restore_store(url, saved)
        engine = make_engine(url)
        assert _settings(engine) == {"kept": "before"}
        if engine.dialect.name == "sqlite":  # the copy is a WAL store like the one it replaces
            with engine.connect() as conn:
                assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        engine.dispose()
    finally:
        _drop_saved_store(url, saved)
    if store_engine.dialect.name == "postgresql":
        with store_engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM pg_database WHERE datname = :n"), {"n": saved}).scalar() == 0
    else:
        from pathlib import Path

        assert not Path(saved).exists()
