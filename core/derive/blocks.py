"""Blocks of patients and the Dask workers that work through them.

The derive steps that hold a patient's rows in memory (subgroup assignment, cells) take the
attributed patients in blocks: contiguous, inclusive ranges of ``patient_id``. Peak memory then
follows the block, not the network, and each block's queries are range scans of the
patient_id-leading indexes. With two or more blocks, Dask workers compute blocks side by side
(:func:`worker_pool`, :func:`map_blocks`): by default a local cluster of worker processes, one a
CPU (:func:`worker_count`, or ``$DERIVE_WORKERS``); with ``$DERIVE_SCHEDULER``
(``tcp://host:8786``) the workers of an existing Dask cluster. Every worker opens the database
by its URL, so a cluster needs PostgreSQL or an SQLite file on a path every worker shares.
"""

import itertools
import logging
import math
import os
import sys
import threading
import types
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, exists, select
from sqlalchemy.engine import make_url

from core.store.db import make_engine
from core.store.models import Attribution, Patient

# Patients per block: about 1.5 GB of frames for the cells of 25,000 patients x 24 months
# (about 0.5 GB for their subgroup inputs).
BLOCK_PATIENTS = 25_000
WORKERS_ENV = "DERIVE_WORKERS"
SCHEDULER_ENV = "DERIVE_SCHEDULER"
# Each worker holds one block's frames, so more workers need more memory (4 x 1.5 GB).
MAX_WORKERS = 4
# Memory limit of a local worker: Dask pauses a worker at 80 % of it and restarts it at 95 %, so
# it must hold a 1.5 GB block with room to spare (the peak of a cells block is about 1.8 GB); on a
# larger machine each worker gets its share of the memory.
WORKER_MEMORY_FLOOR = 4 * 2**30
# Dask settings of the local cluster, against the CPU that Dask spent beyond the block tasks
# themselves (BENCHMARKS.md, "Derive engine"):
# - no MALLOC_TRIM_THRESHOLD_=65536 in the workers (Dask's default): setting it switches off glibc's
#   adaptive mmap threshold, so every array above 128 kB is mapped afresh and zero-filled by the
#   kernel when touched: 3.5x the page faults and 2x the system CPU of a cells block;
# - no statistical profiler in the workers (it samples every 10 ms);
# - the event-loop health check every 1 s (default 20 ms, in the scheduler, every nanny and worker),
#   the system monitor every 5 s without disk counters (500 ms) and the memory monitor every
#   500 ms (100 ms): an idle 2-worker cluster then takes 0.01 CPU s a second instead of 0.04.
LOCAL_DASK_CONFIG = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.admin.system-monitor.disk": False,
    "distributed.worker.memory.monitor-interval": "500ms",
}


class BlockPool(Protocol):
    """Workers that run block tasks: what :func:`map_blocks` needs of an engine (Dask here; the
    benchmark plugs in others to compare)."""

    slots: int  # tasks the workers run at once

    def submit(self, fn: Callable, *args) -> Any: ...
    def result(self, future: Any) -> Any: ...
    def cancel(self, futures: list) -> None: ...


