"""Shared fixtures.

- ``engine``: a fresh in-memory SQLite store (unit and store tests).
- ``store_engine``: the same tests on SQLite and on PostgreSQL. PostgreSQL comes from
  ``TEST_DATABASE_URL``; without it the PostgreSQL case is skipped with the reason, except
  when ``REQUIRE_SERVICES=1`` (set by .ci/run), where a missing server fails the run.
- ``sample_bundle``: a small generated sample network (CSV bundle), made once per session.
- ``sample_engine``: an SQLite file store with that bundle imported (and derived tables built).
- ``sample_store``: on each backend, a test's own copy of a store with that bundle imported and
  derived (see ``StoreTemplates``: built once a session, copied for each test).
"""

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from core.store.copies import copy_sqlite, create_database, drop_database, server
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


def _postgres_engine(template: str | None = None):
    """A new database on the server at TEST_DATABASE_URL (a copy of ``template`` if given): its
    name and an engine on it."""
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        skip_or_fail("PostgreSQL tests need TEST_DATABASE_URL (e.g. postgresql://postgres@127.0.0.1:5432/postgres)")
    name = f"t_{uuid.uuid4().hex[:12]}"
    try:
        with server(url, database=None) as conn:
            create_database(conn, name, template=template)
    except Exception as exc:  # server down, wrong credentials, no right to create databases
        skip_or_fail(f"PostgreSQL at TEST_DATABASE_URL: could not create a test database: {exc.__class__.__name__}: {exc}")
    return name, make_engine(make_url(url).set(database=name).render_as_string(hide_password=False))


def _drop_database(name: str) -> None:
    with server(os.environ["TEST_DATABASE_URL"], database=None) as conn:
        drop_database(conn, name)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_engine(request, tmp_path):
    """A fresh, empty store on each backend."""
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
        create_schema(eng)
        yield eng
        eng.dispose()
        return
    name, eng = _postgres_engine()
    create_schema(eng)
    yield eng
    eng.dispose()
    _drop_database(name)


class StoreTemplates:
    """Stores built once a session and copied for each test that starts from one.

    A store is built by ``build`` the first time a test asks for it by name on a backend; each test
    then gets its own copy: of the SQLite file through SQLite's backup API, of the PostgreSQL
    database as ``CREATE DATABASE ... TEMPLATE``. A test changes its copy only, so the tests stay as
    independent as when each built its own store, without each paying for the import and derive.
    """

    def __init__(self, root: Path):
        self.root = root
        self.built: dict[tuple[str, str], str] = {}  # (backend, name) -> SQLite file or PostgreSQL database
        self.databases: list[str] = []  # PostgreSQL's, to drop at the session's end (a failed build's too)

    def copy(self, backend: str, name: str, build: Callable, tmp_path: Path) -> Iterator:
        """Yield an engine on a test's own copy of store ``name`` on ``backend``; drop it afterwards."""
        if backend == "sqlite":
            path = tmp_path / "store.db"
            copy_sqlite(self._template("sqlite", name, build), path)
            eng = make_engine(f"sqlite:///{path}")
            yield eng
            eng.dispose()
            return
        copied, eng = _postgres_engine(template=self._template("postgresql", name, build))
        yield eng
        eng.dispose()
        _drop_database(copied)

    def _template(self, backend: str, name: str, build: Callable) -> str:
        if (backend, name) not in self.built:
            if backend == "sqlite":
                path = self.root / f"{name}.db"
                path.unlink(missing_ok=True)  # a failed build's
                eng = make_engine(f"sqlite:///{path}")
                create_schema(eng)
                build(eng)
                eng.dispose()
                self.built[backend, name] = str(path)
            else:
                template, eng = _postgres_engine()
                self.databases.append(template)
                create_schema(eng)
                build(eng)
                eng.dispose()  # no session may stay on a template
                self.built[backend, name] = template
        return self.built[backend, name]

    def drop(self) -> None:
        for name in self.databases:
            _drop_database(name)


@pytest.fixture(scope="session")
def store_templates(tmp_path_factory):
    templates = StoreTemplates(tmp_path_factory.mktemp("templates"))
    yield templates
    templates.drop()


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


@pytest.fixture(params=["sqlite", "postgresql"])
def sample_store(request, store_templates, sample_bundle, tmp_path):
    """On each backend, this test's own copy of a store with the small sample network imported and
    derived (``load_bundle_and_derive``)."""
    from core.derive.pipeline import load_bundle_and_derive

    yield from store_templates.copy(request.param, "sample", lambda eng: load_bundle_and_derive(eng, sample_bundle), tmp_path)
