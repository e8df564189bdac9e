"""Needs-based subgroups: rules (data) -> monthly assignments with reasons, overrides, transitions.

DESIGN section 3 (after Porter, Pabo & Lee, "Redesigning primary care", Health Affairs 2013):
every attributed patient-month is assigned to the subgroup of the first rule that matches,
and every assignment carries its reason. The rules live in ``core/config/subgroup_rules.toml``
(a practice may save its own copy, see :func:`active_rules_path`).

Pipeline (pure frame functions, vectorised over the patient-months of a block of patients):
``compute_inputs`` (age, condition groups, risk factors, frailty, utilisation, risk score)
-> ``evaluate_rules`` (subgroup, rule, reason) -> ``apply_overrides``. ``assign_subgroups``
reads the store block by block (contiguous ranges of patient_id, in worker processes when it
can), runs the pipeline and replaces the stored rows in one transaction. Two things are not
per patient, so a first pass over the blocks gets them for the whole run: the month thresholds
of a top fraction of risk scores (from the count of each month's scores) and the period whose
smallest active code names a condition group in a reason (the first and last patient-month).

Input definitions (a patient-month is a row of ``attribution``; months are first days):
- ``age``: completed years on the first day of the month.
- condition groups (``core/config/code_lists.toml``): a condition counts in every month that
  overlaps [onset_date, resolved_date] (open-ended when not resolved). ``n_chronic`` is the
  number of distinct chronic groups (not codes) active; the reason names one code per group
  (the smallest code of that group the patient has in the period).
- frailty: any frailty group active; disability: any disability / institutional group active.
- risk factors: ``rf_<group>`` a risk-factor diagnosis active; ``bmi``, ``sbp``, ``hba1c``,
  ``ldl``: the latest value measured in the 12 months ending with the month (LOINC codes of
  ``core/config/catalog.py``); ``tobacco_use``: the latest tobacco-status value (LOINC 72166-2) in those
  12 months is 1 (current user). Missing data is missing (NaN): a threshold is then not met.
- utilisation: ED visits (kind ``ed_visit``) and admissions (kind ``admission``) starting in
  the 12 months ending with the month (that month and the 11 before it).
- ``risk_score``: the CMS-HCC score of the month's calendar year (``core/derive/risk.py``).
- deaths: no patient-month after the month of death.
"""

import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, String, delete, func, insert, select, type_coerce, update
from sqlalchemy.orm import aliased

from core.config import PROJECT_ROOT, catalog, config_path, parse_toml
from core.derive.blocks import process_pool
from core.derive.risk import DEFAULT_MODEL, CodeLists, format_icd10, load_code_lists, match_code_groups, risk_scores
from core.store.db import copy_rows
from core.store.models import (
    Attribution,
    Condition,
    Encounter,
    Measurement,
    Patient,
    RiskScore,
    SubgroupAssignment,
    SubgroupOverride,
)

DEFAULT_RULES_PATH = config_path("subgroup_rules.toml")
SAVED_RULES_PATH = PROJECT_ROOT / "data" / "subgroup_rules.toml"
REASON_MAX = 500
ACUTE_KINDS = {"ed_visit": "ed_visits_12m", "admission": "admissions_12m"}
LAB_CODES = {
    "bmi": catalog.BMI,
    "sbp": catalog.SYSTOLIC_BP,
    "hba1c": catalog.HBA1C,
    "ldl": catalog.LDL,
    "tobacco": catalog.TOBACCO,
}
LOOKBACK_MONTHS = 12


# --- rules as data ----------------------------------------------------------------------


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
class RuleSet:
    subgroups: tuple[Subgroup, ...]
    rules: tuple[Rule, ...]

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


