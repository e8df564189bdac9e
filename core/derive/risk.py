"""Clinical code lists and CMS-HCC risk scores.

- Code lists (``core/config/code_lists.toml``): ICD-10-CM groups of chronic conditions,
  frailty indicators, disability / institutional status and risk factors, loaded and checked
  here; :func:`match_code_groups` maps codes to groups.
- Risk scores: the CMS-HCC prospective model (V28 by default) computed with ``hccinfhir``
  (:func:`risk_scores`), one row per patient and payment year.

Risk-score choices (CMS, "Announcement of Calendar Year 2026 Medicare Advantage Capitation
Rates and Part C and Part D Payment Policies", Attachment VI; the CMS-HCC model is
prospective: diagnoses of the data-collection year predict the payment year):

- diagnoses: every condition active at any time in the calendar year before the payment
  year (onset on or before 31 Dec and not resolved before 1 Jan). Departure: CMS counts only
  diagnoses on risk-adjustment-eligible encounters; the bundle's problem list stands in.
- age: completed years on 1 February of the payment year (the CMS age rule).
- sex: ``female``/``male``; other or unknown sex has no score (NaN), because the model's
  cells are sex-specific.
- dual status: ``dual_status`` true is treated as full-benefit dual (MMR code ``02``, segment
  CFA/CFD); partial duals (CPA/CPD) cannot be told apart in the bundle. False: non-dual
  (``00``, CNA/CND).
- entitlement: under 65 means Medicare by disability (OREC ``1``: the CND/CFD segments);
  65 or older is entitled by age (OREC ``0``). Departure: the original reason for
  entitlement of aged patients is not in the bundle, so "originally disabled" is never set.
- new enrollee: Part B start dates are not in the bundle. A patient aged 65 on 1 February
  aged in during the data year, so has fewer than 12 months of Medicare: new-enrollee cell
  (NE_ segment, demographics only). Everyone else uses the community continuing-enrollee
  segments. Long-term institutional (INS) is never set: MDS assessments are not in the bundle.
- the model is applied to every adult patient as a relative index of expected cost, also to
  patients not covered by Medicare; the score is not normalised or coding-adjusted.
- chronic score: demographic coefficients plus the coefficients of the HCCs that hccinfhir
  flags as chronic (``hccinfhir/data/hcc_is_chronic.csv``) and their interactions
  (``risk_score_demographics + risk_score_chronic_only`` of hccinfhir).
- both scores are rounded to three decimals, the precision of the CMS relative factors, so
  their sum is exact there: hccinfhir adds the factors in set order, which changes with the
  process's string hashing (``PYTHONHASHSEED``) and so moved the last bit from run to run.
- payment HCCs: the HCCs of the model that count in the score after its hierarchies
  (``hccs``; :func:`payment_hcc_count`). A score without any is demographic only (age, sex,
  dual and entitlement status): the subgroup rules ask for at least one as evidence of need.
"""

import re
from dataclasses import dataclass
from datetime import date
from functools import cache, lru_cache
from itertools import groupby
from operator import itemgetter
from pathlib import Path

import numpy as np
import pandas as pd
from hccinfhir.defaults import dx_to_cc_default
from hccinfhir.model_calculate import calculate_raf

from core.config import config_path, parse_toml

CODE_LISTS_PATH = config_path("code_lists.toml")
DEFAULT_MODEL = "CMS-HCC Model V28"
GROUP_KINDS = ("chronic", "frailty", "disability", "risk_factor")
FULL_DUAL_CODE = "02"  # QMB Plus: full-benefit dual (hccinfhir FULL_BENEFIT_DUAL_CODES)
NON_DUAL_CODE = "00"
SEX_CODES = {"female": "F", "male": "M"}
SCORE_DECIMALS = 3  # the CMS relative factors have three decimals


# --- code lists ------------------------------------------------------------------------


class CodeListError(ValueError):
    """The code-list file is invalid."""


@dataclass(frozen=True)
class CodeGroup:
    kind: str
    group_id: str
    name: str
    prefixes: tuple[str, ...]
    exclude: tuple[str, ...] = ()

    def matches(self, code: str) -> bool:
        """Does a normalised code (no dot, upper case) belong to this group?"""
        return code.startswith(self.prefixes) and not (self.exclude and code.startswith(self.exclude))


@dataclass(frozen=True)
class CodeLists:
    groups: tuple[CodeGroup, ...]

    def of_kind(self, kind: str) -> tuple[CodeGroup, ...]:
        return tuple(g for g in self.groups if g.kind == kind)

    def group_ids(self, kind: str) -> tuple[str, ...]:
        return tuple(g.group_id for g in self.of_kind(kind))


def normalize_icd10(code: str) -> str:
    """``e11.9`` -> ``E119``: upper case, no dot, no spaces."""
    return code.replace(".", "").replace(" ", "").upper()


