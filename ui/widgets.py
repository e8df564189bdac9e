"""Shared selection widgets. Selections are bound to the URL so a link opens the same view."""

from datetime import date

import streamlit as st

from core.store.months import WINDOW_LABELS
from core.store.queries import months_available, organisation
from ui.data import query


def from_url(key: str, options: dict[str, str]):
    """The option a first run should start from: session state, else the URL's ``key`` (which a
    bound widget with a ``format_func`` writes as the shown label, so labels are accepted too)."""
    wanted = st.session_state.get(key, st.query_params.get(key))
    return wanted if wanted in options else {label: option for option, label in options.items()}.get(wanted)


def month_label(month: date) -> str:
    return month.strftime("%b %Y")


def select_month(key: str = "month", label: str = "Month") -> date:
    """Pick a month (default: the latest); bound to ``?month=`` (the shown label; ``YYYY-MM`` also works)."""
    months = query(months_available)
    options = [m.strftime("%Y-%m") for m in months]
    wanted = from_url(key, {o: month_label(date.fromisoformat(o + "-01")) for o in options})
    st.session_state[key] = wanted or options[-1]
    chosen = st.selectbox(label, options[::-1], key=key, format_func=lambda s: month_label(date.fromisoformat(s + "-01")),
                          bind="query-params")  # fmt: skip
    return date.fromisoformat(chosen + "-01")


def select_window(key: str) -> str:
    """Pick a window ending with the chosen month (a key of core.store.months.WINDOW_LABELS; default 12 months)."""
    return st.selectbox("Window ending that month", list(WINDOW_LABELS), key=key, format_func=WINDOW_LABELS.get)


def team_choice_labels(org) -> dict[str, str]:
    """Team id -> the label of a team choice in the sidebar: the team's name first, so a narrow
    sidebar cuts the practice's name, not the team's (every team of a practice starts alike)."""
    return {r.team_id: f"{r.team} · {r.practice}" for r in org.itertuples()}


def select_team(key: str = "team", allowed: tuple[str, ...] | None = None) -> dict:
    """Pick a team (grouped by practice); bound to ``?team=`` (the shown label; the team id also works).
    Returns the team's row as a dict."""
    org = query(organisation)
    if allowed is not None:
        org = org[org["team_id"].isin(allowed)]
    labels = team_choice_labels(org)
    st.session_state[key] = from_url(key, labels) or next(iter(labels))
    team_id = st.selectbox("Team", list(labels), key=key, format_func=labels.get, bind="query-params")
    return org[org["team_id"] == team_id].iloc[0].to_dict()
