"""The clinician's worklist: the patients of a team and subgroup, with flags, ranked by priority.

The flags, thresholds and the priority order are data (``core/data/worklist.toml``, where each
rule cites its source). This module has two halves:

- **Store reads** (:func:`load_worklist_inputs`): a handful of SQL queries, each filtered to the
  patients attributed to the teams in scope in the selected month (a sub-select on
  ``attribution``, indexed by team and month) and aggregated in SQL: last value of each measure,
  encounter counts, and costs (TDABC rates resolved by ``core.costs`` and joined as a small
  constant table). One row per patient comes back; nothing reads a whole table.
- **Pure frames** (:func:`build_worklist` and the helpers it calls): inputs -> one row per patient.

Everything is evaluated as of the last day of the selected month. Cost in 12 months is every
activity and claim of the patient that started in the 12 months ending with the month (internal
by TDABC via ``core.costs.activity_costs``, external = paid amounts), whether or not the
patient was attributed in each of those months (the cost cells count attributed months only).
"""

import tomllib
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine, Float, String, and_, case, column, func, or_, select, values
from sqlalchemy.orm import aliased

from core.catalog import load_catalog
from core.costs import NETWORK, CostSettings, activity_costs, capacity_cost_rates, load_cost_settings
from core.models import Attribution, Encounter, Measurement, Patient, Staff, StaffMinutes, SubgroupAssignment, Team
from core.store import read_frame

WORKLIST_PATH = Path(__file__).parent / "data" / "worklist.toml"
FLAG_IDS = ("recent_acute", "uncontrolled_diabetes", "uncontrolled_bp", "rising_cost", "overdue_questionnaire", "moved_subgroup")


# --- rules ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasureColumn:
    id: str
    label: str
    code: str
    unit: str


@dataclass(frozen=True)
class ChartSpec:
    code: str
    label: str
    target: float
    direction: str


@dataclass(frozen=True)
class WorklistRules:
    window_months: int
    visit_kinds: tuple[str, ...]
    columns: tuple[MeasureColumn, ...]
    flags: dict[str, dict]
    order: tuple[str, ...]
    charts: tuple[ChartSpec, ...]

    @property
    def labels(self) -> dict[str, str]:
        """Flag id -> label, in priority order."""
        return {f: self.flags[f]["label"] for f in self.order}

    @property
    def weights(self) -> dict[str, int]:
        """Flag id -> priority points: 2^(n-1-i) for the flag at position i of the order."""
        n = len(self.order)
        return {f: 2 ** (n - 1 - i) for i, f in enumerate(self.order)}

    def measure_codes(self) -> tuple[str, ...]:
        """Every measurement code the worklist reads (columns, flags)."""
        f = self.flags
        codes = [c.code for c in self.columns] + [f["uncontrolled_diabetes"]["code"], f["uncontrolled_bp"]["systolic_code"],
                                                  f["uncontrolled_bp"]["diastolic_code"], *f["overdue_questionnaire"]["codes"]]  # fmt: skip
        return tuple(dict.fromkeys(codes))