def format_icd10(code: str) -> str:
    """``E119`` -> ``E11.9`` (the dot after the three-character category)."""
    code = normalize_icd10(code)
    return code if len(code) <= 3 else f"{code[:3]}.{code[3:]}"


def expand_code_entry(entry: str) -> tuple[str, ...]:
    """Expand one code-list entry to prefixes: ``E08-E10`` -> (``E08``, ``E09``, ``E10``)."""
    if "-" not in entry:
        return (normalize_icd10(entry),)
    low, high = (normalize_icd10(part) for part in entry.split("-", 1))
    m_low, m_high = re.fullmatch(r"(.*?)(\d+)", low), re.fullmatch(r"(.*?)(\d+)", high)
    if not (m_low and m_high) or m_low[1] != m_high[1] or len(low) != len(high) or int(m_low[2]) > int(m_high[2]):
        raise CodeListError(f"bad code range {entry!r}: both ends need the same stem and length, low <= high")
    width = len(m_low[2])
    return tuple(f"{m_low[1]}{n:0{width}d}" for n in range(int(m_low[2]), int(m_high[2]) + 1))


def parse_code_lists(text: str, source: str = "code lists") -> CodeLists:
    """Parse and check the TOML text of a code-list file."""
    raw = parse_toml(text, source, CodeListError)
    unknown = set(raw) - set(GROUP_KINDS)
    if unknown:
        raise CodeListError(f"{source}: unknown sections {sorted(unknown)}; expected {list(GROUP_KINDS)}")
    groups = []
    for kind in GROUP_KINDS:
        for group_id, spec in raw.get(kind, {}).items():
            where = f"{source}: [{kind}.{group_id}]"
            extra = set(spec) - {"name", "codes", "exclude"}
            if extra:
                raise CodeListError(f"{where}: unknown keys {sorted(extra)}")
            if not isinstance(spec.get("name"), str) or not isinstance(spec.get("codes"), list) or not spec["codes"]:
                raise CodeListError(f"{where}: needs a text `name` and a non-empty list `codes`")
            try:
                prefixes = tuple(p for e in spec["codes"] for p in expand_code_entry(str(e)))
                exclude = tuple(p for e in spec.get("exclude", []) for p in expand_code_entry(str(e)))
            except CodeListError as exc:
                raise CodeListError(f"{where}: {exc}") from exc
            groups.append(CodeGroup(kind, group_id, spec["name"], prefixes, exclude))
    return CodeLists(tuple(groups))


@cache
def load_code_lists(path: Path = CODE_LISTS_PATH) -> CodeLists:
    """Load the code-list file (cached per path)."""
    return parse_code_lists(path.read_text(encoding="utf-8"), str(path))


def match_code_groups(codes: pd.Series, code_lists: CodeLists) -> pd.DataFrame:
    """Groups of each distinct code. Grain: code, kind, group_id (the columns; code as given).

    A code may fall in several groups (I13.0: hypertension, heart failure and CKD).
    """
    distinct = pd.Series(pd.unique(codes.dropna().astype(str)))
    rows = [
        (code, g.kind, g.group_id)
        for code in distinct
        for norm in (normalize_icd10(code),)
        for g in code_lists.groups
        if g.matches(norm)
    ]
    return pd.DataFrame(rows, columns=["code", "kind", "group_id"])


# --- CMS-HCC risk scores ----------------------------------------------------------------


def age_on(birth_dates: pd.Series, when: date) -> pd.Series:
    """Completed years of age on ``when`` (vectorised)."""
    born = pd.to_datetime(birth_dates)
    before_birthday = (born.dt.month > when.month) | ((born.dt.month == when.month) & (born.dt.day > when.day))
    return (when.year - born.dt.year - before_birthday.astype(int)).astype("Int64")


def diagnoses_in_year(conditions: pd.DataFrame, year: int) -> pd.DataFrame:
    """Conditions active at any time in calendar ``year``: one row per condition row. Columns: patient_id, code."""
    onset = pd.to_datetime(conditions["onset_date"])
    resolved = (
        pd.to_datetime(conditions["resolved_date"])
        if "resolved_date" in conditions
        else pd.Series(pd.NaT, index=conditions.index)
    )
    active = (onset <= pd.Timestamp(year, 12, 31)) & (resolved.isna() | (resolved >= pd.Timestamp(year, 1, 1)))
    return conditions.loc[active, ["patient_id", "code"]]


