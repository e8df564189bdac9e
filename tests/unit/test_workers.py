"""Worker processes never run the parent's __main__ script (Streamlit's page script)."""

import os
import sys
import types

from core.derive.blocks import process_pool


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
