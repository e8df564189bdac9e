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
from collections.abc import Mapping
from dataclasses import dataclass, replace
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
                           bases["pcmh"], presets, default_preset, evidence)


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
) -> pd.DataFrame:
    """Revenue, cost and margin per team and subgroup under each payment model.

    In: member_months_by_subgroup_team (team_id, subgroup, member_months); activity_counts
    (team_id, subgroup, kind, activities: internal activities of the attributed patients);
    costs (team_id, subgroup, cost_internal_usd, cost_external_usd); targets_met: measure targets
    met, for all teams or per team_id (PCMH pay-for-performance); internal_costed False: the
    store has no staff roster (core.derive.costs.costing_status), so internal cost, every cost
    basis that includes it and every margin are unknown (NaN), never $0.
    Out grain: team_id, subgroup, model. Columns: member_months, revenue_usd, cost_basis,
    cost_usd, margin_usd, revenue_pmpm_usd, cost_pmpm_usd, margin_pmpm_usd.
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
    return add_margin(out).sort_values(["team_id", "subgroup", "model"]).reset_index(drop=True)


def add_margin(frame: pd.DataFrame) -> pd.DataFrame:
    """Add margin_usd and the PMPM columns (NaN at zero member-months)."""
    out = frame.copy()
    out["margin_usd"] = out["revenue_usd"] - out["cost_usd"]
    mm = out["member_months"].astype(float).replace(0.0, np.nan)
    for col in ("revenue", "cost", "margin"):
        out[f"{col}_pmpm_usd"] = out[f"{col}_usd"] / mm
    return out


def summarise_models(comparison: pd.DataFrame, by: tuple[str, ...] = ("subgroup",)) -> pd.DataFrame:
    """Sum a :func:`compare_payment_models` frame to ``by`` (() = network) and recompute PMPMs.

    Out grain: *by, model.
    """
    keys = [*by, "model"]
    # min_count=1: a cost that is unknown (NaN) in every row stays unknown instead of summing to 0
    sums = comparison.groupby(keys)
    out = sums[["member_months", "revenue_usd"]].sum().join(sums["cost_usd"].sum(min_count=1)).reset_index()
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


_SELECTION_FRAMES: dict = {}  # the last few selections, per data version (a report asks for one twice)


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

    key = (engine.url.render_as_string(hide_password=True), data_version(engine), tuple(months), practice_id, team_id, subgroup)
    if key in _SELECTION_FRAMES:
        return _SELECTION_FRAMES[key]
    catalog = load_catalog()
    cost_settings = costs.load_cost_settings(catalog=catalog)
    patients = None
    if practice_id is not None or team_id is not None:
        a = Attribution
        patients = select(a.patient_id).where(a.month.in_(sorted(set(months))))
        patients = patients.where(a.practice_id == practice_id) if practice_id is not None else patients
        patients = patients.where(a.team_id == team_id) if team_id is not None else patients
    inputs = costs.load_cost_inputs(engine, months, patients)
    wide = select_patient_months(costs.build_patient_month_costs(inputs, cost_settings, catalog), practice_id, team_id, subgroup)
    attribution = select_patient_months(inputs.attribution, practice_id, team_id, subgroup)
    while len(_SELECTION_FRAMES) >= 4:
        _SELECTION_FRAMES.pop(next(iter(_SELECTION_FRAMES)))
    _SELECTION_FRAMES[key] = inputs, wide, attribution
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
