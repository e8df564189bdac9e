"""The clinician's worklist: the patients of a team and subgroup, with flags, ranked by priority.

The flags, thresholds and the priority order are data (``core/config/worklist.toml``, where each
rule cites its source). This module has two halves:

- **Store reads** (:func:`load_worklist_inputs`): a handful of SQL queries, each filtered to the
  patients attributed to the teams in scope in the selected month (a sub-select on
  ``attribution``, indexed by team and month) and aggregated in SQL: last value of each measure,
  and encounter counts and costs summed from the derived per patient-month table
  ``patient_month_activity`` (``core.derive.activity``, rebuilt after every import). One row per
  patient comes back; nothing reads a whole table.
- **Pure frames** (:func:`build_worklist` and the helpers it calls): inputs -> one row per patient.

Everything is evaluated as of the last day of the selected month. Cost in 12 months is every
activity and claim of the patient that started in the 12 months ending with the month (internal
by TDABC as in ``core.derive.costs.activity_costs``, external = paid amounts), whether or not the
patient was attributed in each of those months (the cost cells count attributed months only).
"""

from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine, and_, case, func, select
from sqlalchemy.orm import aliased

from core.config import config_path, load_toml
from core.store.models import Attribution, Measurement, Patient, PatientMonthActivity, SubgroupAssignment
from core.store.months import add_months, as_month, index_of, month_end, month_index
from core.store.queries import among, read_frame, read_sql_frame

WORKLIST_PATH = config_path("worklist.toml")
FLAG_IDS = ("recent_acute", "phq9_rising", "phq9_high", "uncontrolled_diabetes", "uncontrolled_bp", "rising_cost",
            "overdue_questionnaire", "moved_subgroup")  # fmt: skip


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
class Questionnaire:
    """A questionnaire of the overdue rule: due every ``every_months[subgroup]`` months for the
    subgroups named there, not asked of the others."""

    code: str
    name: str
    every_months: dict[str, int]


@dataclass(frozen=True)
class WorklistRules:
    window_months: int
    visit_kinds: tuple[str, ...]
    columns: tuple[MeasureColumn, ...]
    flags: dict[str, dict]
    order: tuple[str, ...]
    charts: tuple[ChartSpec, ...]
    max_patients: int

    @property
    def labels(self) -> dict[str, str]:
        """Flag id -> label, in priority order."""
        return {f: self.flags[f]["label"] for f in self.order}

    @property
    def weights(self) -> dict[str, int]:
        """Flag id -> priority points: 2^(n-1-i) for the flag at position i of the order."""
        n = len(self.order)
        return {f: 2 ** (n - 1 - i) for i, f in enumerate(self.order)}

    @property
    def questionnaires(self) -> tuple[Questionnaire, ...]:
        """The questionnaires of the overdue rule, each with the subgroups it is due for and how often."""
        return tuple(Questionnaire(str(q["code"]), str(q["name"]), {str(k): int(v) for k, v in q["every_months"].items()})
                     for q in self.flags["overdue_questionnaire"]["questionnaires"])  # fmt: skip

    def questionnaire_codes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(q.code for q in self.questionnaires))

    def score_codes(self) -> tuple[str, ...]:
        """The codes of the score flags (PHQ-9 high, rising): their latest and previous values are read."""
        return tuple(dict.fromkeys(str(self.flags[f]["code"]) for f in ("phq9_high", "phq9_rising")))

    def measure_codes(self) -> tuple[str, ...]:
        """Every measurement code the worklist reads (columns, flags)."""
        f = self.flags
        codes = [c.code for c in self.columns] + [f["uncontrolled_diabetes"]["code"], f["uncontrolled_bp"]["systolic_code"],
                                                  f["uncontrolled_bp"]["diastolic_code"], *self.questionnaire_codes(),
                                                  *self.score_codes()]  # fmt: skip
        return tuple(dict.fromkeys(codes))


