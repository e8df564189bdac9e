"""Display names of subgroups, from the subgroup rules file (data, not code), and imported text
made safe for the Markdown of titles, captions and messages."""

import re
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


# Every ASCII punctuation mark may be backslash-escaped in CommonMark (spec section 2.4). Escaped
# anywhere: the marks of links and images (``[``, ``]``, ``!``), HTML and entities, emphasis, code,
# tables, and Streamlit's own syntax (``:red[...]`` needs a bracket; ``$...$``); at the start
# only: those of lists, quotes and headings.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|~$!&])")
_MARKDOWN_LEADING = re.compile(r"^([-+=]|\d+(?=[.)]))")


def plain(value) -> str:
    """Imported text (a name, a note) as Markdown that shows exactly that text: no image, link,
    heading, list, emphasis or directive, on one line."""
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))
    return _MARKDOWN_LEADING.sub(lambda m: m.group(0) + "\\" if m.group(0)[0].isdigit() else "\\" + m.group(0), text)
