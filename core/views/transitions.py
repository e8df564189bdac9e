"""Transitions of care: the recent hospital discharges and ED visits of a team's patients, each
with its follow-up windows (contact within 2 business days, visit within 7 or 14 days) and
whether each is done, due or missed.

Events, windows and what closes them are data (``core/config/transitions.toml``, with sources).
A window opens the day after the event and closes ``within`` days (or business days) later; it
is **done** when an encounter of the listed kinds starts in it (or an outreach entry with a listed
outcome is recorded in it), **missed** when it has closed without one, and **due** while it is
open. Evaluated as of a day (the last day of the selected month, or today if earlier).
"""

from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select

from core.config import config_path, load_toml
from core.config.catalog import load_catalog
from core.store.models import Encounter, Outreach, Patient, SubgroupAssignment
from core.store.months import as_month, month_end
from core.store.queries import among, read_frame, read_sql_frame
from core.views.worklist import member_ids

TRANSITIONS_PATH = config_path("transitions.toml")
UNITS = ("days", "business_days")
COLUMNS = ["patient_id", "name", "subgroup", "event", "event_date", "follow_up", "deadline", "status", "done_on"]


@dataclass(frozen=True)
class EventRule:
    id: str
    label: str
    kinds: tuple[str, ...]
    date: str


@dataclass(frozen=True)
class FollowUp:
    id: str
    label: str
    events: tuple[str, ...]
    within: int
    unit: str
    subgroups: tuple[str, ...]
    kinds: tuple[str, ...]
    outreach: tuple[str, ...]

    def applies_to(self, subgroup) -> bool:
        return "all" in self.subgroups or subgroup in self.subgroups


@dataclass(frozen=True)
class TransitionRules:
    look_back_days: int
    events: tuple[EventRule, ...]
    follow_ups: tuple[FollowUp, ...]


@cache
def load_transition_rules(path: Path = TRANSITIONS_PATH) -> TransitionRules:
    raw = load_toml(path)
    kinds = load_catalog().activity_kinds
    events = tuple(EventRule(e["id"], e["label"], tuple(e["kinds"]), e["date"]) for e in raw["event"])
    ids = {e.id for e in events}
    follow_ups = []
    for f in raw["follow_up"]:
        where = f"{path.name}: follow_up {f.get('id')!r}"
        if f["unit"] not in UNITS:
            raise ValueError(f"{where}: unit must be one of {UNITS}")
        if not set(f["events"]) <= ids:
            raise ValueError(f"{where}: unknown events {sorted(set(f['events']) - ids)}")
        unknown = set(f["kinds"]) - set(kinds)
        if unknown:
            raise ValueError(f"{where}: unknown activity kinds {sorted(unknown)}")
        follow_ups.append(FollowUp(f["id"], f["label"], tuple(f["events"]), int(f["within"]), f["unit"],
                                   tuple(f["subgroups"]), tuple(f["kinds"]), tuple(f.get("outreach", ()))))  # fmt: skip
    for e in events:
        if e.date not in ("start_date", "end_date") or not set(e.kinds) <= set(kinds):
            raise ValueError(f"{path.name}: event {e.id!r} needs a date of start_date/end_date and known kinds")
    return TransitionRules(int(raw["settings"]["look_back_days"]), events, tuple(follow_ups))


def deadline(event_day: date, within: int, unit: str) -> date:
    """The last day of a window opening the day after ``event_day``: ``within`` calendar days, or
    ``within`` business days (Monday-Friday) later."""
    if unit == "days":
        return event_day + timedelta(days=within)
    # Roll a weekend event back to the Friday before: the Monday after is then business day 1.
    return np.busday_offset(np.datetime64(event_day, "D"), within, roll="backward").astype(date)


