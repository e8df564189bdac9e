"""Dask workers: how many, when they can be used, never running the parent's __main__ script
(Streamlit's page script), results in call order with back-pressure, and pending work cancelled on an error."""

import os
import sys
import types

import pytest

from core.derive.blocks import MAX_WORKERS, SCHEDULER_ENV, can_use_workers, local_dask_pool, map_blocks, worker_count


def test_workers_start_without_running_the_main_script(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    script = tmp_path / "page.py"
    script.write_text(f"open({str(marker)!r}, 'w').write('x')\nraise SystemExit('the page script ran in a worker')\n")
    page = types.ModuleType("__main__")
    page.__file__ = str(script)  # what Streamlit (and AppTest) leave in sys.modules["__main__"]
    monkeypatch.setitem(sys.modules, "__main__", page)

    with local_dask_pool(2) as pool:
        work = {pool.result(pool.submit(os.getpid)) for _ in range(8)}  # the scheduler may send all 8 to one worker
        pids = set(pool.client.run(os.getpid).values())  # one call on each worker
        assert pool.slots == 2 and sys.modules["__main__"] is page
        assert work <= pids
    assert len(pids) == 2 and os.getpid() not in pids
    assert not marker.exists()
    assert sys.modules["__main__"] is page


def test_local_workers_keep_the_adaptive_malloc_and_quiet_monitors(monkeypatch):
    """Dask's default MALLOC_TRIM_THRESHOLD_ in the workers cost a cells block 2x its system CPU,
    and its 20 ms event-loop checks most of an idle cluster's CPU (BENCHMARKS.md, "Derive engine")."""
    import dask

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with local_dask_pool(2) as pool:
        assert pool.result(pool.submit(os.environ.get, "MALLOC_TRIM_THRESHOLD_")) is None
        assert pool.result(pool.submit(os.environ.get, "OMP_NUM_THREADS")) == "1"  # Dask's other worker settings stay
        assert pool.result(pool.submit(dask.config.get, "distributed.admin.tick.interval")) == "1s"
        assert pool.result(pool.submit(dask.config.get, "distributed.worker.profile.enabled")) is False
    assert "MALLOC_TRIM_THRESHOLD_" not in os.environ  # the nanny sets its worker settings here too


def _imported(names):
    return all(name in sys.modules for name in names)


def test_each_new_local_worker_imports_the_derive_modules_before_the_first_block():
    """0.8 s a worker, spent while the derive's own process works before it hands out blocks."""
    from core.derive.blocks import DERIVE_MODULES

    with local_dask_pool(2) as pool:
        assert len(pool.warming) == 2
        assert [f.result() for f in pool.warming] == [list(DERIVE_MODULES)] * 2
        on_each = pool.client.run(_imported, DERIVE_MODULES)  # every worker, not one of them twice
        assert len(on_each) == 2 and all(on_each.values())


@pytest.mark.parametrize("environ, expected", [({"DERIVE_WORKERS": "1"}, 1), ({"DERIVE_WORKERS": " 6 "}, 6)])
def test_worker_count_follows_the_setting(environ, expected):
    assert worker_count(environ) == expected


def test_worker_count_defaults_to_the_usable_cpus_within_the_cap():
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert worker_count({}) == max(1, min(cpus, MAX_WORKERS))


def test_a_cluster_gets_at_least_two_workers_from_a_small_coordinator():
    assert worker_count({SCHEDULER_ENV: "tcp://10.0.0.5:8786"}) >= 2
    assert worker_count({SCHEDULER_ENV: "tcp://10.0.0.5:8786", "DERIVE_WORKERS": "1"}) == 1  # in this process


@pytest.mark.parametrize("text", ["0", "-2", "two", "1.5"])
def test_worker_count_refuses_a_bad_setting(text):
    with pytest.raises(ValueError, match="DERIVE_WORKERS"):
        worker_count({"DERIVE_WORKERS": text})


def test_workers_need_a_database_they_can_open(tmp_path):
    from core.store.db import make_engine

    memory, file = make_engine("sqlite://"), make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    assert not can_use_workers(memory) and can_use_workers(file)
    with file.connect() as conn:  # WAL mode (set on connect): readers may read while this process writes
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert can_use_workers(file, while_writing=True)
    from sqlalchemy import create_engine

    journal = create_engine(f"sqlite:///{tmp_path / 'j.db'}")  # rollback journal: a writer locks readers out
    assert can_use_workers(journal) and not can_use_workers(journal, while_writing=True)


class _Pool:
    """A pool that records what is submitted, taken and cancelled; futures are the calls' values."""

    slots = 2

    def __init__(self):
        self.submitted, self.cancelled, self.taken = [], [], []

    def submit(self, fn, *args):
        self.submitted.append(args[-1])
        return args[-1]

    def result(self, future):
        if future == "boom":
            raise RuntimeError("block failed")
        self.taken.append(future)
        return future

    def cancel(self, futures):
        self.cancelled += futures


def test_results_come_in_call_order_with_at_most_ahead_waiting(tmp_path):
    from core.store.db import make_engine

    pool, engine = _Pool(), make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    results = map_blocks(engine, pool, len, [(i,) for i in range(8)], ahead=3)
    assert pool.submitted == [0, 1, 2, 3]  # ahead 3 beyond the one consumed first
    first = next(results)
    assert first == 0 and pool.submitted == [0, 1, 2, 3, 4]
    assert [first, *results] == list(range(8)) and pool.cancelled == []
    pool = _Pool()
    assert list(map_blocks(engine, pool, len, [(i,) for i in range(5)], ahead=0)) == list(range(5))
    assert pool.submitted == list(range(5))  # never fewer under way than the pool's slots


def test_an_error_cancels_the_blocks_not_done(tmp_path):
    from core.store.db import make_engine

    pool, engine = _Pool(), make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    results = map_blocks(engine, pool, len, [(0,), ("boom",), (2,), (3,), (4,), (5,)], ahead=2)
    assert next(results) == 0
    with pytest.raises(RuntimeError, match="block failed"):
        next(results)
    assert pool.cancelled == [2, 3] and pool.taken == [0]
    assert pool.submitted == [0, "boom", 2, 3]  # the blocks after them never start


def _fails_on_two(engine, i: int) -> int:
    if i == 2:
        raise ValueError(f"block {i} failed")
    return i


def test_a_block_error_reaches_the_caller_and_the_local_cluster_shuts_down(tmp_path):
    from multiprocessing import resource_tracker

    import psutil

    from core.derive.blocks import worker_pool
    from core.store.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    engine.connect().close()
    # multiprocessing's resource tracker, started by the first process pool of this Python process
    # and kept for its lifetime, is no worker: started here, it is among the processes before
    resource_tracker.ensure_running()
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(ValueError, match="block 2 failed"):
        with worker_pool(engine, 2, 4) as pool:
            assert pool is not None
            assert list(map_blocks(engine, pool, _fails_on_two, [(0,), (1,), (2,), (3,)], ahead=1)) == []
    assert {p.pid for p in psutil.Process().children(recursive=True) if p.is_running() and p.status() != "zombie"} <= before


def test_a_worker_without_the_sqlite_file_says_so(tmp_path):
    from core.derive.blocks import _in_worker

    with pytest.raises(FileNotFoundError, match="no SQLite file .*PostgreSQL or an SQLite file on a path every worker shares"):
        _in_worker(f"sqlite:///{tmp_path / 'elsewhere.db'}", False, len)
    assert not (tmp_path / "elsewhere.db").exists()
