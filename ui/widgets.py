"""Shared selection widgets. Selections are bound to the URL so a link opens the same view."""

from datetime import date

import streamlit as st

from core.store import months_available, organisation
from ui.data import query


def month_label(month: date) -> str:
    return month.strftime("%b %Y")


def select_month(key: str = "month", label: str = "Month") -> date:
    """Pick a month (default: the latest); bound to ``?month=YYYY-MM``."""
    months = query(months_available)
    options = [m.strftime("%Y-%m") for m in months]
    if st.session_state.get(key) not in options:
        st.session_state[key] = options[-1]
    chosen = st.selectbox(label, options[::-1], key=key, format_func=lambda s: month_label(date.fromisoformat(s + "-01")),
                          bind="query-params")  # fmt: skip
    return date.fromisoformat(chosen + "-01")


def select_team(key: str = "team", allowed: tuple[str, ...] | None = None) -> dict:
    """Pick a team (grouped by practice); bound to ``?team=ID``. Returns the team's row as a dict."""
    org = query(organisation)
    if allowed is not None:
        org = org[org["team_id"].isin(allowed)]
    labels = {r.team_id: f"{r.practice} · {r.team}" for r in org.itertuples()}
    if st.session_state.get(key) not in labels:
        st.session_state[key] = next(iter(labels))
    team_id = st.selectbox("Team", list(labels), key=key, format_func=labels.get, bind="query-params")
    return org[org["team_id"] == team_id].iloc[0].to_dict()
