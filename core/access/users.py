"""The users table: who may sign in, with which role and scope. Used by the Admin page and the CLI."""

import pandas as pd
from sqlalchemy import Engine, select
from sqlmodel import Session

from core.access.policy import ROLES, split_ids
from core.store.models import User
from core.store.queries import read_frame


def user_key_for(email: str | None, subject: str | None) -> list[str]:
    """The keys a signed-in identity may be stored under, most specific first."""
    keys = []
    if email:
        keys.append(email.strip().lower())
    if subject:
        keys.append(f"sub:{subject}")
    return keys


def find_user(engine: Engine, email: str | None, subject: str | None) -> User | None:
    """The active user row for an identity (by email, else by subject), or None."""
    with Session(engine) as session:
        for key in user_key_for(email, subject):
            user = session.get(User, key)
            if user is not None and user.active:
                session.expunge(user)
                return user
    return None


def save_user(
    engine: Engine, user_key: str, role: str, *, name: str = "", practice_ids: str = "", team_ids: str = "",
    patient_level: bool = False, active: bool = True,
) -> User:  # fmt: skip
    """Create or update a user. Keys are lower-cased emails or ``sub:<subject>``."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    key = user_key if user_key.startswith("sub:") else user_key.strip().lower()
    if not key or key == "sub:":
        raise ValueError("a user needs an email or sub:<subject>")
    with Session(engine) as session:
        user = session.get(User, key) or User(user_key=key, role=role)
        user.name, user.role, user.active, user.patient_level = name, role, active, patient_level
        user.practice_ids, user.team_ids = ",".join(split_ids(practice_ids)), ",".join(split_ids(team_ids))
        session.add(user)
        session.commit()
        session.refresh(user)
        session.expunge(user)
        return user


def deactivate_user(engine: Engine, user_key: str) -> bool:
    with Session(engine) as session:
        user = session.get(User, user_key)
        if user is None:
            return False
        user.active = False
        session.add(user)
        session.commit()
        return True


def list_users(engine: Engine) -> pd.DataFrame:
    return read_frame(engine, select(*User.__table__.columns).order_by(User.role, User.user_key))