def worker_count(environ: Mapping[str, str] = os.environ) -> int:
    """Workers for a derive step: ``$DERIVE_WORKERS`` when set (1 = no workers, the blocks run in
    this process), else the CPUs this process may run on, at most :data:`MAX_WORKERS`, and at
    least 2 with ``$DERIVE_SCHEDULER`` (the cluster's workers then do the work)."""
    text = environ.get(WORKERS_ENV, "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"{WORKERS_ENV} must be a whole number >= 1, got {text!r}")
        return int(text)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(2 if scheduler_address(environ) else 1, min(cpus, MAX_WORKERS))


def patient_blocks(conn: Connection, size: int, months: list[date] | None = None,
                   workers: int | None = None) -> list[tuple[str, str]]:  # fmt: skip
    """Inclusive ``patient_id`` ranges of at most ``size`` patients attributed in ``months``
    (None: in any month), in id order.

    ``workers`` None: ranges of ``size`` patients, the last one the rest (the cells' blocks,
    whose sums are added in this order). Else, when more than one range is needed, as many as
    the smallest multiple of ``workers`` that keeps each within ``size``, of even sizes, so each
    worker reads as many patients: 86,765 patients, two workers, 4 x 21,691-21,692 instead of 3 x
    25,000 and 11,765 (one worker's two blocks were 50,000 patients against the other's 36,765).

    The ids are sorted by the database, so the ranges follow its collation, as the range
    conditions of the block queries do. Every month: the patients with an attribution (every
    attributed id is a patient's), which PostgreSQL reads from the two primary keys where a
    distinct of the attributions sorts them all (100,000 patients: 0.45 -> 0.20 s).
    """
    a, p = Attribution, Patient
    if months is None:
        stmt = select(p.patient_id).where(exists().where(a.patient_id == p.patient_id)).order_by(p.patient_id)
    else:
        stmt = select(a.patient_id).distinct().where(a.month.in_(months)).order_by(a.patient_id)
    ids = conn.execute(stmt).scalars().all()
    if workers is not None and len(ids) > size:
        count = workers * math.ceil(len(ids) / (size * workers))
        bounds = [round(i * len(ids) / count) for i in range(count + 1)]
        return [(ids[start], ids[end - 1]) for start, end in itertools.pairwise(bounds) if end > start]
    return [(ids[i], ids[min(i + size, len(ids)) - 1]) for i in range(0, len(ids), size)]


def can_use_workers(engine: Engine, while_writing: bool = False) -> bool:
    """Whether worker processes can read the database of ``engine``.

    They open it themselves, so an in-memory SQLite is out. ``while_writing``: this process
    holds a write transaction while they read, which an SQLite file allows in WAL mode only
    (in the rollback-journal mode the writer locks the readers out); PostgreSQL always can.
    """
    if engine.dialect.name != "sqlite":
        return True
    if engine.url.database in (None, "", ":memory:"):
        return False
    if not while_writing:
        return True
    with engine.connect() as conn:
        return str(conn.exec_driver_sql("PRAGMA journal_mode").scalar()).lower() == "wal"


def scheduler_address(environ: Mapping[str, str] = os.environ) -> str | None:
    """The Dask scheduler of an existing cluster the derive runs on (``$DERIVE_SCHEDULER``, e.g.
    ``tcp://10.0.0.5:8786``), or None for a local cluster of this machine's processes."""
    return environ.get(SCHEDULER_ENV, "").strip() or None


def shareable_url(engine: Engine, while_writing: bool = False) -> str:
    """The URL by which workers elsewhere open the database of ``engine`` (an SQLite path made
    absolute), or ValueError saying why they cannot: an in-memory SQLite, or an SQLite file in
    the rollback-journal mode while this process writes (:func:`can_use_workers`)."""
    if not can_use_workers(engine, while_writing):
        what = "an in-memory SQLite" if engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:") else (
            "an SQLite file that is not in WAL mode (this process writes while the workers read)")  # fmt: skip
        raise ValueError(f"{SCHEDULER_ENV} is set, but the Dask workers cannot open {what}: a cluster needs PostgreSQL "
                         "or an SQLite file in WAL mode on a path every worker shares")  # fmt: skip
    url = engine.url
    if url.get_backend_name() == "sqlite":
        url = url.set(database=str(Path(url.database).resolve()))
    return url.render_as_string(hide_password=False)


class DaskPool:
    """A Dask client as a :class:`BlockPool`; ``slots``: the threads of its workers."""

    def __init__(self, client) -> None:
        self.client = client
        self.slots = max(1, sum(client.nthreads().values()))
        self.warming: list = []  # futures of work a new worker does before the blocks (kept: a dropped future is cancelled)

    def submit(self, fn: Callable, *args):
        return self.client.submit(fn, *args, pure=False)  # every call runs, even with equal arguments

    def result(self, future):
        return future.result()

    def cancel(self, futures: list) -> None:
        if futures:
            self.client.cancel(futures)


_main_lock = threading.Lock()
_main_saved: list = []  # [depth, the __main__ module replaced, the bare one]


@contextmanager
def bare_main() -> Iterator[None]:
    """``sys.modules["__main__"]`` is a bare module meanwhile (re-entrant, across threads).

    A spawned process first re-imports the parent's ``__main__`` module. Under Streamlit (and in
    a test session after an AppTest run) ``__main__`` is the page script, which must never run in
    a worker, so worker processes are started while ``__main__`` has no file to re-import.
    """
    with _main_lock:
        if not _main_saved:
            bare = types.ModuleType("__main__")
            _main_saved[:] = [0, sys.modules.get("__main__"), bare]
            sys.modules["__main__"] = bare
        _main_saved[0] += 1
    try:
        yield
    finally:
        with _main_lock:
            _main_saved[0] -= 1
            if _main_saved[0] == 0:
                _, main, bare = _main_saved
                _main_saved.clear()
                if sys.modules.get("__main__") is bare:  # a page run started meanwhile keeps its own
                    if main is None:
                        del sys.modules["__main__"]
                    else:
                        sys.modules["__main__"] = main


def _nanny_class():
    """A Dask nanny that starts (and restarts) its worker process under :func:`bare_main`."""
    from distributed import Nanny

    class BareMainNanny(Nanny):
        async def instantiate(self):
            with bare_main():
                return await super().instantiate()

    return BareMainNanny


