"""Care gaps: for each patient, the items of their subgroup's measures that are due or overdue,
with the date last done, the due date and the rule that makes it due.

The items are data (``core/config/care_gaps.toml``); each names the outcome measure it closes
(``core/config/measures.toml``) and takes its eligibility (ages, sex, condition) and its service
code lists and look-backs from it, so a gap closed on the worklist is a numerator gained on the
scorecard. Evaluated as of a day (the last day of the selected month).

- **service**: due ``lookback`` months after the last service of each of the measure's code lists
  (a colonoscopy keeps the patient up to date for 10 years, a FIT for 1); the latest due date wins.
- **test**: due ``interval_months`` after the last measurement of ``code``.
- **medicine**: a gap while none of the measure's medicines is active on the day.
"""

from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select

from core.config import config_path, load_toml
from core.derive.measures import Measure, load_measures, names_medicine, procedure_keys
from core.store.models import Condition, Measurement, Medication, Patient, Procedure, SubgroupAssignment
from core.store.months import as_month, month_end
from core.store.queries import among, read_sql_frame

CARE_GAPS_PATH = config_path("care_gaps.toml")
KINDS = ("service", "test", "medicine")
STATUS_ORDER = {"overdue": 0, "due soon": 1, "up to date": 2}
GAP_COLUMNS = ["patient_id", "gap_id", "label", "status", "last_done", "due_date", "rule"]


@dataclass(frozen=True)
class GapRule:
    id: str
    label: str
    measure: Measure
    subgroups: tuple[str, ...]
    kind: str
    rule: str
    code: str = ""
    interval_months: int = 0


@dataclass(frozen=True)
class GapRules:
    due_soon_days: int
    gaps: tuple[GapRule, ...]

    @property
    def labels(self) -> dict[str, str]:
        return {g.id: g.label for g in self.gaps}


@cache
def load_gap_rules(path: Path = CARE_GAPS_PATH) -> GapRules:
    """Load and check the care-gap rules against the measure catalogue."""
    raw = load_toml(path)
    measures = load_measures().by_id()
    gaps = []
    for entry in raw["gap"]:
        where = f"{path.name}: gap {entry.get('id')!r}"
        if entry.get("measure") not in measures:
            raise ValueError(f"{where}: unknown measure {entry.get('measure')!r}")
        measure = measures[entry["measure"]]
        kind = entry["kind"]
        if kind not in KINDS:
            raise ValueError(f"{where}: kind must be one of {KINDS}")
        if kind == "service" and "lists" not in measure.params:
            raise ValueError(f"{where}: measure {measure.id!r} names no service code lists")
        if kind == "medicine" and "medications" not in measure.params:
            raise ValueError(f"{where}: measure {measure.id!r} names no medicines")
        if kind == "test" and not (entry.get("code") and int(entry.get("interval_months", 0)) > 0):
            raise ValueError(f"{where}: a test needs a code and interval_months")
        gaps.append(GapRule(entry["id"], entry["label"], measure, tuple(entry.get("subgroups", measure.subgroups)), kind,
                            entry["rule"], entry.get("code", ""), int(entry.get("interval_months", 0))))  # fmt: skip
    ids = [g.id for g in gaps]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{path.name}: duplicate gap ids")
    return GapRules(int(raw["settings"]["due_soon_days"]), tuple(gaps))


# --- pure frames -------------------------------------------------------------------------


@dataclass(frozen=True)
class GapInputs:
    """patients: patient_id, subgroup, birth_date, sex. conditions: patient_id, code, onset_date,
    resolved_date. procedures: patient_id, performed_date, code, code_system. measurements:
    patient_id, measured_date, code. medications: patient_id, code, description, start_date, end_date."""

    patients: pd.DataFrame
    conditions: pd.DataFrame
    procedures: pd.DataFrame
    measurements: pd.DataFrame
    medications: pd.DataFrame


def _day(values) -> pd.Series:
    return pd.to_datetime(pd.Series(values), errors="coerce").dt.normalize()


def _age(birth: pd.Series, as_of: date) -> np.ndarray:
    b = _day(birth)
    before = (b.dt.month > as_of.month) | ((b.dt.month == as_of.month) & (b.dt.day > as_of.day))
    return (as_of.year - b.dt.year - before.astype(int)).to_numpy()


