"""core/ never imports Streamlit, so the core runs and is tested without a page: checked on the
source, import by import, and by importing every core module. And only the import's stage opens
a database through ADBC's SQLite, a second copy of SQLite in the process."""

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "core"


ROOT = CORE.parent
PRODUCT = sorted([*CORE.rglob("*.py"), *(ROOT / "ui").rglob("*.py"), *(ROOT / "pages").rglob("*.py"), ROOT / "dashboard.py"])


def _imported(path: Path) -> set[str]:
    """The top-level packages ``path`` imports."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    return imported


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_does_not_import_streamlit(path):
    assert "streamlit" not in _imported(path)


@pytest.mark.parametrize("path", PRODUCT, ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_import_stage_uses_adbc_sqlite(path):
    """ADBC's SQLite driver carries its own copy of SQLite. Two copies in one process do not see
    each other's locks: a WAL store read by one while the other wrote it gave the reader 1 of 20
    committed rows, and in the dashboard the next write failed with "disk I/O error"
    (BENCHMARKS.md, 8 December). The import's stage writes its own scratch files with it
    (core/ingest/loader.py, ``_Stage``, whose test checks the paths it opens); nothing else may,
    the store least of all."""
    uses = {"adbc_driver_sqlite", "adbc_driver_manager"} & _imported(path)
    assert not uses or path == CORE / "ingest" / "loader.py", uses


def test_importing_core_does_not_load_streamlit():
    import subprocess
    import sys

    code = "import pkgutil, importlib, sys, core\n" \
           "[importlib.import_module(m.name) for m in pkgutil.walk_packages(core.__path__, 'core.') if m.name != 'core.__main__']\n" \
           "print('streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=CORE.parent, check=True)
    assert out.stdout.strip() == "False"
