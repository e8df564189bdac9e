"""Subgroup rules as data: parse and validate a rules file into a :class:`RuleSet`.

The rules live in ``core/config/subgroup_rules.toml`` (a practice may save its own copy, see
:func:`active_rules_path`). Each rule names a subgroup and conditions on the inputs of
:mod:`core.derive.subgroups.inputs`; the first rule that matches a patient-month wins, and the
last rule must be a catch-all so every patient-month gets a subgroup.
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from core.config import PROJECT_ROOT, config_path, parse_toml
from core.derive.risk import CodeLists, load_code_lists

DEFAULT_RULES_PATH = config_path("subgroup_rules.toml")
SAVED_RULES_PATH = PROJECT_ROOT / "data" / "subgroup_rules.toml"


class RulesError(ValueError):
    """The rules file is invalid; the message names the rule and the field."""


@dataclass(frozen=True)
class Subgroup:
    subgroup_id: str
    name: str
    colour: str = ""  # chart colour (#RRGGBB); empty = the chart palette picks one

    @property
    def id(self) -> str:
        return self.subgroup_id


@dataclass(frozen=True)
class Clause:
    """Conditions that must all hold: ((key, value), ...)."""

    conditions: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Rule:
    rule_id: str
    subgroup: str
    name: str
    conditions: tuple[tuple[str, Any], ...] = ()
    all_of: tuple[Clause, ...] = ()
    any_of: tuple[Clause, ...] = ()
    reason_label: str = ""

    @property
    def is_catch_all(self) -> bool:
        return not (self.conditions or self.all_of or self.any_of)

    def describe(self) -> str:
        """The rule's conditions as one line of text."""

        def clause(conds) -> str:
            return " and ".join(f"{k} = {_show(v)}" for k, v in conds)

        parts = [clause(self.conditions)] if self.conditions else []
        parts += [clause(c.conditions) for c in self.all_of]
        if self.any_of:
            parts.append("(" + " or ".join(clause(c.conditions) for c in self.any_of) + ")")
        return " and ".join(parts) or "everyone else"


@dataclass(frozen=True)
class History:
    """How much history a patient-month needs before its subgroup is taken at face value.

    A month of the ``lookback_months`` ending with the patient-month counts when the patient was
    attributed (enrolled) in it and something was already recorded of the patient (an encounter
    or claim, a condition or a measurement, on or before that month). With fewer than
    ``min_months`` such months the patient-month is marked ``thin_history``: its subgroup is
    still the first rule that matches what there is, with the note saying it rests on little.
    """

    lookback_months: int = 6
    min_months: int = 3

    def note(self, months: int) -> str:
        """The text shown with a thin-history patient-month."""
        return f"Not enough history: {months} of {self.lookback_months} months of data"


@dataclass(frozen=True)
class RuleSet:
    subgroups: tuple[Subgroup, ...]
    rules: tuple[Rule, ...]
    history: History = History()

    @property
    def subgroup_ids(self) -> tuple[str, ...]:
        return tuple(s.subgroup_id for s in self.subgroups)

    @property
    def subgroup_names(self) -> dict[str, str]:
        return {s.subgroup_id: s.name for s in self.subgroups}

    @property
    def subgroup_colours(self) -> dict[str, str]:
        """Subgroup id -> chart colour, for the subgroups whose rules give one."""
        return {s.subgroup_id: s.colour for s in self.subgroups if s.colour}

    def to_frame(self) -> pd.DataFrame:
        """One row per rule in order: order, rule_id, subgroup, subgroup_name, rule_name, conditions."""
        names = self.subgroup_names
        return pd.DataFrame(
            [(i + 1, r.rule_id, r.subgroup, names[r.subgroup], r.name, r.describe()) for i, r in enumerate(self.rules)],
            columns=["order", "rule_id", "subgroup", "subgroup_name", "rule_name", "conditions"],
        )


