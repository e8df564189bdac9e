"""The users table: who may sign in, with which role and scope. Used by the Admin page and the CLI.

A signed-in identity is matched on the provider's subject (the ``sub`` claim, stable and
unique per provider, OpenID Connect Core 1.0 section 2), or on an email only when the provider
says it is verified (``email_verified`` true, section 5.1). A row added by email is bound to the
subject of its first verified sign-in; from then on only that subject opens it, whatever the
email claim says.
"""

import pandas as pd
from sqlalchemy import Engine, select
from sqlmodel import Session

from core.access.audit import record_event
from core.access.policy import ROLES, Scope, split_ids
from core.store.models import User
from core.store.queries import read_frame

SUBJECT_PREFIX = "sub:"


def email_is_verified(claim) -> bool:
    """Whether an ``email_verified`` claim says yes (a JSON boolean; a few providers send the string)."""
    return claim is True or (isinstance(claim, str) and claim.strip().lower() == "true")


def find_user(engine: Engine, *, subject: str | None, email: str | None, email_verified=None) -> User | None:
    """The active user row of a signed-in identity, or None.

    1. The row bound to ``subject`` (column ``subject``), whatever the email.
    2. Else, when ``email_verified`` is true, the row keyed by the email, if it is bound to no
       subject yet (it is bound to ``subject`` now) or to this one. A row bound to another
       subject is never opened by an email.
    """
    with Session(engine) as session:
        if subject:
            user = session.exec(select(User).where(User.subject == subject)).scalars().first()
            if user is not None:
                return _detached(session, user) if user.active else None
        if not (email and email_is_verified(email_verified)):
            return None
        user = session.get(User, email.strip().lower())
        if user is None or not user.active or (user.subject and user.subject != subject):
            return None
        if subject and not user.subject:
            user.subject = subject
            session.add(user)
            session.commit()
            session.refresh(user)
        return _detached(session, user)


def _detached(session: Session, user: User) -> User:
    session.expunge(user)
    return user


def save_user(
    engine: Engine, user_key: str, role: str, *, name: str = "", practice_ids: str = "", team_ids: str = "",
    patient_level: bool = False, active: bool = True, by: Scope | None = None,
) -> User:  # fmt: skip
    """Create or update a user. Keys are lower-cased emails or ``sub:<subject>`` (bound to that subject).
    ``by``: who made the change, written to the audit log (the Admin page and the CLI pass it)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    key = user_key.strip() if user_key.strip().startswith(SUBJECT_PREFIX) else user_key.strip().lower()
    if not key or key == SUBJECT_PREFIX:
        raise ValueError("a user needs an email or sub:<subject>")
    with Session(engine) as session:
        user = session.get(User, key) or User(user_key=key, role=role)
        if key.startswith(SUBJECT_PREFIX):
            subject = key.removeprefix(SUBJECT_PREFIX)
            other = session.exec(select(User).where(User.subject == subject, User.user_key != key)).scalars().first()
            if other is not None:
                raise ValueError(f"subject {subject} already belongs to {other.user_key}")
            user.subject = subject
        user.name, user.role, user.active, user.patient_level = name, role, active, patient_level
        user.practice_ids, user.team_ids = ",".join(split_ids(practice_ids)), ",".join(split_ids(team_ids))
        session.add(user)
        session.commit()
        session.refresh(user)
        session.expunge(user)
    if by is not None:
        record_event(engine, by, "user_change", key, f"role={role}; teams={user.team_ids or '-'}; "
                     f"practices={user.practice_ids or '-'}; patient_level={patient_level}; active={active}")  # fmt: skip
    return user


def deactivate_user(engine: Engine, user_key: str, by: Scope | None = None) -> bool:
    with Session(engine) as session:
        user = session.get(User, user_key)
        if user is None:
            return False
        user.active = False
        session.add(user)
        session.commit()
    if by is not None:
        record_event(engine, by, "user_change", user_key, "deactivated")
    return True


def list_users(engine: Engine) -> pd.DataFrame:
    return read_frame(engine, select(*User.__table__.columns).order_by(User.role, User.user_key))
