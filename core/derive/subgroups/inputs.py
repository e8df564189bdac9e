"""Subgroup inputs: everything the rules can use, one row per attributed patient-month.

Pure frame functions, vectorised over the patient-months of a block of patients. A
patient-month is a row of ``attribution``; months are first days.

- ``age``: completed years on the first day of the month.
- condition groups (``core/config/code_lists.toml``): a condition counts in every month that
  overlaps [onset_date, resolved_date] (open-ended when not resolved). ``n_chronic`` is the
  number of distinct chronic groups (not codes) active; the reason names one code per group
  (the smallest code of that group the patient has in the period).
- frailty: any frailty group active; disability: any disability / institutional group active.
- risk factors: ``rf_<group>`` a risk-factor diagnosis active; ``bmi``, ``sbp``, ``hba1c``,
  ``ldl``: the latest value measured in the 12 months ending with the month (LOINC codes of
  ``core/config/catalog.py``); ``tobacco_use``: the latest tobacco-status value (LOINC 72166-2)
  in those 12 months is 1 (current user). Missing data is missing (NaN): a threshold is then
  not met.
- utilisation: ED visits (kind ``ed_visit``) and admissions (kind ``admission``) starting in
  the 12 months ending with the month (that month and the 11 before it).
- ``risk_score``: the CMS-HCC score of the month's calendar year (``core/derive/risk.py``);
  ``payment_hcc_count`` and ``payment_hccs``: the number and list of its payment HCCs (0 and
  '' for a score from age, sex and dual status alone; NaN and '' without a score).
- history: ``history_months``, the months of the ``history_lookback`` months ending with the
  month (6 by default; ``[history]`` of the rules file) in which the patient was attributed and
  something was already recorded of them (the first encounter or claim, condition onset or
  measurement on or before that month); the rules mark fewer than ``min_months`` as thin history.
- deaths: no patient-month after the month of death.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from core.config import catalog
from core.derive.risk import CodeLists, format_icd10, load_code_lists, match_code_groups, payment_hcc_count
from core.store.months import month_floor, month_index

ACUTE_KINDS = {"ed_visit": "ed_visits_12m", "admission": "admissions_12m"}
LAB_CODES = {
    "bmi": catalog.BMI,
    "sbp": catalog.SYSTOLIC_BP,
    "hba1c": catalog.HBA1C,
    "ldl": catalog.LDL,
    "tobacco": catalog.TOBACCO,
}
LOOKBACK_MONTHS = 12


def patient_months(patients: pd.DataFrame, attribution: pd.DataFrame, months: list[date] | None = None) -> pd.DataFrame:
    """Attributed patient-months to assign, none after the month of death.

    Columns: patient_id, month (Timestamp, first day), practice_id and team_id (when given), the patient's
    birth_date, sex, dual_status. Grain: patient_id, month.
    """
    pm = attribution[[c for c in ("patient_id", "month", "practice_id", "team_id") if c in attribution]].copy()
    pm["month"] = month_floor(pm["month"])
    if months is not None:
        pm = pm[pm["month"].isin(pd.to_datetime(list(months)))]
    pm = pm.merge(patients[["patient_id", "birth_date", "sex", "dual_status", "death_date"]], on="patient_id", how="inner")
    death = month_floor(pm["death_date"])
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
    m_row: np.ndarray  # month index (core.store.months) of each row
    span: tuple[int, int] | None = None  # first and last month index of the whole run (None: of the rows)

    @classmethod
    def of(cls, pm: pd.DataFrame, month_range: tuple[pd.Timestamp, pd.Timestamp] | None = None) -> "_Grid":
        p_of_row, uniques = pd.factorize(pm["patient_id"].to_numpy(dtype=object))
        m_row = month_index(pm["month"]).to_numpy(dtype="int64") if len(pm) else np.zeros(0, dtype="int64")
        span = None if month_range is None else tuple(int(o) for o in month_index(pd.Series(month_range)).to_numpy(dtype="int64"))
        return cls(pd.Index(uniques, dtype=object), p_of_row, m_row, span)

    def positions(self, patient_ids: pd.Series) -> np.ndarray:
        return self.p_index.get_indexer(patient_ids.to_numpy(dtype=object))

    def window(self, lookback: int) -> tuple[int, int]:
        """(base month index, width) of a month grid reaching ``lookback - 1`` months before the first month."""
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
    """Condition-group inputs per patient-month (rows aligned with ``pm``; grain patient_id, month).

    Columns: n_chronic, chronic_codes, frailty, frailty_codes, disability, disability_codes,
    rf_<group> and rf_<group>_codes for each risk-factor group. Codes are ``E11.9, I10``.
    """
    grid = grid or _Grid.of(pm)
    groups = code_lists.groups
    if len(groups) > 63:
        raise ValueError("at most 63 code groups are supported")
    mask, rep = _active_groups(pm, conditions, code_lists, grid)
    p_of_row = grid.p_of_row

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


def _active_groups(pm: pd.DataFrame, conditions: pd.DataFrame, code_lists: CodeLists, grid: _Grid) -> tuple[np.ndarray, np.ndarray]:
    """The code groups active in each patient-month (bit i = group i of ``code_lists.groups``),
    and the representative code of each patient and group: the smallest code active in the
    grid's months ('' when none)."""
    groups = code_lists.groups
    p_of_row, m_row = grid.p_of_row, grid.m_row
    base, width = grid.window(1)
    n_p = len(grid.p_index)
    mask = np.zeros(len(pm), dtype=np.int64)
    rep = np.full((n_p, len(groups)), "", dtype=object)
    if not len(conditions) or not len(pm):
        return mask, rep
    p_cond = grid.positions(conditions["patient_id"])
    cond = conditions.loc[p_cond >= 0, ["code", "onset_date", "resolved_date"]].assign(p=p_cond[p_cond >= 0])
    matched = match_code_groups(cond["code"], code_lists)
    if matched.empty:  # no diagnosis of these patients is in any code group
        return mask, rep
    gpos = {(g.kind, g.group_id): i for i, g in enumerate(groups)}
    matched["g"] = [gpos[(k, g)] for k, g in zip(matched["kind"], matched["group_id"], strict=True)]
    matched["fmt"] = matched["code"].map(format_icd10)
    rows = cond.merge(matched[["code", "g", "fmt"]], on="code")
    start = month_index(rows["onset_date"]).to_numpy(dtype="int64") - base
    resolved = pd.to_datetime(rows["resolved_date"])
    resolved_m = month_index(resolved.fillna(pd.Timestamp("1900-01-01"))).to_numpy(dtype="int64")
    end = np.where(resolved.isna(), width - 1, resolved_m - base)
    start, end = np.clip(start, 0, None), np.clip(end, None, width - 1)
    keep = start <= end
    rows = rows[keep].assign(start=start[keep], end=end[keep])
    first = rows.sort_values("fmt").drop_duplicates(["p", "g"])
    rep[first["p"].to_numpy(), first["g"].to_numpy()] = first["fmt"].to_numpy(dtype=object)
    for g in np.unique(rows["g"]):
        sub = rows[rows["g"] == g]
        diff = np.zeros((n_p, width + 1), dtype=np.int32)
        np.add.at(diff, (sub["p"].to_numpy(), sub["start"].to_numpy()), 1)
        np.add.at(diff, (sub["p"].to_numpy(), sub["end"].to_numpy() + 1), -1)
        active = np.cumsum(diff, axis=1)[:, :width] > 0
        mask |= active[p_of_row, m_row - base].astype(np.int64) << int(g)
    return mask, rep