def _show(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


# Condition keys: key -> value type. Meanings in core.derive.subgroups.inputs and the rules file.
CONDITION_TYPES: dict[str, str] = {
    "min_age": "int",
    "max_age": "int",
    "any_frailty": "bool",
    "any_disability": "bool",
    "min_chronic_conditions": "int",
    "max_chronic_conditions": "int",
    "risk_score_top_fraction": "fraction",
    "min_risk_score": "number",
    "min_payment_hccs": "int",
    "min_acute_events_12m": "int",
    "min_admissions_12m": "int",
    "min_ed_visits_12m": "int",
    "bmi_min": "number",
    "bmi_max": "number",
    "sbp_min": "number",
    "sbp_max": "number",
    "hba1c_min": "number",
    "hba1c_max": "number",
    "ldl_min": "number",
    "ldl_max": "number",
    "tobacco_use": "bool",
    "risk_factor_codes": "risk_factor_list",
}
RULE_KEYS = {"id", "subgroup", "name", "reason_label", "any_of", "all_of"}


def _check_value(where: str, key: str, value, code_lists: CodeLists):
    kind = CONDITION_TYPES[key]
    if kind == "bool":
        if not isinstance(value, bool):
            raise RulesError(f"{where}: {key} must be true or false, got {value!r}")
        return value
    if kind == "risk_factor_list":
        known = code_lists.group_ids("risk_factor")
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise RulesError(f"{where}: {key} must be a non-empty list of risk-factor groups {list(known)}")
        unknown = [v for v in value if v not in known]
        if unknown:
            raise RulesError(f"{where}: {key} has unknown risk-factor groups {unknown}; known: {list(known)}")
        return tuple(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RulesError(f"{where}: {key} must be a number, got {value!r}")
    if kind == "int":
        if not isinstance(value, int) or value < 0:
            raise RulesError(f"{where}: {key} must be a whole number >= 0, got {value!r}")
        return value
    if kind == "fraction" and not 0 < value < 1:
        raise RulesError(f"{where}: {key} must be between 0 and 1 (e.g. 0.10 for the top decile), got {value!r}")
    return float(value)


def _parse_conditions(where: str, table: dict, code_lists: CodeLists, allowed_extra: set[str]) -> tuple:
    unknown = set(table) - set(CONDITION_TYPES) - allowed_extra
    if unknown:
        raise RulesError(f"{where}: unknown key(s) {sorted(unknown)}; conditions are {sorted(CONDITION_TYPES)}")
    return tuple((k, _check_value(where, k, v, code_lists)) for k, v in table.items() if k in CONDITION_TYPES)


def _parse_clauses(where: str, key: str, value, code_lists: CodeLists) -> tuple[Clause, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(c, dict) and c for c in value):
        raise RulesError(f"{where}: {key} must be a non-empty list of condition tables, e.g. [{{ min_age = 75 }}]")
    return tuple(Clause(_parse_conditions(f"{where} {key}[{i}]", c, code_lists, set())) for i, c in enumerate(value))


def parse_rules(text: str, source: str = "rules", code_lists: CodeLists | None = None) -> RuleSet:
    """Parse and validate the TOML text of a rules file. Raises :class:`RulesError`."""
    code_lists = code_lists or load_code_lists()
    raw = parse_toml(text, source, RulesError)
    extra = set(raw) - {"subgroups", "rules", "history"}
    if extra:
        raise RulesError(f"{source}: unknown top-level key(s) {sorted(extra)}; expected [[subgroups]], [[rules]] and [history]")
    history = _parse_history(source, raw.get("history", {}))
    subgroups = _parse_subgroups(source, raw.get("subgroups", []))
    ids = [s.subgroup_id for s in subgroups]
    rules: list[Rule] = []
    for i, r in enumerate(raw.get("rules", [])):
        rules.append(_parse_rule(source, i, r, ids, rules, code_lists))
    if not rules:
        raise RulesError(f"{source}: no [[rules]] defined")
    if not rules[-1].is_catch_all:
        raise RulesError(
            f"{source}: the last rule {rules[-1].rule_id!r} has conditions; the last rule must be a catch-all "
            'without conditions (e.g. subgroup = "healthy"), so every patient-month gets a subgroup'
        )
    return RuleSet(tuple(subgroups), tuple(rules), history)


def _parse_history(source: str, raw) -> History:
    where = f"{source}: [history]"
    if not isinstance(raw, dict) or set(raw) - {"lookback_months", "min_months"}:
        raise RulesError(f"{where}: has only `lookback_months` and `min_months`, got {sorted(raw) if isinstance(raw, dict) else raw!r}")
    default = History()
    lookback, minimum = raw.get("lookback_months", default.lookback_months), raw.get("min_months", default.min_months)
    for key, value in (("lookback_months", lookback), ("min_months", minimum)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise RulesError(f"{where}: {key} must be a whole number >= 0, got {value!r}")
    if not 1 <= lookback <= 24 or minimum > lookback:
        raise RulesError(f"{where}: lookback_months must be 1-24 and min_months at most lookback_months, got {lookback} and {minimum}")
    return History(lookback, minimum)


def _parse_subgroups(source: str, raw: list) -> list[Subgroup]:
    subgroups = []
    for i, sg in enumerate(raw):
        where = f"{source}: subgroup #{i + 1}"
        if not isinstance(sg, dict) or set(sg) - {"id", "name", "colour"}:
            raise RulesError(f"{where}: a subgroup has only `id`, `name` and `colour`, got {sorted(sg) if isinstance(sg, dict) else sg!r}")
        if not isinstance(sg.get("id"), str) or not sg["id"] or not isinstance(sg.get("name"), str) or not sg["name"]:
            raise RulesError(f"{where}: needs a text `id` and `name`")
        if not re.fullmatch(r"(#[0-9A-Fa-f]{6})?", str(sg.get("colour", ""))):
            raise RulesError(f"{where}: colour must be #RRGGBB, got {sg['colour']!r}")
        subgroups.append(Subgroup(sg["id"], sg["name"], str(sg.get("colour", ""))))
    ids = [s.subgroup_id for s in subgroups]
    if not subgroups:
        raise RulesError(f"{source}: no [[subgroups]] defined")
    if len(set(ids)) != len(ids):
        raise RulesError(f"{source}: duplicate subgroup ids {sorted({i for i in ids if ids.count(i) > 1})}")
    return subgroups


def _parse_rule(source: str, i: int, r, ids: list[str], before: list[Rule], code_lists: CodeLists) -> Rule:
    """Rule number ``i`` (from 0) of the file, checked against the subgroup ids and the rules ``before`` it."""
    rid = r.get("id") if isinstance(r, dict) else None
    where = f"{source}: rule {rid!r}" if isinstance(rid, str) and rid else f"{source}: rule #{i + 1}"
    if not isinstance(rid, str) or not rid:
        raise RulesError(f"{where}: needs a text `id`")
    if any(x.rule_id == rid for x in before):
        raise RulesError(f"{where}: duplicate rule id")
    if r.get("subgroup") not in ids:
        raise RulesError(f"{where}: subgroup {r.get('subgroup')!r} is not one of the [[subgroups]] {ids}")
    for key in ("name", "reason_label"):
        if key in r and not isinstance(r[key], str):
            raise RulesError(f"{where}: {key} must be text")
    conditions = _parse_conditions(where, r, code_lists, RULE_KEYS)
    all_of = _parse_clauses(where, "all_of", r["all_of"], code_lists) if "all_of" in r else ()
    any_of = _parse_clauses(where, "any_of", r["any_of"], code_lists) if "any_of" in r else ()
    if before and before[-1].is_catch_all:
        raise RulesError(f"{where}: comes after the catch-all rule {before[-1].rule_id!r}, so it could never match")
    return Rule(rid, r["subgroup"], r.get("name", rid), conditions, all_of, any_of, r.get("reason_label", ""))


def load_rules(path: Path = DEFAULT_RULES_PATH) -> RuleSet:
    """Load and validate a rules file. Raises :class:`RulesError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"{path}: cannot read the rules file: {exc}") from exc
    return parse_rules(text, str(path))


def active_rules_path(saved: Path = SAVED_RULES_PATH) -> Path:
    """The practice's saved rules file if there is one, else the shipped defaults."""
    return saved if saved.exists() else DEFAULT_RULES_PATH


def save_rules(text: str, path: Path = SAVED_RULES_PATH) -> RuleSet:
    """Validate rules text and write it to ``path`` (only when valid). Returns the rules."""
    rules = parse_rules(text, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return rules
