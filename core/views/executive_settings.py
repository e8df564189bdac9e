"""Settings of the executive views (core/config/executive.toml): key outcomes of the trends,
default measures of the team comparison and equity views, the value map's minimum denominator
and value index weights,
stratum values that are not a group, and the specialist cost categories of the e-consult view."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from core.config import config_path, load_toml
from core.derive.measures import load_measures

EXECUTIVE_PATH = config_path("executive.toml")


@dataclass(frozen=True)
class ExecutiveSettings:
    trend_months: int
    key_outcomes: tuple[str, ...]
    default_compare_measure: str
    default_equity_measure: str
    min_denominator: float
    not_a_group: tuple[str, ...]
    specialist_categories: tuple[str, ...]
    tier_weights: dict[int, float]
    score_cap: float
    equity_reference: str = "best_above_minimum"
    reference_min_patients: float = 50.0


@cache
def load_executive_settings(path: Path = EXECUTIVE_PATH) -> ExecutiveSettings:
    """Load and check core/config/executive.toml (measure ids must exist in the catalogue)."""
    raw = load_toml(path)
    out = ExecutiveSettings(
        trend_months=int(raw["trends"]["months"]), key_outcomes=tuple(raw["trends"]["key_outcomes"]),
        default_compare_measure=str(raw["compare"]["default_measure"]),
        default_equity_measure=str(raw["equity"]["default_measure"]),
        min_denominator=float(raw["value_map"]["min_denominator"]), not_a_group=tuple(raw["equity"]["not_a_group"]),
        specialist_categories=tuple(raw["econsults"]["specialist_categories"]),
        tier_weights={int(k): float(v) for k, v in raw["value_index"]["tier_weights"].items()},
        score_cap=float(raw["value_index"]["score_cap"]),
        equity_reference=str(raw["equity"].get("reference", "best_above_minimum")),
        reference_min_patients=float(raw["equity"].get("reference_min_patients", 50)),
    )  # fmt: skip
    if out.equity_reference not in ("best_above_minimum", "largest"):
        raise ValueError(f"{path}: equity.reference must be 'best_above_minimum' or 'largest'")
    if any(w < 0 for w in out.tier_weights.values()) or out.score_cap <= 100:
        raise ValueError(f"{path}: value_index tier weights must be >= 0 and score_cap above 100")
    known = set(load_measures().by_id())
    unknown = {*out.key_outcomes, out.default_compare_measure, out.default_equity_measure} - known
    if unknown:
        raise ValueError(f"{path}: unknown measure ids {sorted(unknown)}")
    return out
