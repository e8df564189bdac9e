"""Seeded synthetic sample network, written as the canonical CSV bundle.

Every page of the product is judged on this data, so it is built to look like a real adult
primary-care network (2 practices, 7 teams) and to contain signals worth finding:

Latent needs. Each patient gets a latent need score (age, area deprivation, noise); its
quantiles (reference.NEEDS_QUANTILES) set the starting needs state (about 40 % healthy, 30 % at
risk, 20 % chronic, 10 % complex or frail). The state is then *expressed* only through data the
subgroup engine reads: ICD-10 conditions (chronic groups, risk factors, frailty / disability
codes) and consistent measurements (BMI >= 30 with E66.9, SBP 130-139 with R03.0, HbA1c 5.7-6.4
with R73.03, LDL >= 160 with E78.5, tobacco status 1 with Z72.0 / F17.210; healthy patients
stay below those thresholds). During the window some patients progress (a new risk factor, a
new chronic condition, a third chronic group, a frailty indicator; onset dates inside the
window) and some at-risk patients improve (risk factors resolved), so subgroups change month to
month. The patient-month state drives mortality, utilisation and measurement values;
attribution follows the state to the team serving it with a lag of 1-2 months.

Subgroup mix. The default rules (core/config/subgroup_rules.toml) also call complex anyone whose
CMS-HCC score is in the month's top decile or who had 2+ ED visits / admissions in 12 months.
So that the mix the engine assigns stays near the paper's 40 / 30 / 20 / 10 %, the data are
shaped the way real panels are: multimorbid (latent complex and frail) patients carry the
HCC-heavy conditions (reference.SEVERE_GROUPS: COPD, heart failure, CKD, depression, atrial
fibrillation, RA, cancer) and so fill most of the top decile, while people with one or two
conditions mostly have hypertension, diabetes, CAD, asthma or hypothyroidism; and repeat acute
care concentrates among complex and frail patients (reference.ACUTE_NEED_EXPONENT). The rules
still move about 2-3 % of patients (older chronic patients with high scores, a few repeat ED
users) into complex: on the default network (5,000 patients, 24 months) the latent mix is
about 40 / 29 / 21 / 10 % (frail ~3 %) and the engine assigns about 40 / 29 / 19 / 12 %.

Planted signals (the monthly review should find them):
1. Team TM03 "Riverside Chronic Care Team" performs best: HbA1c, blood pressure and PHQ-9
   move toward target fastest, PROMIS scores improve, and its acute care (ED, admissions,
   specialist, SNF) is ~22 % lower; its capacity is used most (82 %).
2. Team TM07 "Hillcrest Team B (chronic, complex and frail)" performs worst: slow or no
   control, ~25 % more acute care, lowest capacity use (58 %). Hillcrest also leaks more care
   out of network (76 % in network against 91 % at Riverside).
3. Team TM06 "Hillcrest Team A" is slow on urgent requests: 1-5 days from request to visit
   against 0-2 days elsewhere.
4. In the LAST month of the window, complex patients attributed to TM04 "Riverside Complex
   Care Team" are admitted at 6x their usual monthly admission rate (SPIKE_ADMISSION_MULTIPLIER;
   about 2.5-3x their usual rate once readmissions are counted), and never fewer admissions
   than that rate's expected count, so the rise is statistically clear at the default size.

Claims run-out: the bundle is an extract taken on the window's last day. Each claim is paid a
seeded lag after the service ends (reference.PAID_LAG_DAYS: median 30 days, a tail to 6 months)
and carries that ``paid_date``; claims not yet paid are not in the extract, except admissions
and ED visits, which the practice knows from hospital notifications and which stay without a
paid amount or paid date. So the latest months are really incomplete, and the run-out
completion factors are estimated from the data's own lag. Internal encounters have no paid date.

Determinism: one numpy Generator per named step and patient chunk, seeded from
``(spec.seed, crc32(step name), chunk)``; patients are processed in fixed chunks of
CHUNK_PATIENTS, so the same spec gives byte-identical files, and memory stays bounded (the
bundle is streamed to disk chunk by chunk). Only the default end month reads the clock.
"""

import json
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from core.config.catalog import (
    BMI,
    DIASTOLIC_BP,
    GAD7,
    HBA1C,
    LDL,
    PAIN,
    PHQ9,
    PROMIS_MENTAL,
    PROMIS_PHYSICAL,
    SYSTOLIC_BP,
    TOBACCO,
    TOTAL_CHOLESTEROL,
    WORK_DAYS_MISSED,
    load_catalog,
)
from core.ingest.bundle_schema import BUNDLE, BY_FILE, MANIFEST_FILE, SAMPLE_GENERATOR_NAME
from core.store.months import add_months, as_month, months_back
from sample_data import reference as ref

CHUNK_PATIENTS = 50_000
NEVER = np.int64(10**7)  # "no such day" (far future, in days since 1970-01-01)
EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class NetworkSpec:
    """What to generate. ``end_month`` is the first day of the last month (None: last complete month)."""

    patients: int = 5000
    months: int = 24
    seed: int = 42
    end_month: date | None = None


# --- small helpers --------------------------------------------------------------------------


def resolve_end_month(spec: NetworkSpec, today: date | None = None) -> date:
    """First day of the window's last month: spec.end_month, or the last complete calendar month."""
    if spec.end_month is not None:
        return as_month(spec.end_month)
    today = today or datetime.now(UTC).date()
    return add_months(today, -1)


def _month_starts(end_month: date, months: int) -> np.ndarray:
    """Days (since 1970-01-01) of the first day of each window month, plus the month after."""
    return np.array([(m - EPOCH).days for m in months_back(add_months(end_month, 1), months + 1)], dtype=np.int64)


def _rng(seed: int, name: str, chunk: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode()), chunk])


