"""Everything the patient page shows, from indexed rows of one patient (within the caller's scope).

:func:`patient_view` builds on ``core.store.queries.patient_record`` (which enforces the scope) and adds
what a clinician reads: subgroup periods with reasons and overrides, measurement series with
their targets (``core/config/worklist.toml`` [[charts]]), costs per month by category (internal
by TDABC through ``core.derive.costs.encounter_costs``, external = paid claims), e-consults and the
care team.
"""

from dataclasses import dataclass
from datetime import date

import pandas as pd
from sqlalchemy import Engine, select

from core.access.policy import Scope, can_act, load_access_rules
from core.config.catalog import load_catalog
from core.derive.costs import CostInputs, encounter_costs, load_cost_settings
from core.derive.subgroups.overrides import lift_override, list_overrides, set_override
from core.store.models import Encounter, Staff, StaffMinutes
from core.store.queries import patient_in_scope, patient_record, read_frame
from core.views.worklist import WorklistRules, load_worklist_rules

PERIOD_COLUMNS = ["from_month", "to_month", "months", "subgroup", "rule_id", "reason", "risk_scores", "overridden",
                  "thin_history", "history_note"]  # fmt: skip


def _score_range(scores: pd.Series) -> str:
    """``0.58`` or ``0.58 to 0.62`` (two decimals, as the reasons), '' without a score."""
    s = pd.to_numeric(scores, errors="coerce").dropna()
    if not len(s):
        return ""
    low, high = f"{s.min():.2f}", f"{s.max():.2f}"
    return low if low == high else f"{low} to {high}"


def subgroup_periods(assignments: pd.DataFrame) -> pd.DataFrame:
    """The patient's subgroup history as periods, oldest first.

    A period is a run of consecutive assigned months with one subgroup, placed there by one rule
    (or one override) with the same history status (thin or not). A figure moving inside the
    reason (the month's top-decile cut-off, the risk score, a count) does not start a new period:
    the period keeps its latest month's reason and the range of its risk scores.

    In: assignments (month, subgroup, rule_id, reason, overridden; optional risk_score,
    thin_history, history_note). Out grain: period. Out columns: :data:`PERIOD_COLUMNS`.
    """
    if not len(assignments):
        return pd.DataFrame(columns=PERIOD_COLUMNS)
    a = assignments.sort_values("month").reset_index(drop=True)
    a = a.assign(risk_score=a["risk_score"] if "risk_score" in a else float("nan"),
                 thin_history=a["thin_history"].fillna(False).astype(bool) if "thin_history" in a else False,
                 history_note=a["history_note"].fillna("") if "history_note" in a else "")  # fmt: skip
    key = a["subgroup"].astype(str) + "|" + a["rule_id"].astype(str) + "|" + a["overridden"].astype(str) + "|" + a["thin_history"].astype(str)
    run = (key != key.shift()).cumsum()
    out = a.groupby(run).agg(from_month=("month", "first"), to_month=("month", "last"), months=("month", "size"),
                             subgroup=("subgroup", "first"), rule_id=("rule_id", "first"), reason=("reason", "last"),
                             risk_scores=("risk_score", _score_range), overridden=("overridden", "first"),
                             thin_history=("thin_history", "first"), history_note=("history_note", "last"))  # fmt: skip
    return out[PERIOD_COLUMNS].reset_index(drop=True)


def measurement_series(measurements: pd.DataFrame, rules: WorklistRules) -> pd.DataFrame:
    """The charted measurements with their label, target and direction, oldest first.

    Out grain: measurement of a charted code. Columns: code, label, measured_date, value, target, direction.
    """
    charts = pd.DataFrame([(c.code, c.label, c.target, c.direction) for c in rules.charts],
                          columns=["code", "label", "target", "direction"])  # fmt: skip
    m = measurements.loc[measurements["value"].notna(), ["code", "measured_date", "value"]]
    out = m.merge(charts.assign(order=range(len(charts))), on="code", how="inner")
    out = out.sort_values(["order", "measured_date"])  # charts in the order of worklist.toml
    return out[["code", "label", "measured_date", "value", "target", "direction"]].reset_index(drop=True)


