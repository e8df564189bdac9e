"""core/ never imports Streamlit, so the core runs and is tested without a page: checked on the
source, import by import, and by importing every core module."""

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "core"


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_does_not_import_streamlit(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "streamlit" not in imported


def test_importing_core_does_not_load_streamlit():
    import subprocess
    import sys

    code = "import pkgutil, importlib, sys, core\n" \
           "[importlib.import_module(m.name) for m in pkgutil.walk_packages(core.__path__, 'core.') if m.name != 'core.__main__']\n" \
           "print('streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=CORE.parent, check=True)
    assert out.stdout.strip() == "False"