def _pick(r: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One category per row of a probability matrix (rows sum to 1)."""
    cum = np.cumsum(probs, axis=1)
    u = r.random(len(probs))[:, None] * cum[:, -1:]
    return (u >= cum).sum(axis=1)


def _gumbel_ranks(r: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """Rank (0 = first) of each column in a weighted random order without replacement, per row."""
    with np.errstate(divide="ignore"):
        keys = np.log(weights) + r.gumbel(size=weights.shape)
    order = np.argsort(-keys, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(weights.shape[1])[None, :].repeat(len(weights), 0), axis=1)
    return ranks


def _days_to_dates(days: np.ndarray) -> pd.Categorical:
    """Days since 1970-01-01 -> categorical of YYYY-MM-DD strings (NEVER -> missing).

    Negative days are real dates before 1970 (birth dates, old onsets): -1 is 1969-12-31.
    """
    days = np.asarray(days, dtype=np.int64)
    valid = days != NEVER
    if not valid.any():
        return pd.Categorical.from_codes(np.full(len(days), -1), categories=pd.Index(["1970-01-01"]))
    lo, hi = days[valid].min(), days[valid].max()
    table = np.arange(lo, hi + 1).astype("datetime64[D]").astype("U10")
    return pd.Categorical.from_codes(np.where(valid, days - lo, -1), categories=pd.Index(table))


def _labels(codes: np.ndarray, labels) -> pd.Categorical:
    """Integer codes (-1 = missing) -> categorical of the given labels."""
    labels = list(labels)
    unique = list(dict.fromkeys(labels))
    remap = np.array([unique.index(x) for x in labels] + [-1], dtype=np.int64)  # index -1 -> -1
    return pd.Categorical.from_codes(remap[np.asarray(codes, dtype=np.int64)], categories=pd.Index(unique))


def _bools(values: np.ndarray) -> pd.Categorical:
    """-1/0/1 -> blank/'false'/'true'."""
    return _labels(values, ["false", "true"])


def _ids(prefix: str, start: int, n: int, width: int) -> np.ndarray:
    if n == 0:
        return np.array([], dtype=object)
    return np.char.add(prefix, np.char.zfill(np.arange(start, start + n).astype(str), width)).astype(object)


def _poisson_clip(r: np.random.Generator, lam: np.ndarray, hi: int) -> np.ndarray:
    return np.minimum(r.poisson(np.maximum(lam, 0)), hi)


# --- the panel: per-patient arrays for the whole network -------------------------------------


@dataclass
class _Panel:
    """Per-patient arrays (length N) and patient-month matrices (N x M). Private, built once."""

    spec: NetworkSpec
    ms: np.ndarray  # month starts (M + 1)
    birth: np.ndarray
    age0: np.ndarray
    practice: np.ndarray
    sex: np.ndarray
    race: np.ndarray
    hispanic: np.ndarray
    language: np.ndarray
    dual: np.ndarray
    zip_code: np.ndarray
    decile: np.ndarray
    given: np.ndarray
    family: np.ndarray
    diab_code: np.ndarray  # 0 = E11.9, 1 = E11.65
    tob_code: np.ndarray  # 0 = Z72.0, 1 = F17.210
    g_on: np.ndarray  # N x groups, onset day or NEVER
    rf_on: np.ndarray  # N x risk factors
    rf_res: np.ndarray
    fr_on: np.ndarray  # frailty / disability onset
    fr_code: np.ndarray  # index into FRAILTY_CODES + DISABILITY_CODES, -1 none
    fr2_code: np.ndarray  # an optional second frailty code
    state: np.ndarray  # N x M latent state (subgroup index)
    enrolled: np.ndarray  # N x M member-month mask (alive, enrolled)
    team: np.ndarray  # N x M team index (-1 when not a member-month)
    first_month: np.ndarray
    last_day: np.ndarray  # last day of enrolment and life
    death: np.ndarray  # death day or NEVER
    need: np.ndarray  # individual utilisation multiplier (mean 1)
    home_team: np.ndarray

    @property
    def n(self) -> int:
        return len(self.birth)

    @property
    def months(self) -> int:
        return len(self.ms) - 1


FRAIL_ALL = ref.FRAILTY_CODES + ref.DISABILITY_CODES
N_FRAILTY = len(ref.FRAILTY_CODES)
TEAM_OF = np.full((len(ref.PRACTICES), len(ref.SUBGROUPS)), -1, dtype=np.int64)
for _t, (_tid, _pi, _name, _sg, _states) in enumerate(ref.TEAMS):
    for _s in _states:
        TEAM_OF[_pi, _s] = _t


def _build_demographics(spec: NetworkSpec, ms: np.ndarray) -> dict:
    r = _rng(spec.seed, "patients")
    n = spec.patients
    bands = np.array([b[2] for b in ref.AGE_BANDS])
    band = r.choice(len(bands), n, p=bands / bands.sum())
    lo = np.array([b[0] for b in ref.AGE_BANDS])[band]
    hi = np.array([b[1] for b in ref.AGE_BANDS])[band]
    age0 = r.integers(lo, hi + 1)
    birth = ms[0] - np.floor(age0 * 365.25).astype(np.int64) - r.integers(1, 365, n)
    shares = np.array([p[2] for p in ref.PRACTICES])
    practice = r.choice(len(shares), n, p=shares / shares.sum())
    zips, deciles = [], []
    for _pid, _name, _share, pzips in ref.PRACTICES:
        zips.append([z for z, _d in pzips])
        deciles.append([d for _z, d in pzips])
    zip_pick = r.integers(0, 1_000_000, n)
    zip_code = np.empty(n, dtype=object)
    decile = np.empty(n, dtype=np.int64)
    for pi in range(len(ref.PRACTICES)):
        m = practice == pi
        k = zip_pick[m] % len(zips[pi])
        zip_code[m] = np.array(zips[pi], dtype=object)[k]
        decile[m] = np.array(deciles[pi])[k]
    decile = np.clip(decile + r.choice([-1, 0, 0, 0, 1], n), 1, 10)
    sex = r.choice(len(ref.SEXES), n, p=[s[1] for s in ref.SEXES])
    race = _pick(r, np.array(ref.RACE_SHARES)[practice])
    hisp_u = r.random(n)
    hispanic = np.where(hisp_u < np.array(ref.HISPANIC_SHARE)[practice], 1, 0)
    hispanic = np.where(r.random(n) < 0.02, 2, hispanic)  # 2 = unknown
    other_p = np.array([o[1] for o in ref.OTHER_LANGUAGES])
    other_lang = 2 + r.choice(len(other_p), n, p=other_p)
    lang_u = r.random(n)
    language = np.where((hispanic == 1) & (lang_u < 0.45), 1, 0)  # 0 English, 1 Spanish, 2+ others
    language = np.where((hispanic != 1) & (lang_u < np.where(practice == 1, 0.07, 0.03)), other_lang, language)
    # Dual eligibility: mostly 65+ in deprived areas; some younger people with disability.
    p_dual = 0.015 + 0.01 * (decile >= 8) + (age0 >= 65) * (0.02 + 0.025 * (decile - 1))
    dual = r.random(n) < p_dual
    female_given = r.integers(0, len(ref.GIVEN_FEMALE), n)
    male_given = r.integers(0, len(ref.GIVEN_MALE), n)
    is_female = (sex == 0) | ((sex >= 2) & (r.random(n) < 0.5))
    given = np.where(is_female, np.array(ref.GIVEN_FEMALE, dtype=object)[female_given],
                     np.array(ref.GIVEN_MALE, dtype=object)[male_given])
    family = np.array(ref.FAMILY, dtype=object)[r.integers(0, len(ref.FAMILY), n)]
    return dict(birth=birth, age0=age0, practice=practice, sex=sex, race=race, hispanic=hispanic,
                language=language, dual=dual.astype(np.int64), zip_code=zip_code, decile=decile,
                given=given, family=family)


def _build_conditions(spec: NetworkSpec, ms: np.ndarray, demo: dict) -> dict:
    """Starting needs state, the conditions that express it, and in-window changes."""
    r = _rng(spec.seed, "needs")
    n = spec.patients
    age0, decile, birth = demo["age0"], demo["decile"], demo["birth"]
    w0, wend = ms[0], ms[-1] - 1
    z = (age0 - 50) / 17 + 0.35 * (decile - 5.5) / 2.9 + r.normal(0, 1, n)
    cuts = np.quantile(z, ref.NEEDS_QUANTILES) if n > 3 else np.array([0.0, 1.0, 2.0])
    state0 = np.searchsorted(cuts, z, side="right")
    u = r.random(n)
    frail_old = (state0 == 3) & (age0 >= 75) & (u < 0.55)
    frail_disabled = (state0 == 3) & ~frail_old & (r.random(n) < 0.05)
    state0 = np.where(frail_old | frail_disabled, ref.FRAIL, state0)

    groups = ref.CHRONIC_GROUPS
    n_groups = np.select(
        [state0 == ref.CHRONIC, state0 == ref.COMPLEX, state0 == ref.FRAIL],
        [1 + (r.random(n) < 0.4), r.choice([3, 4, 5, 6], n, p=[0.5, 0.3, 0.15, 0.05]),
         r.choice([1, 2, 3, 4], n, p=[0.2, 0.35, 0.3, 0.15])], 0)
    base_w = np.array([g[3] for g in groups])
    slope = np.array([g[4] for g in groups])
    age_w = base_w[None, :] * np.exp(slope[None, :] * (age0[:, None] - 50))
    age_w[demo["sex"] != 0, ref.GROUP_INDEX["breast_cancer"]] = 1e-9
    severe = np.isin([g[0] for g in groups], ref.SEVERE_GROUPS)

    def state_weights(state: np.ndarray) -> np.ndarray:
        """Group weights of patients in these states: severe (HCC-heavy) groups mostly in the multimorbid."""
        mult = np.array(ref.SEVERE_GROUP_WEIGHT)[state]
        return age_w * np.where(severe[None, :], mult[:, None], 1.0)

    weights = state_weights(state0)
    ranks = _gumbel_ranks(r, weights)
    adult = birth + 18 * 365
    pre_onset = np.maximum(w0 - r.integers(30, 365 * 12, (n, len(groups))), adult[:, None])
    pre_onset = np.minimum(pre_onset, w0 - 1)
    g_on = np.where(ranks < n_groups[:, None], pre_onset, NEVER)

    # Risk factors: the at-risk subgroup has 1-3; sicker patients carry some too.
    rfs = ref.RISK_FACTORS
    rf_w = np.array([f[3] for f in rfs])[None, :].repeat(n, 0)
    rf_w[:, ref.TOBACCO] *= 1 + 0.12 * (decile - 5)
    rf_w[:, ref.PREDIABETES] *= np.exp(0.02 * (age0 - 50))
    rf_w[:, ref.HYPERLIPIDAEMIA] *= np.exp(0.02 * (age0 - 50))
    n_rf = np.where(state0 == ref.AT_RISK, r.choice([1, 2, 3], n, p=[0.65, 0.28, 0.07]), 0)
    rf_has = _gumbel_ranks(r, rf_w) < n_rf[:, None]
    sick = state0 >= ref.CHRONIC
    extra_p = np.array([0.35, 0.14, 0.0, 0.0, 0.30])
    rf_has |= sick[:, None] & (r.random((n, len(rfs))) < extra_p[None, :])
    diab = ref.GROUP_INDEX["diabetes"]
    htn = ref.GROUP_INDEX["hypertension"]
    rf_on = np.where(rf_has, np.maximum(w0 - r.integers(30, 365 * 8, (n, len(rfs))), adult[:, None]), NEVER)
    rf_on = np.minimum(rf_on, np.where(rf_has, w0 - 1, NEVER))
    rf_res = np.full((n, len(rfs)), NEVER)

    fr_on = np.full(n, NEVER)
    fr_code = np.full(n, -1)
    fr2_code = np.full(n, -1)
    fr_on[frail_old | frail_disabled] = np.maximum(w0 - r.integers(30, 365 * 4, n), adult)[frail_old | frail_disabled]
    fr_code[frail_old] = r.integers(0, N_FRAILTY, n)[frail_old]
    fr_code[frail_disabled] = N_FRAILTY + r.integers(0, len(ref.DISABILITY_CODES), n)[frail_disabled]
    second = frail_old & (r.random(n) < 0.3)
    fr2_code[second] = ((fr_code + 1 + r.integers(0, N_FRAILTY - 1, n)) % N_FRAILTY)[second]

    # In-window changes: one progression (annual hazard by state) or one improvement.
    prog_rate = np.array([0.05, 0.05, 0.02, 0.10, 0.0])[state0] * np.where((state0 == ref.COMPLEX) & (age0 < 74), 0, 1)
    t_prog = w0 + np.floor(r.exponential(365.0 / np.maximum(prog_rate, 1e-9))).astype(np.int64)
    t_imp = w0 + np.floor(r.exponential(365.0 / 0.05, n)).astype(np.int64)
    improve = (state0 == ref.AT_RISK) & (t_imp <= wend - 20) & (t_imp < t_prog)
    prog = (prog_rate > 0) & (t_prog <= wend - 10) & ~improve
    # healthy -> at risk: one new risk factor
    new_rf = _gumbel_ranks(r, rf_w) == 0
    m = prog & (state0 == ref.HEALTHY)
    rf_on = np.where(m[:, None] & new_rf, t_prog[:, None], rf_on)
    # at risk -> chronic: prediabetes becomes diabetes, elevated BP becomes hypertension, else any group
    m = prog & (state0 == ref.AT_RISK)
    had_pd = rf_has[:, ref.PREDIABETES] & m
    had_bp = rf_has[:, ref.ELEVATED_BP] & m & ~had_pd
    other = m & ~had_pd & ~had_bp
    g_on[had_pd, diab] = t_prog[had_pd]
    rf_res[had_pd, ref.PREDIABETES] = t_prog[had_pd]
    g_on[had_bp, htn] = t_prog[had_bp]
    rf_res[had_bp, ref.ELEVATED_BP] = t_prog[had_bp]
    first_new = _gumbel_ranks(r, weights) == 0
    g_on = np.where(other[:, None] & first_new, t_prog[:, None], g_on)
    # chronic -> complex: new groups up to three
    m = prog & (state0 == ref.CHRONIC)
    absent_w = np.where(g_on == NEVER, state_weights(np.full(n, ref.COMPLEX)), 1e-12)
    new_ranks = _gumbel_ranks(r, absent_w)
    need_more = (3 - n_groups)[:, None]
    g_on = np.where(m[:, None] & (new_ranks < need_more), t_prog[:, None], g_on)
    # complex -> frail (aged 74+ at the start, so 75 within the window)
    m = prog & (state0 == ref.COMPLEX)
    fr_on = np.where(m, np.maximum(t_prog, birth + int(75 * 365.25) + 1), fr_on)
    fr_code = np.where(m, r.integers(0, N_FRAILTY, n), fr_code)
    # improvement: every active risk factor resolves (tobacco quit, weight loss, ...)
    rf_res = np.where(improve[:, None] & (rf_on < NEVER), t_imp[:, None], rf_res)
    diab_code = (r.random(n) < 0.25).astype(np.int64)
    tob_code = (r.random(n) < 0.4).astype(np.int64)
    return dict(g_on=g_on, rf_on=rf_on, rf_res=rf_res, fr_on=fr_on, fr_code=fr_code, fr2_code=fr2_code,
                diab_code=diab_code, tob_code=tob_code)


def _state_matrix(ms: np.ndarray, birth: np.ndarray, cond: dict) -> np.ndarray:
    """Latent subgroup per patient-month, from the conditions active at each month's end."""
    n, m_count = len(birth), len(ms) - 1
    state = np.empty((n, m_count), dtype=np.int8)
    disabled = cond["fr_code"] >= N_FRAILTY
    for m in range(m_count):
        day = ms[m + 1] - 1
        k = (cond["g_on"] <= day).sum(axis=1)
        rf = ((cond["rf_on"] <= day) & (cond["rf_res"] > day)).any(axis=1)
        old = (day - birth) >= 75 * 365.25
        frail = (cond["fr_on"] <= day) & (old | disabled)
        state[:, m] = np.select([frail, k >= 3, k >= 1, rf], [ref.FRAIL, ref.COMPLEX, ref.CHRONIC, ref.AT_RISK], ref.HEALTHY)
    return state


def build_panel(spec: NetworkSpec) -> _Panel:
    """Patients, their conditions, latent states, enrolment, deaths and team attribution."""
    if spec.patients < 1 or spec.months < 1:
        raise ValueError("a network needs at least one patient and one month")
    ms = _month_starts(resolve_end_month(spec), spec.months)
    n, m_count = spec.patients, spec.months
    demo = _build_demographics(spec, ms)
    cond = _build_conditions(spec, ms, demo)
    state = _state_matrix(ms, demo["birth"], cond)

    r = _rng(spec.seed, "enrolment")
    joins = r.random(n) < (0.16 if m_count > 1 else 0)
    first_month = np.where(joins, r.integers(1, max(m_count, 2), n), 0)
    leaves = (r.random(n) < 0.10) & (m_count > 1)
    last_month = np.where(leaves, r.integers(first_month, np.maximum(first_month + 1, m_count - 1)), m_count - 1)
    last_month = np.clip(last_month, first_month, m_count - 1)
    months = np.arange(m_count)[None, :]
    enrolled = (months >= first_month[:, None]) & (months <= last_month[:, None])

    # Mortality: Gompertz fit to US life tables (CDC NVSS 2021: ~0.2 % at 40, ~1.4 % at 65,
    # ~6 % at 85 per year), times a relative risk by needs state.
    rr = np.array([0.5, 0.8, 1.2, 2.6, 3.6])
    death = np.full(n, NEVER)
    alive = np.ones(n, dtype=bool)
    dim = np.diff(ms)
    for m in range(m_count):
        age = (ms[m] - demo["birth"]) / 365.25
        q = np.minimum(np.exp(-10.2 + 0.086 * age), 0.6) * rr[state[:, m]]
        dies = alive & enrolled[:, m] & (r.random(n) < 1 - np.exp(-q / 12))
        death[dies] = ms[m] + r.integers(0, dim[m], n)[dies]
        alive &= ~dies
    enrolled &= ms[None, :-1] <= death[:, None]
    last_day = np.minimum(ms[last_month + 1] - 1, death)

    lag = r.integers(1, 3, n)
    src = np.maximum(months - lag[:, None], first_month[:, None])
    attr_state = np.take_along_axis(state, np.minimum(src, m_count - 1), axis=1)
    team = np.where(enrolled, TEAM_OF[demo["practice"][:, None], attr_state], -1).astype(np.int8)
    need = r.gamma(2.0, 0.5, n)
    home_team = team[np.arange(n), first_month].astype(np.int64)
    return _Panel(spec=spec, ms=ms, **demo, **cond, state=state, enrolled=enrolled, team=team,
                  first_month=first_month, last_day=last_day, death=death, need=need, home_team=home_team)


# --- codes used in rows ----------------------------------------------------------------------

_CODE_LIST: list[str] = []
_CODE_DESC: list[str] = []


def _code(code: str, desc: str = "") -> int:
    if code not in _CODE_LIST:
        _CODE_LIST.append(code)
        _CODE_DESC.append(desc)
    return _CODE_LIST.index(code)


G_CODE = np.array([_code(g[1], g[2]) for g in ref.CHRONIC_GROUPS])
DIAB_COMPLICATED = _code(*ref.DIABETES_COMPLICATED)
RF_CODE = np.array([_code(f[1], f[2]) for f in ref.RISK_FACTORS])
TOB_DEPENDENCE = _code(*ref.TOBACCO_DEPENDENCE)
FR_CODE = np.array([_code(c, d) for c, d in FRAIL_ALL])
FALL = _code(*ref.FALL_CODE)
FALL_INJURY = np.array([_code(c, d) for c, d, _share in ref.FALL_INJURIES])
FALL_INJURY_P = np.array([share for _c, _d, share in ref.FALL_INJURIES])
WELLNESS = _code(ref.WELLNESS_DX, "Encounter for general adult medical examination without abnormal findings")
ED_CODES = np.array([_code(c) for c in ref.ED_DX])
UC_CODES = np.array([_code(c) for c in ref.URGENT_CARE_DX])
ACSC_GENERAL = np.array([_code(c) for c in ref.ACSC_GENERAL])
NON_ACSC = np.array([_code(c) for c in ref.NON_ACSC_ADMISSION_DX])
ACSC_OF_CODE = np.full(256, -1)
for _g, _c in ref.ACSC_BY_GROUP.items():
    ACSC_OF_CODE[G_CODE[ref.GROUP_INDEX[_g]]] = _code(_c)
ACSC_OF_CODE[DIAB_COMPLICATED] = _code("E11.65")
SPECIALTIES = sorted(ref.ECONSULT_RESPONSE_DAYS)
SPEC_OF_CODE = np.full(256, -1)
for _g in ref.CHRONIC_GROUPS:
    SPEC_OF_CODE[G_CODE[ref.GROUP_INDEX[_g[0]]]] = SPECIALTIES.index(_g[5])
SPEC_OF_CODE[DIAB_COMPLICATED] = SPECIALTIES.index("endocrinology")
OTHER_SPEC = np.array([SPECIALTIES.index(s) for s in ref.OTHER_SPECIALTIES])
KINDS = list(ref.RATES)
INTERNAL = np.array([k in ref.INTERNAL_KINDS for k in KINDS])
K = {k: i for i, k in enumerate(KINDS)}
ROLE_INDEX = {role: i for i, role in enumerate(ref.ROLES)}


def _condition_slots(p: _Panel, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two earliest conditions per patient (code index, onset day), chronic and frailty
    codes before unresolved risk factors: the diagnoses encounters are coded with."""
    n, diab = len(idx), ref.GROUP_INDEX["diabetes"]
    g_code = np.broadcast_to(G_CODE, (n, len(G_CODE))).copy()
    g_code[:, diab] = np.where(p.diab_code[idx] == 1, DIAB_COMPLICATED, G_CODE[diab])
    rf_code = np.broadcast_to(RF_CODE, (n, len(RF_CODE))).copy()
    rf_code[:, ref.TOBACCO] = np.where(p.tob_code[idx] == 1, TOB_DEPENDENCE, RF_CODE[ref.TOBACCO])
    fr = np.where(p.fr_code[idx] >= 0, FR_CODE[np.maximum(p.fr_code[idx], 0)], 0)
    onsets = np.concatenate([p.g_on[idx], np.where(p.rf_res[idx] < NEVER, NEVER, p.rf_on[idx]), p.fr_on[idx][:, None]], axis=1)
    bias = np.zeros(onsets.shape[1], dtype=np.int64)
    bias[len(G_CODE):len(G_CODE) + len(RF_CODE)] = 50_000
    key = np.where(onsets < NEVER, onsets + bias[None, :], NEVER + 100_000)
    order = np.argsort(key, axis=1, kind="stable")[:, :2]
    codes = np.concatenate([g_code, rf_code, fr[:, None]], axis=1)
    return np.take_along_axis(codes, order, axis=1), np.take_along_axis(onsets, order, axis=1)


# --- encounters ------------------------------------------------------------------------------

TEAM_UTIL_MULT = np.array(ref.TEAM_UTILISATION_MULTIPLIER)
ACUTE_NEED_EXPONENT = np.array(ref.ACUTE_NEED_EXPONENT)
RATE = {k: np.array(v) for k, v in ref.RATES.items()}


def _fit_day(r: np.random.Generator, ms: np.ndarray, month: np.ndarray, last_day: np.ndarray) -> np.ndarray:
    """A random day inside each month, never after the patient's last day."""
    start = ms[month]
    avail = np.clip(np.minimum(ms[month + 1] - 1, last_day) - start + 1, 1, None)
    return start + np.floor(r.random(len(month)) * avail).astype(np.int64)


def _pick_dx(r: np.random.Generator, slot_code: np.ndarray, slot_on: np.ndarray, day: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """One of the patient's two earliest conditions active on the day, else the fallback code."""
    ok1, ok2 = slot_on[:, 0] <= day, slot_on[:, 1] <= day
    first = r.random(len(day)) < 0.6
    return np.select([ok1 & (first | ~ok2), ok2], [slot_code[:, 0], slot_code[:, 1]], fallback)


def _fill_encounters(r: np.random.Generator, p: _Panel, ctx: dict, kind: np.ndarray, pl: np.ndarray, day: np.ndarray) -> dict:
    """Every column of the encounters given kind, patient and start day (chunk-local arrays)."""
    n = len(kind)
    month = np.clip(np.searchsorted(p.ms, day, side="right") - 1, 0, p.months - 1)
    st = ctx["state"][pl, month].astype(np.int64)
    tm = ctx["team"][pl, month].astype(np.int64)
    practice = p.practice[ctx["idx"]][pl]
    slot_code, slot_on = ctx["slot_code"][pl], ctx["slot_on"][pl]
    internal = INTERNAL[kind]
    f = dict(kind=kind, pl=pl, day=day, state=st)
    f["team"] = np.where(internal, tm, -1)
    f["end"] = np.full(n, NEVER)
    f["requested"] = np.full(n, NEVER)
    f["responded"] = np.full(n, NEVER)
    f["in_network"] = np.where(internal, 1, (r.random(n) < np.array(ref.IN_NETWORK_SHARE)[practice]).astype(np.int64))
    f["resolved"] = np.full(n, -1)
    f["specialty"] = np.full(n, -1)
    # Urgent same-day requests (office and video visits); one team is notably slower.
    visit = (kind == K["office_visit"]) | (kind == K["virtual_visit"])
    urgent = visit & (r.random(n) < np.where(kind == K["office_visit"], 0.15, 0.25))
    f["urgent"] = np.where(internal, urgent.astype(np.int64), -1)
    lag = np.where(tm == ref.SLOW_URGENT_TEAM, r.choice([1, 2, 3, 4, 5], n, p=[0.15, 0.25, 0.25, 0.2, 0.15]),
                   r.choice([0, 1, 2], n, p=[0.45, 0.35, 0.2]))
    f["requested"] = np.where(urgent, day - lag, NEVER)
    # Diagnoses
    dx = _pick_dx(r, slot_code, slot_on, day, np.full(n, WELLNESS))
    dx = np.where(kind == K["urgent_care"], UC_CODES[r.integers(0, len(UC_CODES), n)], dx)
    ed_cond = _pick_dx(r, slot_code, slot_on, day, ED_CODES[r.integers(0, len(ED_CODES), n)])
    dx = np.where(kind == K["ed_visit"], np.where(r.random(n) < 0.4, ed_cond, ED_CODES[r.integers(0, len(ED_CODES), n)]), dx)
    cond_acsc = ACSC_OF_CODE[_pick_dx(r, slot_code, slot_on, day, np.zeros(n, dtype=np.int64))]
    u = r.random(n)
    adm_dx = np.select([(cond_acsc >= 0) & (u < 0.45), u < 0.62],
                       [cond_acsc, ACSC_GENERAL[r.integers(0, len(ACSC_GENERAL), n)]], NON_ACSC[r.integers(0, len(NON_ACSC), n)])
    dx = np.where((kind == K["admission"]) | (kind == K["snf_stay"]), adm_dx, dx)
    f["dx"] = np.where(kind == K["pharmacy_fill"], -1, dx)
    # Specialty: the patient's condition's specialty, else another one.
    spec_cond = SPEC_OF_CODE[dx]
    other_spec = OTHER_SPEC[r.integers(0, len(OTHER_SPEC), n)]
    spec = np.where((spec_cond >= 0) & (r.random(n) < 0.8), spec_cond, other_spec)
    is_spec = (kind == K["specialist_visit"]) | (kind == K["e_consult"])
    f["specialty"] = np.where(is_spec, spec, -1)
    # E-consults: specialist answer time and resolution by specialty.
    lo = np.array([ref.ECONSULT_RESPONSE_DAYS[s][0] for s in SPECIALTIES])[spec]
    hi = np.array([ref.ECONSULT_RESPONSE_DAYS[s][1] for s in SPECIALTIES])[spec]
    ec = kind == K["e_consult"]
    last = np.minimum(ctx["last_day"][pl], p.ms[-1] - 1)
    f["requested"] = np.where(ec, day, f["requested"])
    f["responded"] = np.where(ec, np.minimum(day + r.integers(lo, hi + 1), np.maximum(last, day)), NEVER)
    share = np.array([ref.ECONSULT_RESOLVED_SHARE[s] for s in SPECIALTIES])[spec]
    f["resolved"] = np.where(ec, (r.random(n) < share).astype(np.int64), -1)
    # Stays: admissions (length of stay ~ HCUP mean 4.5-5.5 days) and skilled nursing.
    los = np.where(kind == K["admission"], 1 + r.poisson(np.where(st >= ref.COMPLEX, 4.2, 3.0)),
                   np.where(kind == K["snf_stay"], r.integers(10, 31, n), 0))
    stay = (kind == K["admission"]) | (kind == K["snf_stay"])
    f["end"] = np.where(stay, np.maximum(np.minimum(day + los, last), day), NEVER)
    # Paid amounts of external claims.
    paid = np.full(n, np.nan)
    for kname, (median, sigma, pmin, pmax) in ref.PRICES.items():
        m = kind == K[kname]
        if not m.any():
            continue
        base = median * np.array(ref.STATE_PRICE)[st[m]]
        if kname == "pharmacy_fill":
            base = np.array([22.0, 30.0, 48.0, 85.0, 75.0])[st[m]]
        amount = base * np.exp(r.normal(0, sigma, m.sum())) * np.where(f["in_network"][m] == 0, 1.12, 1.0)
        paid[m] = np.round(np.clip(amount, pmin, pmax), 2)
    f["paid"] = paid
    return f


def _concat(parts: list[dict]) -> dict:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _take(f: dict, m: np.ndarray) -> dict:
    return {k: v[m] for k, v in f.items()}


def _chunk_encounters(p: _Panel, ctx: dict, chunk: int) -> dict:
    """Encounter arrays of one patient chunk, sorted by patient, start day and kind."""
    r = _rng(p.spec.seed, "encounters", chunk)
    pl, mm = np.nonzero(ctx["enrolled"])
    st = ctx["state"][pl, mm].astype(np.int64)
    tm = ctx["team"][pl, mm].astype(np.int64)
    need = p.need[ctx["idx"]][pl]
    spike = (tm == ref.SPIKE_TEAM) & (st == ref.COMPLEX) & (mm == p.months - 1)
    kinds, rows = [], []
    for kname in KINDS:
        if INTERNAL[K[kname]]:
            lam = RATE[kname][st] * np.sqrt(need)
        elif kname in ref.ACUTE_KINDS:
            lam = RATE[kname][st] * need ** ACUTE_NEED_EXPONENT[st]
        else:
            lam = RATE[kname][st] * need
        if kname in ref.TEAM_SENSITIVE_KINDS:
            lam = lam * TEAM_UTIL_MULT[tm]
        if kname == "admission":
            lam = np.where(spike, lam * ref.SPIKE_ADMISSION_MULTIPLIER, lam)
        count = r.poisson(lam)
        if kname == "admission" and spike.any():
            # Planted signal 4: never fewer spike admissions than expected, so the review finds it.
            short = int(round(lam[spike].sum())) - int(count[spike].sum())
            if short > 0:
                members = np.nonzero(spike)[0]
                extra = r.choice(members, short, p=lam[members] / lam[members].sum())
                np.add.at(count, extra, 1)
        rows.append(np.repeat(np.arange(len(pl)), count))
        kinds.append(np.full(count.sum(), K[kname]))
    row, kind = np.concatenate(rows), np.concatenate(kinds)
    day = _fit_day(r, p.ms, mm[row], ctx["last_day"][pl[row]])
    base = _fill_encounters(r, p, ctx, kind, pl[row], day)

    def keep(pl_new: np.ndarray, day_new: np.ndarray) -> np.ndarray:
        month = np.searchsorted(p.ms, day_new, side="right") - 1
        inside = (month >= 0) & (month < p.months) & (day_new <= ctx["last_day"][pl_new])
        ok = np.zeros(len(day_new), dtype=bool)
        ok[inside] = ctx["enrolled"][pl_new[inside], month[inside]]
        return ok

    derived = []
    adm = base["kind"] == K["admission"]
    # 30-day readmissions (CMS HRRP window) and post-acute SNF stays after discharge.
    readmit = adm & (r.random(len(adm)) < np.array(ref.READMISSION_SHARE)[base["state"]])
    rd_pl, rd_day = base["pl"][readmit], base["end"][readmit] + r.integers(1, 31, readmit.sum())
    ok = keep(rd_pl, rd_day)
    derived.append(_fill_encounters(r, p, ctx, np.full(ok.sum(), K["admission"]), rd_pl[ok], rd_day[ok]))
    snf = adm & (r.random(len(adm)) < np.array(ref.POST_ACUTE_SHARE)[base["state"]])
    sn_pl, sn_day = base["pl"][snf], base["end"][snf]
    ok = keep(sn_pl, sn_day)
    sn = _fill_encounters(r, p, ctx, np.full(ok.sum(), K["snf_stay"]), sn_pl[ok], sn_day[ok])
    sn["dx"] = base["dx"][snf][ok]
    derived.append(sn)
    # Specialist visit after an e-consult that needed one.
    ec = (base["kind"] == K["e_consult"]) & (base["resolved"] == 0)
    sv_pl, sv_day = base["pl"][ec], base["responded"][ec] + r.integers(7, 41, ec.sum())
    ok = keep(sv_pl, sv_day)
    sv = _fill_encounters(r, p, ctx, np.full(ok.sum(), K["specialist_visit"]), sv_pl[ok], sv_day[ok])
    sv["specialty"] = base["specialty"][ec][ok]
    derived.append(sv)
    derived.append(_terminal_admissions(p, ctx, chunk, keep))
    enc = _concat([base, *derived])
    order = np.lexsort((np.arange(len(enc["kind"])), enc["kind"], enc["day"], enc["pl"]))
    enc = _take(enc, order)
    enc["disposition"] = _dispositions(p, ctx, chunk, enc)
    return _claims_run_out(p, enc, chunk)


DISPOSITIONS = ["home", "home_health", "snf", "died"]


def _terminal_admissions(p: _Panel, ctx: dict, chunk: int, keep) -> dict:
    """Admissions in which a patient dies (about a third of deaths happen in hospital)."""
    r = _rng(p.spec.seed, "end_of_life", chunk)
    death = p.death[ctx["idx"]]
    dies = (death >= p.ms[0]) & (death < p.ms[-1]) & (r.random(len(death)) < ref.TERMINAL_ADMISSION_SHARE)
    pl = np.nonzero(dies)[0]
    day = np.maximum(death[pl] - r.integers(1, 11, len(pl)), p.ms[p.first_month[ctx["idx"]][pl]])
    ok = keep(pl, day)
    f = _fill_encounters(r, p, ctx, np.full(ok.sum(), K["admission"]), pl[ok], day[ok])
    f["end"] = death[pl[ok]]
    return f


def _dispositions(p: _Panel, ctx: dict, chunk: int, enc: dict) -> np.ndarray:
    """Where each stay ended (index into DISPOSITIONS; -1 for other encounters): died when the
    patient died before the stay ended, a skilled-nursing facility when a SNF stay starts on the
    discharge day, else home (some with home health)."""
    r = _rng(p.spec.seed, "dispositions", chunk)
    kind, pl, end = enc["kind"], enc["pl"], enc["end"]
    stay = (kind == K["admission"]) | (kind == K["snf_stay"])
    death = p.death[ctx["idx"]][pl]
    snf_start = set(zip(pl[kind == K["snf_stay"]].tolist(), enc["day"][kind == K["snf_stay"]].tolist(), strict=True))
    to_snf = np.array([(a, b) in snf_start for a, b in zip(pl.tolist(), end.tolist(), strict=True)], dtype=bool)
    home = np.where(r.random(len(kind)) < ref.HOME_HEALTH_SHARE, 1, 0)
    out = np.select([~stay, death <= end, (kind == K["admission"]) & to_snf], [-1, 3, 2], home)
    return out.astype(np.int64)


def _claims_run_out(p: _Panel, enc: dict, chunk: int) -> dict:
    """Paid dates of the claims, and the run-out of an extract taken on the window's last day.

    A claim is paid a lognormal lag after the service ends (reference.PAID_LAG_DAYS: most within
    1-2 months, a tail to about 6 months). Claims not paid by the extract day are not in the
    extract yet, except admissions and ED visits: hospitals notify the practice of those when they
    happen (ADT event notifications, CMS Conditions of Participation 42 CFR 482.24(d)), so they are
    kept, with no paid amount and no paid date until the claim is paid. Internal encounters have
    no paid date.
    """
    r = _rng(p.spec.seed, "paid", chunk)
    median, sigma, lo, hi = ref.PAID_LAG_DAYS
    n = len(enc["kind"])
    lag = np.clip(np.round(median * np.exp(r.normal(0, sigma, n))), lo, hi).astype(np.int64)
    served = np.where(enc["end"] == NEVER, enc["day"], enc["end"])
    extract = p.ms[-1] - 1
    internal = INTERNAL[enc["kind"]]
    paid_day = np.where(internal, NEVER, served + lag)
    unpaid = ~internal & (paid_day > extract)
    notified = np.isin(enc["kind"], [K[k] for k in ref.ACUTE_KINDS])
    enc["paid_day"] = np.where(unpaid, NEVER, paid_day)
    enc["paid"] = np.where(unpaid, np.nan, enc["paid"])
    return _take(enc, ~unpaid | notified)


def _staff_minutes(r: np.random.Generator, enc: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recorded minutes by role for most internal encounters: (encounter row, role index, minutes)."""
    n = len(enc["kind"])
    recorded = INTERNAL[enc["kind"]] & (r.random(n) >= ref.UNRECORDED_MINUTES_SHARE)
    longer = np.where(enc["state"] >= ref.COMPLEX, 1.3, 1.0)
    rows, roles, minutes = [], [], []
    for kname, entries in ref.MINUTES.items():
        m = np.nonzero(recorded & (enc["kind"] == K[kname]))[0]
        if not len(m):
            continue
        alt_u = r.random(len(m))
        cum = 0.0
        for role, prob, mean, sd, group in entries:
            if group:
                chosen = (alt_u >= cum) & (alt_u < cum + prob)
                cum += prob
            else:
                chosen = r.random(len(m)) < prob
            mins = np.clip(np.round(r.normal(mean, sd, len(m)) * longer[m]), 1, 480)
            rows.append(m[chosen])
            roles.append(np.full(chosen.sum(), ROLE_INDEX[role]))
            minutes.append(mins[chosen])
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
    row, role, mins = np.concatenate(rows), np.concatenate(roles), np.concatenate(minutes)
    order = np.lexsort((role, row))
    return row[order], role[order], mins[order]


# --- measurements ----------------------------------------------------------------------------

MEASURE_CODES = (HBA1C, SYSTOLIC_BP, DIASTOLIC_BP, BMI, LDL, TOTAL_CHOLESTEROL, TOBACCO, PHQ9, GAD7,
                 PROMIS_PHYSICAL, PROMIS_MENTAL, PAIN, WORK_DAYS_MISSED)
MC = {c: i for i, c in enumerate(MEASURE_CODES)}
TOBACCO_TEXT = ("Never smoker", "Current every day smoker", "Former smoker")
# Team effects on control (index = team): trajectory speed per year toward target, target offsets,
# PHQ-9 remission share, PROMIS slope per year. TM03 best, TM07 worst (planted signals 1 and 2).
CONTROL_SPEED = np.array([0.7, 0.7, 1.5, 0.7, 0.6, 0.6, 0.2])
A1C_TARGET_OFFSET = np.array([0.0, 0.0, -0.3, 0.1, 0.2, 0.2, 0.9])
SBP_TARGET = np.array([131.0, 131.0, 126.0, 132.0, 133.0, 133.0, 139.0])
REMISSION_SHARE = np.array([0.40, 0.40, 0.55, 0.38, 0.30, 0.38, 0.22])
PROMIS_SLOPE = np.array([0.0, 0.0, 1.5, 0.0, -1.5, 0.0, -1.0])


def _schedule(r: np.random.Generator, who: np.ndarray, start: np.ndarray, end: np.ndarray, lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """Repeated dates per patient: a random first date, then every lo-hi days, inside [start, end]."""
    ivl = r.integers(lo, np.asarray(hi) + 1, len(who))
    first = start + np.floor(r.random(len(who)) * ivl).astype(np.int64)
    count = np.where(first <= end, (end - first) // ivl + 1, 0)
    rep = np.repeat(np.arange(len(who)), count)
    k = np.arange(len(rep)) - np.repeat(np.cumsum(count) - count, count)
    day = np.clip(first[rep] + k * ivl[rep] + r.integers(-7, 8, len(rep)), start[rep], end[rep])
    return who[rep], day


def _chunk_measurements(p: _Panel, ctx: dict, chunk: int, enc: dict) -> dict:
    """Measurement arrays of one chunk: pl, day, code index, value, text index (-1 blank)."""
    r = _rng(p.spec.seed, "measurements", chunk)
    idx = ctx["idx"]
    n = len(idx)
    allp = np.arange(n)
    w0 = p.ms[0]
    first = p.ms[p.first_month[idx]]
    last = ctx["last_day"]
    birth = p.birth[idx]
    state_first = ctx["state"][allp, p.first_month[idx]]
    g_on, rf_on = p.g_on[idx], p.rf_on[idx]
    diab_on = g_on[:, ref.GROUP_INDEX["diabetes"]]
    dep_on = g_on[:, ref.GROUP_INDEX["depression"]]
    baseline = np.maximum(first - r.integers(10, 300, n), birth + int(18 * 365.25))

    parts = []  # (pl, day, code)

    def add(who, day, *codes):
        for c in codes:
            parts.append((who, day, np.full(len(who), MC[c])))

    def sched(mask, start, lo, hi, *codes, base=None):
        who = allp[mask]
        w, d = _schedule(r, who, np.maximum(start[mask], first[mask]), last[mask], lo, hi)
        add(w, d, *codes)
        if base is not None:
            b = mask & base
            add(allp[b], baseline[b], *codes)
        return w, d

    everyone = np.ones(n, dtype=bool)
    sched(everyone, first, 300, 420, BMI, base=everyone)
    sched(everyone, first, 330, 420, TOBACCO, base=everyone)
    diabetic = diab_on <= last
    prediab = (rf_on[:, ref.PREDIABETES] <= last) & ~diabetic
    sched(diabetic, diab_on, 90, 180, HBA1C, base=diab_on <= baseline)
    sched(prediab, first, 330, 400, HBA1C, base=rf_on[:, ref.PREDIABETES] <= baseline)
    sched(~diabetic & ~prediab & (r.random(n) < 0.25), first, 330, 420, HBA1C, base=r.random(n) < 0.3)
    lipid = (state_first >= ref.AT_RISK) | (rf_on[:, ref.HYPERLIPIDAEMIA] <= last) | (r.random(n) < 0.4)
    sched(lipid, first, 330, 420, LDL, TOTAL_CHOLESTEROL, base=lipid)
    depressed = dep_on <= last
    with_gad = r.random(n) < 0.7
    sched(depressed & with_gad, dep_on, 75, 110, PHQ9, GAD7, base=dep_on <= baseline)
    sched(depressed & ~with_gad, dep_on, 75, 110, PHQ9, base=dep_on <= baseline)
    screen = ~depressed & (r.random(n) < 0.6)
    sched(screen & with_gad, first, 330, 420, PHQ9, GAD7, base=r.random(n) < 0.5)
    sched(screen & ~with_gad, first, 330, 420, PHQ9)
    # PROMIS Global-10 every ~6 months for chronic/complex/frail, yearly otherwise; 15 % overdue.
    sicker = state_first >= ref.CHRONIC
    overdue = r.random(n) < 0.15
    lo = np.where(sicker, 170, 340) * np.where(overdue, 1.8, 1.0)
    hi = np.where(sicker, 200, 400) * np.where(overdue, 1.8, 1.0)
    for part in (overdue, ~overdue):
        for sick in (sicker, ~sicker):
            m = part & sick
            if m.any():
                w, d = _schedule(r, allp[m], first[m], last[m], int(lo[m][0]), int(hi[m][0]))
                add(w, d, PROMIS_PHYSICAL, PROMIS_MENTAL)
                working = (d - birth[w]) < 65 * 365.25
                add(w[working], d[working], WORK_DAYS_MISSED)
    b = r.random(n) < 0.6
    add(allp[b], baseline[b], PROMIS_PHYSICAL, PROMIS_MENTAL)
    # Vitals at office and home visits; pain at about half of them.
    vis = (enc["kind"] == K["office_visit"]) | (enc["kind"] == K["home_visit"])
    add(enc["pl"][vis], enc["day"][vis], SYSTOLIC_BP, DIASTOLIC_BP)
    pain = vis & (r.random(len(vis)) < 0.5)
    add(enc["pl"][pain], enc["day"][pain], PAIN)

    pl = np.concatenate([x[0] for x in parts])
    day = np.concatenate([x[1] for x in parts])
    code = np.concatenate([x[2] for x in parts])
    # one value per patient, day and code
    key = (pl.astype(np.int64) * 100_000 + (day - w0 + 50_000)) * 32 + code
    _, first_idx = np.unique(key, return_index=True)
    pl, day, code = pl[first_idx], day[first_idx], code[first_idx]
    value, text = _measure_values(r, p, ctx, pl, day, code)
    return dict(pl=pl, day=day, code=code, value=value, text=text)


def _measure_values(r, p: _Panel, ctx: dict, pl, day, code) -> tuple[np.ndarray, np.ndarray]:
    """Values consistent with the patient's conditions on the day, and responding to the team's care."""
    idx = ctx["idx"]
    n, rows = len(idx), len(pl)
    w0 = p.ms[0]
    month = np.clip(np.searchsorted(p.ms, day, side="right") - 1, 0, p.months - 1)
    st = ctx["state"][pl, month].astype(np.int64)
    home = p.home_team[idx][pl]
    speed = CONTROL_SPEED[home] * (r.random(n) >= 0.2)[pl]  # a fifth do not respond to care

    def on(factor: int) -> np.ndarray:
        """Risk factor active on the day."""
        return (p.rf_on[idx][pl, factor] <= day) & (p.rf_res[idx][pl, factor] > day)

    def group_on(name):
        return p.g_on[idx][pl, ref.GROUP_INDEX[name]]

    def years_since(start):
        return np.maximum(day - np.maximum(start, w0 - 60), 0) / 365.0

    value = np.full(rows, np.nan)
    noise = r.normal(0, 1, rows)
    # HbA1c (%): diabetes trajectory toward the team's target (ADA: < 7-8 %), prediabetes 5.7-6.4.
    a0 = np.where(p.diab_code[idx] == 1, r.uniform(8.0, 11.0, n), r.uniform(6.5, 10.0, n))[pl]
    tgt = (6.9 + r.normal(0, 0.3, n))[pl] + A1C_TARGET_OFFSET[home]
    d_on = group_on("diabetes")
    a1c_dm = tgt + (a0 - tgt) * np.exp(-speed * years_since(d_on)) + 0.3 * noise
    a1c_pd = np.clip(r.uniform(5.8, 6.3, n)[pl] + 0.1 * noise, 5.7, 6.4)
    a1c_norm = np.clip(r.uniform(4.8, 5.5, n)[pl] + 0.1 * noise, 4.5, 5.6)
    a1c = np.select([d_on <= day, on(ref.PREDIABETES)], [np.clip(a1c_dm, 4.8, 15.0), a1c_pd], a1c_norm)
    value = np.where(code == MC[HBA1C], np.round(a1c, 1), value)
    # Blood pressure (mm Hg): hypertension toward the team's target; elevated 130-139; normal < 130/80.
    h_on = group_on("hypertension")
    s0 = r.uniform(135, 160, n)[pl]
    s_tgt = SBP_TARGET[home] + r.normal(0, 4, n)[pl]
    sbp_htn = s_tgt + (s0 - s_tgt) * np.exp(-speed * years_since(h_on)) + 6 * noise
    sbp = np.select([h_on <= day, on(ref.ELEVATED_BP)],
                    [np.clip(sbp_htn, 100, 220), r.integers(130, 140, rows)],
                    np.clip(r.normal(116, 8, n)[pl] + 4 * noise, 92, 129))
    sbp = np.round(sbp)
    dbp = np.select([h_on <= day, on(ref.ELEVATED_BP)],
                    [np.clip(0.5 * sbp + 13 + r.normal(0, 5, rows), 55, 130), r.integers(72, 87, rows)],
                    np.clip(r.normal(71, 5, rows), 55, 79))
    value = np.where(code == MC[SYSTOLIC_BP], sbp, value)
    value = np.where(code == MC[DIASTOLIC_BP], np.round(dbp), value)
    # BMI (kg/m2): obesity >= 30 (WHO), otherwise below.
    bmi = np.where(on(ref.OBESITY), np.clip(r.uniform(30.5, 40, n)[pl] + 0.6 * noise, 30.1, 60),
                   np.clip(np.clip(r.normal(25.5, 2.6, n), 18.5, 29.5)[pl] + 0.4 * noise, 17, 29.8))
    value = np.where(code == MC[BMI], np.round(bmi, 1), value)
    # Lipids (mg/dL): hyperlipidaemia LDL >= 160 (NCEP ATP III "high"); total = LDL + HDL + TG/5.
    ldl = np.where(on(ref.HYPERLIPIDAEMIA), np.clip(r.uniform(162, 210, n)[pl] + 8 * noise, 160, 300),
                   np.clip(np.clip(r.normal(108, 22, n), 50, 150)[pl] + 6 * noise, 40, 158))
    ldl = np.round(ldl)
    value = np.where(code == MC[LDL], ldl, value)
    value = np.where(code == MC[TOTAL_CHOLESTEROL], ldl + r.integers(45, 90, rows), value)
    # Tobacco status: 1 while a tobacco-use condition is active.
    smoker = on(ref.TOBACCO)
    former = (p.rf_res[idx][pl, ref.TOBACCO] <= day)
    value = np.where(code == MC[TOBACCO], smoker.astype(float), value)
    text = np.where(code == MC[TOBACCO], np.where(smoker, 1, np.where(former, 2, 0)), -1)
    # PHQ-9 / GAD-7: depression from 11-20 toward remission (< 5) or persistent 9-15.
    dep = group_on("depression") <= day
    remitter = (r.random(n)[pl] < REMISSION_SHARE[home])
    p0 = r.uniform(11, 20, n)[pl]
    fin = np.where(remitter, r.uniform(1, 4, n)[pl], r.uniform(9, 15, n)[pl])
    phq_dep = fin + (p0 - fin) * np.exp(-2.0 * years_since(group_on("depression"))) + 1.5 * noise
    sicker = st >= ref.COMPLEX
    phq = np.where(dep, np.clip(np.round(phq_dep), 0, 27), _poisson_clip(r, 1.2 + 1.5 * sicker, 9))
    value = np.where(code == MC[PHQ9], phq, value)
    gad = np.where(dep, np.clip(np.round(0.6 * phq_dep + r.normal(0, 2, rows)), 0, 21), _poisson_clip(r, 1.5 + 1.5 * sicker, 9))
    value = np.where(code == MC[GAD7], gad, value)
    # PROMIS Global-10 T-scores (US general population mean 50, sd 10; Hays et al. 2009).
    yrs = (day - w0) / 365.0
    phys = np.array([54.0, 50.5, 45.0, 38.0, 33.0])[st] + r.normal(0, 5, n)[pl] + PROMIS_SLOPE[home] * yrs + 3 * noise
    ment = (np.array([53.0, 51.0, 47.0, 42.0, 41.0])[st] + r.normal(0, 5, n)[pl] + PROMIS_SLOPE[home] * yrs
            - 4 * dep + r.normal(0, 3.5, rows))
    value = np.where(code == MC[PROMIS_PHYSICAL], np.round(np.clip(phys, 16.2, 67.7), 1), value)
    value = np.where(code == MC[PROMIS_MENTAL], np.round(np.clip(ment, 21.2, 67.6), 1), value)
    # Pain 0-10 and work days missed in the last 30 days (working age).
    ra = group_on("rheumatoid_arthritis") <= day
    pain = _poisson_clip(r, np.array([0.8, 1.3, 2.5, 4.0, 4.2])[st] + 2 * ra, 10)
    value = np.where(code == MC[PAIN], pain, value)
    any_missed = r.random(rows) < np.array([0.1, 0.15, 0.25, 0.5, 0.5])[st]
    missed = np.where(any_missed, np.minimum(1 + r.poisson(np.array([1.0, 1.5, 2.5, 5.0, 5.0])[st]), 30), 0)
    value = np.where(code == MC[WORK_DAYS_MISSED], missed, value)
    return value, text


# --- conditions and medications --------------------------------------------------------------


def _chunk_conditions(p: _Panel, ctx: dict) -> dict:
    """Condition arrays of one chunk (onset on or before the patient's last day)."""
    idx = ctx["idx"]
    n = len(idx)
    last = ctx["last_day"]
    parts = []
    diab = ref.GROUP_INDEX["diabetes"]
    for g in range(len(G_CODE)):
        code = np.full(n, G_CODE[g])
        if g == diab:
            code = np.where(p.diab_code[idx] == 1, DIAB_COMPLICATED, code)
        parts.append((p.g_on[idx][:, g], np.full(n, NEVER), code))
    for f in range(len(RF_CODE)):
        code = np.full(n, RF_CODE[f])
        if f == ref.TOBACCO:
            code = np.where(p.tob_code[idx] == 1, TOB_DEPENDENCE, code)
        parts.append((p.rf_on[idx][:, f], p.rf_res[idx][:, f], code))
    for col in (p.fr_code, p.fr2_code):
        c = col[idx]
        parts.append((np.where(c >= 0, p.fr_on[idx], NEVER), np.full(n, NEVER), FR_CODE[np.maximum(c, 0)]))
    pl = np.concatenate([np.arange(n)] * len(parts))
    onset = np.concatenate([x[0] for x in parts])
    resolved = np.concatenate([x[1] for x in parts])
    code = np.concatenate([x[2] for x in parts])
    keep = onset <= last[pl]
    pl, onset, resolved, code = pl[keep], onset[keep], resolved[keep], code[keep]
    resolved = np.where(resolved <= last[pl], resolved, NEVER)
    order = np.lexsort((code, onset, pl))
    return dict(pl=pl[order], onset=onset[order], resolved=resolved[order], code=code[order])


DRUGS = list(ref.DRUGS_BY_GROUP.values()) + [ref.STATIN, ref.NICOTINE_PATCH] + list(ref.OTHER_DRUGS)


def _chunk_medications(p: _Panel, ctx: dict, chunk: int) -> dict:
    """Active drug spans: one per treated condition, plus others up to a needs-based count
    (polypharmacy >= 10 drugs common among complex and frail patients)."""
    r = _rng(p.spec.seed, "medications", chunk)
    idx = ctx["idx"]
    n = len(idx)
    w0, last = p.ms[0], ctx["last_day"]
    top_state = ctx["state"].max(axis=1, initial=0).astype(np.int64)
    parts = []  # (pl, drug, start)
    for g, (gname, *_rest) in enumerate(ref.CHRONIC_GROUPS):
        on = p.g_on[idx][:, g]
        m = (on <= last) & (r.random(n) < 0.85)
        start = np.where(on < w0, np.maximum(on, w0 - r.integers(30, 1500, n)), on + r.integers(0, 21, n))
        parts.append((np.nonzero(m)[0], np.full(m.sum(), DRUGS.index(ref.DRUGS_BY_GROUP[gname])), start[m]))
    for fac, drug, share in ((ref.HYPERLIPIDAEMIA, ref.STATIN, 0.6), (ref.TOBACCO, ref.NICOTINE_PATCH, 0.2)):
        on = p.rf_on[idx][:, fac]
        m = (on <= last) & (r.random(n) < share)
        start = np.where(on < w0, w0 - r.integers(30, 700, n), on + r.integers(0, 30, n))
        parts.append((np.nonzero(m)[0], np.full(m.sum(), DRUGS.index(drug)), start[m]))
    # Statins for diabetics aged 40-75 (ADA Standards of Care), drawn on their own stream.
    rs = _rng(p.spec.seed, "statins", chunk)
    diab_on = p.g_on[idx][:, ref.GROUP_INDEX["diabetes"]]
    age = (last - p.birth[idx]) / 365.25
    tf = np.array(ref.TEAM_PREVENTION)[np.maximum(p.home_team[idx], 0)]
    on_statin = np.zeros(n, dtype=bool)
    on_statin[parts[-2][0]] = True  # the hyperlipidaemia statins just drawn
    m = (diab_on <= last) & (age >= 40) & (age <= 76) & ~on_statin & (rs.random(n) < ref.STATIN_DIABETES_SHARE * tf)
    parts.append((np.nonzero(m)[0], np.full(m.sum(), DRUGS.index(ref.STATIN)),
                  np.maximum(diab_on, w0 - 700)[m] + rs.integers(0, 90, m.sum())))
    have = np.bincount(np.concatenate([x[0] for x in parts]), minlength=n)
    lo = np.array([c[0] for c in ref.DRUG_COUNT])[top_state]
    hi = np.array([c[1] for c in ref.DRUG_COUNT])[top_state]
    extra = np.maximum(r.integers(lo, hi + 1) - have, 0)
    others = len(ref.OTHER_DRUGS)
    ranks = _gumbel_ranks(r, np.ones((n, others)))
    who, which = np.nonzero(ranks < extra[:, None])
    start = np.where(r.random(len(who)) < 0.8, w0 - r.integers(30, 1500, len(who)),
                     p.ms[p.first_month[idx][who]] + r.integers(0, 365, len(who)))
    parts.append((who, len(DRUGS) - others + which, start))
    pl = np.concatenate([x[0] for x in parts])
    drug = np.concatenate([x[1] for x in parts])
    start = np.concatenate([x[2] for x in parts])
    keep = start <= last[pl]
    pl, drug, start = pl[keep], drug[keep], start[keep]
    stop = r.random(len(pl)) < 0.12
    end = np.where(stop, start + r.integers(30, 400, len(pl)), NEVER)
    end = np.where(end <= last[pl], end, NEVER)
    order = np.lexsort((drug, start, pl))
    return dict(pl=pl[order], drug=drug[order], start=start[order], end=end[order])


PROC = {key: i for i, (key, *_rest) in enumerate(ref.PROCEDURES)}


def _seasons(r: np.random.Generator, who: np.ndarray, share: np.ndarray, first: np.ndarray, last: np.ndarray,
             ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Influenza vaccinations: one per season (mid-September to November) taken with ``share``."""
    years = range(int(str(ms[0].astype("datetime64[D]"))[:4]) - 1, int(str((ms[-1] - 1).astype("datetime64[D]"))[:4]) + 1)
    out_w, out_d = [], []
    for year in years:
        day = (np.datetime64(f"{year}-09-15") - np.datetime64("1970-01-01")).astype(np.int64) + r.integers(0, 77, len(who))
        took = (r.random(len(who)) < share) & (day <= last) & (day >= first - 400)
        out_w.append(who[took])
        out_d.append(day[took])
    return np.concatenate(out_w), np.concatenate(out_d)


def _chunk_procedures(p: _Panel, ctx: dict, chunk: int, enc: dict) -> dict:
    """Services of the outcome sets: cancer screenings, immunizations, tobacco counselling, care
    plans, advance care planning and hospice; arrays pl, day, code (index into ref.PROCEDURES)."""
    r = _rng(p.spec.seed, "procedures", chunk)
    idx = ctx["idx"]
    n = len(idx)
    allp = np.arange(n)
    first, last, birth = p.ms[p.first_month[idx]], ctx["last_day"], p.birth[idx]
    female = p.sex[idx] == 0
    tf = np.array(ref.TEAM_PREVENTION)[np.maximum(p.home_team[idx], 0)]
    top = ctx["state"].max(axis=1, initial=0)
    age_first, age_last = (first - birth) / 365.25, (last - birth) / 365.25
    parts = []

    def add(who, day, key):
        ok = (day <= last[who]) & (day >= birth[who] + 18 * 365)
        parts.append((who[ok], day[ok], np.full(ok.sum(), PROC[key])))

    def up_to_date(mask, key):
        return mask & (r.random(n) < np.minimum(ref.SCREENING_UP_TO_DATE[key] * tf, 0.97))

    crc = up_to_date((age_last >= 45) & (age_first <= 75), "colorectal")
    scope = crc & (r.random(n) < 0.6)
    add(allp[scope], first[scope] - r.integers(0, 3300, scope.sum()), "colonoscopy")
    fit = crc & ~scope
    add(*_schedule(r, allp[fit], first[fit] - r.integers(0, 330, fit.sum()), last[fit], 340, 390), "fit")
    mam = up_to_date(female & (age_last >= 50) & (age_first <= 74), "mammography")
    add(*_schedule(r, allp[mam], first[mam] - r.integers(0, 600, mam.sum()), last[mam], 365, 700), "mammography")
    cer = up_to_date(female & (age_last >= 21) & (age_first <= 64), "cervical")
    add(*_schedule(r, allp[cer], first[cer] - r.integers(0, 1000, cer.sum()), last[cer], 1000, 1090), "cervical_cytology")
    flu_share = np.minimum(np.where(age_last >= 65, ref.FLU_SHARE[1], ref.FLU_SHARE[0]) * tf, 0.95)
    add(*_seasons(r, allp, flu_share, first, last, p.ms), "flu_vaccine")
    pneumo = (age_last >= 65) & (r.random(n) < ref.PNEUMOCOCCAL_SHARE * tf)
    when = np.maximum(first - r.integers(-300, 2000, n), birth + 65 * 365)
    add(allp[pneumo], when[pneumo], "pneumococcal_vaccine")
    tob_on = p.rf_on[idx][:, ref.TOBACCO]
    smoker = (tob_on <= last) & (r.random(n) < ref.TOBACCO_COUNSELLED_SHARE * tf)
    add(*_schedule(r, allp[smoker], np.maximum(tob_on[smoker], first[smoker] - 300), last[smoker], 300, 420),
        "tobacco_counselling")
    for state, name in ((ref.COMPLEX, "complex"), (ref.FRAIL, "frail")):
        became = np.argmax(ctx["state"] == state, axis=1)
        is_state = (top == state) & ctx["enrolled"][allp, np.minimum(became, p.months - 1)]
        start = np.maximum(p.ms[became], first)
        plan = is_state & (r.random(n) < ref.CARE_PLAN_SHARE[name] * tf)
        add(*_schedule(r, allp[plan], start[plan] - r.integers(0, 200, plan.sum()), last[plan], 330, 400), "care_plan")
        acp = is_state & (r.random(n) < ref.ADVANCE_CARE_PLANNING_SHARE[name] * tf)
        add(allp[acp], start[acp] + r.integers(-400, 300, acp.sum()), "advance_care_planning")
    # Hospice for decedents who did not die in a hospital or nursing-facility stay.
    death = p.death[idx]
    stay = (enc["kind"] == K["admission"]) | (enc["kind"] == K["snf_stay"])
    in_stay = np.zeros(n, dtype=bool)
    covers = stay & (enc["day"] <= death[enc["pl"]]) & (enc["end"] >= death[enc["pl"]])
    in_stay[enc["pl"][covers]] = True
    hospice = (death < p.ms[-1]) & (death >= p.ms[0]) & ~in_stay & (top >= ref.COMPLEX) & (r.random(n) < ref.HOSPICE_SHARE)
    add(allp[hospice], np.maximum(death[hospice] - r.integers(3, 75, hospice.sum()), first[hospice]), "hospice")

    pl = np.concatenate([x[0] for x in parts])
    day = np.concatenate([x[1] for x in parts])
    code = np.concatenate([x[2] for x in parts])
    order = np.lexsort((code, day, pl))
    return dict(pl=pl[order], day=day[order], code=code[order])


def _chunk_falls(p: _Panel, ctx: dict, chunk: int) -> dict:
    """Falls with injury of frail patients: a fall code and an injury code on the day (condition arrays)."""
    r = _rng(p.spec.seed, "falls", chunk)
    frail = ctx["enrolled"] & (ctx["state"] == ref.FRAIL)
    pl, mm = np.nonzero(frail)
    tm = ctx["team"][pl, mm].astype(np.int64)
    lam = ref.FALLS_WITH_INJURY_PER_YEAR / 12 * np.array(ref.TEAM_FALLS)[np.maximum(tm, 0)]
    count = r.poisson(lam)
    row = np.repeat(np.arange(len(pl)), count)
    who = pl[row]
    day = _fit_day(r, p.ms, mm[row], ctx["last_day"][who])
    injury = FALL_INJURY[r.choice(len(FALL_INJURY), len(row), p=FALL_INJURY_P / FALL_INJURY_P.sum())]
    resolved = day + r.integers(14, 90, len(row))
    resolved = np.where(resolved <= ctx["last_day"][who], resolved, NEVER)
    return dict(pl=np.concatenate([who, who]), onset=np.concatenate([day, day]),
                resolved=np.concatenate([resolved, resolved]),
                code=np.concatenate([np.full(len(row), FALL), injury]))


# --- frames ------------------------------------------------------------------------------------

PATIENT_WIDTH, ROW_WIDTH = 7, 9
TEAM_IDS = [t[0] for t in ref.TEAMS]


def _patient_ids(lo: int, n: int) -> pd.Index:
    return pd.Index(_ids("P", lo + 1, n, PATIENT_WIDTH))


def _by_patient(pids: pd.Index, pl: np.ndarray) -> pd.Categorical:
    return pd.Categorical.from_codes(pl, categories=pids)


def _structure_frames() -> dict[str, pd.DataFrame]:
    practices = pd.DataFrame({"practice_id": [p[0] for p in ref.PRACTICES], "name": [p[1] for p in ref.PRACTICES],
                              "network": ref.NETWORK_NAME})
    teams = pd.DataFrame({"team_id": TEAM_IDS, "practice_id": [ref.PRACTICES[t[1]][0] for t in ref.TEAMS],
                          "name": [t[2] for t in ref.TEAMS], "subgroup": [t[3] for t in ref.TEAMS]})
    return {"practices.csv": practices, "teams.csv": teams}


def _facilities(seed: int, chunk: int, kind: np.ndarray, in_network: np.ndarray) -> np.ndarray:
    """The facility that billed each external claim (reference.FACILITIES: one of the kind's type,
    in or out of the network as the claim is; blank for internal activities and pharmacy fills),
    from its own random stream so no other generated value changes."""
    u = _rng(seed, "facilities", chunk).random(len(kind))
    out = np.full(len(kind), "", dtype=object)
    for kname, ftype in ref.FACILITY_TYPE_OF_KIND.items():
        for net in (True, False):
            names = np.array([f[0] for f in ref.FACILITIES if f[1] == ftype and f[2] == net], dtype=object)
            m = (kind == K[kname]) & ((in_network == 1) == net)
            out[m] = names[np.minimum((u[m] * len(names)).astype(np.int64), len(names) - 1)]
    return out


def _chunk_frames(p: _Panel, lo: int, hi: int, chunk: int, counters: dict, minutes_total: np.ndarray) -> dict[str, pd.DataFrame]:
    """Every per-patient file for patients lo..hi-1 (ids continue from ``counters``)."""
    idx = np.arange(lo, hi)
    pids = _patient_ids(lo, hi - lo)
    slot_code, slot_on = _condition_slots(p, idx)
    ctx = dict(idx=idx, state=p.state[idx], team=p.team[idx], enrolled=p.enrolled[idx], last_day=p.last_day[idx],
               slot_code=slot_code, slot_on=slot_on)
    r = _rng(p.spec.seed, "frames", chunk)
    out = {}
    out["patients.csv"] = pd.DataFrame({
        "patient_id": pids.to_numpy(), "given_name": p.given[idx], "family_name": p.family[idx],
        "birth_date": _days_to_dates(p.birth[idx]), "sex": _labels(p.sex[idx], [s[0] for s in ref.SEXES]),
        "race": _labels(p.race[idx], ref.RACES),
        "ethnicity": _labels(p.hispanic[idx], ["Not Hispanic or Latino", "Hispanic or Latino", "unknown"]),
        "language": _labels(p.language[idx], ["English", "Spanish"] + [o[0] for o in ref.OTHER_LANGUAGES]),
        "dual_status": _bools(p.dual[idx]), "zip": p.zip_code[idx], "deprivation_decile": p.decile[idx],
        "death_date": _days_to_dates(np.where(p.death[idx] < NEVER, p.death[idx], NEVER)),
    })
    cond = _concat([_chunk_conditions(p, ctx), _chunk_falls(p, ctx, chunk)])
    cond = _take(cond, np.lexsort((cond["code"], cond["onset"], cond["pl"])))
    nc = len(cond["pl"])
    out["conditions.csv"] = pd.DataFrame({
        "condition_id": _ids("C", counters["conditions"] + 1, nc, ROW_WIDTH), "patient_id": _by_patient(pids, cond["pl"]),
        "code": _labels(cond["code"], _CODE_LIST), "code_system": "ICD-10-CM",
        "description": np.array(_CODE_DESC, dtype=object)[cond["code"]], "onset_date": _days_to_dates(cond["onset"]),
        "resolved_date": _days_to_dates(cond["resolved"]),
    })
    counters["conditions"] += nc

    enc = _chunk_encounters(p, ctx, chunk)
    ne = len(enc["kind"])
    enc_ids = _ids("E", counters["encounters"] + 1, ne, ROW_WIDTH)
    out["encounters.csv"] = pd.DataFrame({
        "encounter_id": enc_ids, "patient_id": _by_patient(pids, enc["pl"]), "team_id": _labels(enc["team"], TEAM_IDS),
        "kind": _labels(enc["kind"], KINDS), "start_date": _days_to_dates(enc["day"]),
        "end_date": _days_to_dates(enc["end"]), "requested_date": _days_to_dates(enc["requested"]),
        "responded_date": _days_to_dates(enc["responded"]), "in_network": _bools(enc["in_network"]),
        "is_urgent": _bools(enc["urgent"]), "resolved_without_visit": _bools(enc["resolved"]),
        "primary_dx": _labels(enc["dx"], _CODE_LIST), "specialty": _labels(enc["specialty"], SPECIALTIES),
        "cost_category": _labels(np.full(ne, -1), ["other"]), "paid_usd": enc["paid"],
        "paid_date": _days_to_dates(enc["paid_day"]), "discharge_disposition": _labels(enc["disposition"], DISPOSITIONS),
        "facility": _facilities(p.spec.seed, chunk, enc["kind"], enc["in_network"]),
    })
    counters["encounters"] += ne
    row, role, minutes = _staff_minutes(r, enc)
    out["staff_minutes.csv"] = pd.DataFrame({
        "encounter_id": enc_ids[row], "role": _labels(role, ref.ROLES), "minutes": minutes})
    np.add.at(minutes_total, (enc["team"][row], role), minutes)

    meas = _chunk_measurements(p, ctx, chunk, enc)
    nm = len(meas["pl"])
    order = np.lexsort((meas["code"], meas["day"], meas["pl"]))
    meas = _take(meas, order)
    catalog = load_catalog()
    out["measurements.csv"] = pd.DataFrame({
        "measurement_id": _ids("M", counters["measurements"] + 1, nm, ROW_WIDTH),
        "patient_id": _by_patient(pids, meas["pl"]), "measured_date": _days_to_dates(meas["day"]),
        "code": _labels(meas["code"], MEASURE_CODES), "value": meas["value"],
        "value_text": _labels(meas["text"], TOBACCO_TEXT),
        "unit": _labels(meas["code"], [catalog.codes[c].unit for c in MEASURE_CODES]),
    })
    counters["measurements"] += nm
    meds = _chunk_medications(p, ctx, chunk)
    nd = len(meds["pl"])
    out["medications.csv"] = pd.DataFrame({
        "medication_id": _ids("D", counters["medications"] + 1, nd, ROW_WIDTH), "patient_id": _by_patient(pids, meds["pl"]),
        "code": _labels(np.full(nd, -1), ["none"]), "description": _labels(meds["drug"], DRUGS),
        "start_date": _days_to_dates(meds["start"]), "end_date": _days_to_dates(meds["end"]),
    })
    counters["medications"] += nd
    proc = _chunk_procedures(p, ctx, chunk, enc)
    npr = len(proc["pl"])
    out["procedures.csv"] = pd.DataFrame({
        "procedure_id": _ids("X", counters["procedures"] + 1, npr, ROW_WIDTH), "patient_id": _by_patient(pids, proc["pl"]),
        "performed_date": _days_to_dates(proc["day"]), "code": _labels(proc["code"], [x[1] for x in ref.PROCEDURES]),
        "code_system": _labels(proc["code"], [x[2] for x in ref.PROCEDURES]),
        "description": _labels(proc["code"], [x[3] for x in ref.PROCEDURES]),
    })
    counters["procedures"] += npr
    return out


def _staff_frame(p: _Panel, minutes_total: np.ndarray) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Staff per team sized to the minutes the team's activities need (recorded minutes scaled up
    for unrecorded encounters) at the team's capacity use; returns the frame and each team's
    clinicians (row positions) for PCP assignment."""
    r = _rng(p.spec.seed, "staff")
    capacity_per_fte_month = ref.FULL_TIME_HOURS * 60 / 12 * ref.PRACTICAL_CAPACITY
    monthly = minutes_total / max(p.months, 1) / (1 - ref.UNRECORDED_MINUTES_SHARE)
    rows, clinicians = [], []
    for t, team in enumerate(ref.TEAMS):
        team_clin = []
        fte = monthly[t] / (capacity_per_fte_month * ref.TEAM_UTILISATION[t])
        for ri, role in enumerate(ref.ROLES):
            need = round(float(fte[ri]), 1)
            if role in ("physician", "front_desk"):
                need = max(need, 0.2)  # every team has a clinician lead and a front desk, at least one day a week
            if need < 0.1:
                continue
            shares = [1.0] * int(need) + ([round(need - int(need), 1)] if need - int(need) >= 0.1 else [])
            low, high = ref.ROLE_COST_USD[role]
            for share in shares:
                name = f"{ref.GIVEN_FEMALE[r.integers(len(ref.GIVEN_FEMALE))] if r.random() < 0.6 else ref.GIVEN_MALE[r.integers(len(ref.GIVEN_MALE))]} {ref.FAMILY[r.integers(len(ref.FAMILY))]}"
                if role == "physician":
                    name = "Dr. " + name
                if role in ("physician", "nurse_practitioner"):
                    team_clin.append(len(rows))
                rows.append((team[0], name, role, round(float(r.uniform(low, high)) * share, -2),
                             round(ref.FULL_TIME_HOURS * share, 1)))
        clinicians.append(np.array(team_clin, dtype=np.int64))
    frame = pd.DataFrame(rows, columns=["team_id", "name", "role", "annual_cost_usd", "paid_hours_per_year"])
    frame.insert(0, "staff_id", [f"S{i + 1:05d}" for i in range(len(frame))])
    return frame, clinicians


def _attribution_frame(p: _Panel, lo: int, hi: int, chunk: int, staff_ids: np.ndarray, clinicians: list[np.ndarray]) -> pd.DataFrame:
    """Member-months of patients lo..hi-1: practice, team and a PCP (physician or NP of the team)."""
    idx = np.arange(lo, hi)
    pl, mm = np.nonzero(p.enrolled[idx])
    team = p.team[idx][pl, mm].astype(np.int64)
    u = _rng(p.spec.seed, "pcp", chunk).random(len(idx))[pl]
    sizes = np.array([len(c) for c in clinicians])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    flat = np.concatenate(clinicians)
    pcp = flat[offsets[team] + np.floor(u * sizes[team]).astype(np.int64)]
    months = [s[:7] for s in p.ms[:-1].astype("datetime64[D]").astype("U10")]
    return pd.DataFrame({
        "patient_id": _by_patient(_patient_ids(lo, hi - lo), pl), "month": _labels(mm, months),
        "practice_id": _labels(p.practice[idx][pl], [x[0] for x in ref.PRACTICES]), "team_id": _labels(team, TEAM_IDS),
        "pcp_id": _labels(pcp, staff_ids),
    })


def iter_frames(spec: NetworkSpec):
    """Yield (file name, frame) parts of the bundle in a fixed order, one patient chunk at a time."""
    p = build_panel(spec)
    yield from _structure_frames().items()
    counters = dict(conditions=0, encounters=0, measurements=0, medications=0, procedures=0)
    minutes_total = np.zeros((len(ref.TEAMS), len(ref.ROLES)))
    bounds = [(lo, min(lo + CHUNK_PATIENTS, p.n)) for lo in range(0, p.n, CHUNK_PATIENTS)]
    for chunk, (lo, hi) in enumerate(bounds):
        yield from _chunk_frames(p, lo, hi, chunk, counters, minutes_total).items()
    staff, clinicians = _staff_frame(p, minutes_total)
    yield "staff.csv", staff
    for chunk, (lo, hi) in enumerate(bounds):
        yield "attribution.csv", _attribution_frame(p, lo, hi, chunk, staff["staff_id"].to_numpy(), clinicians)


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Categorical columns as plain strings, blanks for missing."""
    out = {}
    for col in frame.columns:
        s = frame[col]
        if isinstance(s.dtype, pd.CategoricalDtype) or s.dtype == object:
            s = s.astype(object).where(s.notna(), "").astype(str)
        out[col] = s
    return pd.DataFrame(out)


def generate_frames(spec: NetworkSpec) -> dict[str, pd.DataFrame]:
    """The whole bundle in memory, keyed by file name, columns as in BUNDLE (meant for small specs)."""
    parts: dict[str, list[pd.DataFrame]] = {}
    for name, frame in iter_frames(spec):
        parts.setdefault(name, []).append(frame)
    frames = {}
    for table in BUNDLE:
        frame = pd.concat([_plain(f) for f in parts[table.file]], ignore_index=True)
        frames[table.file] = frame[table.column_names]
    return frames


def write_bundle(spec: NetworkSpec, out: Path) -> dict:
    """Write every bundle CSV and manifest.json to ``out``; return row counts and seconds taken."""
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, int] = {}
    handles = {}
    try:
        for name, frame in iter_frames(spec):
            if name not in handles:
                handles[name] = (out / name).open("w", encoding="utf-8", newline="")
                header = True
            else:
                header = False
            frame[BY_FILE[name].column_names].to_csv(handles[name], header=header, index=False, lineterminator="\n")
            rows[name] = rows.get(name, 0) + len(frame)
    finally:
        for handle in handles.values():
            handle.close()
    manifest = {"generator": SAMPLE_GENERATOR_NAME, "patients": spec.patients, "months": spec.months, "seed": spec.seed,
                "end_month": resolve_end_month(spec).strftime("%Y-%m"), "origin": "sample"}
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return {"out": str(out), "rows": {t.file: rows.get(t.file, 0) for t in BUNDLE}, "seconds": round(time.perf_counter() - started, 2)}
