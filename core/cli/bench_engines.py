"""Engines the benchmark compares on the same block tasks of the derive (``bench --engines``).

- ``dask``: the product's engine (:func:`core.derive.blocks.local_dask_pool`).
- ``ray``: a local Ray instance, one task a block (``pip install ray``; not a requirement of
  the product, measured only).
- ``processes``: the home-made ``ProcessPoolExecutor`` pool that Dask replaced (the reference).
- ``inprocess``: no workers (``DERIVE_WORKERS=1``): every block in the step's own process.

Each engine is a :class:`core.derive.blocks.BlockPool` factory swapped in for the local pool;
the block functions, their calls and the order their results are added in stay the same, so the
stored assignments and cells must be identical whichever engine ran them.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, wait
from contextlib import contextmanager

from core.derive import blocks

ENGINES = ("dask", "ray", "processes", "inprocess")


class ProcessPool:
    """A ``ProcessPoolExecutor`` of spawned processes as a block pool (the pool before Dask)."""

    def __init__(self, executor: ProcessPoolExecutor, slots: int) -> None:
        self.executor, self.slots = executor, slots

    def submit(self, fn: Callable, *args):
        return self.executor.submit(fn, *args)

    def result(self, future):
        return future.result()

    def cancel(self, futures: list) -> None:
        for future in futures:
            future.cancel()


@contextmanager
def process_pool(workers: int) -> Iterator[ProcessPool]:
    """``workers`` spawned processes, all started (under a bare ``__main__``) before use."""
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        with blocks.bare_main():
            started = [executor.submit(os.getpid) for _ in range(workers)]
            wait(started)
        yield ProcessPool(executor, workers)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _call(fn: Callable, *args):
    return fn(*args)


class RayPool:
    """A local Ray instance as a block pool: one task (one CPU) a call."""

    def __init__(self, ray, slots: int) -> None:
        self.ray, self.slots = ray, slots
        self.remote = ray.remote(num_cpus=1, max_retries=0)(_call)

    def submit(self, fn: Callable, *args):
        return self.remote.remote(fn, *args)

    def result(self, future):
        return self.ray.get(future)

    def cancel(self, futures: list) -> None:
        for future in futures:
            self.ray.cancel(future)


@contextmanager
def ray_pool(workers: int) -> Iterator[RayPool]:
    """A local Ray instance with ``workers`` CPUs (no dashboard, quiet), shut down on the way out."""
    import ray

    with blocks.bare_main():
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                 configure_logging=True)  # fmt: skip
    try:
        yield RayPool(ray, workers)
    finally:
        ray.shutdown()


def use_engine(name: str | None) -> None:
    """Run this process's derive blocks on engine ``name`` (None or ``dask``: the product's)."""
    if name in (None, "dask"):
        blocks.local_pool = blocks.local_dask_pool
    elif name == "ray":
        blocks.local_pool = ray_pool
    elif name == "processes":
        blocks.local_pool = process_pool
    elif name == "inprocess":
        os.environ[blocks.WORKERS_ENV] = "1"
    else:
        raise ValueError(f"unknown engine {name!r}: one of {', '.join(ENGINES)}")
