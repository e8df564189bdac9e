"""Subgroup evaluation: the first rule that matches each patient-month, with its reason.

Each condition key of the rules file (:data:`core.derive.subgroups.rules.CONDITION_TYPES`) has a
predicate (which rows meet it) and a fragment (the words of the reason). A reason is built once
per distinct combination of the inputs its rule reads, since a patient usually keeps the same
values for many months. ``risk_score_top_fraction`` compares a score with the month's threshold
over every patient-month of the run (:func:`month_thresholds`), so a block of patients is
evaluated with the thresholds of the whole network.
"""

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from core.derive.subgroups.rules import CONDITION_TYPES, Rule, RuleSet

REASON_MAX = 500


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
                f"HCC risk {s:.2f} in the network's {_top_label(v)} (cut-off {t:.2f} this month, set across all teams)"
                for s, t in zip(df["risk_score"], df[_threshold_column(v)], strict=True)
            ],
            dtype=object,
        )

    return pred, frag


def _payment_hccs() -> tuple[Predicate, Fragment]:
    def pred(df, v, _):
        with np.errstate(invalid="ignore"):
            return df["payment_hcc_count"].to_numpy(dtype=float) >= v

    def frag(df, v, _):
        def text(n, hccs) -> str:
            if pd.isna(n):
                return "no risk score"
            n = int(n)
            return (
                f"{n} payment HCC{'' if n == 1 else 's'}: {hccs.replace(',', ', ')}"
                if n
                else "no payment HCC (score from age, sex and dual status)"
            )

        return pd.Series([text(n, h) for n, h in zip(df["payment_hcc_count"], df["payment_hccs"], strict=True)], dtype=object)

    return pred, frag


def _condition_columns(key: str, value) -> list[str]:
    """The input columns a condition reads (its reason depends on nothing else)."""
    if key == "risk_score_top_fraction":
        return ["risk_score", _threshold_column(value)]
    if key == "risk_factor_codes":
        return [c for g in value for c in (f"rf_{g}", f"rf_{g}_codes")]
    if key == "min_payment_hccs":
        return ["payment_hcc_count", "payment_hccs"]
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
    "min_payment_hccs": _payment_hccs(),
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


def history_flags(inputs: pd.DataFrame, rules: RuleSet) -> tuple[np.ndarray, np.ndarray]:
    """``thin_history`` (fewer than ``rules.history.min_months`` months of data in its lookback)
    and its note (``Not enough history: 2 of 6 months of data``; '' otherwise) of each row of
    ``inputs`` (a ``history_months`` column of :func:`core.derive.subgroups.inputs.compute_inputs`)."""
    months = inputs["history_months"].to_numpy(dtype="int64")
    thin = months < rules.history.min_months
    notes = {int(n): rules.history.note(int(n)) for n in np.unique(months[thin])}
    return thin, np.array([notes[int(n)] if t else "" for n, t in zip(months, thin, strict=True)], dtype=object)


def top_fractions(rules: RuleSet) -> set[float]:
    """The ``risk_score_top_fraction`` values the rules use (each needs a threshold per month)."""
    return {v for rule in rules.rules for k, v in _all_conditions(rule) if k == "risk_score_top_fraction"}


def evaluate_rules(inputs: pd.DataFrame, rules: RuleSet, thresholds: dict[float, pd.Series] | None = None) -> pd.DataFrame:
    """Subgroup of each patient-month: the first rule that matches, with its reason.

    ``inputs``: :func:`core.derive.subgroups.inputs.compute_inputs` columns. ``thresholds``: the month thresholds of each top
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