def monthly_costs_by_category(encounter_cost: pd.DataFrame) -> pd.DataFrame:
    """Cost per month, source (internal/external) and category. In: ``core.derive.costs.encounter_costs`` rows.

    Out grain: month, source, cost_category. Columns: category (label), cost_usd.
    """
    cols = ["month", "source", "cost_category", "category", "cost_usd"]
    if not len(encounter_cost):
        return pd.DataFrame(columns=cols)
    labels = load_catalog().cost_categories
    c = encounter_cost.assign(source=encounter_cost["is_internal"].map({True: "internal", False: "external"}))
    out = c.groupby(["month", "source", "cost_category"], as_index=False)["cost_usd"].sum()
    out["category"] = out["cost_category"].map(labels).fillna(out["cost_category"])
    return out[cols].sort_values(["month", "source", "cost_category"]).reset_index(drop=True)


def _patient_encounter_costs(engine: Engine, patient_id: str) -> pd.DataFrame:
    e = Encounter
    encounters = read_frame(engine, select(e.encounter_id, e.patient_id, e.team_id, e.kind, e.start_date, e.is_internal,
                                           e.in_network, e.cost_category, e.paid_usd).where(e.patient_id == patient_id))  # fmt: skip
    if not len(encounters):
        return pd.DataFrame(columns=["encounter_id", "month", "cost_category", "is_internal", "cost_usd"])
    minutes = read_frame(engine, select(StaffMinutes.encounter_id, StaffMinutes.role, StaffMinutes.minutes)
                         .join(e, e.encounter_id == StaffMinutes.encounter_id).where(e.patient_id == patient_id))  # fmt: skip
    staff = read_frame(engine, select(Staff.staff_id, Staff.team_id, Staff.role, Staff.annual_cost_usd, Staff.paid_hours_per_year))
    inputs = CostInputs((), staff, encounters, minutes, pd.DataFrame(columns=["patient_id", "month"]))
    return encounter_costs(inputs, load_cost_settings())


@dataclass(frozen=True)
class CurrentSubgroup:
    """The patient's latest subgroup assignment, with the team and PCP of that month."""

    month: date
    subgroup: str
    reason: str
    overridden: bool
    team: str | None
    pcp: str | None
    thin_history: bool = False
    history_note: str = ""  # "Not enough history: 2 of 6 months of data" when thin


@dataclass(frozen=True)
class PatientView:
    """The patient page's data: the header, then one field per tab.

    patient: demographics (a dict, with ``age`` today or at death); current: None if never
    assigned; periods (:func:`subgroup_periods`) and overrides (Subgroup history); series
    (:func:`measurement_series`, Measurements); timeline (grain: encounter; with kind label,
    internal or external, cost_usd; Encounters); costs (:func:`monthly_costs_by_category`,
    Costs); conditions (grain: condition; with ``active``); econsults (grain: e-consult; with
    ``response_days``); care_team (grain: staff member; name, role, role_label, is_pcp);
    medications (grain: medication); attribution (grain: month).
    """

    patient: dict
    current: CurrentSubgroup | None
    periods: pd.DataFrame
    overrides: pd.DataFrame
    series: pd.DataFrame
    timeline: pd.DataFrame
    costs: pd.DataFrame
    conditions: pd.DataFrame
    econsults: pd.DataFrame
    care_team: pd.DataFrame
    medications: pd.DataFrame
    attribution: pd.DataFrame


def patient_view(
    engine: Engine, patient_id: str, team_ids: tuple[str, ...] | None, grace_months: int = 0, all_months: bool = False
) -> PatientView | None:
    """The patient page's data, or None when the patient is unknown or not in the care of ``team_ids``
    (``grace_months``, ``all_months``: see ``core.store.queries.patient_record``)."""
    record = patient_record(engine, patient_id, team_ids, grace_months=grace_months, all_months=all_months)
    if record is None:
        return None
    att = record["attribution"]
    costs = _patient_encounter_costs(engine, patient_id)
    conditions = record["conditions"].drop(columns=["patient_id"])
    return PatientView(
        patient=_with_age(record["patient"]),
        current=_current_subgroup(record["subgroups"], att),
        periods=subgroup_periods(record["subgroups"]),
        overrides=record["overrides"],
        series=measurement_series(record["measurements"], load_worklist_rules()),
        timeline=_timeline(record["encounters"], costs),
        costs=monthly_costs_by_category(costs),
        conditions=conditions.assign(active=conditions["resolved_date"].isna()),
        econsults=_econsults(record["encounters"]),
        care_team=_care_team(engine, att),
        medications=record["medications"].drop(columns=["patient_id"]),
        attribution=att,
    )