def risk_demographics(patients: pd.DataFrame, year: int) -> pd.DataFrame:
    """The demographic inputs of the CMS-HCC model for payment ``year`` (see module docstring).

    Grain: patient_id (one row per row of ``patients``). Columns: patient_id, age, sex (F/M or
    missing), dual_elgbl_cd, orec, new_enrollee.
    """
    age = age_on(patients["birth_date"], date(year, 2, 1))
    return pd.DataFrame(
        {
            "patient_id": patients["patient_id"].to_numpy(),
            "age": age.to_numpy(),
            "sex": patients["sex"].map(SEX_CODES).to_numpy(),
            "dual_elgbl_cd": np.where(patients["dual_status"].fillna(False).astype(bool), FULL_DUAL_CODE, NON_DUAL_CODE),
            "orec": np.where(age.fillna(0).to_numpy() < 65, "1", "0"),
            "new_enrollee": (age == 65).fillna(False).to_numpy(),
        }
    )


@cache
def _model_codes(model: str) -> pd.Index:
    """The diagnosis codes the model maps (an index: its hash table is built once, then reused)."""
    return pd.Index(sorted({code for code, name in dx_to_cc_default if name == model}), dtype=object)


@lru_cache(maxsize=1 << 18)  # a cell is computed once per process, however many blocks share it
def _raf(age: int, sex: str, dual: str, orec: str, new_enrollee: bool, codes: str, model: str) -> tuple[float, float, str]:
    result = calculate_raf(
        codes.split(",") if codes else [],
        model_name=model,
        age=int(age),
        sex=sex,
        dual_elgbl_cd=dual,
        orec=orec,
        new_enrollee=bool(new_enrollee),
    )
    hccs = ",".join(f"HCC{h}" for h in sorted(result.hcc_list, key=lambda h: (len(h), h)))
    # hccinfhir 0.4.0 leaves the demographic interactions out of its chronic-only sum when a
    # patient has no HCC at all; then the chronic score is the demographic score.
    chronic = result.risk_score_demographics + (result.risk_score_chronic_only if result.hcc_list else 0.0)
    return round(result.risk_score, SCORE_DECIMALS), round(chronic, SCORE_DECIMALS), hccs


def risk_scores(patients: pd.DataFrame, diagnoses: pd.DataFrame, year: int, model: str = DEFAULT_MODEL) -> pd.DataFrame:
    """CMS-HCC risk score of each patient for payment ``year`` (prospective model).

    ``patients``: patient_id, birth_date, sex, dual_status. ``diagnoses``: patient_id, code,
    onset_date, resolved_date (optional); only those active in ``year - 1`` count.
    Grain: patient_id, year. Columns: patient_id, year, model, score, chronic_score, hccs (``HCC38,HCC226``); score is NaN
    for a patient of other or unknown sex. Each distinct (demographic cell, diagnosis set)
    is computed once with ``hccinfhir.calculate_raf``.
    """
    demo = risk_demographics(patients, year)
    valid = _model_codes(model)
    dx = diagnoses_in_year(diagnoses, year - 1)
    raw = dx["code"].astype(str)
    normalized = {code: normalize_icd10(code) for code in pd.unique(raw)}  # each distinct code once
    dx = pd.DataFrame({"patient_id": dx["patient_id"], "code": raw.map(normalized)})
    dx = dx[valid.get_indexer(dx["code"].to_numpy(dtype=object)) >= 0].drop_duplicates().sort_values(["patient_id", "code"])
    code_sets = {
        pid: ",".join(code for _, code in group)
        for pid, group in groupby(zip(dx["patient_id"].to_numpy(), dx["code"].to_numpy(), strict=True), key=itemgetter(0))
    }
    demo["codes"] = demo["patient_id"].map(code_sets).fillna("") if code_sets else ""
    # new enrollees are scored on demographics only (no diagnoses in the model)
    demo.loc[demo["new_enrollee"], "codes"] = ""
    scorable = demo["sex"].notna() & demo["age"].notna()
    key_cols = ["age", "sex", "dual_elgbl_cd", "orec", "new_enrollee", "codes"]
    cells = demo.loc[scorable, key_cols].drop_duplicates()
    results = [_raf(*row, model=model) for row in cells.itertuples(index=False, name=None)]
    cells["score"] = [r[0] for r in results]
    cells["chronic_score"] = [r[1] for r in results]
    # text even when no patient of the block is scorable (an empty list would make it a float column)
    cells["hccs"] = pd.Series([r[2] for r in results], index=cells.index, dtype="str")
    out = demo.merge(cells, on=key_cols, how="left")
    out["hccs"] = out["hccs"].fillna("")
    out["year"] = year
    out["model"] = model
    return out[["patient_id", "year", "model", "score", "chronic_score", "hccs"]].astype(
        {"score": "float64", "chronic_score": "float64"}
    )


def payment_hcc_count(hccs: pd.Series) -> np.ndarray:
    """The number of payment HCCs in each ``hccs`` text of :func:`risk_scores` (``HCC38,HCC226`` -> 2,
    '' -> 0; missing -> NaN)."""
    text = hccs.astype(object)
    counts = [np.nan if not isinstance(h, str) else (h.count(",") + 1 if h else 0) for h in text]
    return np.asarray(counts, dtype=float)