def _eligible(rule: GapRule, pts: pd.DataFrame, inputs: GapInputs, as_of: date, code_lists: dict) -> pd.DataFrame:
    p = rule.measure.params
    pts = pts[pts["subgroup"].isin(rule.subgroups)]
    age = _age(pts["birth_date"], as_of)
    keep = (age >= p.get("min_age", 0)) & (age <= p.get("max_age", 200))
    if "sexes" in p:
        keep &= pts["sex"].astype(str).str.lower().isin(p["sexes"]).to_numpy()
    pts = pts[keep]
    if "condition" in p:
        con = inputs.conditions
        codes = con["code"].astype(str).str.replace(".", "", regex=False).str.upper()
        onset, resolved = _day(con["onset_date"]), _day(con["resolved_date"])
        day = pd.Timestamp(as_of)
        active = codes.str.startswith(code_lists[p["condition"]]) & (onset <= day) & (resolved.isna() | (resolved >= day))
        pts = pts[pts["patient_id"].isin(set(con.loc[active.to_numpy(), "patient_id"]))]
    return pts[["patient_id"]]


def _last_before(rows: pd.DataFrame, date_col: str, as_of: date) -> pd.Series:
    """patient_id -> latest ``date_col`` on or before ``as_of``."""
    day = _day(rows[date_col])
    ok = day <= pd.Timestamp(as_of)
    return day[ok].groupby(rows.loc[ok.to_numpy(), "patient_id"].to_numpy()).max()


def _months_later(days: pd.Series, n: int) -> pd.Series:
    """Each day moved ``n`` months on: the same day of the month, or the month's last day when it
    has none (31 August + 6 months is 28 February, 29 February + 12 months is 28 February)."""
    day = days.to_numpy().astype("datetime64[D]")
    first = day.astype("datetime64[M]")
    later = first + np.timedelta64(n, "M")
    last_day = (later + np.timedelta64(1, "M")).astype("datetime64[D]") - np.timedelta64(1, "D")
    moved = np.minimum(later.astype("datetime64[D]") + (day - first.astype("datetime64[D]")), last_day)
    return pd.Series(moved.astype("datetime64[ns]"), index=days.index)


def _service_dates(rule: GapRule, inputs: GapInputs, keys: pd.Series, code_lists: dict, as_of: date) -> pd.DataFrame:
    """patient_id, last_done, due_date (the latest due date over the measure's code lists);
    ``keys``: the procedures' code-list keys (:func:`procedure_keys`)."""
    proc = inputs.procedures
    parts = []
    for name, lookback in zip(rule.measure.params["lists"], rule.measure.params["lookback_months"], strict=True):
        last = _last_before(proc[keys.isin(code_lists[name]).to_numpy()], "performed_date", as_of)
        due = _months_later(last, int(lookback))
        parts.append(pd.DataFrame({"last_done": last, "due_date": due}))
    if not parts:
        return pd.DataFrame(columns=["last_done", "due_date"])
    both = pd.concat(parts)
    return both.groupby(level=0).agg(last_done=("last_done", "max"), due_date=("due_date", "max"))


def _test_dates(rule: GapRule, inputs: GapInputs, as_of: date) -> pd.DataFrame:
    mea = inputs.measurements
    last = _last_before(mea[mea["code"] == rule.code], "measured_date", as_of)
    due = _months_later(last, rule.interval_months)
    return pd.DataFrame({"last_done": last, "due_date": due})


def _medicine_dates(rule: GapRule, inputs: GapInputs, as_of: date) -> pd.DataFrame:
    """last_done: the last start of a listed medicine; no due date while one is active (up to date:
    due_date far in the future), overdue (due_date = last end, or missing) otherwise."""
    med = inputs.medications
    med = med[names_medicine(med, rule.measure.params["medications"]).to_numpy()]
    start, end = _day(med["start_date"]), _day(med["end_date"])
    day = pd.Timestamp(as_of)
    active = (start <= day) & (end.isna() | (end >= day))
    ids = med["patient_id"].to_numpy()
    last = start[(start <= day).to_numpy()].groupby(ids[(start <= day).to_numpy()]).max()
    on = set(ids[active.to_numpy()])
    stopped = end.where(~active.to_numpy(), pd.NaT)
    stop = stopped.groupby(ids).max()
    due = pd.Series({pid: (pd.Timestamp.max.normalize() if pid in on else stop.get(pid, pd.NaT)) for pid in last.index},
                    dtype="datetime64[ns]")
    return pd.DataFrame({"last_done": last, "due_date": due})