# Condition keys: key -> value type. Meanings in the module docstring and the rules file.
CONDITION_TYPES: dict[str, str] = {
    "min_age": "int",
    "max_age": "int",
    "any_frailty": "bool",
    "any_disability": "bool",
    "min_chronic_conditions": "int",
    "max_chronic_conditions": "int",
    "risk_score_top_fraction": "fraction",
    "min_risk_score": "number",
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
    extra = set(raw) - {"subgroups", "rules"}
    if extra:
        raise RulesError(f"{source}: unknown top-level key(s) {sorted(extra)}; expected [[subgroups]] and [[rules]]")
    subgroups = []
    for i, sg in enumerate(raw.get("subgroups", [])):
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
    rules: list[Rule] = []
    for i, r in enumerate(raw.get("rules", [])):
        rid = r.get("id") if isinstance(r, dict) else None
        where = f"{source}: rule {rid!r}" if isinstance(rid, str) and rid else f"{source}: rule #{i + 1}"
        if not isinstance(rid, str) or not rid:
            raise RulesError(f"{where}: needs a text `id`")
        if any(x.rule_id == rid for x in rules):
            raise RulesError(f"{where}: duplicate rule id")
        if r.get("subgroup") not in ids:
            raise RulesError(f"{where}: subgroup {r.get('subgroup')!r} is not one of the [[subgroups]] {ids}")
        for key in ("name", "reason_label"):
            if key in r and not isinstance(r[key], str):
                raise RulesError(f"{where}: {key} must be text")
        conditions = _parse_conditions(where, r, code_lists, RULE_KEYS)
        all_of = _parse_clauses(where, "all_of", r["all_of"], code_lists) if "all_of" in r else ()
        any_of = _parse_clauses(where, "any_of", r["any_of"], code_lists) if "any_of" in r else ()
        if rules and rules[-1].is_catch_all:
            raise RulesError(f"{where}: comes after the catch-all rule {rules[-1].rule_id!r}, so it could never match")
        rules.append(Rule(rid, r["subgroup"], r.get("name", rid), conditions, all_of, any_of, r.get("reason_label", "")))
    if not rules:
        raise RulesError(f"{source}: no [[rules]] defined")
    if not rules[-1].is_catch_all:
        raise RulesError(
            f"{source}: the last rule {rules[-1].rule_id!r} has conditions; the last rule must be a catch-all "
            'without conditions (e.g. subgroup = "healthy"), so every patient-month gets a subgroup'
        )
    return RuleSet(tuple(subgroups), tuple(rules))


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


# --- inputs -----------------------------------------------------------------------------


def _month_ordinal(values: pd.Series) -> np.ndarray:
    ts = pd.to_datetime(values)
    return (ts.dt.year * 12 + ts.dt.month - 1).to_numpy(dtype="int64")


def _ordinal_to_month(ordinal: np.ndarray) -> pd.Series:
    return pd.to_datetime(pd.DataFrame({"year": ordinal // 12, "month": ordinal % 12 + 1, "day": 1}))


def patient_months(patients: pd.DataFrame, attribution: pd.DataFrame, months: list[date] | None = None) -> pd.DataFrame:
    """Attributed patient-months to assign, none after the month of death.

    Columns: patient_id, month (Timestamp, first day), practice_id and team_id (when given), the patient's
    birth_date, sex, dual_status. Grain: patient_id, month.
    """
    pm = attribution[[c for c in ("patient_id", "month", "practice_id", "team_id") if c in attribution]].copy()
    pm["month"] = pd.to_datetime(pm["month"]).dt.to_period("M").dt.to_timestamp()
    if months is not None:
        pm = pm[pm["month"].isin(pd.to_datetime(list(months)))]
    pm = pm.merge(patients[["patient_id", "birth_date", "sex", "dual_status", "death_date"]], on="patient_id", how="inner")
    death = pd.to_datetime(pm["death_date"]).dt.to_period("M").dt.to_timestamp()
    pm = pm[death.isna() | (pm["month"] <= death)]
    return pm.drop(columns="death_date").sort_values(["patient_id", "month"]).reset_index(drop=True)


def _ages(birth_date: pd.Series, month: pd.Series) -> np.ndarray:
    """Completed years on the first day of each month (vectorised)."""
    born, m = pd.to_datetime(birth_date), pd.to_datetime(month)
    had_birthday = (born.dt.month < m.dt.month) | ((born.dt.month == m.dt.month) & (born.dt.day == 1))
    return (m.dt.year - born.dt.year - 1 + had_birthday.astype(int)).to_numpy()


def _bits_of(mask: int) -> list[int]:
    return [b for b in range(64) if mask >> b & 1]


@dataclass(frozen=True)
class _Grid:
    """Patient x month positions of the patient-months (rows of ``pm``), shared by the inputs."""

    p_index: pd.Index  # distinct patient ids
    p_of_row: np.ndarray  # patient position of each row
    m_row: np.ndarray  # month ordinal (year * 12 + month - 1) of each row
    span: tuple[int, int] | None = None  # first and last month ordinal of the whole run (None: of the rows)

    @classmethod
    def of(cls, pm: pd.DataFrame, month_range: tuple[pd.Timestamp, pd.Timestamp] | None = None) -> "_Grid":
        p_of_row, uniques = pd.factorize(pm["patient_id"].to_numpy(dtype=object))
        m_row = _month_ordinal(pm["month"]) if len(pm) else np.zeros(0, dtype="int64")
        span = None if month_range is None else tuple(int(o) for o in _month_ordinal(pd.Series(month_range)))
        return cls(pd.Index(uniques, dtype=object), p_of_row, m_row, span)

    def positions(self, patient_ids: pd.Series) -> np.ndarray:
        return self.p_index.get_indexer(patient_ids.to_numpy(dtype=object))

    def window(self, lookback: int) -> tuple[int, int]:
        """(base ordinal, width) of a month grid reaching ``lookback - 1`` months before the first month."""
        if not len(self.m_row):
            return 0, 1
        first, last = self.span or (int(self.m_row.min()), int(self.m_row.max()))
        base = first - (lookback - 1)
        return base, last - base + 1


def _text_per_unique(keys: np.ndarray, p_of_row: np.ndarray, make: Callable[[int, int], str]) -> np.ndarray:
    """``make(patient, key)`` for each distinct (patient, key) pair, spread back to the rows ('' for key 0)."""
    k_codes, k_uniques = pd.factorize(keys)
    pair = p_of_row.astype(np.int64) * max(len(k_uniques), 1) + k_codes
    codes, uniques = pd.factorize(pair)
    n_k = max(len(k_uniques), 1)
    texts = np.array([make(int(u // n_k), int(k_uniques[u % n_k])) if k_uniques[u % n_k] else "" for u in uniques], dtype=object)
    return texts[codes] if len(codes) else np.array([], dtype=object)


def condition_group_inputs(
    pm: pd.DataFrame, conditions: pd.DataFrame, code_lists: CodeLists, grid: _Grid | None = None
) -> pd.DataFrame:
    """Condition-group inputs per patient-month (rows aligned with ``pm``).

    Columns: n_chronic, chronic_codes, frailty, frailty_codes, disability, disability_codes,
    rf_<group> and rf_<group>_codes for each risk-factor group. Codes are ``E11.9, I10``.
    """
    grid = grid or _Grid.of(pm)
    groups = code_lists.groups
    if len(groups) > 63:
        raise ValueError("at most 63 code groups are supported")
    p_of_row, m_row = grid.p_of_row, grid.m_row
    base, width = grid.window(1)
    n_p = len(grid.p_index)
    mask = np.zeros(len(pm), dtype=np.int64)
    rep = np.full((n_p, len(groups)), "", dtype=object)  # representative code per patient and group
    if len(conditions) and len(pm):
        p_cond = grid.positions(conditions["patient_id"])
        cond = conditions.loc[p_cond >= 0, ["code", "onset_date", "resolved_date"]].assign(p=p_cond[p_cond >= 0])
        matched = match_code_groups(cond["code"], code_lists)
        gpos = {(g.kind, g.group_id): i for i, g in enumerate(groups)}
        matched["g"] = [gpos[(k, g)] for k, g in zip(matched["kind"], matched["group_id"], strict=True)]
        matched["fmt"] = matched["code"].map(format_icd10)
        rows = cond.merge(matched[["code", "g", "fmt"]], on="code")
        start = _month_ordinal(rows["onset_date"]) - base
        resolved = pd.to_datetime(rows["resolved_date"])
        end = np.where(resolved.isna(), width - 1, _month_ordinal(resolved.fillna(pd.Timestamp("1900-01-01"))) - base)
        start, end = np.clip(start, 0, None), np.clip(end, None, width - 1)
        keep = start <= end
        rows = rows[keep].assign(start=start[keep], end=end[keep])
        # representative code per (patient, group): the smallest code active in the window
        first = rows.sort_values("fmt").drop_duplicates(["p", "g"])
        rep[first["p"].to_numpy(), first["g"].to_numpy()] = first["fmt"].to_numpy(dtype=object)
        for g in np.unique(rows["g"]):
            sub = rows[rows["g"] == g]
            diff = np.zeros((n_p, width + 1), dtype=np.int32)
            np.add.at(diff, (sub["p"].to_numpy(), sub["start"].to_numpy()), 1)
            np.add.at(diff, (sub["p"].to_numpy(), sub["end"].to_numpy() + 1), -1)
            active = np.cumsum(diff, axis=1)[:, :width] > 0
            mask |= active[p_of_row, m_row - base].astype(np.int64) << int(g)

    def kind_bits(kind: str) -> int:
        return sum(1 << i for i, g in enumerate(groups) if g.kind == kind)

    def codes_text(kind_mask: int) -> pd.Series:
        text = _text_per_unique(mask & kind_mask, p_of_row, lambda p, k: ", ".join(sorted(rep[p, b] for b in _bits_of(k))))
        return pd.Series(text, index=pm.index, dtype=object)

    out = {}
    chronic_bits = kind_bits("chronic")
    out["n_chronic"] = np.bitwise_count(mask & chronic_bits).astype("int64")
    out["chronic_codes"] = codes_text(chronic_bits)
    for kind in ("frailty", "disability"):
        bits = kind_bits(kind)
        out[kind] = (mask & bits) != 0
        out[f"{kind}_codes"] = codes_text(bits)
    for i, g in enumerate(groups):
        if g.kind == "risk_factor":
            has = (mask >> i & 1).astype(bool)
            out[f"rf_{g.group_id}"] = has
            out[f"rf_{g.group_id}_codes"] = pd.Series(np.where(has, rep[p_of_row, i], ""), index=pm.index, dtype=object)
    return pd.DataFrame(out, index=pm.index)


def measurement_inputs(pm: pd.DataFrame, measurements: pd.DataFrame, grid: _Grid | None = None) -> pd.DataFrame:
    """Latest bmi, sbp, hba1c, ldl (NaN when none) and tobacco_use in the 12 months ending each month."""
    grid = grid or _Grid.of(pm)
    base, width = grid.window(LOOKBACK_MONTHS)
    out = {}
    p_all = grid.positions(measurements["patient_id"]) if len(measurements) else np.zeros(0, dtype=int)
    for name, code in LAB_CODES.items():
        values_grid = np.full((len(grid.p_index), width), np.nan)
        sel = (measurements["code"] == code).to_numpy() & measurements["value"].notna().to_numpy() & (p_all >= 0)
        if sel.any():
            rows = measurements.loc[sel, ["measured_date", "value"]].assign(p=p_all[sel])
            rows["m"] = _month_ordinal(rows["measured_date"]) - base
            rows = rows[(rows["m"] >= 0) & (rows["m"] < width)]
            rows = rows.sort_values("measured_date", kind="stable").drop_duplicates(["p", "m"], keep="last")
            values_grid[rows["p"].to_numpy(), rows["m"].to_numpy()] = rows["value"].astype(float).to_numpy()
            values_grid = pd.DataFrame(values_grid).ffill(axis=1, limit=LOOKBACK_MONTHS - 1).to_numpy()
        values = values_grid[grid.p_of_row, grid.m_row - base] if len(pm) else np.array([], dtype=float)
        if name == "tobacco":
            out["tobacco_use"] = values == 1
        else:
            out[name] = values
    return pd.DataFrame(out, index=pm.index)


def utilisation_inputs(pm: pd.DataFrame, encounters: pd.DataFrame, grid: _Grid | None = None) -> pd.DataFrame:
    """ed_visits_12m, admissions_12m and acute_events_12m (their sum) per patient-month."""
    grid = grid or _Grid.of(pm)
    base, width = grid.window(LOOKBACK_MONTHS)
    out = {}
    for kind, column in ACUTE_KINDS.items():
        counts = np.zeros((len(grid.p_index), width + 1), dtype=np.int32)  # column 0: before the window
        rows = encounters[encounters["kind"] == kind]
        if len(rows):
            p = grid.positions(rows["patient_id"])
            m = _month_ordinal(rows["start_date"]) - base
            ok = (p >= 0) & (m >= 0) & (m < width)
            np.add.at(counts, (p[ok], m[ok] + 1), 1)
        cum = np.cumsum(counts, axis=1)
        end = grid.m_row - base + 1
        out[column] = (cum[grid.p_of_row, end] - cum[grid.p_of_row, end - LOOKBACK_MONTHS]).astype("int64")
    out["acute_events_12m"] = out["ed_visits_12m"] + out["admissions_12m"]
    return pd.DataFrame(out, index=pm.index)


def compute_inputs(
    patients: pd.DataFrame,
    attribution: pd.DataFrame,
    conditions: pd.DataFrame,
    measurements: pd.DataFrame,
    encounters: pd.DataFrame,
    risk: pd.DataFrame,
    code_lists: CodeLists | None = None,
    months: list[date] | None = None,
    month_range: tuple[pd.Timestamp, pd.Timestamp] | None = None,
) -> pd.DataFrame:
    """Everything the rules can use, one row per attributed patient-month (definitions above).

    Frames: patients (patient_id, birth_date, sex, dual_status, death_date); attribution
    (patient_id, month; practice_id and team_id are passed through when present); conditions (patient_id, code, onset_date,
    resolved_date); measurements (patient_id, measured_date, code, value); encounters
    (patient_id, kind, start_date); risk (patient_id, year, score) from :func:`core.derive.risk.risk_scores`.
    ``month_range``: the first and last patient-month of the whole run when the frames hold one
    block of its patients (the representative code of a condition group is the smallest one active
    in that period, so a block must see the same period as the whole run). Grain: patient_id, month.
    """
    code_lists = code_lists or load_code_lists()
    pm = patient_months(patients, attribution, months)
    base = pm[[c for c in ("patient_id", "month", "practice_id", "team_id", "sex", "dual_status") if c in pm]].copy()
    base["age"] = _ages(pm["birth_date"], pm["month"]) if len(pm) else np.array([], dtype=int)
    grid = _Grid.of(pm, month_range)
    parts = [
        base,
        condition_group_inputs(pm, conditions, code_lists, grid),
        measurement_inputs(pm, measurements, grid),
        utilisation_inputs(pm, encounters, grid),
    ]
    out = pd.concat(parts, axis=1)
    out["risk_score"] = _row_scores(out, risk)
    return out


def _row_scores(pm: pd.DataFrame, risk: pd.DataFrame) -> np.ndarray | float:
    """The risk score of each patient-month: the patient's score of the month's calendar year."""
    if not len(risk):
        return np.nan
    scores = risk.set_index(["patient_id", "year"])["score"]
    key = pd.MultiIndex.from_arrays([pm["patient_id"], pm["month"].dt.year])
    return scores.reindex(key).to_numpy(dtype=float)


# --- evaluation -------------------------------------------------------------------------


def _fmt(values, pattern: str) -> pd.Series:
    return pd.Series([pattern.format(v) for v in values], dtype=object)


def _top_label(fraction: float) -> str:
    return {0.1: "top decile", 0.2: "top quintile", 0.25: "top quartile"}.get(round(fraction, 6), f"top {fraction:.0%}")


Predicate = Callable[[pd.DataFrame, Any, dict], np.ndarray]
Fragment = Callable[[pd.DataFrame, Any, dict], pd.Series]


def month_thresholds(scores: pd.DataFrame, fraction: float) -> pd.Series:
    """The (1 - fraction) quantile (linear interpolation) of each month's risk scores (NaN left out).

    ``scores``: month, risk_score, one row per patient-month. Returns the threshold per month.
    A patient is in the top fraction when the score is strictly above it: patients tied at the
    threshold stay out, so never more than the fraction of the month's scored patients is in
    (many patients share a demographics-only score).
    """
    return scores.groupby("month")["risk_score"].quantile(1 - fraction)


def thresholds_from_counts(counts: pd.Series, fractions: set[float]) -> dict[float, pd.Series]:
    """:func:`month_thresholds` of every fraction from score counts (index month, risk_score).

    Each month's scores are rebuilt from their counts and go through the same quantile as
    :func:`evaluate_rules` uses on all patient-months, so the thresholds are the same to the bit.
    """
    parts: dict[float, list[pd.Series]] = {f: [] for f in fractions}
    for month, group in counts.groupby(level="month", sort=True):
        values = np.repeat(group.index.get_level_values("risk_score").to_numpy(dtype=float), group.to_numpy())
        month_scores = pd.DataFrame({"month": month, "risk_score": values})
        for f in fractions:
            parts[f].append(month_thresholds(month_scores, f))
    return {f: pd.concat(p) if p else pd.Series(dtype=float) for f, p in parts.items()}


def _count_text(n, codes, noun: str) -> pd.Series:
    return pd.Series(
        [f"{k} {noun}{'' if k == 1 else 's'}: {c}" if k else f"no {noun}s" for k, c in zip(n, codes, strict=True)],
        dtype=object,
    )


def _num(col: str, op: str, label: str) -> tuple[Predicate, Fragment]:
    def pred(df, v, _):
        x = df[col].to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            return (x >= v) if op == ">=" else (x <= v)

    return pred, lambda df, v, _: _fmt(df[col], label)


def _flag(col: str, yes: Callable[[pd.DataFrame], pd.Series], no: str) -> tuple[Predicate, Fragment]:
    def pred(df, v, _):
        return df[col].to_numpy(dtype=bool) == v

    def frag(df, v, _):
        return yes(df).reset_index(drop=True) if v else pd.Series([no] * len(df), dtype=object)

    return pred, frag


def _risk_factor_codes() -> tuple[Predicate, Fragment]:
    def pred(df, v, _):
        return np.logical_or.reduce([df[f"rf_{g}"].to_numpy(dtype=bool) for g in v])

    def frag(df, v, _):
        cols = [(g, df[f"rf_{g}_codes"].to_numpy(dtype=object)) for g in v]
        names = {g: g.replace("_", " ") for g in v}
        return pd.Series([", ".join(f"{names[g]} ({c[i]})" for g, c in cols if c[i]) for i in range(len(df))], dtype=object)

    return pred, frag


def _threshold_column(fraction: float) -> str:
    return f"_threshold_{fraction:g}"


def _top_fraction() -> tuple[Predicate, Fragment]:
    # the month thresholds are columns added by evaluate_rules (computed on all patient-months)
    def pred(df, v, _):
        with np.errstate(invalid="ignore"):
            return df["risk_score"].to_numpy(dtype=float) > df[_threshold_column(v)].to_numpy(dtype=float)

    def frag(df, v, _):
        return pd.Series(
            [
                f"HCC risk {s:.2f} in the {_top_label(v)} (> {t:.2f})"
                for s, t in zip(df["risk_score"], df[_threshold_column(v)], strict=True)
            ],
            dtype=object,
        )

    return pred, frag


def _condition_columns(key: str, value) -> list[str]:
    """The input columns a condition reads (its reason depends on nothing else)."""
    if key == "risk_score_top_fraction":
        return ["risk_score", _threshold_column(value)]
    if key == "risk_factor_codes":
        return [c for g in value for c in (f"rf_{g}", f"rf_{g}_codes")]
    return {
        "min_age": ["age"],
        "max_age": ["age"],
        "any_frailty": ["frailty", "frailty_codes"],
        "any_disability": ["disability", "disability_codes"],
        "min_chronic_conditions": ["n_chronic", "chronic_codes"],
        "max_chronic_conditions": ["n_chronic", "chronic_codes"],
        "min_risk_score": ["risk_score"],
        "min_acute_events_12m": ["acute_events_12m"],
        "min_admissions_12m": ["admissions_12m"],
        "min_ed_visits_12m": ["ed_visits_12m"],
        "tobacco_use": ["tobacco_use"],
    }.get(key) or [key.rsplit("_", 1)[0]]  # bmi_min -> bmi, ...


CONDITIONS: dict[str, tuple[Predicate, Fragment]] = {
    "min_age": _num("age", ">=", "age {:.0f}"),
    "max_age": _num("age", "<=", "age {:.0f}"),
    "any_frailty": _flag("frailty", lambda df: "frailty: " + df["frailty_codes"].astype(object), "no frailty"),
    "any_disability": _flag(
        "disability", lambda df: "disability/institutional: " + df["disability_codes"].astype(object), "no disability"
    ),
    "min_chronic_conditions": (
        lambda df, v, _: df["n_chronic"].to_numpy() >= v,
        lambda df, v, _: _count_text(df["n_chronic"], df["chronic_codes"], "chronic condition"),
    ),
    "max_chronic_conditions": (
        lambda df, v, _: df["n_chronic"].to_numpy() <= v,
        lambda df, v, _: _count_text(df["n_chronic"], df["chronic_codes"], "chronic condition"),
    ),
    "risk_score_top_fraction": _top_fraction(),
    "min_risk_score": _num("risk_score", ">=", "HCC risk {:.2f}"),
    "min_acute_events_12m": _num("acute_events_12m", ">=", "{:.0f} admissions/ED visits in 12 months"),
    "min_admissions_12m": _num("admissions_12m", ">=", "{:.0f} admissions in 12 months"),
    "min_ed_visits_12m": _num("ed_visits_12m", ">=", "{:.0f} ED visits in 12 months"),
    "bmi_min": _num("bmi", ">=", "BMI {:.1f}"),
    "bmi_max": _num("bmi", "<=", "BMI {:.1f}"),
    "sbp_min": _num("sbp", ">=", "systolic BP {:.0f} mmHg"),
    "sbp_max": _num("sbp", "<=", "systolic BP {:.0f} mmHg"),
    "hba1c_min": _num("hba1c", ">=", "HbA1c {:.1f}%"),
    "hba1c_max": _num("hba1c", "<=", "HbA1c {:.1f}%"),
    "ldl_min": _num("ldl", ">=", "LDL {:.0f} mg/dL"),
    "ldl_max": _num("ldl", "<=", "LDL {:.0f} mg/dL"),
    "tobacco_use": _flag("tobacco_use", lambda df: pd.Series(["tobacco use"] * len(df), dtype=object), "no tobacco use"),
    "risk_factor_codes": _risk_factor_codes(),
}
assert set(CONDITIONS) == set(CONDITION_TYPES)


def _clause_mask(df: pd.DataFrame, conds, cache: dict) -> np.ndarray:
    out = np.ones(len(df), dtype=bool)
    for key, value in conds:
        out &= CONDITIONS[key][0](df, value, cache)
    return out


def _clause_text(df: pd.DataFrame, conds, cache: dict) -> pd.Series:
    texts = [CONDITIONS[k][1](df, v, cache) for k, v in conds]
    out = texts[0]
    for t in texts[1:]:
        out = out + " with " + t
    return out


def _all_conditions(rule: Rule) -> list[tuple[str, Any]]:
    return [kv for c in (rule.conditions, *[x.conditions for x in rule.all_of + rule.any_of]) for kv in c]


def _rule_reasons(df: pd.DataFrame, rule: Rule, cache: dict) -> np.ndarray:
    """Reason text for the rows of ``df`` (all matched by ``rule``).

    The text is built once per distinct combination of the columns the rule reads (a patient
    usually keeps the same values for many months), then spread back to the rows.
    """
    columns = list(dict.fromkeys(c for k, v in _all_conditions(rule) for c in _condition_columns(k, v)))
    if not columns:
        return np.full(len(df), (rule.reason_label or rule.name)[:REASON_MAX], dtype=object)
    keys = df[columns].reset_index(drop=True)
    group = keys.groupby(columns, dropna=False, sort=False).ngroup().to_numpy()
    first = pd.Series(np.arange(len(keys))).groupby(group).first().to_numpy()
    return _reason_text(keys.iloc[first].reset_index(drop=True), rule, cache)[group]


def _reason_text(df: pd.DataFrame, rule: Rule, cache: dict) -> np.ndarray:
    parts: list[pd.Series] = []
    conj = list(rule.conditions) + [kv for c in rule.all_of for kv in c.conditions]
    if conj:
        parts.append(_clause_text(df, conj, cache))
    if rule.any_of:
        alt = [np.where(_clause_mask(df, c.conditions, cache), _clause_text(df, c.conditions, cache), "") for c in rule.any_of]
        parts.append(pd.Series(["; ".join(t for t in row if t) for row in zip(*alt, strict=True)], dtype=object))
    body = parts[0]
    for p in parts[1:]:
        body = body + " with " + p
    if rule.reason_label:
        body = pd.Series([f"{rule.reason_label}: {b}" if b else rule.reason_label for b in body], dtype=object)
    return np.array([b[:REASON_MAX] for b in body], dtype=object)


def top_fractions(rules: RuleSet) -> set[float]:
    """The ``risk_score_top_fraction`` values the rules use (each needs a threshold per month)."""
    return {v for rule in rules.rules for k, v in _all_conditions(rule) if k == "risk_score_top_fraction"}


def evaluate_rules(inputs: pd.DataFrame, rules: RuleSet, thresholds: dict[float, pd.Series] | None = None) -> pd.DataFrame:
    """Subgroup of each patient-month: the first rule that matches, with its reason.

    ``inputs``: :func:`compute_inputs` columns. ``thresholds``: the month thresholds of each top
    fraction (:func:`month_thresholds` over all patients) when ``inputs`` is only a block of
    them; by default they are computed from ``inputs``. Returns patient_id, month, subgroup,
    rule_id, reason (same row order as ``inputs``). Grain: patient_id, month.
    """
    df = inputs.reset_index(drop=True)
    fractions = top_fractions(rules)
    if fractions:
        if thresholds is None:
            thresholds = {v: month_thresholds(df, v) for v in fractions}
        df = df.assign(**{_threshold_column(v): df["month"].map(thresholds[v]).to_numpy(dtype=float) for v in fractions})
    cache: dict = {}
    winner = np.full(len(df), -1)
    for i, rule in enumerate(rules.rules):
        ok = _clause_mask(df, rule.conditions, cache)
        for c in rule.all_of:
            ok &= _clause_mask(df, c.conditions, cache)
        if rule.any_of:
            ok &= np.logical_or.reduce([_clause_mask(df, c.conditions, cache) for c in rule.any_of])
        winner[(winner < 0) & ok] = i
    reason = np.empty(len(df), dtype=object)
    for i, rule in enumerate(rules.rules):
        rows = np.flatnonzero(winner == i)
        if len(rows):
            reason[rows] = _rule_reasons(df.iloc[rows], rule, cache)
    rule_ids = np.array([r.rule_id for r in rules.rules], dtype=object)
    subgroups = np.array([r.subgroup for r in rules.rules], dtype=object)
    # text columns stay Python objects: they are written as such, and Arrow text would be
    # built from them only to be turned back into objects for the driver
    return pd.DataFrame(
        {
            "patient_id": df["patient_id"],
            "month": df["month"],
            "subgroup": pd.Series(subgroups[winner], dtype=object),
            "rule_id": pd.Series(rule_ids[winner], dtype=object),
            "reason": pd.Series(reason, dtype=object),
        }
    )


# --- overrides --------------------------------------------------------------------------


def apply_overrides(assignments: pd.DataFrame, overrides: pd.DataFrame) -> pd.DataFrame:
    """Replace assignments pinned by active overrides. Returns a new frame with ``overridden``.

    ``overrides``: override_id, patient_id, subgroup, start_month, note, created_by, created_at
    (active ones only, i.e. not lifted). An override applies from its start month on; when a
    patient has several, the one with the latest start month (then the latest id) wins.
    """
    out = assignments.reset_index(drop=True).copy()
    out["overridden"] = False
    if not len(overrides) or not len(out):
        return out
    ov = overrides.assign(start_month=pd.to_datetime(overrides["start_month"]).dt.to_period("M").dt.to_timestamp())
    pos = out[["patient_id", "month"]].assign(_pos=np.arange(len(out)))
    hits = pos.merge(ov, on="patient_id")
    hits = hits[hits["month"] >= hits["start_month"]]
    hits = hits.sort_values(["_pos", "start_month", "override_id"]).drop_duplicates("_pos", keep="last")
    if not len(hits):
        return out
    rows = hits["_pos"].to_numpy()
    before = out.loc[rows, ["subgroup", "reason"]].to_numpy()
    out.loc[rows, "reason"] = [
        (f"override #{oid} by {who} on {pd.Timestamp(when).date()}: {note} (rules: {sg}, {why})")[:REASON_MAX]
        for oid, who, when, note, (sg, why) in zip(
            hits["override_id"], hits["created_by"], hits["created_at"], hits["note"], before, strict=True
        )
    ]
    out.loc[rows, "subgroup"] = hits["subgroup"].to_numpy()
    out.loc[rows, "rule_id"] = "override"
    out.loc[rows, "overridden"] = True
    return out


def _active_overrides(conn) -> pd.DataFrame:
    o = SubgroupOverride
    stmt = select(o.override_id, o.patient_id, o.subgroup, o.start_month, o.note, o.created_by, o.created_at).where(
        o.lifted_at.is_(None)
    )
    return pd.read_sql(stmt, conn)


def _first_of_month(d: date) -> date:
    return date(d.year, d.month, 1)


def set_override(
    engine: Engine, patient_id: str, subgroup: str, start_month: date, note: str, user: str, rules: RuleSet | None = None
) -> int:
    """Pin a patient to ``subgroup`` from ``start_month`` on, with a note. Returns the override id.

    The stored assignments from that month on are updated at once (same transaction);
    recomputation keeps the override until it is lifted.
    """
    rules = rules or load_rules(active_rules_path())
    if not note or not note.strip():
        raise ValueError("an override needs a note saying why")
    if not user or not user.strip():
        raise ValueError("an override needs the user who sets it")
    if subgroup not in rules.subgroup_ids:
        raise ValueError(f"unknown subgroup {subgroup!r}; known: {list(rules.subgroup_ids)}")
    start = _first_of_month(start_month)
    with engine.begin() as conn:
        if conn.execute(select(Patient.patient_id).where(Patient.patient_id == patient_id)).first() is None:
            raise ValueError(f"unknown patient {patient_id!r}")
        created = datetime.now(UTC)
        result = conn.execute(
            insert(SubgroupOverride).values(
                patient_id=patient_id,
                subgroup=subgroup,
                start_month=start,
                note=note.strip(),
                created_by=user,
                created_at=created,
            )
        )
        override_id = int(result.inserted_primary_key[0])
        a = SubgroupAssignment
        current = pd.read_sql(
            select(a.patient_id, a.month, a.subgroup, a.rule_id, a.reason).where(a.patient_id == patient_id, a.month >= start),
            conn,
        )
        if len(current):
            current["month"] = pd.to_datetime(current["month"])
            ov = pd.DataFrame(
                [
                    dict(
                        override_id=override_id,
                        patient_id=patient_id,
                        subgroup=subgroup,
                        start_month=start,
                        note=note.strip(),
                        created_by=user,
                        created_at=created,
                    )
                ]
            )
            # rows already pinned by an older override: go back to what the rules said
            rules_part = current["reason"].str.extract(r"^override #\d+ by .*?\(rules: ([^,]*), (.*)\)$")
            pinned = rules_part[0].notna()
            current.loc[pinned, "subgroup"] = rules_part.loc[pinned, 0]
            current.loc[pinned, "reason"] = rules_part.loc[pinned, 1]
            new = apply_overrides(current, ov)
            for row in new.itertuples(index=False):
                conn.execute(
                    update(a)
                    .where(a.patient_id == row.patient_id, a.month == row.month.date())
                    .values(subgroup=row.subgroup, rule_id=row.rule_id, reason=row.reason, overridden=True)
                )
    return override_id


def lift_override(engine: Engine, override_id: int, user: str, rules: RuleSet | None = None) -> dict:
    """Lift an override (kept, with who and when) and re-assign the months it covered."""
    o = SubgroupOverride
    with engine.begin() as conn:
        row = conn.execute(select(o.start_month, o.lifted_at).where(o.override_id == override_id)).first()
        if row is None:
            raise ValueError(f"unknown override {override_id}")
        if row.lifted_at is not None:
            raise ValueError(f"override {override_id} was already lifted")
        conn.execute(update(o).where(o.override_id == override_id).values(lifted_by=user, lifted_at=datetime.now(UTC)))
        months = [m for (m,) in conn.execute(select(Attribution.month).where(Attribution.month >= row.start_month).distinct())]
    return assign_subgroups(engine, rules, months=sorted(months)) if months else {"rows": 0}


# --- store ------------------------------------------------------------------------------

# Patients per block of assign_subgroups: peak memory follows the block, not the network
# (about 2 GB for 100,000 patients x 24 months in one block), and each block's queries are
# range scans of patient_id-leading indexes.
BLOCK_PATIENTS = 25_000
WORKERS = 2  # this product's reference machine has 2 cores
BLOCK_TABLES = ("attribution", "patients", "conditions", "measurements", "encounters")


@dataclass(frozen=True)
class _Run:
    """What every block of one run shares (plain values: it is sent to the worker processes)."""

    months: list[date] | None  # the months asked for (None: every attributed month)
    years: tuple[int, ...]  # calendar years of the attributed months (a risk score for each)
    first: pd.Timestamp  # first attributed month
    last: pd.Timestamp  # last day of the last attributed month
    model: str


def _months_clause(column, months: list[date] | None):
    return [] if months is None else [column.in_(months)]


def _patients_clause(column, patients: tuple[str, str] | None):
    return [] if patients is None else [column >= patients[0], column <= patients[1]]


def _as_text(column):
    """Select a date column without SQLAlchemy's per-row date processing (parsed in bulk below)."""
    return type_coerce(column, String).label(column.key)


def _read(conn, stmt, date_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """A select's rows as a frame, straight from the driver's tuples.

    Selects plain text, numbers and dates (as text) only: SQLAlchemy's per-row result processing
    (a few microseconds a row) is skipped, which is most of the read time for millions of rows.
    """
    result = conn.execute(stmt)
    columns = list(result.keys())
    rows = result.cursor.fetchall()
    result.close()
    frame = pd.DataFrame.from_records(rows, columns=columns, coerce_float=True)
    for column in date_columns:
        frame[column] = pd.to_datetime(frame[column], format="ISO8601")
    return frame


def _run_of(conn, months: list[date] | None, model: str) -> _Run | None:
    """The run over ``months`` (all when None), or None when no patient is attributed in them."""
    a = Attribution
    found = [m for (m,) in conn.execute(select(a.month).where(*_months_clause(a.month, months)).distinct())]
    if not found:
        return None
    first, last = pd.Timestamp(min(found)), pd.Timestamp(max(found)) + pd.offsets.MonthEnd(0)
    return _Run(months, tuple(sorted({m.year for m in found})), first, last, model)


def patient_blocks(conn, size: int, months: list[date] | None = None) -> list[tuple[str, str]]:
    """Inclusive ``patient_id`` ranges of at most ``size`` patients attributed in ``months``, in id order.

    The ids are sorted by the database, so the ranges follow its collation, as the range
    conditions of the block queries do.
    """
    a = Attribution
    stmt = select(a.patient_id).where(*_months_clause(a.month, months)).distinct().order_by(a.patient_id)
    ids = _read(conn, stmt)["patient_id"].tolist()
    return [(ids[i], ids[min(i + size, len(ids)) - 1]) for i in range(0, len(ids), size)]


def load_frames(
    conn, run: _Run, patients: tuple[str, str] | None = None, tables: tuple[str, ...] = BLOCK_TABLES
) -> dict[str, pd.DataFrame]:
    """Read what the subgroup inputs of ``run`` need, for the patients whose id is in the inclusive
    range ``patients`` (all when None): the frames of :func:`compute_inputs` named in ``tables``.

    Dates come back as datetime64 columns. The date windows are the run's, whatever the block.
    """
    a, p, c, m, e = Attribution, Patient, Condition, Measurement, Encounter
    window_start = (run.first - pd.DateOffset(months=LOOKBACK_MONTHS - 1)).date()
    lookback_start = min(window_start, date(run.first.year - 1, 1, 1))  # risk score: prior calendar year
    last = run.last.date()
    queries = {
        "attribution": (
            select(a.patient_id, _as_text(a.month), a.team_id).where(
                *_months_clause(a.month, run.months), *_patients_clause(a.patient_id, patients)
            ),
            ("month",),
        ),
        "conditions": (
            select(c.patient_id, c.code, _as_text(c.onset_date), _as_text(c.resolved_date)).where(
                *_patients_clause(c.patient_id, patients),
                c.onset_date <= last,
                (c.resolved_date.is_(None)) | (c.resolved_date >= lookback_start),
            ),
            ("onset_date", "resolved_date"),
        ),
        "measurements": (
            select(m.patient_id, _as_text(m.measured_date), m.code, m.value).where(
                *_patients_clause(m.patient_id, patients),
                m.code.in_(list(LAB_CODES.values())),
                m.measured_date >= window_start,
                m.measured_date <= last,
            ),
            ("measured_date",),
        ),
        "encounters": (
            select(e.patient_id, e.kind, _as_text(e.start_date)).where(
                *_patients_clause(e.patient_id, patients),
                e.kind.in_(list(ACUTE_KINDS)),
                e.start_date >= window_start,
                e.start_date <= last,
            ),
            ("start_date",),
        ),
    }
    frames = {}
    for name in tables:
        if name == "patients":  # one row a patient: SQLAlchemy's processing keeps dual_status a bool
            stmt = select(p.patient_id, _as_text(p.birth_date), p.sex, p.dual_status, _as_text(p.death_date))
            frames[name] = pd.read_sql(stmt.where(*_patients_clause(p.patient_id, patients)), conn)
            for column in ("birth_date", "death_date"):
                frames[name][column] = pd.to_datetime(frames[name][column], format="ISO8601")
        else:
            frames[name] = _read(conn, *queries[name])
    return frames


def _risk_for(frames: dict, years: tuple[int, ...], model: str) -> pd.DataFrame:
    ids = pd.Index(pd.unique(frames["attribution"]["patient_id"].to_numpy(dtype=object)))
    attributed = frames["patients"][ids.get_indexer(frames["patients"]["patient_id"].to_numpy(dtype=object)) >= 0]
    parts = [risk_scores(attributed, frames["conditions"], y, model) for y in years]
    return (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["patient_id", "year", "model", "score", "chronic_score", "hccs"])
    )


def _block_scores(conn, run: _Run, patients: tuple[str, str] | None, with_scores: bool) -> tuple[pd.Series, set]:
    """Pass 1 over a block: how many of its patient-months have each (month, risk score), and its months.

    The counts (NaN scores left out; empty when not ``with_scores``) are all the network-wide top
    fractions need, whatever the size of the network.
    """
    tables = ("attribution", "patients", "conditions") if with_scores else ("attribution", "patients")
    frames = load_frames(conn, run, patients, tables)
    pm = patient_months(frames["patients"], frames["attribution"], run.months)
    scores = pd.DataFrame({"month": pm["month"], "risk_score": np.nan})
    if with_scores and len(pm):
        scores["risk_score"] = _row_scores(pm, _risk_for(frames, run.years, run.model))
    counts = scores.dropna().value_counts()
    return counts, set(pm["month"].unique())


def _block_inputs(
    conn, run: _Run, patients: tuple[str, str] | None, month_range: tuple[pd.Timestamp, pd.Timestamp]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pass 2 over a block: the :func:`compute_inputs` of its patient-months and its risk scores."""
    frames = load_frames(conn, run, patients)
    risk = _risk_for(frames, run.years, run.model)
    inputs = compute_inputs(
        frames["patients"],
        frames["attribution"],
        frames["conditions"],
        frames["measurements"],
        frames["encounters"],
        risk,
        months=run.months,
        month_range=month_range,
    )
    return inputs, risk


def _block_assignments(
    conn,
    run: _Run,
    patients: tuple[str, str] | None,
    month_range: tuple[pd.Timestamp, pd.Timestamp],
    rules: RuleSet,
    thresholds: dict[float, pd.Series],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rules' assignments of a block (overrides not applied) and its risk scores."""
    inputs, risk = _block_inputs(conn, run, patients, month_range)
    result = evaluate_rules(inputs, rules, thresholds)
    result["risk_score"] = inputs["risk_score"].to_numpy()
    result["team_id"] = inputs["team_id"].to_numpy(dtype=object)
    return result, risk


def _in_worker(url: str, task: Callable, *args):
    """``task(conn, *args)`` in a worker process, on its own engine."""
    from core.store.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return task(conn, *args)
    finally:
        engine.dispose()


def _can_use_workers(engine: Engine) -> bool:
    """Workers read while this process holds the write transaction: PostgreSQL, or an SQLite file
    in WAL mode (in the rollback-journal mode the writer would lock the readers out)."""
    if engine.dialect.name != "sqlite":
        return True
    if engine.url.database in (None, "", ":memory:"):
        return False
    with engine.connect() as conn:
        return str(conn.exec_driver_sql("PRAGMA journal_mode").scalar()).lower() == "wal"


@contextmanager
def _worker_pool(engine: Engine, workers: int, blocks: int) -> Iterator[ProcessPoolExecutor | None]:
    """Worker processes for the blocks, or None to run them in this process."""
    if workers < 2 or blocks < 2 or not _can_use_workers(engine):
        yield None
        return
    with process_pool(min(workers, blocks)) as pool:
        yield pool


def _map_blocks(
    engine: Engine, conn, pool: ProcessPoolExecutor | None, task: Callable, calls: list[tuple], ahead: int = WORKERS
) -> Iterator:
    """``task(conn, *call)`` for each call, results in order: here on ``conn`` (lazily), or in the
    pool's worker processes, which start at once, with at most ``ahead`` calls under way or
    waiting beyond the one being consumed (finished results wait in this process's memory)."""
    if pool is None:
        return (task(conn, *call) for call in calls)
    url = engine.url.render_as_string(hide_password=False)
    pending: deque[Future] = deque(pool.submit(_in_worker, url, task, *call) for call in calls[: ahead + 1])
    return _results_in_order(pool, pending, url, task, calls[ahead + 1 :])


def _results_in_order(pool: ProcessPoolExecutor, pending: deque, url: str, task: Callable, rest: list[tuple]) -> Iterator:
    try:
        for call in rest:
            result = pending.popleft().result()
            pending.append(pool.submit(_in_worker, url, task, *call))
            yield result
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


def _add_counts(counts: list[pd.Series]) -> pd.Series:
    """Score counts (index month, risk_score) of several blocks added up."""
    counts = [c for c in counts if len(c)]
    if not counts:
        return pd.Series(0, index=pd.MultiIndex.from_arrays([[], []], names=["month", "risk_score"]), dtype="int64")
    return pd.concat(counts).groupby(level=["month", "risk_score"]).sum()


def _first_pass(
    block_scores: Iterator[tuple[pd.Series, set]], fractions: set[float]
) -> tuple[tuple[pd.Timestamp, pd.Timestamp] | None, list[date], dict[float, pd.Series]]:
    """Month range, months and top-fraction thresholds of the whole run from the
    :func:`_block_scores` of every block.

    Returns (None, [], {}) when the run has no patient-month (e.g. every patient died before).
    """
    counts: list[pd.Series] = []
    months: set = set()
    for block_counts, block_months in block_scores:
        counts.append(block_counts)
        months |= block_months
        if len(counts) >= 8:  # keep the score counts compact
            counts = [_add_counts(counts)]
    if not months:
        return None, [], {}
    month_range = (min(months), max(months))
    return month_range, sorted(m.date() for m in months), thresholds_from_counts(_add_counts(counts), fractions)


def assign_subgroups(
    engine: Engine,
    rules: RuleSet | None = None,
    months: list[date] | None = None,
    model: str = DEFAULT_MODEL,
    block_patients: int = BLOCK_PATIENTS,
    workers: int = WORKERS,
) -> dict:
    """Assign every attributed patient-month of ``months`` (default: all) and store it.

    Computes the risk scores of the months' years (stored in ``risk_score``), the inputs, the
    rules and the active overrides, then replaces the ``subgroup_assignment`` rows of those
    months (and the risk scores of those years) in one transaction.
    Patients are taken in blocks of ``block_patients`` (by id), so memory follows the block, not
    the network: a first pass over the blocks finds the network-wide month thresholds of the
    top-fraction rules, the second assigns and writes each block. With two or more blocks,
    ``workers`` processes compute blocks side by side while this one writes.
    Returns rows, mix (patient-months per subgroup), overridden, months, blocks, seconds and
    parts (wall seconds of this process: first pass, waiting for the second, writing).
    """
    t0 = time.perf_counter()
    rules = rules or load_rules(active_rules_path())
    months = None if months is None else sorted({_first_of_month(m) for m in months})
    with engine.connect() as conn:
        run = _run_of(conn, months, model)
        blocks = patient_blocks(conn, block_patients, months) if run else []
    summary = {"rows": 0, "mix": {}, "overridden": 0, "months": 0, "blocks": len(blocks)}
    if not blocks:
        return {**summary, "seconds": round(time.perf_counter() - t0, 2)}
    parts = {"first_pass": 0.0, "second_pass": 0.0, "write": 0.0}
    mix = pd.Series(0, index=list(rules.subgroup_ids), dtype="int64")
    a, r = SubgroupAssignment.__table__, RiskScore.__table__
    with _worker_pool(engine, workers, len(blocks)) as pool, engine.connect() as conn, conn.begin() as transaction:
        t1 = time.perf_counter()
        fractions = top_fractions(rules)
        block_scores = _map_blocks(engine, conn, pool, _block_scores, [(run, b, bool(fractions)) for b in blocks], workers)
        if months is None:  # everything is recomputed: no stale month or year may stay (deleted while workers read)
            conn.execute(delete(a))
            conn.execute(delete(r))
        month_range, month_dates, thresholds = _first_pass(block_scores, fractions)
        parts["first_pass"] = time.perf_counter() - t1
        if month_range is None:  # nothing to assign: the store stays as it was
            transaction.rollback()
            return {**summary, "seconds": round(time.perf_counter() - t0, 2)}
        if months is not None:
            conn.execute(delete(a).where(a.c.month.in_(month_dates)))
            conn.execute(delete(r).where(r.c.year.in_(list(run.years))))
        overrides = _active_overrides(conn)
        calls = [(run, block, month_range, rules, thresholds) for block in blocks]
        t1 = time.perf_counter()
        for result, risk in _map_blocks(engine, conn, pool, _block_assignments, calls, workers):
            t2 = time.perf_counter()
            result = apply_overrides(result, overrides)
            _insert_frame(conn, r, risk[risk["score"].notna()].astype({"year": int}))
            _insert_frame(conn, a, result[["patient_id", "month", "subgroup", "team_id", "rule_id", "reason", "risk_score", "overridden"]])
            mix = mix.add(result["subgroup"].value_counts(), fill_value=0)
            summary["rows"] += len(result)
            summary["overridden"] += int(result["overridden"].sum())
            parts["second_pass"] += t2 - t1
            t1 = time.perf_counter()
            parts["write"] += t1 - t2
        t2 = time.perf_counter()
        transaction.commit()
        parts["write"] += time.perf_counter() - t2
    summary["mix"] = {s: int(mix.get(s, 0)) for s in rules.subgroup_ids}
    summary["months"] = len(month_dates)
    return {**summary, "seconds": round(time.perf_counter() - t0, 2), "parts": {k: round(v, 2) for k, v in parts.items()}}


def _insert_frame(conn, table, frame: pd.DataFrame, chunk: int = 100_000) -> None:
    """Insert a frame's rows: ``COPY`` on PostgreSQL, else bound parameters in chunks.

    On SQLite the compiled INSERT goes straight to the driver's executemany with plain tuples
    (dates as ISO text, as SQLAlchemy stores them), which is several times faster than the
    per-row parameter processing of Core for millions of rows.
    """
    columns = list(frame.columns)
    sqlite = conn.dialect.name == "sqlite"
    values = [_driver_values(frame[name], sqlite) for name in columns]
    if conn.dialect.name == "postgresql":
        copy_rows(conn, table.name, columns, zip(*values, strict=True))
        return
    if sqlite:
        compiled = insert(table).compile(dialect=conn.dialect, column_keys=columns)
        order = [columns.index(k) for k in compiled.positiontup]
        rows = list(zip(*(values[i] for i in order), strict=True))
        for start in range(0, len(rows), chunk):
            conn.exec_driver_sql(str(compiled), rows[start : start + chunk])
        return
    for start in range(0, len(frame), chunk):
        part = [v[start : start + chunk] for v in values]
        conn.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in zip(*part, strict=True)])


def _driver_values(col: pd.Series, sqlite: bool) -> np.ndarray:
    """A column as the driver's Python values, None when missing.

    Dates (ISO text on SQLite, ``date`` elsewhere) and Arrow-backed text are converted once per
    distinct value: a block repeats each month and patient id many times.
    """
    is_date = pd.api.types.is_datetime64_any_dtype(col)
    if is_date or isinstance(col.dtype, pd.StringDtype):
        codes, uniques = pd.factorize(col)
        if is_date:
            uniques = uniques.strftime("%Y-%m-%d") if sqlite else uniques.date
        return np.append(np.asarray(uniques, dtype=object), None)[codes]  # code -1 (missing) takes None
    arr = col.to_numpy(dtype=object)
    return np.where(pd.isna(arr), None, arr) if col.hasnans else arr


# --- queries for pages ------------------------------------------------------------------


def _previous_month(month: date) -> date:
    return date(month.year - 1, 12, 1) if month.month == 1 else date(month.year, month.month - 1, 1)


def transitions(engine: Engine, month: date, team_id: str | None = None) -> pd.DataFrame:
    """Patients whose subgroup changed between the previous month and ``month``.

    Columns: patient_id, team_id, from_subgroup (None: not assigned last month), to_subgroup
    (None: not assigned this month, e.g. left or died), rule_id, reason, overridden.
    ``team_id`` filters on the team this month (last month's for patients who left).
    """
    month = _first_of_month(month)
    prev = _previous_month(month)
    a, at = SubgroupAssignment, Attribution
    stmt = (
        select(a.patient_id, a.month, a.subgroup, at.team_id)
        .join(at, (at.patient_id == a.patient_id) & (at.month == a.month), isouter=True)
        .where(a.month.in_([prev, month]))
    )
    if team_id is not None:  # the team's patients of either month only (indexed), not the network's
        stmt = stmt.where(a.patient_id.in_(select(at.patient_id).where(at.team_id == team_id, at.month.in_([prev, month]))))
    with engine.connect() as conn:
        rows = pd.read_sql(stmt, conn)
    rows["month"] = pd.to_datetime(rows["month"]).dt.date
    now, before = rows[rows["month"] == month], rows[rows["month"] == prev]
    merged = now.merge(before, on="patient_id", how="outer", suffixes=("", "_prev"))
    moved = merged[merged["subgroup"].fillna("") != merged["subgroup_prev"].fillna("")].copy()
    moved["team_id"] = moved["team_id"].fillna(moved["team_id_prev"])
    if team_id is not None:
        moved = moved[moved["team_id"] == team_id]
    # rule and reason of this month's assignment, read for the patients who moved only
    ids = moved["patient_id"].tolist()
    with engine.connect() as conn:
        detail = pd.concat([pd.read_sql(select(a.patient_id, a.rule_id, a.reason, a.overridden)
                                        .where(a.month == month, a.patient_id.in_(ids[i : i + 10_000])), conn)
                            for i in range(0, len(ids), 10_000)] or [pd.DataFrame(columns=["patient_id", "rule_id", "reason", "overridden"])])  # fmt: skip
    moved = moved.merge(detail, on="patient_id", how="left")
    moved["reason"] = moved["reason"].fillna("no assignment this month (left the practice or died)")
    moved["rule_id"] = moved["rule_id"].fillna("")
    moved["overridden"] = moved["overridden"].fillna(False).astype(bool)
    out = moved.rename(columns={"subgroup_prev": "from_subgroup", "subgroup": "to_subgroup"})
    out = out[["patient_id", "team_id", "from_subgroup", "to_subgroup", "rule_id", "reason", "overridden"]]
    out = out.astype(object).where(out.notna(), None)
    return out.sort_values(["to_subgroup", "patient_id"], na_position="last").reset_index(drop=True)


def subgroup_transitions(engine: Engine, month: date, team_id: str, subgroup: str) -> pd.DataFrame:
    """Patients who entered or left ``subgroup`` at ``team_id`` in ``month`` (columns of :func:`transitions`).

    Entered: in the subgroup at the team this month, not in it last month (another subgroup,
    or not assigned). Left: in the subgroup at the team last month, not in it this month
    (``team_id`` is then the team of last month). Both are read from the (month, team_id,
    subgroup) index and the (patient_id, month) key: the subgroup's patients at the team, not
    the whole team.
    """
    month = _first_of_month(month)
    prev = _previous_month(month)
    a = SubgroupAssignment
    rows = []
    for here, there in ((month, prev), (prev, month)):
        side, other = aliased(a), aliased(a)
        stmt = (
            select(side.patient_id, side.team_id, side.subgroup, other.subgroup.label("other_subgroup"),
                   (other.rule_id if here == prev else side.rule_id).label("rule_id"),
                   (other.reason if here == prev else side.reason).label("reason"),
                   (other.overridden if here == prev else side.overridden).label("overridden"))
            .outerjoin(other, (other.patient_id == side.patient_id) & (other.month == there))
            .where(side.month == here, side.team_id == team_id, side.subgroup == subgroup,
                   (other.subgroup.is_(None)) | (other.subgroup != subgroup))
        )  # fmt: skip
        with engine.connect() as conn:
            part = pd.read_sql(stmt, conn)
        if here == month:  # entered
            part = part.rename(columns={"subgroup": "to_subgroup", "other_subgroup": "from_subgroup"})
        else:  # left
            part = part.rename(columns={"subgroup": "from_subgroup", "other_subgroup": "to_subgroup"})
            missing = part["to_subgroup"].isna()
            part.loc[missing, "reason"] = "no assignment this month (left the practice or died)"
            part.loc[missing, "rule_id"] = ""
        rows.append(part)
    out = pd.concat(rows, ignore_index=True)
    out["overridden"] = out["overridden"].fillna(False).astype(bool)
    out = out[["patient_id", "team_id", "from_subgroup", "to_subgroup", "rule_id", "reason", "overridden"]]
    out = out.astype(object).where(out.notna(), None)
    return out.sort_values(["to_subgroup", "patient_id"], na_position="last").reset_index(drop=True)


def preview_rules(
    engine: Engine,
    draft: RuleSet,
    month: date,
    current: RuleSet | None = None,
    model: str = DEFAULT_MODEL,
    block_patients: int = BLOCK_PATIENTS,
) -> pd.DataFrame:
    """Patients per rule in ``month`` under the current rules and under a draft (nothing stored).

    Columns: subgroup, rule_id, rule_name, patients_current, patients_draft, change. Overrides
    are left out on both sides, so the difference is the rules' alone. Patients are taken in
    blocks, as by :func:`assign_subgroups`.
    """
    current = current or load_rules(active_rules_path())
    month = _first_of_month(month)
    sides = (("patients_current", current), ("patients_draft", draft))
    sizes: dict[str, list[pd.Series]] = {label: [] for label, _ in sides}
    fractions = top_fractions(current) | top_fractions(draft)
    with engine.connect() as conn:
        run = _run_of(conn, [month], model)
        blocks = patient_blocks(conn, block_patients, [month]) if run else []
        block_scores = _map_blocks(engine, conn, None, _block_scores, [(run, b, bool(fractions)) for b in blocks])
        month_range, _, thresholds = _first_pass(block_scores, fractions)
        if month_range is not None:
            for block in blocks:
                inputs, _ = _block_inputs(conn, run, block, month_range)
                for label, rules in sides:
                    if len(inputs):
                        sizes[label].append(evaluate_rules(inputs, rules, thresholds).groupby(["subgroup", "rule_id"]).size())
    counts = []
    for label, rules in sides:
        names = {r.rule_id: r.name for r in rules.rules}
        c = (
            pd.concat(sizes[label]).groupby(level=[0, 1]).sum().rename(label).reset_index()
            if sizes[label]
            else pd.DataFrame(columns=["subgroup", "rule_id", label])
        )
        full = pd.DataFrame([(r.subgroup, r.rule_id) for r in rules.rules], columns=["subgroup", "rule_id"])
        c = full.merge(c, on=["subgroup", "rule_id"], how="left").fillna({label: 0})
        c["rule_name"] = c["rule_id"].map(names)
        c["_order"] = np.arange(len(c)) + (0 if label == "patients_draft" else 1000)
        counts.append(c)
    out = counts[1].merge(counts[0], on=["subgroup", "rule_id"], how="outer", suffixes=("", "_cur"))
    out = out.assign(_sort=out["_order"].fillna(out["_order_cur"])).sort_values("_sort")
    out["rule_name"] = out["rule_name"].fillna(out["rule_name_cur"])
    out = out.fillna({"patients_current": 0, "patients_draft": 0})
    out[["patients_current", "patients_draft"]] = out[["patients_current", "patients_draft"]].astype(int)
    out["change"] = out["patients_draft"] - out["patients_current"]
    return out[["subgroup", "rule_id", "rule_name", "patients_current", "patients_draft", "change"]].reset_index(drop=True)


def assignment_mix(engine: Engine, month: date | None = None) -> pd.DataFrame:
    """Patients per subgroup and rule in ``month`` (default: the latest). Columns: month, subgroup, rule_id, patients."""
    a = SubgroupAssignment
    with engine.connect() as conn:
        if month is None:
            month = conn.execute(select(a.month).order_by(a.month.desc()).limit(1)).scalar()
        if month is None:
            return pd.DataFrame(columns=["month", "subgroup", "rule_id", "patients"])
        stmt = (select(a.subgroup, a.rule_id, func.count().label("patients")).where(a.month == _first_of_month(month))
                .group_by(a.subgroup, a.rule_id).order_by(a.subgroup, a.rule_id))  # fmt: skip
        out = pd.read_sql(stmt, conn)
    out["patients"] = out["patients"].astype("int64")
    out.insert(0, "month", _first_of_month(month))
    return out


def list_overrides(engine: Engine, include_lifted: bool = False, patient_id: str | None = None) -> pd.DataFrame:
    """Overrides with who and when. Columns: override_id, patient_id, subgroup, start_month, note,
    created_by, created_at, lifted_by, lifted_at. Grain: override_id."""
    o = SubgroupOverride
    stmt = select(
        o.override_id, o.patient_id, o.subgroup, o.start_month, o.note, o.created_by, o.created_at, o.lifted_by, o.lifted_at
    )
    if not include_lifted:
        stmt = stmt.where(o.lifted_at.is_(None))
    if patient_id is not None:
        stmt = stmt.where(o.patient_id == patient_id)
    with engine.connect() as conn:
        return pd.read_sql(stmt.order_by(o.override_id), conn)
