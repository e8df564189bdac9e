"""Worker processes for the derive steps that work through the patients in blocks
(core/derive/cells.py cells, core/derive/subgroups.py assignments)."""

import multiprocessing
import os
import sys
import types
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, wait
from contextlib import contextmanager


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