def patient_gaps(inputs: GapInputs, as_of: date, rules: GapRules | None = None) -> pd.DataFrame:
    """One row per patient and care-gap item that applies to them (grain: patient_id, gap_id):
    label, status (overdue / due soon / up to date), last_done, due_date (``date`` or None) and
    the rule in words. Sorted by patient, then overdue first."""
    rules = rules or load_gap_rules()
    catalogue = load_measures()
    soon = pd.Timestamp(as_of + timedelta(days=rules.due_soon_days))
    day = pd.Timestamp(as_of)
    proc = inputs.procedures
    keys = procedure_keys(proc["code"], proc["code_system"], catalogue.code_systems) if len(proc) else pd.Series(dtype="str")
    parts = []
    for rule in rules.gaps:
        who = _eligible(rule, inputs.patients, inputs, as_of, catalogue.code_lists)
        if who.empty:
            continue
        if rule.kind == "service":
            dates = _service_dates(rule, inputs, keys, catalogue.code_lists, as_of)
        elif rule.kind == "test":
            dates = _test_dates(rule, inputs, as_of)
        else:
            dates = _medicine_dates(rule, inputs, as_of)
        rows = who.merge(dates, left_on="patient_id", right_index=True, how="left")
        due = rows["due_date"]
        status = np.select([due.isna() | (due <= day), due <= soon], ["overdue", "due soon"], "up to date")
        never_due = due >= pd.Timestamp.max.normalize()
        parts.append(pd.DataFrame({
            "patient_id": rows["patient_id"].to_numpy(), "gap_id": rule.id, "label": rule.label, "status": status,
            "last_done": rows["last_done"].dt.date.to_numpy(),
            "due_date": due.where(~never_due).dt.date.to_numpy(), "rule": rule.rule,
        }))  # fmt: skip
    if not parts:
        return pd.DataFrame(columns=GAP_COLUMNS)
    out = pd.concat(parts, ignore_index=True)
    out["last_done"] = out["last_done"].astype(object).where(out["last_done"].notna(), None)
    out["due_date"] = out["due_date"].astype(object).where(out["due_date"].notna(), None)
    order = out["status"].map(STATUS_ORDER)
    return out.assign(_o=order).sort_values(["patient_id", "_o", "label"], kind="stable").drop(columns="_o")[GAP_COLUMNS].reset_index(drop=True)


def gap_summary(gaps: pd.DataFrame) -> pd.DataFrame:
    """Per patient (index patient_id): ``care_gaps`` (labels of the overdue items, joined),
    ``gaps_due_soon`` (labels due soon) and ``gap_ids`` (tuple of overdue and due-soon ids), each
    in the rows' order."""
    open_ = gaps[gaps["status"] != "up to date"]
    overdue = _per_patient(open_[open_["status"] == "overdue"], "label", ", ".join)
    soon = _per_patient(open_[open_["status"] == "due soon"], "label", ", ".join)
    return pd.DataFrame({"care_gaps": overdue, "gaps_due_soon": soon, "gap_ids": _per_patient(open_, "gap_id", tuple)})


def _per_patient(rows: pd.DataFrame, column: str, make) -> pd.Series:
    """``make`` of each patient's values of ``column`` in the rows' order (index patient_id, sorted).
    Each patient's sequence is summed into one integer (the value's code times a power of the
    number of values per position), so ``make`` runs once per distinct sequence, not per patient:
    a few hundred sequences among 10,000 patients."""
    codes, values = pd.factorize(rows[column])
    base = len(values) + 1
    position = rows.groupby("patient_id", sort=False).cumcount().to_numpy()
    if not len(rows) or base ** (int(position.max()) + 1) >= 2**62:
        return rows.groupby("patient_id")[column].agg(make)
    key = pd.Series((codes + 1).astype(np.int64) * base ** position.astype(np.int64)).groupby(rows["patient_id"].to_numpy()).sum()
    made = {}
    for k in key.unique().tolist():
        sequence, rest = [], k
        while rest:
            rest, digit = divmod(rest, base)
            sequence.append(values[digit - 1])
        made[k] = make(sequence)
    out = key.map(made)
    out.index.name = "patient_id"
    return out.rename(column)


