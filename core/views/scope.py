"""The units (network, practice, team) a user may choose on the executive pages."""

from __future__ import annotations

import pandas as pd

from core.views.cells_read import ALL


def scope_units(organisation: pd.DataFrame, team_ids: tuple[str, ...], network: bool) -> dict[str, str]:
    """What a user may look at, as option id -> label: the network (or their teams), each practice
    whose teams are in scope, each team in scope. Ids: ``all``, ``practice:<id>``, ``team:<id>``."""
    org = organisation.loc[organisation["team_id"].isin(team_ids)]
    units = {ALL: "Whole network" if network else "All my teams"}
    units |= {f"practice:{p}": name for p, name in org.groupby("practice_id")["practice"].first().items()}
    units |= {f"team:{r.team_id}": f"{r.practice} · {r.team}" for r in org.itertuples()}
    return units


def unit_filters(unit: str) -> tuple[str | None, str | None]:
    """(practice_id, team_id) of a :func:`scope_units` id."""
    kind, _, value = unit.partition(":")
    return (value, None) if kind == "practice" else (None, value) if kind == "team" else (None, None)


def unit_teams(organisation: pd.DataFrame, team_ids: tuple[str, ...], network: bool, practice_id: str | None,
               team_id: str | None) -> tuple[str, ...] | None:
    """The teams a unit's figures are made of (None: the whole network), for the suppression policy."""
    if team_id is not None:
        return (team_id,)
    if practice_id is not None:
        org = organisation.loc[organisation["practice_id"] == practice_id, "team_id"]
        return tuple(t for t in org if network or t in team_ids)
    return None if network else tuple(team_ids)
