"""The derive on Dask: in this process, on a local cluster of two workers and on a separate cluster
reached by its scheduler address (``$DERIVE_SCHEDULER``) stores the same subgroups and cells, to the
bit, on an SQLite file (WAL mode) and on PostgreSQL.

The cluster is real: a ``dask scheduler`` and two ``dask worker`` processes on loopback, started
from the command line as an operator would, with the repository on their path.
"""

import os
import subprocess
import sys
import time

import pytest
from sqlalchemy import text

from core.derive.blocks import SCHEDULER_ENV
from core.derive.cells import build_cells
from core.derive.subgroups.assign import assign_subgroups
from core.store.db import create_schema, make_engine
from tests.checksum import table_checksums
from tests.conftest import PROJECT_ROOT, _drop_database, _postgres_engine

DERIVED = ("subgroup_assignment", "risk_score", "cell")
SMALL = dict(patients=150, months=8, seed=11)
BLOCK = 50  # three blocks: every mode adds up the same blocks in the same order, so the sums are equal to the bit


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """The address of a Dask scheduler with two one-thread workers on 127.0.0.1."""
    from distributed import Client

    folder = tmp_path_factory.mktemp("dask")
    file = folder / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop(SCHEDULER_ENV, None)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": folder, "env": env}
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(file)], **quiet)]  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert file.exists(), "the Dask scheduler did not start"
        for _ in range(2):
            procs.append(subprocess.Popen([sys.executable, "-m", "dask", "worker", "--scheduler-file", str(file), "--nthreads", "1",
                                           "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"], **quiet))  # fmt: skip
        with Client(scheduler_file=str(file), set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)
            address = client.scheduler.address
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):  # a worker can stay up reconnecting to the stopped scheduler: 5 s, then kill
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    from sample_data.generator import NetworkSpec, write_bundle

    out = tmp_path_factory.mktemp("cluster-bundle")
    write_bundle(NetworkSpec(**SMALL), out)
    return out


@pytest.fixture(params=["sqlite", "postgresql"])
def small_store(request, small_bundle, tmp_path):
    """A small generated network imported (not derived yet) on an SQLite file in WAL mode, or on PostgreSQL."""
    from core.ingest import import_path

    if request.param == "sqlite":
        name, engine = None, make_engine(f"sqlite:///{tmp_path / 'cluster.db'}")
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    else:
        name, engine = _postgres_engine()
    create_schema(engine)
    report = import_path(engine, small_bundle, fmt="csv")
    assert report.ok, report.to_text()
    yield engine
    engine.dispose()
    if name is not None:
        _drop_database(name)


def _derive(engine, workers: int) -> dict:
    assigned = assign_subgroups(engine, block_patients=BLOCK, workers=workers)
    cells = build_cells(engine, block_patients=BLOCK, workers=workers)
    # the cells' blocks as the full derive sums them; the assignments' a multiple of the workers
    assert cells["blocks"] == 3 and assigned["blocks"] == {1: 3, 2: 4}[workers]
    assert assigned["rows"] > 0 and cells["rows"] > 0
    return table_checksums(engine, skip=tuple(t for t in _tables() if t not in DERIVED))


def _tables() -> list[str]:
    from sqlmodel import SQLModel

    return [t.name for t in SQLModel.metadata.sorted_tables]


def test_in_process_local_cluster_and_scheduler_derive_the_same(small_store, scheduler, monkeypatch):
    monkeypatch.delenv(SCHEDULER_ENV, raising=False)
    here = _derive(small_store, workers=1)
    assert set(here) == set(DERIVED) and all(not v.startswith("0:") for v in here.values())
    with small_store.begin() as conn:  # nothing left over from the run before
        conn.execute(text("DELETE FROM cell"))
        conn.execute(text("DELETE FROM subgroup_assignment"))
    local = _derive(small_store, workers=2)
    assert local == here
    monkeypatch.setenv(SCHEDULER_ENV, scheduler)
    with small_store.begin() as conn:
        conn.execute(text("DELETE FROM cell"))
        conn.execute(text("DELETE FROM subgroup_assignment"))
    assert _derive(small_store, workers=2) == here


def test_the_cluster_refuses_a_database_its_workers_cannot_open(scheduler, monkeypatch):
    from core.derive.blocks import worker_pool

    monkeypatch.setenv(SCHEDULER_ENV, scheduler)
    memory = make_engine("sqlite://")
    with pytest.raises(ValueError, match="in-memory SQLite.*PostgreSQL"):
        with worker_pool(memory, 2, 3):
            pass