# --- store reads ---------------------------------------------------------------------------


def load_gap_inputs(engine: Engine, members: list[str], subgroups: pd.DataFrame, rules: GapRules | None = None) -> GapInputs:
    """The rows care gaps need for the patients ``members`` (their ids);
    ``subgroups``: patient_id, subgroup of those patients.

    Only the rows the items of those subgroups look at are read: conditions when an item's
    eligibility names one, procedures for service items, the measurements of the test items'
    codes, medications for medicine items (a list of healthy patients reads no measurements and
    no medications). The other frames are empty, with their columns."""
    rules = rules or load_gap_rules()
    dialect = engine.dialect.name
    pts = read_sql_frame(engine, select(Patient.patient_id, Patient.birth_date, Patient.sex).where(among(Patient.patient_id, members, dialect)))
    pts = pts.merge(subgroups[["patient_id", "subgroup"]], on="patient_id")
    present = set(pts["subgroup"].dropna())
    items = [g for g in rules.gaps if present.intersection(g.subgroups)]
    codes = sorted({g.code for g in items if g.kind == "test"})

    def rows(needed: bool, *columns, where=()) -> pd.DataFrame:
        if not needed:
            return pd.DataFrame({c.name: pd.Series(dtype=object) for c in columns})
        return read_sql_frame(engine, select(*columns).where(among(columns[0], members, dialect), *where))

    c, p, m, d = Condition, Procedure, Measurement, Medication
    return GapInputs(
        patients=pts,
        conditions=rows(any("condition" in g.measure.params for g in items), c.patient_id, c.code, c.onset_date, c.resolved_date),
        procedures=rows(any(g.kind == "service" for g in items), p.patient_id, p.performed_date, p.code, p.code_system),
        measurements=rows(bool(codes), m.patient_id, m.measured_date, m.code, where=(m.code.in_(codes),)),
        medications=rows(any(g.kind == "medicine" for g in items), d.patient_id, d.code, d.description, d.start_date, d.end_date),
    )


def team_care_gaps(engine: Engine, month: date, team_ids: tuple[str, ...], subgroup: str | None = None) -> pd.DataFrame:
    """The care gaps (:func:`patient_gaps`) of the patients of the teams in ``month`` (and subgroup),
    as of the month's last day; each patient's items are those of their subgroup that month."""
    month = as_month(month)
    # The members with a subgroup, and theirs, in one range of the (month, team_id, subgroup) index:
    # an assignment carries the patient's team of the month, and a member without one has no items.
    # (Their ids, then their assignments by id, took 0.45-0.8 s for a 9,864-patient list at 100,000
    # patients on PostgreSQL against 0.1 s.)
    sa = SubgroupAssignment
    mine = select(sa.patient_id, sa.subgroup).where(sa.month == month, sa.team_id.in_(tuple(team_ids)))
    subgroups = read_sql_frame(engine, mine if subgroup is None else mine.where(sa.subgroup == subgroup))
    return patient_gaps(load_gap_inputs(engine, subgroups["patient_id"].tolist(), subgroups), month_end(month))


def one_patient_gaps(engine: Engine, patient_id: str, subgroup: str | None, as_of: date) -> pd.DataFrame:
    """The care gaps of one patient in ``subgroup`` as of a day (the patient page)."""
    if subgroup is None:
        return pd.DataFrame(columns=GAP_COLUMNS)
    return patient_gaps(load_gap_inputs(engine, [patient_id], pd.DataFrame({"patient_id": [patient_id], "subgroup": [subgroup]})), as_of)


def filter_by_care(worklist: pd.DataFrame, gap_ids: tuple[str, ...] = (), hide_reached: bool = False) -> pd.DataFrame:
    """Worklist rows with any of ``gap_ids`` open (overdue or due soon; all rows when empty), and
    without the patients reached this outreach cycle when ``hide_reached``. Needs the columns
    ``gap_ids`` and ``reached_this_cycle`` (missing values: no gaps, not reached)."""
    keep = pd.Series(True, index=worklist.index)
    if gap_ids:
        wanted = set(gap_ids)
        keep &= worklist["gap_ids"].map(lambda ids: isinstance(ids, tuple) and bool(wanted & set(ids)))
    if hide_reached:
        keep &= ~worklist["reached_this_cycle"].fillna(False).astype(bool)
    return worklist[keep]