@cache
def load_worklist_rules(path: Path = WORKLIST_PATH) -> WorklistRules:
    """Load and check the worklist rules; raises ValueError naming the file and what is wrong."""
    raw = load_toml(path)
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
            max_patients=int(raw["size"]["max_patients"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: missing or malformed setting ({exc!r})") from exc
    if set(flags) != set(FLAG_IDS) or sorted(order) != sorted(FLAG_IDS):
        raise ValueError(f"{path}: [flags] and priority.order must name exactly the flags {', '.join(FLAG_IDS)}")
    if {"hba1c", "systolic", "diastolic", "phq9", "promis_physical"} - {c.id for c in rules.columns}:
        raise ValueError(f"{path}: [[columns]] must define hba1c, systolic, diastolic, phq9 and promis_physical")
    if rules.max_patients < 1:
        raise ValueError(f"{path}: size.max_patients must be at least 1")
    if rules.window_months < 2 * int(flags["rising_cost"]["months"]):
        raise ValueError(f"{path}: window.months must cover twice flags.rising_cost.months")
    try:
        questionnaires = rules.questionnaires
        thresholds = [float(flags["phq9_high"]["at_least"]), float(flags["phq9_rising"]["rise_at_least"]),
                      int(flags["phq9_high"]["lookback_months"]), int(flags["phq9_rising"]["lookback_months"]),
                      *rules.score_codes()]  # fmt: skip
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path}: missing or malformed questionnaire or PHQ-9 setting ({exc!r})") from exc
    intervals = [m for q in questionnaires for m in q.every_months.values()] + thresholds[2:4]
    if not questionnaires or min(intervals) < 1:
        raise ValueError(f"{path}: flags.overdue_questionnaire needs questionnaires, each due every 1 or more months")
    return rules


# --- dates ------------------------------------------------------------------------------


def _datetimes(values) -> np.ndarray:
    """Dates (``date``, ISO text, None) as a ``datetime64`` array (NaT for missing)."""
    return pd.to_datetime(pd.Series(values), errors="coerce", cache=False).to_numpy()


# --- store reads ------------------------------------------------------------------------


@dataclass(frozen=True)
class WorklistInputs:
    """What :func:`build_worklist` needs, for the patients of the teams in scope in ``month``.

    patients: patient_id, name, birth_date, sex, team_id, subgroup, reason, risk_score,
    overridden, thin_history, history_note (optional), subgroup_since, previous_subgroup (see :func:`_patients`).
    last_measures: patient_id, ``<code>_date`` and ``<code>_value`` of each measure code of the
    rules (last day up to the as-of date; the lowest value of that day, as HEDIS CBP takes for
    blood pressure; see :func:`_measures`).
    window: patient_id, cost_internal_12m_usd, cost_external_12m_usd, cost_last_3m_usd,
    cost_prev_3m_usd, ed_visits_12m, admissions_12m, last_acute, last_visit (patients with
    any activity in the window; see :func:`_window_activity`).
    previous_measures: patient_id, ``<code>_previous_date`` and ``<code>_previous_value`` of each
    score code of the rules (the last day before the last one; see :func:`_measures`).
    """

    month: date
    patients: pd.DataFrame
    last_measures: pd.DataFrame
    window: pd.DataFrame
    previous_measures: pd.DataFrame | None = None


def members_select(month: date, team_ids: tuple[str, ...], subgroup: str | None):
    """Sub-select of the patient ids attributed to the teams in ``month`` (and in the subgroup).

    With a subgroup it is one range of the (month, team_id, subgroup) index of the assignments,
    which carry the month's team: it does not walk the whole team.
    """
    if subgroup is None:
        return select(Attribution.patient_id).where(Attribution.month == month, Attribution.team_id.in_(team_ids))
    sa = SubgroupAssignment
    return select(sa.patient_id).where(sa.month == month, sa.team_id.in_(team_ids), sa.subgroup == subgroup)


def member_ids(engine: Engine, month: date, team_ids: tuple[str, ...], subgroup: str | None) -> list[str]:
    """The ids of :func:`members_select`, read once. The pages' reads of the members' rows take
    them as a list (:func:`core.store.queries.among`), not as a sub-select: given the sub-select,
    PostgreSQL estimates the members from the columns' statistics as if independent (13,178 for
    the 1,389 patients of a team's complex subgroup at 1,000,000 patients) and may then scan a
    whole table instead of the members' index entries (their last measures 2.4 s -> 0.06 s)."""
    return read_frame(engine, members_select(month, tuple(team_ids), subgroup))["patient_id"].tolist()


def load_worklist_inputs(engine: Engine, month: date, team_ids: tuple[str, ...], subgroup: str | None = None,
                         rules: WorklistRules | None = None) -> WorklistInputs:  # fmt: skip
    """Read the worklist inputs of the teams in scope (``team_ids``; empty -> no rows)."""
    rules = rules or load_worklist_rules()
    month = as_month(month)
    as_of = month_end(month)
    patients = _patients(engine, month, tuple(team_ids), subgroup)
    members = patients["patient_id"].tolist()  # (those of members_select: see member_ids)
    last_measures, previous = _measures(engine, members, as_of, rules)
    window = _window_activity(engine, members, month, rules)
    return WorklistInputs(month, patients, last_measures, window, previous)


def _patients(engine: Engine, month: date, team_ids: tuple[str, ...], subgroup: str | None) -> pd.DataFrame:
    """The patients attributed to the teams in ``month`` (and assigned to ``subgroup``), with their
    demographics, assignment and subgroup run (:func:`_subgroup_run`): the members of
    :func:`members_select`, read straight from the (team_id, month) index. Grain: patient_id."""
    sa = aliased(SubgroupAssignment)
    stmt = (
        select(Patient.patient_id, (Patient.family_name + ", " + Patient.given_name).label("name"), Patient.birth_date,
               Patient.sex, Attribution.team_id, sa.subgroup, sa.reason, sa.risk_score, sa.overridden, sa.thin_history,
               sa.history_note, *_subgroup_run(sa, month))
        .select_from(Attribution)
        .join(Patient, Patient.patient_id == Attribution.patient_id)
        .outerjoin(sa, and_(sa.patient_id == Attribution.patient_id, sa.month == Attribution.month))
        .where(Attribution.month == month, Attribution.team_id.in_(team_ids))
    )  # fmt: skip
    return read_sql_frame(engine, stmt if subgroup is None else stmt.where(sa.team_id.in_(team_ids), sa.subgroup == subgroup))


def _subgroup_run(cur, month: date) -> list:
    """Columns subgroup_since and previous_subgroup of the assignment ``cur`` (a row of ``month``).

    ``subgroup_since`` is the first month after the patient's last month in another subgroup
    (their first assigned month if never); months without an assignment do not break a run.
    ``previous_subgroup`` is the subgroup of the month before (None: not assigned then). Both
    are None without an assignment in ``month``. Each is a correlated sub-select on the
    (patient_id, month) key.
    """
    other, same, prev = (aliased(SubgroupAssignment) for _ in range(3))
    last_other = (
        select(func.max(other.month))
        .where(other.patient_id == cur.patient_id, other.month < cur.month, other.subgroup != cur.subgroup)
        .correlate(cur)
        .scalar_subquery()
    )
    since = (
        select(func.min(same.month))
        .where(same.patient_id == cur.patient_id, same.month <= cur.month, same.month > func.coalesce(last_other, date(1, 1, 1)))
        .correlate(cur)
        .scalar_subquery()
    )
    previous = select(prev.subgroup).where(prev.patient_id == cur.patient_id, prev.month == add_months(month, -1)).correlate(cur)
    return [since.label("subgroup_since"), previous.scalar_subquery().label("previous_subgroup")]


def _measures(engine: Engine, members: list[str], as_of: date, rules: WorklistRules) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(last, previous) measures of the members (``members``: their ids) up to ``as_of``.

    last: the last measured day of each code of the rules per member, with the lowest value of
    that day. One row per patient with any of the codes (a row per patient rather than per patient
    and code: a quarter of the Python objects to build). Out grain: patient_id. Columns:
    ``<code>_date`` and ``<code>_value`` of each code (None: never measured).

    previous: the previous score of each score code of the rules: the lowest value of the last
    measured day before the latest one. Out grain: patient_id (patients with two or more days of
    any score code). Columns: ``<code>_previous_date`` and ``<code>_previous_value``.
    """
    m, codes, scores = Measurement, rules.measure_codes(), rules.score_codes()
    if engine.dialect.name != "sqlite":
        # one pass over the members' rows of every code, each day ranked: the last day of every
        # code and the day before it of the score codes (a 9,864-patient list at 100,000 patients
        # on PostgreSQL: 0.67-0.75 s against 1.02-1.24 s as two reads)
        ranked = _days_ranked(engine, members, as_of, codes)
        picks = [(code, 1, "") for code in codes] + [(code, 2, "_previous") for code in scores]
        both = _pivot(engine, ranked, picks, ranked.c.day_rank <= 2)
        last = both[["patient_id", *(f"{c}_{what}" for c in codes for what in ("date", "value"))]]
        previous_columns = [f"{c}_previous_{what}" for c in scores for what in ("date", "value")]
        previous = both[["patient_id", *previous_columns]]
        dates = previous[[f"{c}_previous_date" for c in scores]]
        return last, previous[dates.notna().any(axis=1).to_numpy()].reset_index(drop=True)
    # SQLite: the last day of each code per member from the (patient_id, code, measured_date) index
    # alone, then the rows of those days only (a 9,552-patient list at 100,000 patients: 0.23-0.46 s
    # against 0.76 s ranked); the previous scores ranked, over the score codes' rows alone
    mine = (among(m.patient_id, members, engine.dialect.name), m.code.in_(codes), m.measured_date <= as_of)
    day = select(m.patient_id, m.code, func.max(m.measured_date).label("day")).where(*mine).group_by(m.patient_id, m.code).subquery()
    days = (
        select(m.patient_id, m.code, m.measured_date, m.value)
        .join(day, and_(m.patient_id == day.c.patient_id, m.code == day.c.code, m.measured_date == day.c.day))
        .subquery()
    )  # fmt: skip
    last = _pivot(engine, days, [(code, None, "") for code in codes])
    ranked = _days_ranked(engine, members, as_of, scores)
    previous = _pivot(engine, ranked, [(code, 2, "_previous") for code in scores], ranked.c.day_rank == 2)
    return last, previous


def _days_ranked(engine: Engine, members: list[str], as_of: date, codes: tuple[str, ...]):
    """The members' rows of ``codes`` up to ``as_of``, each with the rank of its day among the
    patient's days of that code (1: the last day; every row of a day has the same rank)."""
    m = Measurement
    return (
        select(m.patient_id, m.code, m.measured_date, m.value,
               func.dense_rank().over(partition_by=(m.patient_id, m.code), order_by=m.measured_date.desc()).label("day_rank"))
        .where(among(m.patient_id, members, engine.dialect.name), m.code.in_(codes), m.measured_date <= as_of)
        .subquery()
    )  # fmt: skip


def _pivot(engine: Engine, rows, picks: list[tuple[str, int | None, str]], where=None) -> pd.DataFrame:
    """One row per patient of ``rows`` (patient_id, code, measured_date, value[, day_rank]): for
    each pick (code, day rank or None for every row, suffix), the day as ``<code><suffix>_date``
    and the lowest value of that day as ``<code><suffix>_value`` (as HEDIS CBP takes the lowest
    blood pressure of a day)."""
    c = rows.c
    per_pick, names = [], {}
    for i, (code, rank, suffix) in enumerate(picks):
        mine = c.code == code if rank is None else and_(c.code == code, c.day_rank == rank)
        per_pick += [func.max(case((mine, c.measured_date), else_=None)).label(f"d{i}"),
                     func.min(case((mine, c.value), else_=None)).label(f"v{i}")]  # fmt: skip
        names |= {f"d{i}": f"{code}{suffix}_date", f"v{i}": f"{code}{suffix}_value"}
    stmt = select(c.patient_id, *per_pick).group_by(c.patient_id)
    out = read_sql_frame(engine, stmt if where is None else stmt.where(where))
    columns = ["patient_id", *(f"{code}{suffix}_{what}" for code, _, suffix in picks for what in ("date", "value"))]
    return out.rename(columns=names).reindex(columns=columns)


WINDOW_COLUMNS = ["cost_internal_12m_usd", "cost_external_12m_usd", "cost_last_3m_usd", "cost_prev_3m_usd",
                  "ed_visits_12m", "admissions_12m"]  # fmt: skip


def _window_activity(engine: Engine, members: list[str], month: date, rules: WorklistRules) -> pd.DataFrame:
    """Cost, ED visits, admissions and last visit per patient over the window, summed in SQL.

    Reads the derived ``patient_month_activity`` rows (``core.derive.activity``: TDABC internal cost,
    paid external cost, counts and last acute / visit dates per patient and month of encounter
    start) of the window's months, at most ``window_months`` rows per patient, through its
    primary key. Out grain: patient_id (patients with any activity in the window). Columns:
    :data:`WINDOW_COLUMNS`, last_acute, last_visit.
    """
    a = PatientMonthActivity
    n = int(rules.flags["rising_cost"]["months"])
    first = add_months(month, 1 - rules.window_months)
    last_from, prev_from = add_months(month, 1 - n), add_months(month, 1 - 2 * n)
    total = a.cost_internal_usd + a.cost_external_usd
    out = read_sql_frame(engine, (
        select(a.patient_id, func.sum(a.cost_internal_usd).label("cost_internal_12m_usd"),
               func.sum(a.cost_external_usd).label("cost_external_12m_usd"),
               func.sum(case((a.month >= last_from, total), else_=0.0)).label("cost_last_3m_usd"),
               func.sum(case((and_(a.month >= prev_from, a.month < last_from), total), else_=0.0)).label("cost_prev_3m_usd"),
               func.sum(a.ed_visits).label("ed_visits_12m"), func.sum(a.admissions).label("admissions_12m"),
               func.max(a.last_acute_date).label("last_acute"), func.max(a.last_visit_date).label("last_visit"))
        .where(among(a.patient_id, members, engine.dialect.name), a.month >= first, a.month <= month)
        .group_by(a.patient_id)
    ))  # fmt: skip
    for col in WINDOW_COLUMNS:
        out[col] = out[col].astype(float).fillna(0.0)
    for col in ("last_acute", "last_visit"):
        out[col] = pd.to_datetime(out[col])
    return out


# --- pure frames ------------------------------------------------------------------------


def place(n: int, positions: np.ndarray, values, fill) -> np.ndarray:
    """An array of ``n`` items: ``values`` at ``positions`` (-1: dropped), ``fill`` elsewhere."""
    values = np.asarray(values)
    found = positions >= 0
    out = np.full(n, fill, dtype=values.dtype if values.dtype.kind in "fMm" else object)
    out[positions[found]] = values[found]
    return out


def align(ids: pd.Index, keys, values, fill) -> np.ndarray:
    """``values`` (one per key, keys unique) in the order of ``ids``; ``fill`` for ids without a key."""
    return place(len(ids), ids.get_indexer(keys), values, fill)


def wide_last_measures(last_measures: pd.DataFrame, ids: pd.Index, codes: dict[str, str]) -> dict[str, np.ndarray]:
    """Per patient of ``ids`` (in that order): ``<name>_value`` and ``<name>_date`` of each ``codes`` item (name -> code).

    In: the last measures of :func:`_measures`. Values are floats (NaN: never measured), dates ``datetime64`` (NaT).
    """
    positions = ids.get_indexer(last_measures["patient_id"])
    out = {}
    for name, code in codes.items():
        values = last_measures[f"{code}_value"].to_numpy(dtype=float, na_value=np.nan)
        out[f"{name}_value"] = place(len(ids), positions, values, np.nan)
        out[f"{name}_date"] = place(len(ids), positions, _datetimes(last_measures[f"{code}_date"]), np.datetime64("NaT"))
    return out


def overdue_questionnaires(frame: pd.DataFrame, month: date, rules: WorklistRules) -> dict[str, pd.Series]:
    """Questionnaire name -> True where it is overdue: due for the patient's subgroup (a subgroup
    the questionnaire names) and not answered (``q_<code>``) within its interval, in whole
    months up to ``month``."""
    out = {}
    for q in rules.questionnaires:
        every = frame["subgroup"].map(q.every_months)
        answered = pd.to_datetime(frame.get(f"q_{q.code}", pd.Series(None, index=frame.index, dtype=object)), errors="coerce")
        cutoff = index_of(month) - every.astype(float).fillna(1.0).to_numpy() + 1  # first month still counted
        recent = (month_index(answered).to_numpy() >= cutoff) & answered.notna().to_numpy()
        out[q.name] = pd.Series(every.notna().to_numpy() & ~recent, index=frame.index)
    return out


def compute_flags(frame: pd.DataFrame, month: date, rules: WorklistRules) -> pd.DataFrame:
    """One boolean column per flag of the rules (see core/config/worklist.toml for each rule).

    In: a worklist frame with subgroup, hba1c/systolic/diastolic value and date, the last
    date of each questionnaire code (``q_<code>``), the latest and previous value of each score
    code (``s_<code>_value``, ``s_<code>_date``, ``s_<code>_previous_value``; missing columns read
    as never measured), last_acute, cost_last_3m_usd, cost_prev_3m_usd, previous_subgroup.
    Out: the flag columns (:data:`FLAG_IDS`), same index.
    """
    f = rules.flags
    as_of = pd.Timestamp(month_end(month))
    out = pd.DataFrame(index=frame.index)

    def within(dates: pd.Series, months: int | pd.Series) -> pd.Series:
        d = pd.to_datetime(dates, errors="coerce")
        cutoff = index_of(month) - np.asarray(months, dtype=float) + 1  # first month still counted
        return pd.Series(month_index(d).to_numpy() >= cutoff, index=frame.index) & d.notna().to_numpy()

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

    overdue = pd.Series(False, index=frame.index)
    for due in overdue_questionnaires(frame, month, rules).values():
        overdue |= due
    out["overdue_questionnaire"] = overdue.to_numpy()

    def score(code: str, what: str) -> pd.Series:
        col = f"s_{code}_{what}"
        if col in frame:
            return frame[col] if what == "date" else pd.to_numeric(frame[col], errors="coerce")
        return pd.Series(None if what == "date" else np.nan, index=frame.index, dtype=object if what == "date" else float)

    high = f["phq9_high"]
    code = str(high["code"])
    recent = within(score(code, "date"), int(high["lookback_months"]))
    out["phq9_high"] = (recent & (score(code, "value") >= float(high["at_least"])).fillna(False)).to_numpy()
    rising = f["phq9_rising"]
    code = str(rising["code"])
    recent = within(score(code, "date"), int(rising["lookback_months"]))
    rise = score(code, "value") - score(code, "previous_value")
    out["phq9_rising"] = (recent & (rise >= float(rising["rise_at_least"])).fillna(False)).to_numpy()

    prev_sg = frame["previous_subgroup"]
    out["moved_subgroup"] = (prev_sg.notna() & frame["subgroup"].notna() & (prev_sg != frame["subgroup"])).to_numpy()
    return out[list(FLAG_IDS)].astype(bool)


WORKLIST_COLUMNS = [
    "patient_id", "name", "age", "sex", "team_id", "subgroup", "subgroup_since", "overridden", "reason", "thin_history", "history_note",
    "risk_score",
    "hba1c_value", "hba1c_date", "bp", "bp_date", "systolic_value", "diastolic_value", "phq9_value", "phq9_date", "phq9_change",
    "promis_physical_value", "promis_physical_date", "last_visit", "ed_visits_12m", "admissions_12m",
    "cost_12m_usd", "cost_internal_12m_usd", "cost_external_12m_usd", "cost_last_3m_usd", "cost_prev_3m_usd",
    *FLAG_IDS, "flags", "questionnaires_due", "priority",
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
    w = inputs.patients.reset_index(drop=True)
    ids = pd.Index(w["patient_id"])
    columns = dict(w.items())
    columns["patient_id"] = w["patient_id"].astype(object)
    columns.update(wide_last_measures(inputs.last_measures, ids, {c.id: c.code for c in rules.columns}))
    q_codes = rules.questionnaire_codes()
    answers = wide_last_measures(inputs.last_measures, ids, {f"q_{c}": c for c in q_codes})
    columns.update({f"q_{c}": answers[f"q_{c}_date"] for c in q_codes})  # last answer of each questionnaire
    columns.update(wide_last_measures(inputs.last_measures, ids, {f"s_{c}": c for c in rules.score_codes()}))
    previous = inputs.previous_measures
    for c in rules.score_codes():  # the score before the latest (rising scores)
        values = np.full(len(ids), np.nan)
        if previous is not None and f"{c}_previous_value" in previous:
            values = align(ids, previous["patient_id"], previous[f"{c}_previous_value"].to_numpy(dtype=float, na_value=np.nan),
                           np.nan)  # fmt: skip
        columns[f"s_{c}_previous_value"] = values
    window = inputs.window
    for col in ("cost_internal_12m_usd", "cost_external_12m_usd", "cost_last_3m_usd", "cost_prev_3m_usd"):
        columns[col] = align(ids, window["patient_id"], window[col].to_numpy(dtype=float), 0.0)
    for col in ("ed_visits_12m", "admissions_12m"):
        columns[col] = align(ids, window["patient_id"], window[col].to_numpy(dtype=float), 0.0).astype(int)
    for col in ("last_acute", "last_visit"):
        columns[col] = align(ids, window["patient_id"], _datetimes(window[col]), np.datetime64("NaT"))
    columns["subgroup_since"] = _datetimes(w["subgroup_since"])
    w = pd.DataFrame(columns, index=w.index)
    w["cost_12m_usd"] = w["cost_internal_12m_usd"] + w["cost_external_12m_usd"]
    birth = pd.to_datetime(w["birth_date"])
    w["age"] = (as_of.year - birth.dt.year - ((birth.dt.month * 100 + birth.dt.day) > as_of.month * 100 + as_of.day)).astype(int)
    w["overridden"] = w["overridden"].fillna(False).astype(bool)
    w["thin_history"] = w["thin_history"].fillna(False).astype(bool) if "thin_history" in w else False
    w["history_note"] = w["history_note"].fillna("").astype(object) if "history_note" in w else ""
    w["risk_score"] = w["risk_score"].astype(float)
    sys_v, dia_v = w["systolic_value"].tolist(), w["diastolic_value"].tolist()
    w["bp"] = [f"{s:.0f}/{d:.0f}" if s == s and d == d else None for s, d in zip(sys_v, dia_v, strict=True)]  # x == x: not NaN
    w["bp_date"] = w["systolic_date"].where(w["systolic_date"].notna(), w["diastolic_date"])
    rising_code = str(rules.flags["phq9_rising"]["code"])
    w["phq9_change"] = w[f"s_{rising_code}_value"].astype(float) - w[f"s_{rising_code}_previous_value"].astype(float)
    flags = compute_flags(w, month, rules)
    w[list(FLAG_IDS)] = flags
    due = overdue_questionnaires(w, month, rules)
    marks = [np.where(d.to_numpy(dtype=bool), name, "") for name, d in due.items()]
    w["questionnaires_due"] = [", ".join(n for n in names if n) for names in zip(*marks, strict=True)] if marks else ""
    weights, labels = rules.weights, rules.labels
    priority = sum(flags[f].to_numpy(dtype=int) * weights[f] for f in rules.order) if len(w) else np.zeros(0, dtype=int)
    w["priority"] = priority.astype(int)
    # the priority is a sum of distinct powers of two, so it names the raised flags
    text = {p: "; ".join(labels[f] for f in rules.order if p & weights[f]) for p in set(priority.tolist())}
    w["flags"] = [text[p] for p in priority.tolist()]
    w = w.sort_values(["priority", "risk_score", "name", "patient_id"], ascending=[False, False, True, True], na_position="last")
    for col in ("hba1c_date", "bp_date", "phq9_date", "promis_physical_date", "last_visit", "subgroup_since"):
        w[col] = pd.Series(_datetimes(w[col]).astype("datetime64[D]").astype(object), index=w.index, dtype=object)  # date or None
    return w[WORKLIST_COLUMNS].reset_index(drop=True)


def member_counts(engine: Engine, month: date, team_ids: tuple[str, ...]) -> dict[str | None, int]:
    """Patients the teams' worklist would list in ``month``: per subgroup, and in all (key None,
    which also counts patients not assigned yet). Read from indexes only, whatever the team size."""
    month = as_month(month)
    sa = SubgroupAssignment
    per = read_frame(engine, select(sa.subgroup, func.count().label("n"))
                     .where(sa.month == month, sa.team_id.in_(team_ids)).group_by(sa.subgroup))  # fmt: skip
    total = read_frame(engine, select(func.count().label("n")).where(Attribution.month == month, Attribution.team_id.in_(team_ids)))
    return {None: int(total["n"].iloc[0]), **{s: int(n) for s, n in zip(per["subgroup"], per["n"], strict=True)}}


def default_subgroup(counts: dict[str | None, int], subgroups: list[str], served: str | None, max_patients: int) -> str | None:
    """The subgroup a worklist opens on: the one the team serves, when its patients fit in
    ``max_patients``; else all patients when they fit; else the first subgroup of ``subgroups``
    (rule order: most needs first) with patients that fits; else all (the page then asks for a
    narrower choice)."""
    if served in subgroups and counts.get(served, 0) <= max_patients:
        return served
    if counts.get(None, 0) <= max_patients:
        return None
    return next((s for s in subgroups if 0 < counts.get(s, 0) <= max_patients), None)


def team_worklist(engine: Engine, month: date, team_ids: tuple[str, ...], subgroup: str | None = None) -> pd.DataFrame:
    """The worklist of the patients attributed to ``team_ids`` in ``month`` (grain: patient; see :func:`build_worklist`)."""
    rules = load_worklist_rules()
    return build_worklist(load_worklist_inputs(engine, month, team_ids, subgroup, rules), rules)


def filter_worklist(frame: pd.DataFrame, search: str = "", flags: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rows (grain: patient) whose name or patient id contains ``search`` (any case) and that raise at least one of ``flags``."""
    keep = pd.Series(True, index=frame.index)
    text = (search or "").strip()
    if text:
        keep &= frame["name"].str.contains(text, case=False, regex=False) | frame["patient_id"].str.contains(text, case=False, regex=False)
    if flags:
        keep &= frame[list(flags)].any(axis=1)
    return frame[keep]


def count_text(shown: pd.DataFrame, listed: int, search: str = "", flags: tuple[str, ...] = (), filtered: bool = False) -> str:
    """How many patients the grid shows, always of the rows shown: "11 patients, 8 with at least
    one flag", or with a search, flag or other filter (``filtered``: care gaps, outreach) "0
    patients shown of 11 in the list, 0 with at least one flag" (``listed``: the worklist's
    patients before filtering)."""
    n = len(shown)
    flagged = int((shown["priority"] > 0).sum()) if n else 0
    text = f"{n:,} {'patient' if n == 1 else 'patients'}"
    if (search or "").strip() or flags or filtered:
        text += f" shown of {listed:,} in the list"
    return text + f", {flagged:,} with at least one flag"
