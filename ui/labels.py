"""Display names of subgroups, from the subgroup rules file (data, not code)."""

from pathlib import Path

import streamlit as st

from core.derive.subgroups.rules import active_rules_path, load_rules


def subgroup_labels() -> dict[str, str]:
    """Subgroup id -> display name, in rule order (the practice's saved rules, else the shipped ones)."""
    path = active_rules_path()
    return _labels(str(path), path.stat().st_mtime)


@st.cache_data(show_spinner=False)
def _labels(path: str, mtime: float) -> dict[str, str]:
    del mtime  # part of the cache key only: a saved rules file changes the labels
    return dict(load_rules(Path(path)).subgroup_names)