@cache
def load_worklist_rules(path: Path = WORKLIST_PATH) -> WorklistRules:
    """Load and check the worklist rules; raises ValueError naming the file and what is wrong."""
    raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    try:
        flags = {k: dict(v) for k, v in raw["flags"].items()}
        order = tuple(raw["priority"]["order"])
        rules = WorklistRules(
            window_months=int(raw["window"]["months"]),
            visit_kinds=tuple(raw["last_visit"]["kinds"]),
            columns=tuple(MeasureColumn(c["id"], c["label"], c["code"], c["unit"]) for c in raw["columns"]),
            flags=flags,
            order=order,
            charts=tuple(ChartSpec(c["code"], c["label"], float(c["target"]), c["direction"]) for c in raw.get("charts", [])),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: missing or malformed setting ({exc!r})") from exc
    if set(flags) != set(FLAG_IDS) or sorted(order) != sorted(FLAG_IDS):
        raise ValueError(f"{path}: [flags] and priority.order must name exactly the flags {', '.join(FLAG_IDS)}")
    if {"hba1c", "systolic", "diastolic", "phq9", "promis_physical"} - {c.id for c in rules.columns}:
        raise ValueError(f"{path}: [[columns]] must define hba1c, systolic, diastolic, phq9 and promis_physical")
    if rules.window_months < 2 * int(flags["rising_cost"]["months"]):
        raise ValueError(f"{path}: window.months must cover twice flags.rising_cost.months")
    return rules


# --- dates ------------------------------------------------------------------------------


def add_months(month: date, n: int) -> date:
    """First day of the month ``n`` months after ``month`` (negative: before)."""
    index = month.year * 12 + month.month - 1 + n
    return date(index // 12, index % 12 + 1, 1)


def month_end(month: date) -> date:
    return add_months(date(month.year, month.month, 1), 1) - timedelta(days=1)


def _month_index(values) -> np.ndarray:
    """Months since year 0 of each date (NaT -> a large negative number)."""
    d = pd.to_datetime(pd.Series(values), errors="coerce")
    out = (d.dt.year * 12 + d.dt.month - 1).to_numpy(dtype=float)
    return np.nan_to_num(out, nan=-1e9)


# --- store reads ------------------------------------------------------------------------


@dataclass(frozen=True)
class WorklistInputs:
    """What :func:`build_worklist` needs, for the patients of the teams in scope in ``month``.

    patients: patient_id, name, birth_date, sex, team_id, subgroup, reason, risk_score, overridden.
    last_measures: patient_id, code, measured_date, value (last day per code up to the as-of
    date; the lowest value of that day, as HEDIS CBP takes for blood pressure).
    window: patient_id, cost_internal_12m_usd, cost_external_12m_usd, cost_last_3m_usd,
    cost_prev_3m_usd, ed_visits_12m, admissions_12m, last_acute, last_visit (patients with
    any activity in the window; see :func:`_window_activity`).
    subgroups: patient_id, subgroup_since, previous_subgroup (see :func:`_subgroup_runs`).
    """

    month: date
    patients: pd.DataFrame
    last_measures: pd.DataFrame
    window: pd.DataFrame
    subgroups: pd.DataFrame


def _members(month: date, team_ids: tuple[str, ...], subgroup: str | None):
    """Sub-select of the patient ids attributed to the teams in ``month`` (and in the subgroup)."""
    stmt = select(Attribution.patient_id).where(Attribution.month == month, Attribution.team_id.in_(team_ids))
    if subgroup is not None:
        stmt = stmt.join(SubgroupAssignment, and_(SubgroupAssignment.patient_id == Attribution.patient_id,
                                                  SubgroupAssignment.month == Attribution.month)).where(
            SubgroupAssignment.subgroup == subgroup)  # fmt: skip
    return stmt


def load_worklist_inputs(engine: Engine, month: date, team_ids: tuple[str, ...], subgroup: str | None = None,
                         rules: WorklistRules | None = None) -> WorklistInputs:  # fmt: skip
    """Read the worklist inputs of the teams in scope (``team_ids``; empty -> no rows)."""
    rules = rules or load_worklist_rules()
    month = date(month.year, month.month, 1)
    as_of = month_end(month)
    members = _members(month, tuple(team_ids), subgroup)
    sa = SubgroupAssignment

    patients = read_frame(engine, (
        select(Patient.patient_id, (Patient.family_name + ", " + Patient.given_name).label("name"), Patient.birth_date,
               Patient.sex, Attribution.team_id, sa.subgroup, sa.reason, sa.risk_score, sa.overridden)
        .join(Attribution, and_(Attribution.patient_id == Patient.patient_id, Attribution.month == month))
        .outerjoin(sa, and_(sa.patient_id == Patient.patient_id, sa.month == month))
        .where(Attribution.team_id.in_(tuple(team_ids)), Patient.patient_id.in_(members))
    ))  # fmt: skip

    m = Measurement
    last_day = (
        select(m.patient_id, m.code, func.max(m.measured_date).label("last_date"))
        .where(m.patient_id.in_(members), m.code.in_(rules.measure_codes()), m.measured_date <= as_of)
        .group_by(m.patient_id, m.code)
        .subquery()
    )
    last_measures = read_frame(engine, (
        select(m.patient_id, m.code, m.measured_date, func.min(m.value).label("value"))
        .join(last_day, and_(last_day.c.patient_id == m.patient_id, last_day.c.code == m.code,
                             last_day.c.last_date == m.measured_date))
        .group_by(m.patient_id, m.code, m.measured_date)
    ))  # fmt: skip

    window = _window_activity(engine, members, month, rules)
    subgroups = _subgroup_runs(engine, members, month)
    return WorklistInputs(month, patients, last_measures, window, subgroups)


def _values(name: str, columns: list[tuple[str, object]], rows: list[tuple]):
    """A small constant table (``WITH name(cols) AS (VALUES ...)``, bound parameters) to join in a query."""
    return values(*[column(c, t) for c, t in columns], name=name).data(rows).cte(name)


def cost_rate_tables(staff: pd.DataFrame, team_ids: list[str], settings: CostSettings | None = None) -> tuple[list, list]:
    """Resolved TDABC rates for SQL: [(team_id, role, usd_per_minute)] and [(team_id, kind, usd_per_activity)].

    Both come from ``core.costs.activity_costs`` on one pseudo activity per team and role (one
    recorded minute) and per team and internal kind (no minutes: the process map), so the team
    rate, the network fallback and the process maps are exactly those of the cost cells.
    ``team_id`` ``*`` stands for activities without a team (network rates).
    """
    settings = settings or load_cost_settings()
    catalog = load_catalog()
    teams = [*team_ids, NETWORK]
    roles = list(catalog.roles)
    kinds = [k for k, v in catalog.activity_kinds.items() if v.internal and k in settings.process_maps]
    per_role = pd.DataFrame([(f"r{i}", t, r) for i, (t, r) in enumerate((t, r) for t in teams for r in roles)],
                            columns=["encounter_id", "team_id", "role"])  # fmt: skip
    per_kind = pd.DataFrame([(f"k{i}", t, k) for i, (t, k) in enumerate((t, k) for t in teams for k in kinds)],
                            columns=["encounter_id", "team_id", "kind"])  # fmt: skip
    pseudo = pd.concat([per_role.assign(kind=""), per_kind], ignore_index=True)
    pseudo = pseudo.assign(patient_id="", start_date=date(2000, 1, 1), is_internal=True,
                           team_id=pseudo["team_id"].where(pseudo["team_id"] != NETWORK, None))  # fmt: skip
    minutes = per_role[["encounter_id", "role"]].assign(minutes=1.0)
    act = activity_costs(pseudo, minutes, capacity_cost_rates(staff, settings), settings.process_maps, settings.rate_scope)
    cost = act.groupby("encounter_id")["cost_usd"].sum()
    role_rates = [(t, r, float(cost.get(e, 0.0))) for e, t, r in per_role.itertuples(index=False)]
    kind_costs = [(t, k, float(cost.get(e, 0.0))) for e, t, k in per_kind.itertuples(index=False)]
    return role_rates, kind_costs


WINDOW_COLUMNS = ["cost_internal_12m_usd", "cost_external_12m_usd", "cost_last_3m_usd", "cost_prev_3m_usd",
                  "ed_visits_12m", "admissions_12m"]  # fmt: skip


def _window_activity(engine: Engine, members, month: date, rules: WorklistRules) -> pd.DataFrame:
    """Cost, ED visits, admissions and last visit per patient over the window, summed in SQL.

    Internal cost: recorded minutes x the resolved rate of the encounter's team and the role,
    plus, for internal activities without recorded minutes, the process-map cost of the team
    and kind (:func:`cost_rate_tables`; as in ``core.costs``, recorded and standard minutes
    are never mixed within one activity). External cost: paid amounts of claims. Each query
    groups by patient only (conditional sums per period), so the database streams the
    patient-ordered index instead of sorting.
    Out grain: patient_id. Columns: :data:`WINDOW_COLUMNS`, last_acute, last_visit.
    """
    e, sm = Encounter, StaffMinutes
    n = int(rules.flags["rising_cost"]["months"])
    first, end = add_months(month, 1 - rules.window_months), add_months(month, 1)
    last_from, prev_from = add_months(month, 1 - n), add_months(month, 1 - 2 * n)
    window = and_(e.patient_id.in_(members), e.start_date >= first, e.start_date < end)

    def periods(amount, prefix: str) -> list:
        """12-month, last-n-months and previous-n-months sums of ``amount``."""
        return [func.sum(amount).label(f"cost_{prefix}_12m_usd"),
                func.sum(case((e.start_date >= last_from, amount), else_=0.0)).label("cost_last_3m_usd"),
                func.sum(case((and_(e.start_date >= prev_from, e.start_date < last_from), amount), else_=0.0)).label("cost_prev_3m_usd")]  # fmt: skip

    staff = read_frame(engine, select(Staff.staff_id, Staff.team_id, Staff.role, Staff.annual_cost_usd, Staff.paid_hours_per_year))
    team_ids = [t for (t,) in read_frame(engine, select(Team.team_id)).itertuples(index=False)]
    role_rates, kind_costs = cost_rate_tables(staff, team_ids)
    rate = _values("role_rate", [("team_id", String), ("role", String), ("usd", Float)], role_rates)
    per_kind = _values("kind_cost", [("team_id", String), ("kind", String), ("usd", Float)], kind_costs)
    team_key = func.coalesce(e.team_id, NETWORK)
    acute = rules.flags["recent_acute"]["kinds"]
    external = case((e.is_internal, 0.0), else_=e.paid_usd)
    frames = [
        read_frame(engine, (
            select(e.patient_id, *periods(sm.minutes * rate.c.usd, "internal"))
            .join(sm, sm.encounter_id == e.encounter_id)
            .join(rate, and_(rate.c.team_id == team_key, rate.c.role == sm.role))
            .where(window, e.is_internal)
            .group_by(e.patient_id)
        )),
        read_frame(engine, (
            select(e.patient_id, *periods(per_kind.c.usd, "internal"))
            .join(per_kind, and_(per_kind.c.team_id == team_key, per_kind.c.kind == e.kind))
            .where(window, e.is_internal, ~select(sm.encounter_id).where(sm.encounter_id == e.encounter_id).exists())
            .group_by(e.patient_id)
        )),
        read_frame(engine, (
            select(e.patient_id, *periods(external, "external"),
                   func.sum(case((e.kind == "ed_visit", 1), else_=0)).label("ed_visits_12m"),
                   func.sum(case((e.kind == "admission", 1), else_=0)).label("admissions_12m"),
                   func.max(case((e.kind.in_(acute), e.start_date), else_=None)).label("last_acute"),
                   func.max(case((e.kind.in_(rules.visit_kinds), e.start_date), else_=None)).label("last_visit"))
            .where(window)
            .group_by(e.patient_id)
        )),
    ]  # fmt: skip
    out = pd.concat(frames, ignore_index=True)
    for col in WINDOW_COLUMNS:
        out[col] = out[col].astype(float).fillna(0.0) if col in out else 0.0
    for col in ("last_acute", "last_visit"):
        out[col] = pd.to_datetime(out[col])
    return out.groupby("patient_id", as_index=False).agg(
        **{c: (c, "sum") for c in WINDOW_COLUMNS}, last_acute=("last_acute", "max"), last_visit=("last_visit", "max"))


def _subgroup_runs(engine: Engine, members, month: date) -> pd.DataFrame:
    """Per patient assigned in ``month``: since when they have been in that subgroup, and last month's.

    ``subgroup_since`` is the first month after the patient's last month in another subgroup
    (their first assigned month if never); months without an assignment do not break a run.
    ``previous_subgroup`` is the subgroup of the month before (None: not assigned then).
    Out grain: patient_id.
    """
    cur, other, prev = aliased(SubgroupAssignment), aliased(SubgroupAssignment), aliased(SubgroupAssignment)
    last_other = (
        select(cur.patient_id, func.max(other.month).label("last_other"))
        .join(other, and_(other.patient_id == cur.patient_id, other.month < cur.month, other.subgroup != cur.subgroup))
        .where(cur.month == month, cur.patient_id.in_(members))
        .group_by(cur.patient_id)
        .subquery()
    )
    same = aliased(SubgroupAssignment)
    stmt = (
        select(cur.patient_id, func.min(same.month).label("subgroup_since"), func.max(prev.subgroup).label("previous_subgroup"))
        .join(same, and_(same.patient_id == cur.patient_id, same.month <= cur.month))
        .outerjoin(last_other, last_other.c.patient_id == cur.patient_id)
        .outerjoin(prev, and_(prev.patient_id == cur.patient_id, prev.month == add_months(month, -1)))
        .where(cur.month == month, cur.patient_id.in_(members),
               or_(last_other.c.last_other.is_(None), same.month > last_other.c.last_other))
        .group_by(cur.patient_id)
    )  # fmt: skip
    return read_frame(engine, stmt)


# --- pure frames ------------------------------------------------------------------------


def wide_last_measures(last_measures: pd.DataFrame, columns: tuple[MeasureColumn, ...]) -> pd.DataFrame:
    """One row per patient: ``<id>_value`` and ``<id>_date`` of each measure column."""
    out = pd.DataFrame({"patient_id": pd.Series(last_measures["patient_id"].unique(), dtype=object)})
    for col in columns:
        rows = last_measures.loc[last_measures["code"] == col.code, ["patient_id", "value", "measured_date"]]
        rows = rows.rename(columns={"value": f"{col.id}_value", "measured_date": f"{col.id}_date"})
        out = out.merge(rows, on="patient_id", how="left")
    return out


def compute_flags(frame: pd.DataFrame, month: date, rules: WorklistRules) -> pd.DataFrame:
    """One boolean column per flag of the rules (see core/data/worklist.toml for each rule).

    In: a worklist frame with subgroup, hba1c/systolic/diastolic value and date, the last
    date of each questionnaire code (``q_<code>``), last_acute, cost_last_3m_usd,
    cost_prev_3m_usd, previous_subgroup. Out: the flag columns, same index.
    """
    f = rules.flags
    as_of = pd.Timestamp(month_end(month))
    out = pd.DataFrame(index=frame.index)

    def within(dates: pd.Series, months: int | pd.Series) -> pd.Series:
        d = pd.to_datetime(dates, errors="coerce")
        cutoff = _month_index([month])[0] - np.asarray(months, dtype=float) + 1  # first month still counted
        return pd.Series(_month_index(d) >= cutoff, index=frame.index) & d.notna().to_numpy()

    acute = pd.to_datetime(frame["last_acute"], errors="coerce")
    out["recent_acute"] = (acute.notna() & (acute >= as_of - pd.Timedelta(days=int(f["recent_acute"]["days"])))).to_numpy()

    dm = f["uncontrolled_diabetes"]
    out["uncontrolled_diabetes"] = within(frame["hba1c_date"], dm["lookback_months"]) & (frame["hba1c_value"] > float(dm["above"])).fillna(False).to_numpy()

    bp = f["uncontrolled_bp"]
    high = (frame["systolic_value"] >= float(bp["systolic_at_least"])).fillna(False) | (frame["diastolic_value"] >= float(bp["diastolic_at_least"])).fillna(False)
    recent = within(frame["systolic_date"], bp["lookback_months"]) | within(frame["diastolic_date"], bp["lookback_months"])
    out["uncontrolled_bp"] = high.to_numpy() & recent.to_numpy()

    rc = f["rising_cost"]
    last, prev = frame["cost_last_3m_usd"].fillna(0.0), frame["cost_prev_3m_usd"].fillna(0.0)
    out["rising_cost"] = ((last >= float(rc["min_ratio"]) * prev) & (last - prev >= float(rc["min_increase_usd"]))).to_numpy()

    oq = f["overdue_questionnaire"]
    due = frame["subgroup"].map(oq.get("months_by_subgroup", {})).fillna(int(oq["default_months"]))
    overdue = pd.Series(False, index=frame.index)
    for code in oq["codes"]:
        overdue |= ~within(frame[f"q_{code}"], due)
    out["overdue_questionnaire"] = overdue.to_numpy()

    prev_sg = frame["previous_subgroup"]
    out["moved_subgroup"] = (prev_sg.notna() & frame["subgroup"].notna() & (prev_sg != frame["subgroup"])).to_numpy()
    return out[list(FLAG_IDS)].astype(bool)


WORKLIST_COLUMNS = [
    "patient_id", "name", "age", "sex", "team_id", "subgroup", "subgroup_since", "overridden", "reason", "risk_score",
    "hba1c_value", "hba1c_date", "bp", "bp_date", "systolic_value", "diastolic_value", "phq9_value", "phq9_date",
    "promis_physical_value", "promis_physical_date", "last_visit", "ed_visits_12m", "admissions_12m",
    "cost_12m_usd", "cost_internal_12m_usd", "cost_external_12m_usd", "cost_last_3m_usd", "cost_prev_3m_usd",
    *FLAG_IDS, "flags", "priority",
]  # fmt: skip


def build_worklist(inputs: WorklistInputs, rules: WorklistRules | None = None) -> pd.DataFrame:
    """One row per patient of the inputs, with measures, utilisation, costs, flags and priority.

    Grain: patient_id. Columns: :data:`WORKLIST_COLUMNS` (costs in USD; dates as dates; ``age``
    in whole years on the as-of date; ``flags`` the labels of the raised flags, in priority
    order; ``priority`` the sum of the flags' weights). Sorted by priority (highest first),
    risk score (highest first, missing last), then name and patient id.
    """
    rules = rules or load_worklist_rules()
    month = inputs.month
    as_of = month_end(month)
    w = inputs.patients.copy()
    w = w.merge(wide_last_measures(inputs.last_measures, rules.columns), on="patient_id", how="left")
    for code in rules.flags["overdue_questionnaire"]["codes"]:
        q = inputs.last_measures.loc[inputs.last_measures["code"] == code, ["patient_id", "measured_date"]]
        w = w.merge(q.rename(columns={"measured_date": f"q_{code}"}), on="patient_id", how="left")
    w = w.merge(inputs.window, on="patient_id", how="left")
    w = w.merge(inputs.subgroups, on="patient_id", how="left")
    for col in ("ed_visits_12m", "admissions_12m"):
        w[col] = w[col].fillna(0).astype(int)
    for col in ("cost_internal_12m_usd", "cost_external_12m_usd", "cost_last_3m_usd", "cost_prev_3m_usd"):
        w[col] = w[col].astype(float).fillna(0.0)
    w["cost_12m_usd"] = w["cost_internal_12m_usd"] + w["cost_external_12m_usd"]
    birth = pd.to_datetime(w["birth_date"])
    w["age"] = (as_of.year - birth.dt.year - ((birth.dt.month * 100 + birth.dt.day) > as_of.month * 100 + as_of.day)).astype(int)
    w["overridden"] = w["overridden"].fillna(False).astype(bool)
    w["risk_score"] = w["risk_score"].astype(float)
    sys_v, dia_v = w["systolic_value"], w["diastolic_value"]
    w["bp"] = [f"{s:.0f}/{d:.0f}" if pd.notna(s) and pd.notna(d) else None for s, d in zip(sys_v, dia_v, strict=True)]
    w["bp_date"] = w["systolic_date"].where(w["systolic_date"].notna(), w["diastolic_date"])
    flags = compute_flags(w, month, rules)
    w[list(FLAG_IDS)] = flags
    weights, labels = rules.weights, rules.labels
    w["priority"] = sum(flags[f].astype(int) * weights[f] for f in rules.order).astype(int) if len(w) else pd.Series(dtype=int)
    w["flags"] = ["; ".join(labels[f] for f in rules.order if row[f]) for row in flags.to_dict("records")]
    w = w.sort_values(["priority", "risk_score", "name", "patient_id"], ascending=[False, False, True, True], na_position="last")
    for col in ("hba1c_date", "bp_date", "phq9_date", "promis_physical_date", "last_visit", "subgroup_since"):
        w[col] = pd.to_datetime(w[col], errors="coerce").dt.date.astype(object).where(w[col].notna(), None)
    return w[WORKLIST_COLUMNS].reset_index(drop=True)


def team_worklist(engine: Engine, month: date, team_ids: tuple[str, ...], subgroup: str | None = None) -> pd.DataFrame:
    """The worklist of the patients attributed to ``team_ids`` in ``month`` (see :func:`build_worklist`)."""
    rules = load_worklist_rules()
    return build_worklist(load_worklist_inputs(engine, month, team_ids, subgroup, rules), rules)


def filter_worklist(frame: pd.DataFrame, search: str = "", flags: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rows whose name or patient id contains ``search`` (any case) and that raise at least one of ``flags``."""
    keep = pd.Series(True, index=frame.index)
    text = (search or "").strip()
    if text:
        keep &= frame["name"].str.contains(text, case=False, regex=False) | frame["patient_id"].str.contains(text, case=False, regex=False)
    if flags:
        keep &= frame[list(flags)].any(axis=1)
    return frame[keep]