def worker_memory_limit(workers: int) -> int:
    """Bytes a local worker may hold: its share of the machine's memory, at least
    :data:`WORKER_MEMORY_FLOOR`."""
    import psutil

    return max(WORKER_MEMORY_FLOOR, psutil.virtual_memory().total // max(workers, 1))


@contextmanager
def local_dask_pool(workers: int) -> Iterator[DaskPool]:
    """A local Dask cluster of ``workers`` processes (one thread each, no dashboard, quiet logs),
    all started before it is handed out, and closed on the way out (also on errors)."""
    import dask
    from distributed import Client, LocalCluster

    with bare_main(), dask.config.set(LOCAL_DASK_CONFIG):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, worker_class=_nanny_class(),
                               dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, silence_logs=logging.ERROR, host="127.0.0.1",
                               memory_limit=worker_memory_limit(workers))  # fmt: skip
    try:
        with Client(cluster, set_as_default=False) as client:
            client.wait_for_workers(workers)
            pool = DaskPool(client)
            # each new worker imports the derive's modules now, while this process goes on to the
            # work before the first blocks (0.8 s a worker; a month's derive at 100,000 patients)
            pool.warming = [client.submit(import_derive, pure=False, workers=[address])
                            for address in client.scheduler_info()["workers"]]  # fmt: skip
            yield pool
    finally:
        cluster.close()


DERIVE_MODULES = ("core.derive.subgroups.assign", "core.derive.cells")


def import_derive() -> list[str]:
    """Import the modules of the derive's block tasks (on a new worker); returns those imported."""
    import importlib

    return [importlib.import_module(name).__name__ for name in DERIVE_MODULES]


@contextmanager
def cluster_dask_pool(address: str) -> Iterator[DaskPool]:
    """The workers of the Dask cluster whose scheduler is at ``address``."""
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        yield DaskPool(client)


# The pool of this machine's processes: :func:`local_dask_pool`; the benchmark swaps in other
# engines to compare them on the same block tasks.
local_pool: Callable[[int], Any] = local_dask_pool


@contextmanager
def worker_pool(engine: Engine, workers: int, blocks: int, while_writing: bool = False) -> Iterator[BlockPool | None]:
    """Workers for ``blocks`` blocks, or None to work through them in this process: fewer than
    two workers or blocks, or (locally) a database the workers cannot read (:func:`can_use_workers`).

    With ``$DERIVE_SCHEDULER`` the workers are those of that Dask cluster (a database they cannot
    open is refused: :func:`shareable_url`); else a local cluster of at most one worker a block.
    """
    address = scheduler_address()
    if workers < 2 or blocks < 2:
        yield None
    elif address:
        shareable_url(engine, while_writing)
        with cluster_dask_pool(address) as pool:
            yield pool
    elif not can_use_workers(engine, while_writing):
        yield None
    else:
        with local_pool(min(workers, blocks)) as pool:
            yield pool


def map_blocks(here: Engine | Connection, pool: BlockPool | None, task: Callable, calls: list[tuple],
               ahead: int | None = None) -> Iterator:  # fmt: skip
    """``task(here, *call)`` for each call, results in call order.

    Without a pool the calls run in this process, one at a time as the results are consumed.
    On the pool's workers each call gets an engine of its own on the same database (a connection
    of it when ``here`` is a connection); the calls start at once, with at most ``ahead`` (None:
    no limit; never fewer than the pool's slots) under way or waiting beyond the one being
    consumed, since finished results wait in this process's memory. On an error (or when the
    results are abandoned) the calls not done yet are cancelled.
    """
    if pool is None:
        return (task(here, *call) for call in calls)
    engine = here.engine if isinstance(here, Connection) else here
    url = shareable_url(engine)
    connect = isinstance(here, Connection)
    first = len(calls) if ahead is None else max(ahead, pool.slots) + 1
    pending: deque = deque(pool.submit(_in_worker, url, connect, task, *call) for call in calls[:first])
    return _results_in_order(pool, pending, (url, connect, task), calls[first:])


def _in_worker(url: str, connect: bool, task: Callable, *args):
    """``task(engine or connection, *args)`` on a worker, on an engine of its own."""
    if url.startswith("sqlite:///"):  # an SQLite file this worker does not see would be created empty
        path = make_url(url).database
        if not Path(path).is_file():
            raise FileNotFoundError(f"the Dask worker on {os.uname().nodename} finds no SQLite file {path}: a cluster "
                                    "needs PostgreSQL or an SQLite file on a path every worker shares")  # fmt: skip
    engine = make_engine(url)
    try:
        if not connect:
            return task(engine, *args)
        with engine.connect() as conn:
            return task(conn, *args)
    finally:
        engine.dispose()


def _results_in_order(pool: BlockPool, pending: deque, worker: tuple, rest: list[tuple]) -> Iterator:
    """Results of the pending futures in order, submitting one of ``rest`` for each result taken."""
    try:
        for call in rest:
            result = pool.result(pending.popleft())
            pending.append(pool.submit(_in_worker, *worker, *call))
            yield result
        while pending:
            yield pool.result(pending.popleft())
    finally:
        pool.cancel(list(pending))
