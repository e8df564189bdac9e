"""Payment models side by side, subgroup-mix sensitivity and ACO reconciliation.

Settings are data (core/config/payments.toml), loaded and checked by :func:`load_payment_settings`.

- **Bundled payment**: a time-based payment per member per month by subgroup (Porter, Pabo &
  Lee, Health Affairs 2013: $5 / $10 / $25 / $100 healthy / at risk / chronic / complex).
  Patient-months without a subgroup rate (e.g. ``unassigned``) earn no bundle.
- **Fee-for-service**: a fee per internal activity kind the practice delivers.
- **PCMH building blocks**: FFS x (1 + fee-schedule enhancement %) + care-management PMPM +
  pay-for-performance bonus PMPM per measure target met (the number of targets met is an input).
- **Margin** = revenue - cost, where each model's ``cost_basis`` is ``internal`` (TDABC cost of
  the practice, the default for primary-care payments) or ``total`` (internal + external).
- **ACO reconciliation**: see :func:`aco_reconciliation`.
"""

import math
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from core.config import config_path, load_toml
from core.config.catalog import Catalog, load_catalog
from core.metrics import runout

PAYMENTS_PATH = config_path("payments.toml")
COST_BASES = ("internal", "total")
MODELS = ("bundled", "fee_for_service", "pcmh")


# --- settings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AcoSettings:
    """Financial parameters of one ACO track (rates as fractions, 0.02 = 2 %).

    ``risk_growth_cap_down`` None = a fall in risk score is reflected in full (MSSP);
    a number = symmetric floor (ACO REACH).
    """

    label: str = "custom"
    two_sided: bool = True
    minimum_savings_rate: float = 0.02
    minimum_loss_rate: float = 0.02
    shared_savings_rate: float = 0.75
    shared_loss_rate: float = 0.75
    savings_cap_pct_of_benchmark: float = 0.20
    loss_cap_pct_of_benchmark: float = 0.15
    quality_threshold: float = 40.0
    risk_growth_cap_up: float = 0.03
    risk_growth_cap_down: float | None = None


@dataclass(frozen=True)
class AcoEvidence:
    """When a year is settled from the store's claims (payments.toml ``[aco.evidence]``)."""

    min_baseline_member_months_share: float = 0.5


@dataclass(frozen=True)
class AcoProjectionSettings:
    """How a performance year is projected (payments.toml ``[aco.projection]`` and ``[aco.quality]``)."""

    trend_pct_per_year: float = 0.0
    regional_adjustment_pct: float = 0.0
    performance_year_start_month: int = 1
    interval: float = 0.90
    unpaid_claims_uncertainty_share: float = 0.5
    quality_measures: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PaymentSettings:
    """All payment-model settings (core/config/payments.toml)."""

    bundled_pmpm_usd: dict[str, float]
    bundled_cost_basis: str
    fee_usd: dict[str, float]
    ffs_cost_basis: str
    pcmh_fee_schedule_enhancement_pct: float
    pcmh_care_management_pmpm_usd: float
    pcmh_p4p_bonus_pmpm_usd_per_target_met: float
    pcmh_cost_basis: str
    aco_presets: dict[str, AcoSettings]
    aco_default_preset: str
    aco_evidence: AcoEvidence = AcoEvidence()
    aco_projection: AcoProjectionSettings = AcoProjectionSettings()

    def cost_basis(self, model: str) -> str:
        return {"bundled": self.bundled_cost_basis, "fee_for_service": self.ffs_cost_basis, "pcmh": self.pcmh_cost_basis}[model]


_ACO_RATES = ("minimum_savings_rate", "minimum_loss_rate", "shared_savings_rate", "shared_loss_rate",
              "savings_cap_pct_of_benchmark", "loss_cap_pct_of_benchmark", "risk_growth_cap_up")


