"""Worker processes: how many, when they can be used, and never running the parent's __main__ script
(Streamlit's page script)."""

import os
import sys
import types

import pytest

from core.derive.blocks import MAX_WORKERS, can_use_workers, process_pool, worker_count


def test_workers_start_without_running_the_main_script(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    script = tmp_path / "page.py"
    script.write_text(f"open({str(marker)!r}, 'w').write('x')\nraise SystemExit('the page script ran in a worker')\n")
    page = types.ModuleType("__main__")
    page.__file__ = str(script)  # what Streamlit (and AppTest) leave in sys.modules["__main__"]
    monkeypatch.setitem(sys.modules, "__main__", page)

    with process_pool(2) as pool:
        pids = {pool.submit(os.getpid).result() for _ in range(8)}
    assert pids and os.getpid() not in pids
    assert not marker.exists()
    assert sys.modules["__main__"] is page


@pytest.mark.parametrize("environ, expected", [({"DERIVE_WORKERS": "1"}, 1), ({"DERIVE_WORKERS": " 6 "}, 6)])
def test_worker_count_follows_the_setting(environ, expected):
    assert worker_count(environ) == expected


def test_worker_count_defaults_to_the_usable_cpus_within_the_cap():
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert worker_count({}) == max(1, min(cpus, MAX_WORKERS))


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
