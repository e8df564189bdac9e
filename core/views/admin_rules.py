"""The subgroup-rules page's data: how many patients each rule would catch under a draft."""

from datetime import date

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from core.derive.blocks import BLOCK_PATIENTS
from core.derive.risk import DEFAULT_MODEL
from core.derive.subgroups.assign import month_inputs
from core.derive.subgroups.evaluate import evaluate_rules, top_fractions
from core.derive.subgroups.rules import RuleSet, active_rules_path, load_rules
from core.metrics.scorecard import suppress_table
from core.store.months import as_month
from core.views.format import SUPPRESSED

PREVIEW_COLUMNS = ["subgroup", "rule_id", "rule_name", "patients_current", "patients_draft", "change"]


def preview_rules(
    engine: Engine,
    draft: RuleSet,
    month: date,
    current: RuleSet | None = None,
    model: str = DEFAULT_MODEL,
    block_patients: int = BLOCK_PATIENTS,
) -> pd.DataFrame:
    """Patients per rule in ``month`` under the current rules and under a draft (nothing stored).

    Grain: subgroup, rule_id (the draft's rules in order, then the current rules the draft
    drops). Columns: subgroup, rule_id, rule_name, patients_current, patients_draft, change.
    Overrides are left out on both sides, so the difference is the rules' alone. Patients are
    taken in blocks, as by :func:`core.derive.subgroups.assign.assign_subgroups`.
    """
    current = current or load_rules(active_rules_path())
    sides = (("patients_current", current), ("patients_draft", draft))
    sizes: dict[str, list[pd.Series]] = {label: [] for label, _ in sides}
    fractions = top_fractions(current) | top_fractions(draft)
    for inputs, thresholds in month_inputs(engine, as_month(month), fractions, model, block_patients):
        if len(inputs):
            for label, rules in sides:
                sizes[label].append(evaluate_rules(inputs, rules, thresholds).groupby(["subgroup", "rule_id"]).size())
    counts = [_rule_counts(label, rules, sizes[label]) for label, rules in sides]
    return _compare(counts[0], counts[1])


def _rule_counts(label: str, rules: RuleSet, sizes: list[pd.Series]) -> pd.DataFrame:
    """Patients per rule of ``rules`` (0 for a rule that caught none) in column ``label``, with
    the rule's name and its order (the draft's first)."""
    names = {r.rule_id: r.name for r in rules.rules}
    counts = (
        pd.concat(sizes).groupby(level=[0, 1]).sum().rename(label).reset_index()
        if sizes
        else pd.DataFrame(columns=["subgroup", "rule_id", label])
    )
    full = pd.DataFrame([(r.subgroup, r.rule_id) for r in rules.rules], columns=["subgroup", "rule_id"])
    counts = full.merge(counts, on=["subgroup", "rule_id"], how="left").fillna({label: 0})
    counts["rule_name"] = counts["rule_id"].map(names)
    counts["_order"] = np.arange(len(counts)) + (0 if label == "patients_draft" else 1000)
    return counts


def _compare(current: pd.DataFrame, draft: pd.DataFrame) -> pd.DataFrame:
    """The counts of both sides side by side, with the change from current to draft."""
    out = draft.merge(current, on=["subgroup", "rule_id"], how="outer", suffixes=("", "_cur"))
    out = out.assign(_sort=out["_order"].fillna(out["_order_cur"])).sort_values("_sort")
    out["rule_name"] = out["rule_name"].fillna(out["rule_name_cur"])
    out = out.fillna({"patients_current": 0, "patients_draft": 0})
    out[["patients_current", "patients_draft"]] = out[["patients_current", "patients_draft"]].astype(int)
    out["change"] = out["patients_draft"] - out["patients_current"]
    return out[PREVIEW_COLUMNS].reset_index(drop=True)


def rules_with_counts(rules: pd.DataFrame, mix: pd.DataFrame, suppress: bool) -> tuple[pd.DataFrame, str]:
    """The rules table with the patients each caught (``mix``: subgroup, rule_id, patients of one
    month) and the number under overrides, as text.

    With ``suppress``, counts of 1-10 are hidden with complementary suppression within each
    subgroup (a subgroup's rules add up to its members, published on the trends). Grain: rule_id.
    """
    mix = mix.astype({"patients": "float64"})
    if suppress:
        mix = suppress_table(mix, ["patients"], group_cols=["subgroup"])
    table = rules.merge(mix[["rule_id", "patients"]], on="rule_id", how="left")
    table["patients"] = table["patients"].where(table["rule_id"].isin(mix["rule_id"]), 0.0)  # caught none
    overrides = mix.loc[mix["rule_id"] == "override", "patients"]
    return table, SUPPRESSED if overrides.isna().any() else f"{overrides.sum():,.0f}"


def suppress_preview(preview: pd.DataFrame, suppress: bool) -> pd.DataFrame:
    """A draft preview (:func:`preview_rules`) with counts of 1-10 hidden (and their change), with
    complementary suppression within each subgroup, when ``suppress``."""
    if not suppress:
        return preview
    counts = ["patients_current", "patients_draft"]
    out = suppress_table(preview.astype({c: "float64" for c in counts}), counts, group_cols=["subgroup"],
                         value_cols=["change"])  # fmt: skip
    return out.drop(columns="suppressed")
