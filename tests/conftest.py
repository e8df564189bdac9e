"""Shared fixtures.

- ``engine``: a fresh in-memory SQLite store (unit and store tests).
- ``store_engine``: the same tests on SQLite and on PostgreSQL. PostgreSQL comes from
  ``TEST_DATABASE_URL``; without it the PostgreSQL case is skipped with the reason, except
  when ``REQUIRE_SERVICES=1`` (set by .ci/run), where a missing server fails the run.
- ``sample_bundle``: a small generated sample network (CSV bundle), made once per session.
- ``sample_engine``: an SQLite file store with that bundle imported (and derived tables built).
"""

import os
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from core.store.db import create_schema, make_engine

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = PROJECT_ROOT / "tests" / "fixtures"  # third-party files; see its README
SMALL_NETWORK = dict(patients=600, months=15, seed=7)


def services_required() -> bool:
    return os.environ.get("REQUIRE_SERVICES") == "1"


def skip_or_fail(reason: str):
    """Skip a test whose service is missing, or fail it where the services are required (CI)."""
    if services_required():
        pytest.fail(f"REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def engine():
    eng = make_engine("sqlite://")
    create_schema(eng)
    yield eng
    eng.dispose()


def _postgres_engine():
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        skip_or_fail("PostgreSQL tests need TEST_DATABASE_URL (e.g. postgresql://postgres@127.0.0.1:5432/postgres)")
    admin = make_engine(url)
    name = f"t_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # server down, wrong credentials
        admin.dispose()
        skip_or_fail(f"PostgreSQL at TEST_DATABASE_URL is not reachable: {exc.__class__.__name__}")
    base = admin.url.set(database=name).render_as_string(hide_password=False)
    return admin, name, make_engine(base)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_engine(request, tmp_path):
    """A fresh, empty store on each backend."""
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
        create_schema(eng)
        yield eng
        eng.dispose()
        return
    admin, name, eng = _postgres_engine()
    create_schema(eng)
    yield eng
    eng.dispose()
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sample_bundle(tmp_path_factory) -> Path:
    from sample_data.generator import NetworkSpec, write_bundle

    out = tmp_path_factory.mktemp("bundle")
    write_bundle(NetworkSpec(**SMALL_NETWORK), out)
    return out


@pytest.fixture(scope="session")
def sample_db_url(tmp_path_factory, sample_bundle) -> str:
    """An SQLite file with the small sample network imported and everything derived built, marked as
    the first run marks its own sample (so demo mode runs on it)."""
    from core.access.demo import mark_sample_store
    from core.derive.pipeline import load_bundle_and_derive

    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'sample.db'}"
    eng = make_engine(url)
    create_schema(eng)
    load_bundle_and_derive(eng, sample_bundle)
    mark_sample_store(eng)
    eng.dispose()
    return url


@pytest.fixture
def sample_engine(sample_db_url):
    eng = make_engine(sample_db_url)
    yield eng
    eng.dispose()
