"""Reference vocabularies (roles, activity kinds, cost categories, measurement codes) as data.

The vocabularies live in ``core/config/catalog.toml``; this module loads them once per call site.
"""

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from core.config import config_path, load_toml

CATALOG_PATH = config_path("catalog.toml")


@dataclass(frozen=True)
class ActivityKind:
    kind: str
    label: str
    internal: bool
    category: str


@dataclass(frozen=True)
class Code:
    code: str
    name: str
    unit: str
    min: float
    max: float


@dataclass(frozen=True)
class Catalog:
    sexes: tuple[str, ...]
    roles: dict[str, str]
    cost_categories: dict[str, str]
    activity_kinds: dict[str, ActivityKind]
    codes: dict[str, Code]
    dispositions: dict[str, str]

    def role_label(self, role: str) -> str:
        """A staff role as readers see it (``Registered nurse``), else its code in words."""
        return self.roles.get(role, role.replace("_", " "))


@cache
def load_catalog(path: Path = CATALOG_PATH) -> Catalog:
    """Load and check the catalogue file."""
    raw = load_toml(path)
    kinds = {k: ActivityKind(k, v["label"], bool(v["internal"]), v["category"]) for k, v in raw["activity_kinds"].items()}
    for kind in kinds.values():
        if kind.category not in raw["cost_categories"]:
            raise ValueError(f"{path}: activity kind {kind.kind!r} has unknown category {kind.category!r}")
    codes = {c: Code(c, v["name"], v["unit"], float(v["min"]), float(v["max"])) for c, v in raw["codes"].items()}
    return Catalog(tuple(raw["sexes"]), dict(raw["roles"]), dict(raw["cost_categories"]), kinds, codes,
                   dict(raw["dispositions"]))


# Well-known measurement codes, named once for the rest of the core.
HBA1C = "4548-4"
SYSTOLIC_BP = "8480-6"
DIASTOLIC_BP = "8462-4"
BMI = "39156-5"
PHQ9 = "44261-6"
GAD7 = "70274-6"
PROMIS_PHYSICAL = "71971-6"
PROMIS_MENTAL = "71969-0"
PAIN = "72514-3"
TOBACCO = "72166-2"
TOTAL_CHOLESTEROL = "2093-3"
LDL = "18262-6"
WORK_DAYS_MISSED = "local:work-days-missed"
