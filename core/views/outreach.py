"""Outreach log: a clinician records a contact attempt or its outcome for a patient (call,
message, letter, in person; reached, no answer, visit booked, declined), with who and when.

Channels, outcomes and the "reached this cycle" rule are data (``core/config/outreach.toml``).
Every entry is audited (action ``outreach``). Only users with patient-level access to a team that
has the patient in its care may record one (:func:`core.store.queries.patient_in_scope`).
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from core.access.audit import record_event
from core.access.policy import Scope
from core.config import config_path, load_toml
from core.store.models import Outreach, utc_now
from core.store.queries import among, patient_in_scope, read_frame

OUTREACH_PATH = config_path("outreach.toml")
MAX_NOTE = 1000


@dataclass(frozen=True)
class OutreachRules:
    channels: dict[str, str]
    outcomes: dict[str, str]
    reached_outcomes: tuple[str, ...]
    cycle_days: int


@cache
def load_outreach_rules(path: Path = OUTREACH_PATH) -> OutreachRules:
    raw = load_toml(path)
    reached = tuple(raw["settings"]["reached_outcomes"])
    unknown = set(reached) - set(raw["outcomes"])
    if unknown:
        raise ValueError(f"{path.name}: reached_outcomes {sorted(unknown)} are not outcomes")
    return OutreachRules(dict(raw["channels"]), dict(raw["outcomes"]), reached, int(raw["settings"]["cycle_days"]))


def record_outreach(engine: Engine, scope: Scope, patient_id: str, channel: str, outcome: str, note: str = "",
                    at: datetime | None = None) -> int:  # fmt: skip
    """Save one outreach entry by ``scope``'s user and audit it; returns its id. Raises
    PermissionError outside the user's care scope and ValueError for an unknown channel/outcome."""
    rules = load_outreach_rules()
    if channel not in rules.channels:
        raise ValueError(f"unknown channel {channel!r} (one of: {', '.join(rules.channels)})")
    if outcome not in rules.outcomes:
        raise ValueError(f"unknown outcome {outcome!r} (one of: {', '.join(rules.outcomes)})")
    if not scope.patient_level or not patient_in_scope(engine, patient_id, None if scope.network else scope.team_ids):
        raise PermissionError("outreach can be recorded only for a patient in the care of your teams")
    with Session(engine) as session:
        entry = Outreach(patient_id=patient_id, at=at or utc_now(), user_key=scope.user_key, channel=channel,
                         outcome=outcome, note=" ".join(str(note).split())[:MAX_NOTE])  # fmt: skip
        session.add(entry)
        session.commit()
        outreach_id = int(entry.outreach_id)
    record_event(engine, scope, "outreach", patient_id, f"{channel} {outcome} (entry {outreach_id})")
    return outreach_id


def patient_outreach(engine: Engine, patient_id: str) -> pd.DataFrame:
    """The patient's outreach log, newest first: at, user_key, channel, outcome, note (labels)."""
    o = Outreach
    frame = read_frame(engine, select(o.at, o.user_key, o.channel, o.outcome, o.note)
                       .where(o.patient_id == patient_id).order_by(o.at.desc(), o.outreach_id.desc()))  # fmt: skip
    rules = load_outreach_rules()
    return frame.assign(channel=frame["channel"].map(lambda c: rules.channels.get(c, c)),
                        outcome=frame["outcome"].map(lambda c: rules.outcomes.get(c, c)))  # fmt: skip


def last_outreach(engine: Engine, members: list[str], now: datetime | None = None) -> pd.DataFrame:
    """Per patient of ``members`` (their ids) with any outreach (index patient_id): last_outreach
    (e.g. "Phone call: Reached, 3 Dec"), last_outreach_at, and reached_this_cycle (an outcome of
    ``reached_outcomes`` within the last ``cycle_days``)."""
    rules = load_outreach_rules()
    o = Outreach
    latest = select(o.patient_id, func.max(o.outreach_id).label("outreach_id")).where(among(o.patient_id, members, engine.dialect.name)).group_by(o.patient_id)
    last = read_frame(engine, select(o.patient_id, o.at, o.channel, o.outcome).where(o.outreach_id.in_(
        select(latest.subquery().c.outreach_id))))  # fmt: skip
    since = (now or datetime.now(UTC)) - timedelta(days=rules.cycle_days)
    reached = read_frame(engine, select(o.patient_id).distinct().where(
        among(o.patient_id, members, engine.dialect.name), o.outcome.in_(rules.reached_outcomes), o.at >= since))  # fmt: skip
    at = pd.to_datetime(last["at"], utc=True)
    text = (last["channel"].map(lambda c: rules.channels.get(c, c)) + ": " + last["outcome"].map(lambda c: rules.outcomes.get(c, c))
            + ", " + at.dt.strftime("%-d %b %Y"))  # fmt: skip
    out = pd.DataFrame({"last_outreach": text.to_numpy(), "last_outreach_at": at.to_numpy()}, index=last["patient_id"].to_numpy())
    out["reached_this_cycle"] = out.index.isin(set(reached["patient_id"]))
    return out
