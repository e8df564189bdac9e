"""Roles, page permissions, the page registry, row-level scope and patient-record access (the HIPAA
minimum-necessary standard, 45 CFR 164.502(b): each role receives only the rows its work needs).
Pure; no I/O but the rules file.

A user's scope is resolved once per request from the users table and the organisation:
the teams whose rows they may receive. Store functions take ``scope.team_ids`` and filter in
SQL, so no URL, query parameter or widget value can widen it.
"""

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pandas as pd

from core.config import config_path, load_toml

ACCESS_PATH = config_path("access.toml")
ROLES = ("clinician", "team_leader", "executive", "admin")
PATIENT_MONTHS = ("attributed", "all")
TEAM_ROLES = ("clinician", "team_leader")
ACTIONS = ("override_subgroup", "rebuild_derive")  # access.toml [actions.<id>]


class AccessRulesError(ValueError):
    """The access rules file is invalid."""


@dataclass(frozen=True)
class PageRule:
    """One page of the dashboard (access.toml [pages.<id>]): who may open it and where it sits."""

    page_id: str
    title: str
    roles: tuple[str, ...]
    patient_level: bool
    file: str
    section: str
    icon: str
    hidden: bool


@dataclass(frozen=True)
class AccessRules:
    role_labels: dict[str, str]
    patient_level_default: dict[str, bool]
    home: dict[str, str]
    pages: dict[str, PageRule]
    patient_months: dict[str, str]
    grace_months: int
    actions: dict[str, tuple[str, ...]]

    def record_access(self, role: str) -> tuple[int, bool]:
        """(grace months, all months) of a patient record for ``role``: the arguments of
        ``core.store.queries.patient_record``."""
        return self.grace_months, self.patient_months[role] == "all"


@dataclass(frozen=True)
class Scope:
    """What one signed-in user may see.

    ``team_ids`` are the teams whose patient rows and cells they may receive; ``network`` is
    True when that is every team (executives and admins without a narrower list).
    """

    user_key: str
    name: str
    role: str
    team_ids: tuple[str, ...]
    practice_ids: tuple[str, ...]
    patient_level: bool
    network: bool
    demo: bool = False

    def describe(self) -> str:
        teams = "network" if self.network else ",".join(self.team_ids) or "none"
        return f"role={self.role}; teams={teams}; patient_level={self.patient_level}"


@cache
def load_access_rules(path: Path = ACCESS_PATH) -> AccessRules:
    raw = load_toml(path)
    roles = raw.get("roles", {})
    if set(roles) != set(ROLES):
        raise AccessRulesError(f"{path.name}: roles must be exactly {', '.join(ROLES)}; found {', '.join(sorted(roles))}")
    pages = {}
    for page_id, spec in raw.get("pages", {}).items():
        unknown = set(spec.get("roles", [])) - set(ROLES)
        if unknown:
            raise AccessRulesError(f"{path.name}: page {page_id!r} names unknown roles {sorted(unknown)}")
        missing = {"title", "roles", "file", "section", "icon"} - set(spec)
        if missing:
            raise AccessRulesError(f"{path.name}: page {page_id!r} needs {', '.join(sorted(missing))}")
        pages[page_id] = PageRule(page_id, spec["title"], tuple(spec["roles"]), bool(spec.get("patient_level", False)),
                                  str(spec["file"]), str(spec["section"]), str(spec["icon"]),
                                  bool(spec.get("hidden", False)))  # fmt: skip
    for role, spec in roles.items():
        if spec.get("home") not in pages or role not in pages[spec["home"]].roles:
            raise AccessRulesError(f"{path.name}: home page of {role!r} must be a page the role may open")
        if spec.get("patient_months", "attributed") not in PATIENT_MONTHS:
            raise AccessRulesError(f"{path.name}: patient_months of {role!r} must be one of {', '.join(PATIENT_MONTHS)}")
    actions = raw.get("actions", {})
    if set(actions) != set(ACTIONS):
        raise AccessRulesError(f"{path.name}: [actions] must be exactly {', '.join(ACTIONS)}; found {', '.join(sorted(actions))}")
    for action, spec in actions.items():
        unknown = set(spec.get("roles", [])) - set(ROLES)
        if unknown or not isinstance(spec.get("roles"), list):
            raise AccessRulesError(f"{path.name}: action {action!r} needs roles, a list of {', '.join(ROLES)}")
    grace = raw.get("patient_access", {}).get("grace_months", 0)
    if not isinstance(grace, int) or isinstance(grace, bool) or grace < 0:
        raise AccessRulesError(f"{path.name}: [patient_access] grace_months must be a whole number >= 0")
    return AccessRules(
        role_labels={r: v["label"] for r, v in roles.items()},
        patient_level_default={r: bool(v["patient_level_default"]) for r, v in roles.items()},
        home={r: v["home"] for r, v in roles.items()},
        pages=pages,
        patient_months={r: v.get("patient_months", "attributed") for r, v in roles.items()},
        grace_months=grace,
        actions={a: tuple(v["roles"]) for a, v in actions.items()},
    )