def measurement_inputs(pm: pd.DataFrame, measurements: pd.DataFrame, grid: _Grid | None = None) -> pd.DataFrame:
    """Latest bmi, sbp, hba1c, ldl (NaN when none) and tobacco_use in the 12 months ending each month.
    Rows aligned with ``pm`` (grain patient_id, month)."""
    grid = grid or _Grid.of(pm)
    base, width = grid.window(LOOKBACK_MONTHS)
    out = {}
    p_all = grid.positions(measurements["patient_id"]) if len(measurements) else np.zeros(0, dtype=int)
    for name, code in LAB_CODES.items():
        values_grid = np.full((len(grid.p_index), width), np.nan)
        sel = (measurements["code"] == code).to_numpy() & measurements["value"].notna().to_numpy() & (p_all >= 0)
        if sel.any():
            rows = measurements.loc[sel, ["measured_date", "value"]].assign(p=p_all[sel])
            rows["m"] = month_index(rows["measured_date"]).to_numpy(dtype="int64") - base
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
    """ed_visits_12m, admissions_12m and acute_events_12m (their sum) per patient-month.
    Rows aligned with ``pm`` (grain patient_id, month)."""
    grid = grid or _Grid.of(pm)
    base, width = grid.window(LOOKBACK_MONTHS)
    out = {}
    for kind, column in ACUTE_KINDS.items():
        counts = np.zeros((len(grid.p_index), width + 1), dtype=np.int32)  # column 0: before the window
        rows = encounters[encounters["kind"] == kind]
        if len(rows):
            p = grid.positions(rows["patient_id"])
            m = month_index(rows["start_date"]).to_numpy(dtype="int64") - base
            ok = (p >= 0) & (m >= 0) & (m < width)
            np.add.at(counts, (p[ok], m[ok] + 1), 1)
        cum = np.cumsum(counts, axis=1)
        end = grid.m_row - base + 1
        out[column] = (cum[grid.p_of_row, end] - cum[grid.p_of_row, end - LOOKBACK_MONTHS]).astype("int64")
    out["acute_events_12m"] = out["ed_visits_12m"] + out["admissions_12m"]
    return pd.DataFrame(out, index=pm.index)