def follow_ups(events: pd.DataFrame, contacts: pd.DataFrame, outreach: pd.DataFrame, as_of: date,
               rules: TransitionRules | None = None) -> pd.DataFrame:  # fmt: skip
    """One row per event and follow-up window that applies (grain: patient_id, event, event_date,
    follow_up). ``events``: patient_id, name, subgroup, event_id, event_date. ``contacts``: patient_id,
    kind, start_date (encounters). ``outreach``: patient_id, day, outcome. Status done / due / missed;
    done_on the first day a qualifying contact happened in the window.

    Each patient's contacts and outreach are grouped once and looked up per event (a team of
    11,982 patients at 1,000,000: 2,400 windows against every contact row each time took most of
    the 3 s of its transitions)."""
    rules = rules or load_transition_rules()
    labels = {e.id: e.label for e in rules.events}
    out = []
    contacted = _by_patient(contacts["patient_id"], contacts["kind"], pd.to_datetime(contacts["start_date"]).dt.date)
    reached = (_by_patient(outreach["patient_id"], outreach["outcome"], pd.to_datetime(outreach["day"]).dt.date)
               if len(outreach) else {})  # fmt: skip
    for ev in events.itertuples(index=False):
        theirs, their_outreach = contacted.get(ev.patient_id, ()), reached.get(ev.patient_id, ())
        for fu in rules.follow_ups:
            if ev.event_id not in fu.events or not fu.applies_to(ev.subgroup):
                continue
            end = deadline(ev.event_date, fu.within, fu.unit)
            last = min(end, as_of)
            days = [d for kind, d in theirs if kind in fu.kinds and ev.event_date < d <= last]
            if fu.outreach:
                days += [d for outcome, d in their_outreach if outcome in fu.outreach and ev.event_date <= d <= last]
            done_on = min(days) if days else None
            status = "done" if done_on else ("missed" if end < as_of else "due")
            out.append((ev.patient_id, ev.name, ev.subgroup, labels[ev.event_id], ev.event_date, fu.label, end, status, done_on))
    frame = pd.DataFrame(out, columns=COLUMNS)
    order = frame["status"].map({"due": 0, "missed": 1, "done": 2})
    return frame.assign(_o=order).sort_values(["_o", "deadline", "name"], kind="stable").drop(columns="_o").reset_index(drop=True)


def _by_patient(patients: pd.Series, what: pd.Series, days: pd.Series) -> dict[str, list[tuple]]:
    """Each patient's (what, day) pairs, in the rows' order."""
    out: dict[str, list[tuple]] = {}
    for patient, value, day in zip(patients.tolist(), what.tolist(), days.tolist(), strict=True):
        out.setdefault(patient, []).append((value, day))
    return out


def team_transitions(engine: Engine, month: date, team_ids: tuple[str, ...], subgroup: str | None = None,
                     today: date | None = None) -> pd.DataFrame:  # fmt: skip
    """The follow-ups (:func:`follow_ups`) of the discharges and ED visits of the last
    ``look_back_days`` up to the month's last day (or ``today`` if earlier) of the patients of the
    teams in ``month`` (and subgroup)."""
    rules = load_transition_rules()
    month = as_month(month)
    as_of = min(month_end(month), today or date.today())
    first = as_of - timedelta(days=rules.look_back_days)
    members = member_ids(engine, month, tuple(team_ids), subgroup)
    dialect = engine.dialect.name
    e = Encounter
    rows = []
    for ev in rules.events:
        column = getattr(e, ev.date)
        found = read_sql_frame(engine, select(e.patient_id, column.label("event_date")).where(
            among(e.patient_id, members, dialect), e.kind.in_(ev.kinds), column > first, column <= as_of))  # fmt: skip
        rows.append(found.assign(event_id=ev.id))
    events = pd.concat(rows, ignore_index=True).drop_duplicates()
    if events.empty:
        return pd.DataFrame(columns=COLUMNS)
    events["event_date"] = pd.to_datetime(events["event_date"]).dt.date
    # the rest is read for the patients with an event only: 13 of a 9,864-patient list at 100,000
    theirs = sorted(set(events["patient_id"].tolist()))
    sa = SubgroupAssignment
    who = read_sql_frame(engine, select(Patient.patient_id, (Patient.family_name + ", " + Patient.given_name).label("name"),
                                        sa.subgroup).outerjoin(sa, (sa.patient_id == Patient.patient_id) & (sa.month == month))
                         .where(among(Patient.patient_id, theirs, dialect)))  # fmt: skip
    events = events.merge(who, on="patient_id")
    kinds = sorted({k for f in rules.follow_ups for k in f.kinds})
    contacts = read_sql_frame(engine, select(e.patient_id, e.kind, e.start_date).where(
        among(e.patient_id, theirs, dialect), e.kind.in_(kinds), e.start_date > first, e.start_date <= as_of))  # fmt: skip
    o = Outreach
    outreach = read_frame(engine, select(o.patient_id, o.at.label("day"), o.outcome).where(among(o.patient_id, theirs, dialect)))
    return follow_ups(events, contacts, outreach, as_of, rules)
