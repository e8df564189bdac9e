"""The three reads of the clinician's worklist page, side by side.

The page shows one list of patients three ways: the worklist (:func:`team_worklist`), its care
gaps (:func:`team_care_gaps`) and the follow-ups of its discharges and ED visits
(:func:`team_transitions`). The three are independent, and much of each is the database's work,
during which Python's lock is free, so they run in three threads of their own, each on its own
connection from the engine's pool. A 9,552-patient list of the 100,000-patient network on SQLite
took 2.2-3.2 s one after the other and 1.7-2.2 s side by side (BENCHMARKS.md).
"""

from concurrent.futures import ThreadPoolExecutor
from datetime import date

import pandas as pd
from sqlalchemy import Engine
from sqlalchemy.pool import StaticPool

from core.views.care_gaps import team_care_gaps
from core.views.transitions import team_transitions
from core.views.worklist import team_worklist


def worklist_reads(engine: Engine, month: date, team_ids: tuple[str, ...], subgroup: str | None = None,
                   today: date | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """(worklist, care gaps, transitions) of the patients of the teams in ``month`` (and
    subgroup), as :func:`team_worklist`, :func:`team_care_gaps` and :func:`team_transitions` give
    them (``today``: the transitions' day, default today). An in-memory SQLite store has one
    connection for every thread: there the three run one after the other."""
    if isinstance(engine.pool, StaticPool):
        return (team_worklist(engine, month, team_ids, subgroup), team_care_gaps(engine, month, team_ids, subgroup),
                team_transitions(engine, month, team_ids, subgroup, today))  # fmt: skip
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="worklist_read") as pool:
        worklist = pool.submit(team_worklist, engine, month, team_ids, subgroup)
        gaps = pool.submit(team_care_gaps, engine, month, team_ids, subgroup)
        transitions = pool.submit(team_transitions, engine, month, team_ids, subgroup, today)
        return worklist.result(), gaps.result(), transitions.result()