def split_ids(text: str) -> tuple[str, ...]:
    return tuple(sorted({part.strip() for part in (text or "").split(",") if part.strip()}))


def resolve_scope(
    *, user_key: str, name: str, role: str, practice_ids: str, team_ids: str, patient_level: bool | None,
    organisation: pd.DataFrame, rules: AccessRules | None = None, demo: bool = False,
) -> Scope:  # fmt: skip
    """The scope of a user row against the organisation (columns practice_id, team_id).

    Clinicians and team leaders get exactly the teams listed plus the teams of the practices
    listed. Executives and admins get the same, or the whole network when both lists are empty.
    ``patient_level`` None means the role's default.
    """
    rules = rules or load_access_rules()
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    practices, teams = split_ids(practice_ids), split_ids(team_ids)
    known = organisation[["practice_id", "team_id"]]
    chosen = set(teams) & set(known["team_id"]) | set(known.loc[known["practice_id"].isin(practices), "team_id"])
    network = role not in TEAM_ROLES and not practices and not teams
    if network:
        chosen = set(known["team_id"])
    grant = rules.patient_level_default[role] if patient_level is None else bool(patient_level)
    return Scope(user_key, name, role, tuple(sorted(chosen)), practices, grant, network, demo)


def can_open(scope: Scope, page_id: str, rules: AccessRules | None = None) -> bool:
    """Whether the user may open the page: role allowed, and patient-level access where the page needs it."""
    rules = rules or load_access_rules()
    page = rules.pages.get(page_id)
    if page is None or scope.role not in page.roles:
        return False
    return scope.patient_level or not page.patient_level


def can_act(scope: Scope, action: str, rules: AccessRules | None = None) -> bool:
    """Whether the user's role may take ``action`` (one of :data:`ACTIONS`; access.toml [actions])."""
    rules = rules or load_access_rules()
    return scope.role in rules.actions[action]


def allowed_pages(scope: Scope, rules: AccessRules | None = None) -> list[str]:
    rules = rules or load_access_rules()
    return [page_id for page_id in rules.pages if can_open(scope, page_id, rules)]


def home_page(scope: Scope, rules: AccessRules | None = None) -> str | None:
    """The page a user lands on: the role's home, else the first page they may open."""
    rules = rules or load_access_rules()
    pages = allowed_pages(scope, rules)
    home = rules.home[scope.role]
    return home if home in pages else next(iter(pages), None)


def page_openers(rules: AccessRules | None = None) -> list[tuple[str, str]]:
    """(role, page file) for every page, opened by the first role its rule lists: the one list
    of pages that the page-render benchmark and the smoke tests walk."""
    rules = rules or load_access_rules()
    return [(page.roles[0], page.file) for page in rules.pages.values()]