def _aco_settings(name: str, raw: dict, source: str) -> AcoSettings:
    known = set(AcoSettings.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{source}: aco.presets.{name} has unknown keys {sorted(unknown)}")
    values = {k: (float(v) if k in _ACO_RATES or k in ("quality_threshold", "risk_growth_cap_down") else v) for k, v in raw.items()}
    settings = AcoSettings(**values)
    validate_aco_settings(settings, f"{source}: aco.presets.{name}")
    return settings


def validate_aco_settings(settings: AcoSettings, where: str = "ACO settings") -> None:
    """Raise ValueError if a rate is outside [0, 1] or a cap is negative."""
    for key in _ACO_RATES:
        value = getattr(settings, key)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{where}: {key} must be between 0 and 1, got {value}")
    down = settings.risk_growth_cap_down
    if down is not None and not 0.0 <= down <= 1.0:
        raise ValueError(f"{where}: risk_growth_cap_down must be between 0 and 1, got {down}")


def load_payment_settings(path: Path = PAYMENTS_PATH, catalog: Catalog | None = None) -> PaymentSettings:
    """Load and validate the payment settings; raises ValueError naming the file and key."""
    raw = load_toml(path)
    return parse_payment_settings(raw, catalog or load_catalog(), source=str(path))


def parse_payment_settings(raw: dict, catalog: Catalog, source: str = "payment settings") -> PaymentSettings:
    """Validate a settings dict (the parsed TOML)."""
    try:
        bundled = {str(k): float(v) for k, v in raw["bundled"]["pmpm_usd"].items()}
        fees = {str(k): float(v) for k, v in raw["fee_for_service"]["fee_usd"].items()}
        pcmh = raw["pcmh"]
        bases = {m: str(raw[m].get("cost_basis", "internal")) for m in MODELS}
        presets = {str(k): _aco_settings(str(k), v, source) for k, v in raw["aco"]["presets"].items()}
        default_preset = str(raw["aco"]["default_preset"])
        evidence = AcoEvidence(**{k: float(v) for k, v in raw["aco"].get("evidence", {}).items()})
        projection = parse_projection_settings(raw["aco"].get("projection", {}), raw["aco"].get("quality", {}), source)
        enhancement = float(pcmh["fee_schedule_enhancement_pct"])
        cm_pmpm = float(pcmh["care_management_pmpm_usd"])
        p4p = float(pcmh["p4p_bonus_pmpm_usd_per_target_met"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(source):
            raise
        raise ValueError(f"{source}: missing or malformed setting ({exc!r})") from exc
    for subgroup, usd in bundled.items():
        if usd < 0:
            raise ValueError(f"{source}: bundled.pmpm_usd.{subgroup} must be >= 0")
    for kind, usd in fees.items():
        if kind not in catalog.activity_kinds:
            raise ValueError(f"{source}: fee_for_service.fee_usd has unknown activity kind {kind!r}")
        if usd < 0:
            raise ValueError(f"{source}: fee_for_service.fee_usd.{kind} must be >= 0")
    for model, basis in bases.items():
        if basis not in COST_BASES:
            raise ValueError(f"{source}: {model}.cost_basis must be one of {COST_BASES}, got {basis!r}")
    if enhancement < 0 or cm_pmpm < 0 or p4p < 0:
        raise ValueError(f"{source}: pcmh amounts must be >= 0")
    if default_preset not in presets:
        raise ValueError(f"{source}: aco.default_preset {default_preset!r} is not a preset")
    if not 0.0 <= evidence.min_baseline_member_months_share <= 1.0:
        raise ValueError(f"{source}: aco.evidence.min_baseline_member_months_share must be between 0 and 1")
    return PaymentSettings(bundled, bases["bundled"], fees, bases["fee_for_service"], enhancement, cm_pmpm, p4p,
                           bases["pcmh"], presets, default_preset, evidence, projection)


def parse_projection_settings(raw: dict, quality: dict, source: str = "payment settings") -> AcoProjectionSettings:
    """Validate ``[aco.projection]`` and ``[aco.quality]``."""
    unknown = set(raw) - (set(AcoProjectionSettings.__dataclass_fields__) - {"quality_measures"})
    if unknown:
        raise ValueError(f"{source}: aco.projection has unknown keys {sorted(unknown)}")
    values = {k: (int(v) if k == "performance_year_start_month" else float(v)) for k, v in raw.items()}
    measures = {str(k): float(v) for k, v in quality.get("measures", {}).items()}
    out = AcoProjectionSettings(**values, quality_measures=measures)
    if not 1 <= out.performance_year_start_month <= 12:
        raise ValueError(f"{source}: aco.projection.performance_year_start_month must be 1-12")
    if not 0 < out.interval < 1:
        raise ValueError(f"{source}: aco.projection.interval must be between 0 and 1")
    if out.unpaid_claims_uncertainty_share < 0 or out.trend_pct_per_year <= -100 or out.regional_adjustment_pct <= -100:
        raise ValueError(f"{source}: aco.projection trend, regional adjustment or uncertainty out of range")
    if any(w < 0 for w in measures.values()):
        raise ValueError(f"{source}: aco.quality.measures weights must be >= 0")
    from core.derive.measures import load_measures

    known = {m.id for m in load_measures().measures}
    missing = sorted(set(measures) - known)
    if missing:
        raise ValueError(f"{source}: aco.quality.measures has unknown measures {missing}")
    return out


# --- bundled revenue and the subgroup mix -----------------------------------------------


def _check_mix(mix: Mapping[str, float], rates: Mapping[str, float]) -> None:
    if not math.isclose(sum(mix.values()), 1.0, abs_tol=1e-9):
        raise ValueError(f"subgroup shares must add up to 1, got {sum(mix.values())}")
    missing = set(mix) - set(rates)
    if missing:
        raise ValueError(f"no bundled rate for subgroups {sorted(missing)}")


def annual_bundled_revenue(panel_size: float, mix: Mapping[str, float], rates: Mapping[str, float]) -> float:
    """Annual bundled revenue, USD = panel x sum(share x PMPM) x 12."""
    _check_mix(mix, rates)
    return float(panel_size * sum(share * rates[s] for s, share in mix.items()) * 12)


def revenue_mix_sensitivity(panel_size: float, mix: Mapping[str, float], rates: Mapping[str, float]) -> pd.DataFrame:
    """Annual bundled revenue by subgroup and its sensitivity to the mix.

    Out grain: subgroup. Columns: share, members, pmpm_usd, annual_revenue_usd, and
    revenue_change_per_point_usd = change of the panel's annual revenue when one percentage
    point of the panel moves into this subgroup from the other subgroups in proportion to their
    shares (panel x 0.01 x 12 x (PMPM - share-weighted PMPM of the others)).
    """
    _check_mix(mix, rates)
    rows = []
    for subgroup, share in mix.items():
        others = {s: w for s, w in mix.items() if s != subgroup}
        other_share = sum(others.values())
        # a panel of one subgroup has nobody to move in from: the sensitivity is undefined
        other_pmpm = sum(w * rates[s] for s, w in others.items()) / other_share if other_share else math.nan
        rows.append({
            "subgroup": subgroup,
            "share": float(share),
            "members": float(panel_size * share),
            "pmpm_usd": float(rates[subgroup]),
            "annual_revenue_usd": float(panel_size * share * rates[subgroup] * 12),
            "revenue_change_per_point_usd": float(panel_size * 0.01 * 12 * (rates[subgroup] - other_pmpm)),
        })
    return pd.DataFrame(rows)


# --- payment models side by side ------------------------------------------------------------


def count_activities(encounters: pd.DataFrame, attribution: pd.DataFrame) -> pd.DataFrame:
    """Internal activities of attributed patient-months, by the month's team and subgroup.

    In: encounters (patient_id, kind, start_date, is_internal), attribution (patient_id, month,
    team_id, subgroup). Out grain: team_id, subgroup, kind. Column: activities.
    """
    from core.store.months import month_of

    internal = encounters.loc[encounters["is_internal"].astype(bool), ["patient_id", "kind", "start_date"]]
    internal = internal.assign(month=month_of(internal["start_date"]) if len(internal) else pd.Series([], dtype=object))
    merged = internal.merge(attribution[["patient_id", "month", "team_id", "subgroup"]], on=["patient_id", "month"], how="inner")
    return merged.groupby(["team_id", "subgroup", "kind"], as_index=False).size().rename(columns={"size": "activities"})



def compare_payment_models(
    member_months_by_subgroup_team: pd.DataFrame,
    activity_counts: pd.DataFrame,
    costs: pd.DataFrame,
    settings: PaymentSettings,
    targets_met: int | Mapping[str, int] = 0,
    internal_costed: bool = True,
    idle_capacity: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Revenue, cost and margin per team and subgroup under each payment model.

    In: member_months_by_subgroup_team (team_id, subgroup, member_months); activity_counts
    (team_id, subgroup, kind, activities: internal activities of the attributed patients);
    costs (team_id, subgroup, cost_internal_usd, cost_external_usd); targets_met: measure targets
    met, for all teams or per team_id (PCMH pay-for-performance); internal_costed False: the
    store has no staff roster (core.derive.costs.costing_status), so internal cost, every cost
    basis that includes it and every margin are unknown (NaN), never $0.
    Out grain: team_id, subgroup, model. Columns: member_months, revenue_usd, cost_basis,
    cost_usd, margin_usd, revenue_pmpm_usd, cost_pmpm_usd, margin_pmpm_usd; with
    ``idle_capacity`` (team_id, idle_capacity_usd) also the fully loaded columns of
    :func:`add_idle_capacity`.
    """
    keys = ["team_id", "subgroup"]
    base = member_months_by_subgroup_team.groupby(keys, as_index=False)["member_months"].sum()
    cost = costs.groupby(keys, as_index=False)[["cost_internal_usd", "cost_external_usd"]].sum()
    # an empty frame keeps the kind column's string dtype through map(): cast before multiplying
    fees = activity_counts["kind"].map(settings.fee_usd).astype("float64").fillna(0.0)
    acts = activity_counts.assign(fee_usd=fees)
    acts = acts.assign(ffs_usd=acts["activities"].astype(float) * acts["fee_usd"])
    ffs = acts.groupby(keys, as_index=False)["ffs_usd"].sum()
    frame = base.merge(cost, on=keys, how="outer").merge(ffs, on=keys, how="outer")
    num = ["member_months", "cost_internal_usd", "cost_external_usd", "ffs_usd"]
    frame[num] = frame[num].astype(float).fillna(0.0)
    if isinstance(targets_met, Mapping):
        targets = frame["team_id"].map(dict(targets_met)).fillna(0).astype(float)
    else:
        targets = pd.Series(float(targets_met), index=frame.index)
    mm = frame["member_months"]
    revenue = {
        "bundled": frame["subgroup"].map(settings.bundled_pmpm_usd).fillna(0.0).astype(float) * mm,
        "fee_for_service": frame["ffs_usd"],
        "pcmh": frame["ffs_usd"] * (1 + settings.pcmh_fee_schedule_enhancement_pct / 100.0)
        + mm * settings.pcmh_care_management_pmpm_usd
        + mm * settings.pcmh_p4p_bonus_pmpm_usd_per_target_met * targets,
    }
    parts = []
    for model in MODELS:
        basis = settings.cost_basis(model)
        cost_usd = frame["cost_internal_usd"] + (frame["cost_external_usd"] if basis == "total" else 0.0)
        if not internal_costed:
            cost_usd = cost_usd * np.nan
        parts.append(pd.DataFrame({
            "team_id": frame["team_id"], "subgroup": frame["subgroup"], "model": model, "member_months": mm,
            "revenue_usd": revenue[model], "cost_basis": basis, "cost_usd": cost_usd,
        }))
    out = pd.concat(parts, ignore_index=True)
    if idle_capacity is not None:
        out = add_idle_capacity(out, idle_capacity, internal_costed)
    return add_margin(out).sort_values(["team_id", "subgroup", "model"]).reset_index(drop=True)


FULLY_LOADED = ("idle_capacity_usd", "fully_loaded_cost_usd")


def add_idle_capacity(frame: pd.DataFrame, idle_capacity: pd.DataFrame, internal_costed: bool = True) -> pd.DataFrame:
    """Add the cost of idle capacity to a frame of team_id, subgroup, model rows (same grain).

    The practice pays for the capacity it supplies, used or not (Kaplan & Anderson 2004): the
    activity (TDABC) cost of a model leaves out the team's unused capacity. ``idle_capacity``:
    team_id, idle_capacity_usd (unused capacity cost of the months, core.derive.costs.capacity_use;
    negative when the team used more than it supplied). Each team's idle cost is spread over its
    subgroups in proportion to their member-months. Columns added: idle_capacity_usd,
    fully_loaded_cost_usd = cost_usd + idle_capacity_usd (:func:`add_margin` then adds
    fully_loaded_margin_usd and its PMPM). NaN when internal cost is not costed.
    """
    idle = idle_capacity.groupby("team_id")["idle_capacity_usd"].sum()
    mm = frame["member_months"].astype(float)
    team_mm = mm.groupby([frame["team_id"], frame["model"]]).transform("sum")
    share = (mm / team_mm.replace(0.0, np.nan)).fillna(0.0)
    out = frame.copy()
    out["idle_capacity_usd"] = frame["team_id"].map(idle).astype("float64").fillna(0.0) * share
    if not internal_costed:
        out["idle_capacity_usd"] = np.nan
    out["fully_loaded_cost_usd"] = out["cost_usd"] + out["idle_capacity_usd"]
    return out


def add_margin(frame: pd.DataFrame) -> pd.DataFrame:
    """Add margin_usd and the PMPM columns (NaN at zero member-months)."""
    out = frame.copy()
    out["margin_usd"] = out["revenue_usd"] - out["cost_usd"]
    mm = out["member_months"].astype(float).replace(0.0, np.nan)
    for col in ("revenue", "cost", "margin"):
        out[f"{col}_pmpm_usd"] = out[f"{col}_usd"] / mm
    if "fully_loaded_cost_usd" in out:
        out["fully_loaded_margin_usd"] = out["revenue_usd"] - out["fully_loaded_cost_usd"]
        out["fully_loaded_margin_pmpm_usd"] = out["fully_loaded_margin_usd"] / mm
    return out


def summarise_models(comparison: pd.DataFrame, by: tuple[str, ...] = ("subgroup",)) -> pd.DataFrame:
    """Sum a :func:`compare_payment_models` frame to ``by`` (() = network) and recompute PMPMs.

    Out grain: *by, model.
    """
    keys = [*by, "model"]
    # min_count=1: a cost that is unknown (NaN) in every row stays unknown instead of summing to 0
    sums = comparison.groupby(keys)
    unknown_ok = ["cost_usd", *[c for c in FULLY_LOADED if c in comparison]]
    out = sums[["member_months", "revenue_usd"]].sum().join(sums[unknown_ok].sum(min_count=1)).reset_index()
    return add_margin(out)


# --- ACO reconciliation -------------------------------------------------------------------


@dataclass(frozen=True)
class AcoInputs:
    """One ACO performance year. Money per member-year (USD); risk scores are CMS-HCC averages.

    baseline_benchmark_pmpy_usd: historical benchmark at the baseline (benchmark-year) risk score.
    quality_score: on the scale of ``AcoSettings.quality_threshold`` (0-100).
    """

    baseline_benchmark_pmpy_usd: float
    baseline_risk_score: float
    performance_risk_score: float
    member_years: float
    actual_spend_pmpy_usd: float
    quality_score: float = 100.0


@dataclass(frozen=True)
class AcoResult:
    """Reconciliation of one year, with the coding-intensity what-if (zero risk-score growth).

    outcome: ``shared_savings``, ``inside_corridor``, ``quality_gate_failed``, ``shared_losses``
    or ``losses_not_shared`` (one-sided track). net_payment_usd > 0: CMS pays the ACO; < 0:
    the ACO owes CMS.
    """

    risk_ratio_uncapped: float
    risk_ratio_applied: float
    risk_cap_binds: bool
    benchmark_pmpy_usd: float
    benchmark_usd: float
    actual_spend_usd: float
    gross_savings_usd: float
    savings_rate: float
    outcome: str
    shared_savings_usd: float
    shared_losses_usd: float
    savings_cap_binds: bool
    loss_cap_binds: bool
    net_payment_usd: float
    gross_savings_at_zero_risk_growth_usd: float
    net_payment_at_zero_risk_growth_usd: float

    @property
    def gross_savings_from_risk_growth_usd(self) -> float:
        """Part of gross savings that comes from risk-score (coding) growth alone."""
        return self.gross_savings_usd - self.gross_savings_at_zero_risk_growth_usd

    @property
    def net_payment_from_risk_growth_usd(self) -> float:
        """Part of the net payment that comes from risk-score (coding) growth alone."""
        return self.net_payment_usd - self.net_payment_at_zero_risk_growth_usd


def capped_risk_ratio(baseline: float, performance: float, settings: AcoSettings) -> float:
    """Performance / baseline risk score with the growth cap (MSSP: +3 % only; REACH: +/-3 %)."""
    if baseline <= 0:
        raise ValueError("baseline risk score must be > 0")
    ratio = performance / baseline
    ratio = min(ratio, 1.0 + settings.risk_growth_cap_up)
    if settings.risk_growth_cap_down is not None:
        ratio = max(ratio, 1.0 - settings.risk_growth_cap_down)
    return ratio


def _settle(inputs: AcoInputs, settings: AcoSettings, performance_risk: float) -> dict:
    uncapped = performance_risk / inputs.baseline_risk_score
    ratio = capped_risk_ratio(inputs.baseline_risk_score, performance_risk, settings)
    benchmark_pmpy = inputs.baseline_benchmark_pmpy_usd * ratio
    benchmark = benchmark_pmpy * inputs.member_years
    actual = inputs.actual_spend_pmpy_usd * inputs.member_years
    gross = benchmark - actual
    rate = gross / benchmark if benchmark else 0.0
    shared_savings = shared_losses = 0.0
    savings_cap_binds = loss_cap_binds = False
    if gross > 0:
        if rate < settings.minimum_savings_rate:
            outcome = "inside_corridor"
        elif inputs.quality_score < settings.quality_threshold:
            outcome = "quality_gate_failed"
        else:
            outcome = "shared_savings"
            uncapped_share = settings.shared_savings_rate * gross
            cap = settings.savings_cap_pct_of_benchmark * benchmark
            savings_cap_binds = uncapped_share > cap
            shared_savings = min(uncapped_share, cap)
    elif gross < 0:
        if not settings.two_sided:
            outcome = "losses_not_shared"
        elif -rate < settings.minimum_loss_rate:
            outcome = "inside_corridor"
        else:
            outcome = "shared_losses"
            uncapped_share = settings.shared_loss_rate * -gross
            cap = settings.loss_cap_pct_of_benchmark * benchmark
            loss_cap_binds = uncapped_share > cap
            shared_losses = min(uncapped_share, cap)
    else:
        outcome = "inside_corridor"
    return dict(
        risk_ratio_uncapped=uncapped, risk_ratio_applied=ratio, risk_cap_binds=not math.isclose(ratio, uncapped),
        benchmark_pmpy_usd=benchmark_pmpy, benchmark_usd=benchmark, actual_spend_usd=actual, gross_savings_usd=gross,
        savings_rate=rate, outcome=outcome, shared_savings_usd=shared_savings, shared_losses_usd=shared_losses,
        savings_cap_binds=savings_cap_binds, loss_cap_binds=loss_cap_binds, net_payment_usd=shared_savings - shared_losses,
    )


def aco_reconciliation(inputs: AcoInputs, settings: AcoSettings) -> AcoResult:
    """Settle one ACO performance year.

    benchmark per member-year = baseline benchmark x capped risk ratio (performance / baseline
    risk score, growth capped: MSSP +3 % only, 42 CFR 425.605 and 425.610; ACO REACH +/-3 %);
    gross savings = benchmark - actual spend; savings are shared when the savings rate reaches
    the minimum savings rate and the quality score meets the threshold (first-dollar sharing at
    the shared savings rate, capped at a % of the benchmark); on a two-sided track, losses
    beyond the minimum loss rate are owed at the shared loss rate, capped at a % of the
    benchmark. Simplifications: one quality gate instead of MSSP's sliding scale; fixed loss rate
    (ENHANCED derives it from the quality-adjusted sharing rate, 40-75 %); benchmark trend,
    regional adjustment and REACH discount and corridors are outside this calculation (put them
    into ``baseline_benchmark_pmpy_usd``). The what-if settles the same year at zero risk-score
    growth (performance risk = baseline risk) to show how much comes from coding intensity.
    """
    validate_aco_settings(settings)
    if inputs.member_years <= 0:
        raise ValueError("member_years must be > 0")
    actual = _settle(inputs, settings, inputs.performance_risk_score)
    flat = _settle(inputs, settings, inputs.baseline_risk_score)
    return AcoResult(**actual, gross_savings_at_zero_risk_growth_usd=flat["gross_savings_usd"],
                     net_payment_at_zero_risk_growth_usd=flat["net_payment_usd"])


def aco_refusal(performance_member_months: float, performance_claims_usd: float, baseline_member_months: float,
                baseline_claims_usd: float, evidence: AcoEvidence, benchmark_given: bool = False) -> str | None:
    """Why a year cannot be settled from these figures (None: it can).

    A performance year without claims is never settled (the spend would be $0 by absence of
    data). Unless a benchmark is given, the baseline (the same months a year earlier) must hold
    claims and at least ``min_baseline_member_months_share`` of the performance year's
    member-months: a benchmark per member-year from a few baseline months says nothing about a
    whole year's spend.
    """
    if performance_claims_usd <= 0:
        return "the performance year has no paid claims: nothing to settle"
    if benchmark_given:
        return None
    if baseline_member_months <= 0 or baseline_claims_usd <= 0:
        return "the baseline year (the 12 months before) has no paid claims: enter a benchmark per member-year"
    share = baseline_member_months / performance_member_months
    if share < evidence.min_baseline_member_months_share:
        return (f"the baseline year has {baseline_member_months:,.0f} member-months against {performance_member_months:,.0f} "
                f"in the performance year ({share:.0%}, below the {evidence.min_baseline_member_months_share:.0%} "
                "required): enter a benchmark per member-year")
    return None


def aco_result_table(result: AcoResult) -> pd.DataFrame:
    """The result as rows (item, value) for printing and export."""
    rows = [(k, getattr(result, k)) for k in AcoResult.__dataclass_fields__]
    rows += [("gross_savings_from_risk_growth_usd", result.gross_savings_from_risk_growth_usd),
             ("net_payment_from_risk_growth_usd", result.net_payment_from_risk_growth_usd)]
    return pd.DataFrame(rows, columns=["item", "value"])


def with_overrides(settings: AcoSettings, **changes) -> AcoSettings:
    """A copy of ACO settings with some parameters changed (validated)."""
    out = replace(settings, **changes)
    validate_aco_settings(out)
    return out


# --- selection report (CLI and pages) ------------------------------------------------------


# the last few selections of each engine, per data version and cost settings (a report asks for one twice)
_SELECTION_FRAMES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _selection_frames(engine, months, practice_id, team_id, subgroup):
    """Cost inputs, patient-month costs and attribution of a selection's patient-months.

    Only the patients attributed to the practice or team in ``months`` are read (a patient-month's
    costs are the patient's own), and the result is kept for the data version, so the payment
    report and the ACO inputs of one selection read the store once.
    """
    from sqlalchemy import select

    from core.derive import costs
    from core.metrics.cost_reports import select_patient_months
    from core.store.models import Attribution
    from core.store.queries import data_version

    catalog = load_catalog()
    cost_settings = costs.load_cost_settings(catalog=catalog)
    cache = _SELECTION_FRAMES.setdefault(engine, {})  # per engine (two in-memory stores share a URL)
    key = (data_version(engine), repr(cost_settings), tuple(months), practice_id, team_id, subgroup)
    if key in cache:
        return cache[key]
    patients = None
    if practice_id is not None or team_id is not None:
        a = Attribution
        patients = select(a.patient_id).where(a.month.in_(sorted(set(months))))
        patients = patients.where(a.practice_id == practice_id) if practice_id is not None else patients
        patients = patients.where(a.team_id == team_id) if team_id is not None else patients
    inputs = costs.load_cost_inputs(engine, months, patients)
    wide = select_patient_months(costs.build_patient_month_costs(inputs, cost_settings, catalog), practice_id, team_id, subgroup)
    attribution = select_patient_months(inputs.attribution, practice_id, team_id, subgroup)
    while len(cache) >= 4:
        cache.pop(next(iter(cache)))
    cache[key] = inputs, wide, attribution
    return inputs, wide, attribution


def _mean_risk(engine, months, attribution: pd.DataFrame) -> float | None:
    """Mean SubgroupAssignment.risk_score over the selection's patient-months (None if no scores)."""
    from sqlalchemy import select

    from core.derive.costs import _read
    from core.store.models import SubgroupAssignment as S
    from core.store.months import month_of

    scores = _read(engine, select(S.patient_id, S.month, S.risk_score).where(S.month.in_(list(months)), S.risk_score.is_not(None)))
    if scores.empty:
        return None
    scores["month"] = month_of(scores["month"])
    scores = scores.merge(attribution[["patient_id", "month"]], on=["patient_id", "month"], how="inner")
    return float(scores["risk_score"].mean()) if len(scores) else None


def aco_inputs_from_store(engine, months: list, practice_id=None, team_id=None, subgroup=None,
                          benchmark_pmpy_usd: float | None = None, quality_score: float = 100.0,
                          evidence: AcoEvidence | None = None) -> tuple[AcoInputs | None, str]:
    """ACO inputs of a selection: performance = ``months``, baseline = the same months a year earlier.

    actual spend = paid claims (external cost; TDABC cost of the practice is not a claim) per
    member-year; risk = mean monthly CMS-HCC risk score of the attributed patient-months
    (1.0 for both years when no scores are stored); benchmark per member-year = the argument, else
    the baseline window's claims per member-year. Returns (None, reason) when it cannot be built
    or :func:`aco_refusal` refuses it.
    """
    from core.derive.costs import COST_EXTERNAL

    evidence = evidence or load_payment_settings().aco_evidence
    _, wide, attribution = _selection_frames(engine, months, practice_id, team_id, subgroup)
    member_months = float(len(wide))
    if not member_months:
        return None, "no attributed member-months in the selection"
    baseline_months = [m.replace(year=m.year - 1) for m in months]
    _, base_wide, base_att = _selection_frames(engine, baseline_months, practice_id, team_id, subgroup)
    refusal = aco_refusal(member_months, float(wide[COST_EXTERNAL].sum()), float(len(base_wide)),
                          float(base_wide[COST_EXTERNAL].sum()) if len(base_wide) else 0.0, evidence,
                          benchmark_given=benchmark_pmpy_usd is not None)  # fmt: skip
    if refusal:
        return None, refusal
    note = []
    if benchmark_pmpy_usd is None:
        benchmark_pmpy_usd = float(base_wide[COST_EXTERNAL].sum()) * 12 / len(base_wide)
        note.append("benchmark = baseline-year claims per member-year")
    perf_risk = _mean_risk(engine, months, attribution)
    base_risk = _mean_risk(engine, baseline_months, base_att) if len(base_att) else None
    if perf_risk is None or base_risk is None:
        perf_risk = base_risk = 1.0
        note.append("no risk scores for both years: risk ratio 1.0")
    incomplete = runout.incomplete_note(runout.claims_completeness(engine, months))
    if incomplete:
        note.append(f"{incomplete}: actual spend is understated")
    inputs = AcoInputs(
        baseline_benchmark_pmpy_usd=benchmark_pmpy_usd, baseline_risk_score=base_risk, performance_risk_score=perf_risk,
        member_years=member_months / 12, actual_spend_pmpy_usd=float(wide[COST_EXTERNAL].sum()) * 12 / member_months,
        quality_score=quality_score,
    )
    return inputs, "; ".join(note)


def payment_report(
    engine,
    months: list,
    practice_id: str | None = None,
    team_id: str | None = None,
    subgroup: str | None = None,
    settings: PaymentSettings | None = None,
    targets_met: int = 0,
) -> dict[str, pd.DataFrame | str]:
    """Payment models side by side for a selection, by subgroup and by team and subgroup, and the
    annual bundled revenue of the selection's average panel with its mix sensitivity.
    ``costing``: what core.derive.costs.CostingStatus says of internal cost ('' = fully costed);
    without a staff roster every cost and margin is NaN ("not costed")."""
    from core.derive.costs import costing_status

    settings = settings or load_payment_settings()
    inputs, wide, attribution = _selection_frames(engine, months, practice_id, team_id, subgroup)
    costing = costing_status(engine)
    keys = ["team_id", "subgroup"]
    member_months = wide.groupby(keys, as_index=False)["member_months"].sum()
    costs_frame = wide.groupby(keys, as_index=False)[["cost_internal_usd", "cost_external_usd"]].sum()
    activities = count_activities(inputs.encounters, attribution)
    comparison = compare_payment_models(member_months, activities, costs_frame, settings, targets_met, costing.costed)
    mix = wide.loc[wide["subgroup"].isin(list(settings.bundled_pmpm_usd))].groupby("subgroup")["member_months"].sum()
    sensitivity = pd.DataFrame()
    if mix.sum() > 0:
        panel = float(mix.sum()) / len(months)
        sensitivity = revenue_mix_sensitivity(panel, (mix / mix.sum()).to_dict(), settings.bundled_pmpm_usd)
    return {
        "costing": costing.note(),
        "by_subgroup": summarise_models(comparison, ("subgroup",)),
        "by_team_subgroup": comparison,
        "total": summarise_models(comparison, ()),
        "mix_sensitivity": sensitivity,
    }


# --- ACO projection of the performance year ---------------------------------------------------


def trended_benchmark_pmpy(baseline_pmpy_usd: float, projection: AcoProjectionSettings, years: float = 1.0) -> float:
    """Benchmark per member-year of the performance year from the baseline year's spend:
    baseline x (1 + trend) ^ years x (1 + regional adjustment) (MSSP, 42 CFR 425.652 and 425.656;
    payments.toml ``[aco.projection]``)."""
    trend = (1 + projection.trend_pct_per_year / 100.0) ** years
    return float(baseline_pmpy_usd * trend * (1 + projection.regional_adjustment_pct / 100.0))


def quality_score(card: pd.DataFrame, weights: Mapping[str, float]) -> tuple[float | None, pd.DataFrame]:
    """Quality score (0-100) of a scorecard through the measure mapping ``weights`` (measure_id -> weight).

    Points of a measure = 100 x value / target (higher is better) or 100 x target / value (lower
    is better; a value of 0 earns 100), at most 100. Score = weighted mean of the points of the
    mapped measures that have a published value (suppressed or empty measures are left out and
    listed with no points). Returns (score, parts); score None when no mapped measure has a value.
    Parts grain: measure_id. Columns: name, unit, value, target, direction, weight, points.
    """
    rows = []
    card = card.loc[card["stratum"] == "all"] if "stratum" in card else card
    by_id = card.drop_duplicates("measure_id").set_index("measure_id")
    for measure_id, weight in weights.items():
        if measure_id not in by_id.index:
            rows.append({"measure_id": measure_id, "name": measure_id, "unit": "", "value": np.nan, "target": np.nan,
                         "direction": "", "weight": float(weight), "points": np.nan})  # fmt: skip
            continue
        row = by_id.loc[measure_id]
        value, target = float(row["value"]), float(row["target"])
        if np.isnan(value) or np.isnan(target):
            points = np.nan
        elif row["direction"] == "higher":
            points = 100.0 * min(1.0, value / target) if target > 0 else 100.0
        else:
            points = 100.0 if value <= 0 else 100.0 * min(1.0, target / value)
        rows.append({"measure_id": measure_id, "name": row["name"], "unit": row["unit"], "value": value, "target": target,
                     "direction": row["direction"], "weight": float(weight), "points": points})  # fmt: skip
    parts = pd.DataFrame(rows, columns=["measure_id", "name", "unit", "value", "target", "direction", "weight", "points"])
    scored = parts.loc[parts["points"].notna() & (parts["weight"] > 0)]
    if scored.empty:
        return None, parts
    return float((scored["points"] * scored["weight"]).sum() / scored["weight"].sum()), parts


@dataclass(frozen=True)
class SpendProjection:
    """Claims spend of a whole performance year projected from its months so far (USD).

    ``completed_usd``: the observed months' claims completed for run-out (paid / completion);
    ``projected_usd``: completed + the remaining months (and observed months whose completion is
    unknown) at the observed completed PMPM; ``low_usd`` / ``high_usd``: the interval.
    """

    months_observed: int
    months_remaining: int
    months_estimated: int
    member_months_observed: float
    member_months_year: float
    paid_usd: float
    completed_usd: float
    pmpm_usd: float
    projected_usd: float
    low_usd: float
    high_usd: float

    @property
    def unpaid_estimate_usd(self) -> float:
        """Claims incurred in the observed months and not yet paid (completed - paid)."""
        return self.completed_usd - self.paid_usd

    @property
    def member_years(self) -> float:
        return self.member_months_year / 12.0


def project_spend(monthly: pd.DataFrame, months_remaining: int, projection: AcoProjectionSettings) -> SpendProjection:
    """Project the performance year's claims spend from its observed months.

    In: monthly (grain month): member_months, paid_usd, completion (share of the month's claims
    paid so far, core.metrics.runout; 1.0 for a complete month; NaN when unknown, e.g. an
    incomplete month without paid dates: that month's spend is then estimated like a remaining
    month's). ``months_remaining``: months of the year after the last observed one; each gets the
    observed months' mean member-months.

    Point = sum of completed claims + completed PMPM (sum completed / their member-months) x the
    member-months still to estimate. Interval (``projection.interval``, normal): the remaining
    months vary as the observed monthly PMPMs do (sd s): variance = n x (s x mean member-months)^2
    (month-to-month) + (member-months to estimate x s)^2 / k (the PMPM's own error, k usable
    months); and the not-yet-paid estimate is uncertain by ``unpaid_claims_uncertainty_share``
    either way. Half-width = sqrt((z x sd)^2 + (share x unpaid)^2). With fewer than two usable
    months and months to estimate, the interval is NaN.
    """
    from statistics import NormalDist

    if months_remaining < 0:
        raise ValueError("months_remaining must be >= 0")
    mm = monthly["member_months"].astype(float).to_numpy()
    paid = monthly["paid_usd"].astype(float).to_numpy()
    completion = monthly["completion"].astype(float).to_numpy()
    use = ~np.isnan(completion) & (completion > 0) & (mm > 0)
    if not use.any():
        raise ValueError("no observed month has claims that can be completed")
    completed = paid[use] / completion[use]
    rate = completed.sum() / mm[use].sum()
    mean_mm = float(mm.mean())
    to_estimate = months_remaining * mean_mm + float(mm[~use].sum())
    n_estimate = months_remaining + int((~use).sum())
    point = float(completed.sum() + rate * to_estimate)
    k = int(use.sum())
    unpaid = float((completed - paid[use]).sum())
    if n_estimate == 0:
        sd = 0.0
    elif k >= 2:
        s = float(np.std(completed / mm[use], ddof=1))
        sd = math.sqrt(n_estimate * (s * mean_mm) ** 2 + (to_estimate * s) ** 2 / k)
    else:
        sd = math.nan
    z = NormalDist().inv_cdf(0.5 + projection.interval / 2)
    half = math.sqrt((z * sd) ** 2 + (projection.unpaid_claims_uncertainty_share * unpaid) ** 2)
    return SpendProjection(
        months_observed=len(monthly), months_remaining=months_remaining, months_estimated=n_estimate,
        member_months_observed=float(mm.sum()), member_months_year=float(mm.sum()) + months_remaining * mean_mm,
        paid_usd=float(paid.sum()), completed_usd=float(completed.sum()), pmpm_usd=float(rate), projected_usd=point,
        low_usd=point - half, high_usd=point + half,
    )  # fmt: skip


@dataclass(frozen=True)
class AcoYearProjection:
    """The projected settlement of a performance year: at the point spend and at both ends of its
    interval (``low``: settlement at the high end of spend; ``high``: at the low end)."""

    spend: SpendProjection
    baseline_pmpy_usd: float
    benchmark_pmpy_usd: float
    quality_score: float
    point: AcoResult
    low: AcoResult | None
    high: AcoResult | None


def project_aco_year(spend: SpendProjection, baseline_pmpy_usd: float, baseline_risk: float, performance_risk: float,
                     quality: float, settings: AcoSettings, projection: AcoProjectionSettings,
                     years: float = 1.0) -> AcoYearProjection:  # fmt: skip
    """Settle the projected year (:func:`aco_reconciliation`) at the point spend and at both ends
    of its interval, against the trended, regionally adjusted benchmark
    (:func:`trended_benchmark_pmpy`). Risk-score growth's part is on each result
    (``net_payment_from_risk_growth_usd``)."""
    benchmark = trended_benchmark_pmpy(baseline_pmpy_usd, projection, years)
    member_years = spend.member_years

    def settle(total_usd: float) -> AcoResult | None:
        if math.isnan(total_usd):
            return None
        inputs = AcoInputs(baseline_benchmark_pmpy_usd=benchmark, baseline_risk_score=baseline_risk,
                           performance_risk_score=performance_risk, member_years=member_years,
                           actual_spend_pmpy_usd=total_usd / member_years, quality_score=quality)  # fmt: skip
        return aco_reconciliation(inputs, settings)

    return AcoYearProjection(spend, float(baseline_pmpy_usd), benchmark, float(quality), settle(spend.projected_usd),
                             settle(spend.high_usd), settle(spend.low_usd))  # fmt: skip


def performance_year_months(month, start_month: int) -> tuple[list, int]:
    """The performance year's months up to ``month`` (oldest first) and how many remain after it."""
    from core.store.months import add_months, as_month

    month = as_month(month)
    back = (month.month - start_month) % 12
    observed = [add_months(month, -i) for i in range(back, -1, -1)]
    return observed, 11 - back
