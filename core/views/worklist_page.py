"""The three reads of the clinician's worklist page, side by side.

The page shows one list of patients three ways: the worklist (:func:`team_worklist`), its care
gaps (:func:`team_care_gaps`) and the follow-ups of its discharges and ED visits
(:func:`team_transitions`). The three are independent, and much of each is the database's work,
during which Python's lock is free, so they run in three threads of their own, each on its own
connection from the engine's pool. A 9,552-patient list of the 100,000-patient network on SQLite
took 2.2-3.2 s one after the other and 1.7-2.2 s side by side (BENCHMARKS.md). On a machine where
handing that lock between threads is dear, SQLite's rows are fetched no quicker side by side
than one after the other (2.3-3.0 s for 9,864 patients; BENCHMARKS.md, 7 December, 21:28).

Also the grid's columns and labels (:data:`GRID_COLUMNS`) and its CSV (:func:`worklist_csv`).
"""

from concurrent.futures import ThreadPoolExecutor
from datetime import date

import pandas as pd
from sqlalchemy import Engine
from sqlalchemy.pool import StaticPool

from core.views.care_gaps import team_care_gaps
from core.views.format import csv_export
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


# The worklist grid's columns in their order, with their labels: the page's grid and its CSV show
# the same columns under the same names. The others of the page's frame (each flag on its own, the
# costs' parts, the assignment's reason, the care gaps' ids) are left out of both.
GRID_COLUMNS = {
    "name": "Name", "age": "Age", "sex": "Sex", "subgroup": "Subgroup", "risk_score": "Risk score", "flags": "Flags",
    "questionnaires_due": "Questionnaires due", "care_gaps": "Care gaps overdue", "gaps_due_soon": "Care gaps due soon",
    "last_outreach": "Last outreach", "hba1c_value": "HbA1c %", "hba1c_date": "HbA1c date", "bp": "BP", "bp_date": "BP date",
    "phq9_value": "PHQ-9", "phq9_date": "PHQ-9 date", "phq9_change": "PHQ-9 change", "promis_physical_value": "PROMIS physical",
    "promis_physical_date": "PROMIS date", "last_visit": "Last visit", "ed_visits_12m": "ED visits 12 mo",
    "admissions_12m": "Admissions 12 mo", "cost_12m_usd": "Cost 12 mo, $", "subgroup_since": "In subgroup since",
    "history_note": "History", "patient_id": "Patient id",
}  # fmt: skip
CSV_DIGITS = {"risk_score": 2, "phq9_value": 0, "phq9_change": 0}  # as the grid shows them; other figures to 0.1, USD to cents


def worklist_csv(shown: pd.DataFrame) -> str:
    """The worklist's CSV: the rows of the grid (``shown``, the page's filtered frame) with its
    columns, order and labels (:data:`GRID_COLUMNS`), figures rounded as the grid shows them, the
    month a patient entered their subgroup as YYYY-MM, dates as YYYY-MM-DD, and empty cells where
    there is no data."""
    frame = shown.assign(subgroup_since=pd.to_datetime(shown["subgroup_since"]).dt.strftime("%Y-%m"))
    return csv_export(frame, "", CSV_DIGITS, headers=GRID_COLUMNS)