def _with_age(patient) -> dict:
    p = dict(patient)
    until = p["death_date"] or date.today()
    born = p["birth_date"]
    p["age"] = until.year - born.year - ((until.month, until.day) < (born.month, born.day))
    return p


def _current_subgroup(assignments: pd.DataFrame, att: pd.DataFrame) -> CurrentSubgroup | None:
    if not len(assignments):
        return None
    last = assignments.sort_values("month").iloc[-1]
    team = att.loc[att["month"] == last["month"]].tail(1)
    return CurrentSubgroup(month=last["month"], subgroup=last["subgroup"], reason=last["reason"],
                           overridden=bool(last["overridden"]), team=team["team"].iloc[0] if len(team) else None,
                           pcp=team["pcp"].iloc[0] if len(team) else None, thin_history=bool(last.get("thin_history", False)),
                           history_note=str(last.get("history_note", "") or ""))  # fmt: skip


def _timeline(encounters: pd.DataFrame, costs: pd.DataFrame) -> pd.DataFrame:
    enc = encounters.drop(columns=["patient_id"])
    kinds = {k: v.label for k, v in load_catalog().activity_kinds.items()}
    timeline = enc.assign(activity=enc["kind"].map(kinds).fillna(enc["kind"]),
                          source=enc["is_internal"].map({True: "internal", False: "external"}))  # fmt: skip
    timeline = timeline.merge(costs[["encounter_id", "cost_usd"]], on="encounter_id", how="left")
    timeline["cost_usd"] = timeline["cost_usd"].astype(float).fillna(0.0)
    return timeline


def _econsults(encounters: pd.DataFrame) -> pd.DataFrame:
    econsults = encounters.loc[encounters["kind"] == "e_consult", ["encounter_id", "start_date", "requested_date", "responded_date",
                                                                   "specialty", "resolved_without_visit"]].copy()  # fmt: skip
    asked = pd.to_datetime(econsults["requested_date"].where(econsults["requested_date"].notna(), econsults["start_date"]))
    econsults["response_days"] = (pd.to_datetime(econsults["responded_date"]) - asked).dt.days
    return econsults.reset_index(drop=True)


def _care_team(engine: Engine, att: pd.DataFrame) -> pd.DataFrame:
    if not len(att):
        return pd.DataFrame(columns=["name", "role", "role_label", "is_pcp"])
    latest = att.iloc[-1]
    staff = read_frame(engine, select(Staff.staff_id, Staff.name, Staff.role).where(Staff.team_id == latest["team_id"])
                       .order_by(Staff.role, Staff.name))  # fmt: skip
    staff["is_pcp"] = staff["staff_id"] == latest["pcp_id"]
    staff["role_label"] = staff["role"].map(load_catalog().roles).fillna(staff["role"])
    return staff.sort_values("is_pcp", ascending=False, kind="stable")[["name", "role", "role_label", "is_pcp"]].reset_index(drop=True)


def override_subgroup(engine: Engine, scope: Scope, patient_id: str, subgroup: str, start_month: date, note: str) -> int:
    """A team leader pins a patient to a subgroup (``core.derive.subgroups.overrides.set_override``,
    audited as ``override``); the patient's subgroups, activity and cells are re-derived (only theirs).

    Raises PermissionError unless the scope is a team leader's with the patient in it.
    """
    _check_override_scope(engine, scope, patient_id)
    return set_override(engine, scope, patient_id, subgroup, start_month, note)


def lift_patient_override(engine: Engine, scope: Scope, patient_id: str, override_id: int) -> None:
    """Lift one of the patient's overrides (kept with who and when), audited; the patient is re-derived."""
    _check_override_scope(engine, scope, patient_id)
    mine = list_overrides(engine, include_lifted=False, patient_id=patient_id)
    if override_id not in set(mine["override_id"]):
        raise ValueError(f"override {override_id} is not an active override of {patient_id}")
    lift_override(engine, scope, override_id)


def _check_override_scope(engine: Engine, scope: Scope, patient_id: str) -> None:
    """The user's role may override (access.toml [actions.override_subgroup]) and the patient is in their teams."""
    rules = load_access_rules()
    if not can_act(scope, "override_subgroup", rules) or not patient_in_scope(engine, patient_id, scope.team_ids):
        who = " or ".join(rules.role_labels[r].lower() for r in rules.actions["override_subgroup"])
        raise PermissionError(f"only a {who} of the patient's team can override a subgroup" if who else
                              "no role may override a subgroup (access.toml [actions.override_subgroup] lists none)")
