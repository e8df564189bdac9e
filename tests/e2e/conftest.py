"""End-to-end tests: the generated sample network and the benchmark, through every layer.

Every test in this folder is marked ``slow``; ``python -m pytest -m "not slow"`` leaves them out.
"""

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.slow)