def first_records(conditions: pd.DataFrame, measurements: pd.DataFrame, encounters: pd.DataFrame) -> pd.DataFrame:
    """The first date anything is recorded of each patient in these frames. Grain: patient_id. Column: first_date."""
    parts = [
        frame[["patient_id", column]].rename(columns={column: "first_date"})
        for frame, column in ((conditions, "onset_date"), (measurements, "measured_date"), (encounters, "start_date"))
        if len(frame)
    ]
    if not parts:
        return pd.DataFrame(columns=["patient_id", "first_date"])
    both = pd.concat(parts, ignore_index=True)
    both["first_date"] = pd.to_datetime(both["first_date"])
    return both.groupby("patient_id", as_index=False)["first_date"].min()


def history_inputs(pm: pd.DataFrame, enrolment: pd.DataFrame, first: pd.DataFrame, lookback: int, grid: _Grid | None = None) -> pd.DataFrame:
    """``history_months`` of each patient-month: the months of the ``lookback`` months ending with
    it in which the patient was attributed (``enrolment``: patient_id, month) and on or after the
    month of their first record (``first``: patient_id, first_date). Rows aligned with ``pm``."""
    grid = grid or _Grid.of(pm)
    base, width = grid.window(lookback)
    months = np.zeros((len(grid.p_index), width + 1), dtype=np.int32)  # column 0: before the window
    if len(enrolment) and len(pm):
        p = grid.positions(enrolment["patient_id"])
        m = month_index(month_floor(enrolment["month"])).to_numpy(dtype="int64") - base
        first_m = np.full(len(grid.p_index), np.iinfo(np.int64).max, dtype=np.int64)
        if len(first):
            fp = grid.positions(first["patient_id"])
            ok = fp >= 0
            first_m[fp[ok]] = month_index(pd.to_datetime(first["first_date"][ok])).to_numpy(dtype="int64") - base
        ok = (p >= 0) & (m >= 0) & (m < width)
        ok[ok] &= m[ok] >= first_m[p[ok]]
        months[p[ok], m[ok] + 1] = 1  # a month once, however many attribution rows
    cum = np.cumsum(months, axis=1)
    end = grid.m_row - base + 1
    start = np.clip(end - lookback, 0, None)
    return pd.DataFrame({"history_months": (cum[grid.p_of_row, end] - cum[grid.p_of_row, start]).astype("int64")}, index=pm.index)


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
    history_lookback: int = 6,
    enrolment: pd.DataFrame | None = None,
    first: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Everything the rules can use, one row per attributed patient-month (definitions in the module docstring).

    Frames: patients (patient_id, birth_date, sex, dual_status, death_date); attribution
    (patient_id, month; practice_id and team_id are passed through when present); conditions (patient_id, code, onset_date,
    resolved_date); measurements (patient_id, measured_date, code, value); encounters
    (patient_id, kind, start_date); risk (patient_id, year, score) from :func:`core.derive.risk.risk_scores`.
    ``month_range``: the first and last patient-month of the whole run when the frames hold one
    block of its patients (the representative code of a condition group is the smallest one active
    in that period, so a block must see the same period as the whole run). ``enrolment``
    (patient_id, month; default ``attribution``) and ``first`` (:func:`first_records`; default:
    from the frames given) feed ``history_months`` over ``history_lookback`` months.
    Grain: patient_id, month.
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
        history_inputs(
            pm,
            attribution if enrolment is None else enrolment,
            first_records(conditions, measurements, encounters) if first is None else first,
            history_lookback,
            grid,
        ),
    ]
    out = pd.concat(parts, axis=1)
    out["risk_score"] = row_scores(out, risk)
    hccs = row_scores(out, risk, "hccs")
    out["payment_hccs"] = pd.Series(hccs, index=out.index, dtype=object).fillna("") if len(out) else ""
    out["payment_hcc_count"] = payment_hcc_count(pd.Series(hccs, index=out.index, dtype=object)) if len(out) else np.nan
    return out


def row_scores(pm: pd.DataFrame, risk: pd.DataFrame, column: str = "score") -> np.ndarray | float:
    """The risk score (or another ``column`` of the risk frame) of each patient-month: the
    patient's value of the month's calendar year (NaN when none)."""
    if not len(risk) or column not in risk:
        return np.nan
    values = risk.set_index(["patient_id", "year"])[column]
    key = pd.MultiIndex.from_arrays([pm["patient_id"], pm["month"].dt.year])
    return values.reindex(key).to_numpy(dtype=float if column == "score" else object)
