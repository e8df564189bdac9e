"""Blocks of patients and the worker processes that work through them.

The derive steps that hold a patient's rows in memory (subgroup assignment, cells) take the
attributed patients in blocks: contiguous, inclusive ranges of ``patient_id``. Peak memory then
follows the block, not the network, and each block's queries are range scans of the
patient_id-leading indexes. With two or more blocks, worker processes compute blocks side by
side (:func:`worker_pool`, :func:`map_blocks`); the number of workers comes from the machine
(:func:`worker_count`) unless the caller or ``$DERIVE_WORKERS`` says otherwise.
"""

import multiprocessing
import os
import sys
import types
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from datetime import date

from sqlalchemy import Connection, Engine, select

from core.store.db import make_engine
from core.store.models import Attribution

# Patients per block: about 1.5 GB of frames for the cells of 25,000 patients x 24 months
# (about 0.5 GB for their subgroup inputs).
BLOCK_PATIENTS = 25_000
WORKERS_ENV = "DERIVE_WORKERS"
# Each worker holds one block's frames, so more workers need more memory (4 x 1.5 GB).
MAX_WORKERS = 4


def worker_count(environ: Mapping[str, str] = os.environ) -> int:
    """Worker processes for a derive step: ``$DERIVE_WORKERS`` when set (1 = no workers), else
    the CPUs this process may run on, at most :data:`MAX_WORKERS`."""
    text = environ.get(WORKERS_ENV, "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"{WORKERS_ENV} must be a whole number >= 1, got {text!r}")
        return int(text)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS))


def patient_blocks(conn: Connection, size: int, months: list[date] | None = None) -> list[tuple[str, str]]:
    """Inclusive ``patient_id`` ranges of at most ``size`` patients attributed in ``months``
    (None: in any month), in id order.

    The ids are sorted by the database, so the ranges follow its collation, as the range
    conditions of the block queries do.
    """
    a = Attribution
    stmt = select(a.patient_id).distinct().order_by(a.patient_id)
    if months is not None:
        stmt = stmt.where(a.month.in_(months))
    ids = conn.execute(stmt).scalars().all()
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


@contextmanager
def process_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of ``workers`` spawned processes, all started before it is handed out.

    A spawned process first re-imports the parent's ``__main__`` module. Under Streamlit (and in
    a test session after an AppTest run) ``__main__`` is the page script, which must never run in
    a worker, so the workers are started while ``__main__`` is a bare module: every submit spawns
    a process while none has booted yet (a boot takes far longer than the submits).
    """
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            started = [pool.submit(os.getpid) for _ in range(workers)]
        finally:
            if main is None:
                del sys.modules["__main__"]
            else:
                sys.modules["__main__"] = main
        wait(started)
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def worker_pool(engine: Engine, workers: int, blocks: int, while_writing: bool = False) -> Iterator[ProcessPoolExecutor | None]:
    """Worker processes for ``blocks`` blocks (at most one a block), or None to work through them
    in this process: fewer than two workers or blocks, or a database the workers cannot read
    (:func:`can_use_workers`)."""
    if workers < 2 or blocks < 2 or not can_use_workers(engine, while_writing):
        yield None
        return
    with process_pool(min(workers, blocks)) as pool:
        yield pool


def map_blocks(here: Engine | Connection, pool: ProcessPoolExecutor | None, task: Callable, calls: list[tuple],
               ahead: int | None = None) -> Iterator:  # fmt: skip
    """``task(here, *call)`` for each call, results in call order.

    Without a pool the calls run in this process, one at a time as the results are consumed.
    In the pool's worker processes each call gets an engine of its own on the same database
    (a connection of it when ``here`` is a connection); the calls start at once, with at most
    ``ahead`` (None: no limit) under way or waiting beyond the one being consumed, since
    finished results wait in this process's memory.
    """
    if pool is None:
        return (task(here, *call) for call in calls)
    engine = here.engine if isinstance(here, Connection) else here
    url = engine.url.render_as_string(hide_password=False)
    connect = isinstance(here, Connection)
    first = len(calls) if ahead is None else ahead + 1
    pending: deque[Future] = deque(pool.submit(_in_worker, url, connect, task, *call) for call in calls[:first])
    return _results_in_order(pool, pending, (url, connect, task), calls[first:])


def _in_worker(url: str, connect: bool, task: Callable, *args):
    """``task(engine or connection, *args)`` in a worker process, on an engine of its own."""
    engine = make_engine(url)
    try:
        if not connect:
            return task(engine, *args)
        with engine.connect() as conn:
            return task(conn, *args)
    finally:
        engine.dispose()


def _results_in_order(pool: ProcessPoolExecutor, pending: deque, worker: tuple, rest: list[tuple]) -> Iterator:
    """Results of the pending futures in order, submitting one of ``rest`` for each result taken."""
    try:
        for call in rest:
            result = pending.popleft().result()
            pending.append(pool.submit(_in_worker, *worker, *call))
            yield result
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
