"""The seeded sample network: bundle contract, determinism, realism and the planted signals."""

import json
import math
import re
from datetime import date

import numpy as np
import pandas as pd
import pytest

from core.config.catalog import BMI, HBA1C, LDL, SYSTOLIC_BP, TOBACCO, load_catalog
from core.ingest.bundle_schema import BUNDLE, BY_FILE, SAMPLE_GENERATOR_NAME
from sample_data import reference as ref
from sample_data.generator import NetworkSpec, build_panel, generate_frames, resolve_end_month, write_bundle
from tests.conftest import SMALL_NETWORK

END = date(2025, 10, 1)
SPEC = NetworkSpec(**SMALL_NETWORK, end_month=END)
# Big enough for the planted signals to be statistically visible, still about a second.
MEDIUM = NetworkSpec(patients=4000, months=13, seed=11, end_month=END)
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MONTH_RE = re.compile(r"^\d{4}-\d{2}$")


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return generate_frames(SPEC)


@pytest.fixture(scope="module")
def medium():
    return build_panel(MEDIUM), generate_frames(MEDIUM)


def _days(col: pd.Series) -> np.ndarray:
    """YYYY-MM-DD strings (blank -> NaT) as datetime64."""
    return pd.to_datetime(col.replace("", None), format="%Y-%m-%d").to_numpy()


# --- the bundle contract -------------------------------------------------------------------


@pytest.mark.parametrize("table", BUNDLE, ids=lambda t: t.file)
def test_columns_and_key_follow_the_schema(frames, table):
    frame = frames[table.file]
    assert list(frame.columns) == table.column_names
    assert len(frame) > 0
    assert not frame.duplicated(list(table.key)).any()


@pytest.mark.parametrize("table", BUNDLE, ids=lambda t: t.file)
def test_values_are_valid(frames, table):
    catalog = load_catalog()
    vocab = {"roles": set(catalog.roles), "activity_kinds": set(catalog.activity_kinds), "codes": set(catalog.codes),
             "cost_categories": set(catalog.cost_categories), "sexes": set(catalog.sexes),
             "dispositions": set(catalog.dispositions)}
    frame = frames[table.file]
    for col in table.columns:
        values = frame[col.name]
        blank = values.astype(str).eq("") | values.isna()
        if col.required:
            assert not blank.any(), f"{table.file}.{col.name} has blanks"
        present = values[~blank]
        if col.type == "date":
            assert present.str.match(DATE_RE).all(), col.name
        elif col.type == "month":
            assert present.str.match(MONTH_RE).all(), col.name
        elif col.type == "bool":
            assert present.isin(["true", "false"]).all(), col.name
        elif col.type in ("int", "float"):
            numbers = pd.to_numeric(present)
            low = -math.inf if col.min is None else col.min
            high = math.inf if col.max is None else col.max
            assert numbers.between(low, high).all(), col.name
            if col.type == "int":
                assert (numbers == numbers.round()).all()
        else:
            if col.max_len and len(present):
                assert present.astype(str).str.len().max() <= col.max_len, col.name
        if col.choices:
            assert present.isin(vocab[col.choices]).all(), f"{col.name}: {set(present) - vocab[col.choices]}"
        if col.pattern:
            assert present.str.match(col.pattern).all(), f"{col.name}: {present[~present.str.match(col.pattern)].unique()}"


@pytest.mark.parametrize("table", [t for t in BUNDLE if any(c.ref for c in t.columns)], ids=lambda t: t.file)
def test_references_resolve(frames, table):
    frame = frames[table.file]
    for col in table.columns:
        if not col.ref:
            continue
        target_file, target_col = col.ref.split(".")
        values = frame[col.name][frame[col.name] != ""]
        assert values.isin(set(frames[target_file + ".csv"][target_col])).all(), f"{table.file}.{col.name}"


def test_measurement_values_inside_the_catalogue_ranges(frames):
    codes = load_catalog().codes
    m = frames["measurements.csv"]
    bounds = m["code"].map(lambda c: (codes[c].min, codes[c].max))
    lo, hi = bounds.str[0].astype(float), bounds.str[1].astype(float)
    assert m["value"].between(lo, hi).all()
    assert (m["unit"] == m["code"].map(lambda c: codes[c].unit)).all()


def test_dates_are_in_order(frames):
    enc = frames["encounters.csv"]
    start, end = _days(enc["start_date"]), _days(enc["end_date"])
    has_end = ~pd.isna(end)
    assert (end[has_end] >= start[has_end]).all()
    ec = enc[enc["kind"] == "e_consult"]
    gap = (_days(ec["responded_date"]) - _days(ec["requested_date"])).astype("timedelta64[D]").astype(int)
    assert gap.min() >= 0 and gap.max() <= 7
    urgent = enc[enc["is_urgent"] == "true"]
    wait = (_days(urgent["start_date"]) - _days(urgent["requested_date"])).astype("timedelta64[D]").astype(int)
    assert wait.min() >= 0 and wait.max() <= 5
    cond = frames["conditions.csv"]
    resolved = cond[cond["resolved_date"] != ""]
    assert (_days(resolved["resolved_date"]) >= _days(resolved["onset_date"])).all()
    assert (_days(frames["conditions.csv"]["onset_date"]) <= np.datetime64(END) + 31).all()


def test_nothing_happens_after_death_or_before_adulthood(frames):
    pat = frames["patients.csv"].set_index("patient_id")
    assert (pat["death_date"] != "").sum() > 0
    death = pd.Series(_days(pat["death_date"]), index=pat.index)
    birth = pd.Series(_days(pat["birth_date"]), index=pat.index)
    checks = [("encounters.csv", "start_date"), ("encounters.csv", "end_date"), ("encounters.csv", "responded_date"),
              ("measurements.csv", "measured_date"), ("conditions.csv", "onset_date"), ("conditions.csv", "resolved_date"),
              ("medications.csv", "start_date"), ("medications.csv", "end_date")]
    for file, col in checks:
        frame = frames[file]
        when = pd.Series(_days(frame[col]))
        dead = death.reindex(frame["patient_id"]).to_numpy()
        bad = ~pd.isna(dead) & ~when.isna().to_numpy() & (when.to_numpy() > dead)
        assert not bad.any(), f"{file}.{col} after death"
    att = frames["attribution.csv"]
    month = pd.to_datetime(att["month"] + "-01").to_numpy()
    dead = death.reindex(att["patient_id"]).to_numpy()
    assert not (~pd.isna(dead) & (month > dead)).any()
    age = (month - birth.reindex(att["patient_id"]).to_numpy()).astype("timedelta64[D]").astype(int) / 365.25
    assert age.min() >= 18 and age.max() <= 102


def test_months_cover_the_window_with_partial_enrolment(frames):
    att = frames["attribution.csv"]
    months = sorted(att["month"].unique())
    assert months[0] == "2024-08" and months[-1] == "2025-10" and len(months) == SPEC.months
    per_patient = att.groupby("patient_id").size()
    assert (per_patient < SPEC.months).mean() > 0.1  # joiners, leavers, deaths
    assert (att.groupby("patient_id")["team_id"].nunique() > 1).sum() > 5  # patients move between teams


def test_pcp_is_a_clinician_of_the_attributed_team(frames):
    staff = frames["staff.csv"].set_index("staff_id")
    att = frames["attribution.csv"]
    assert (staff.loc[att["pcp_id"], "team_id"].to_numpy() == att["team_id"].to_numpy()).all()
    assert staff.loc[att["pcp_id"], "role"].isin(["physician", "nurse_practitioner"]).all()


def test_staff_costs_and_hours_are_realistic(frames):
    staff = frames["staff.csv"]
    per_fte = staff["annual_cost_usd"] / (staff["paid_hours_per_year"] / ref.FULL_TIME_HOURS)
    for role, (low, high) in ref.ROLE_COST_USD.items():
        costs = per_fte[staff["role"] == role]
        assert costs.between(low * 0.99, high * 1.01).all(), role
    assert staff["paid_hours_per_year"].between(0.1 * ref.FULL_TIME_HOURS, ref.FULL_TIME_HOURS).all()
    assert set(staff.groupby("team_id")["role"].apply(lambda r: "physician" in set(r))) == {True}


def test_minutes_only_on_most_internal_encounters_and_claims_carry_paid_amounts(frames):
    catalog = load_catalog()
    enc = frames["encounters.csv"]
    internal = enc["kind"].map(lambda k: catalog.activity_kinds[k].internal)
    with_minutes = enc["encounter_id"].isin(set(frames["staff_minutes.csv"]["encounter_id"]))
    assert not (with_minutes & ~internal).any()
    share = with_minutes[internal].mean()
    assert 0.8 < share < 0.93
    paid = enc["paid_date"] != ""
    assert enc.loc[~internal & paid, "paid_usd"].notna().all() and enc.loc[internal, "paid_usd"].isna().all()
    # claims not yet paid at the extract: only hospital-notified admissions and ED visits, without an amount
    assert set(enc.loc[~internal & ~paid, "kind"]) <= set(ref.ACUTE_KINDS)
    assert enc.loc[~internal & ~paid, "paid_usd"].isna().all() and not paid[internal].any()
    assert (enc.loc[internal, "team_id"] != "").all()


def test_external_claims_name_a_facility_of_their_kind_and_network(frames, monkeypatch):
    enc = frames["encounters.csv"]
    facilities = {name: (ftype, net) for name, ftype, net in ref.FACILITIES}
    billed = enc["kind"].isin(list(ref.FACILITY_TYPE_OF_KIND))
    assert (enc.loc[billed, "facility"] != "").all() and (enc.loc[~billed, "facility"] == "").all()
    for row in enc.loc[billed, ["kind", "in_network", "facility"]].drop_duplicates().itertuples():
        ftype, net = facilities[row.facility]
        assert ftype == ref.FACILITY_TYPE_OF_KIND[row.kind] and net == (row.in_network == "true"), row
    # several facilities of each type appear, in and out of the network
    assert enc.loc[billed & (enc["in_network"] == "false"), "facility"].nunique() >= 4
    # a stream of its own: without facilities every other value is the same
    import sample_data.generator as gen

    monkeypatch.setattr(gen, "_facilities", lambda seed, chunk, kind, in_network: np.full(len(kind), "", dtype=object))
    again = generate_frames(SPEC)["encounters.csv"]
    pd.testing.assert_frame_equal(again.drop(columns="facility"), enc.drop(columns="facility"))


def test_claims_are_paid_after_the_service_and_never_after_the_extract(frames):
    enc = frames["encounters.csv"]
    claims = enc.loc[enc["paid_date"] != ""]
    served = np.where(claims["end_date"] != "", _days(claims["end_date"]), _days(claims["start_date"]))
    lag = (_days(claims["paid_date"]) - served).astype("timedelta64[D]").astype(np.int64)
    extract = np.datetime64(pd.Timestamp(END) + pd.offsets.MonthEnd(0))
    assert lag.min() >= ref.PAID_LAG_DAYS[2] and lag.max() <= ref.PAID_LAG_DAYS[3]
    assert 20 <= np.median(lag) <= 45 and (lag <= 62).mean() > 0.8 and (lag > 90).any()
    assert (_days(claims["paid_date"]) <= extract).all()
    # the latest month is short of claims (run-out); an old month is not
    month = claims["start_date"].str[:7]
    assert (month == END.strftime("%Y-%m")).sum() < 0.5 * (month == "2025-01").sum()


def test_readmissions_within_30_days_exist(frames):
    adm = frames["encounters.csv"].query("kind == 'admission'").copy()
    adm["start"], adm["end"] = _days(adm["start_date"]), _days(adm["end_date"])
    adm = adm.sort_values(["patient_id", "start"])
    prev_end = adm.groupby("patient_id")["end"].shift()
    gap = (adm["start"] - prev_end).dt.days
    assert ((gap >= 0) & (gap <= 30)).sum() >= 1


def test_people_without_conditions_measure_below_the_risk_thresholds(frames):
    with_conditions = set(frames["conditions.csv"]["patient_id"])
    m = frames["measurements.csv"]
    clean = m[~m["patient_id"].isin(with_conditions)]
    limits = {BMI: 30, SYSTOLIC_BP: 130, HBA1C: 5.7, LDL: 160, TOBACCO: 1}
    for code, limit in limits.items():
        values = clean.loc[clean["code"] == code, "value"]
        assert len(values) > 0 and (values < limit).all(), code


# --- determinism -------------------------------------------------------------------------------


def test_same_spec_writes_identical_files(tmp_path):
    spec = NetworkSpec(patients=150, months=6, seed=3, end_month=END)
    first = write_bundle(spec, tmp_path / "a")
    write_bundle(spec, tmp_path / "b")
    assert set(first["rows"]) == set(BY_FILE)
    for name in [*BY_FILE, "manifest.json"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    header = (tmp_path / "a" / "encounters.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == ",".join(BY_FILE["encounters.csv"].column_names)
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest == {"generator": SAMPLE_GENERATOR_NAME, "patients": 150, "months": 6, "seed": 3,
                        "end_month": "2025-10", "origin": "sample"}
    assert first["rows"]["patients.csv"] == 150


def test_generate_frames_is_deterministic_and_seed_sensitive(frames):
    again = generate_frames(SPEC)
    for name, frame in frames.items():
        pd.testing.assert_frame_equal(frame, again[name])
    other = generate_frames(NetworkSpec(**{**SMALL_NETWORK, "seed": 8}, end_month=END))
    assert not frames["patients.csv"].equals(other["patients.csv"])
    assert not frames["encounters.csv"].equals(other["encounters.csv"])


def test_chunks_continue_ids_and_keep_references(monkeypatch):
    import sample_data.generator as generator

    monkeypatch.setattr(generator, "CHUNK_PATIENTS", 70)
    chunked = generate_frames(NetworkSpec(patients=200, months=4, seed=5, end_month=END))
    assert chunked["patients.csv"]["patient_id"].tolist() == [f"P{i:07d}" for i in range(1, 201)]
    for table in BUNDLE:
        frame = chunked[table.file]
        assert not frame.duplicated(list(table.key)).any(), table.file
    ids = chunked["encounters.csv"]["encounter_id"]
    assert ids.tolist() == [f"E{i:09d}" for i in range(1, len(ids) + 1)]
    assert chunked["staff_minutes.csv"]["encounter_id"].isin(set(ids)).all()


@pytest.mark.parametrize("patients, months", [(1, 1), (3, 2), (40, 1)])
def test_tiny_networks_are_complete(patients, months):
    frames = generate_frames(NetworkSpec(patients=patients, months=months, seed=1, end_month=END))
    assert len(frames["patients.csv"]) == patients
    assert frames["attribution.csv"]["month"].max() == "2025-10"
    assert set(frames) == set(BY_FILE)


@pytest.mark.parametrize("spec_end, today, expected", [
    (None, date(2026, 1, 15), date(2025, 12, 1)),
    (None, date(2026, 11, 25), date(2026, 10, 1)),
    (None, date(2026, 3, 1), date(2026, 2, 1)),
    (date(2024, 6, 17), date(2026, 11, 25), date(2024, 6, 1)),
])
def test_end_month_defaults_to_the_last_complete_month(spec_end, today, expected):
    assert resolve_end_month(NetworkSpec(end_month=spec_end), today=today) == expected


# --- realism and planted signals ---------------------------------------------------------------


def test_needs_mix_is_roughly_40_30_20_10(medium):
    panel, _ = medium
    states = panel.state[panel.enrolled]
    share = np.bincount(states, minlength=5) / len(states)
    assert 0.36 < share[ref.HEALTHY] < 0.48
    assert 0.24 < share[ref.AT_RISK] < 0.36
    assert 0.15 < share[ref.CHRONIC] < 0.25
    assert 0.06 < share[ref.COMPLEX] + share[ref.FRAIL] < 0.14
    changed = (np.diff(panel.state.astype(int), axis=1) != 0).any(axis=1)
    assert 0.02 < changed.mean() < 0.2


def test_latent_mix_is_near_the_papers_example(medium):
    """The latent needs mix, over the window and in the last month, is near 40/30/20/10 %.

    Chronic may sit a little above 20 % and complex + frail a little below 10 %: the default
    subgroup rules also call complex the patients whose risk score is in the month's top decile
    or who had 2+ ED visits / admissions in 12 months (mostly older chronic patients, about 2-3 %
    of the panel), so the mix the engine assigns ends near 40/30/20/10 % as well.
    """
    panel, _ = medium
    last = panel.months - 1
    for label, states in (("window", panel.state[panel.enrolled]),
                          ("last month", panel.state[panel.enrolled[:, last], last])):
        share = np.bincount(states, minlength=5) / len(states) * 100
        assert abs(share[ref.HEALTHY] - 40) <= 3, (label, share)
        assert abs(share[ref.AT_RISK] - 30) <= 3, (label, share)
        assert 19 <= share[ref.CHRONIC] <= 24, (label, share)
        assert 7 <= share[ref.COMPLEX] + share[ref.FRAIL] <= 11, (label, share)
        assert share[ref.FRAIL] >= 2, (label, share)


def test_hcc_heavy_conditions_and_repeat_acute_care_concentrate_in_the_multimorbid(medium):
    """What keeps the engine's mix near the latent one: the top risk-score decile is filled by
    complex and frail patients, and few others reach 2+ ED visits / admissions in 12 months."""
    panel, frames = medium
    last = panel.months - 1
    alive, state = panel.enrolled[:, last], panel.state[:, last]
    severe = np.isin([g[0] for g in ref.CHRONIC_GROUPS], ref.SEVERE_GROUPS)
    n_severe = (panel.g_on[:, severe] < panel.ms[-1]).sum(axis=1)

    def share(values, *states):
        return values[alive & np.isin(state, states)].mean()

    assert share(n_severe >= 2, ref.COMPLEX) > 0.7
    assert share(n_severe >= 2, ref.CHRONIC) < 0.1
    enc = frames["encounters.csv"]
    since = str(np.datetime64(int(panel.ms[last - 11]), "D"))
    acute = enc[enc["kind"].isin(["ed_visit", "admission"]) & (enc["start_date"] >= since)]
    count = np.bincount(acute["patient_id"].str[1:].astype(int).to_numpy() - 1, minlength=panel.n)
    assert share(count >= 2, ref.HEALTHY, ref.AT_RISK) < 0.02
    assert share(count >= 2, ref.CHRONIC) < 0.06
    assert share(count >= 2, ref.COMPLEX, ref.FRAIL) > 0.2


def _state_of_encounters(panel, frames):
    enc = frames["encounters.csv"]
    pidx = enc["patient_id"].str[1:].astype(int).to_numpy() - 1
    month = np.searchsorted(panel.ms, _days(enc["start_date"]).astype("datetime64[D]").astype(np.int64), side="right") - 1
    return enc, pidx, month


def test_complex_and_frail_cost_far_more_than_healthy(medium):
    panel, frames = medium
    enc, pidx, month = _state_of_encounters(panel, frames)
    state = panel.state[pidx, month]
    paid = enc["paid_usd"].fillna(0).to_numpy()
    member_months = np.bincount(panel.state[panel.enrolled], minlength=5)
    pmpm = np.bincount(state, weights=paid, minlength=5) / member_months
    sick = (pmpm[ref.COMPLEX] * member_months[ref.COMPLEX] + pmpm[ref.FRAIL] * member_months[ref.FRAIL]) / (
        member_months[ref.COMPLEX] + member_months[ref.FRAIL])
    assert sick >= 8 * pmpm[ref.HEALTHY]
    assert pmpm[ref.HEALTHY] < pmpm[ref.AT_RISK] < pmpm[ref.CHRONIC] < sick
    ed = np.bincount(state[enc["kind"].to_numpy() == "ed_visit"], minlength=5) / member_months
    assert ed[ref.COMPLEX] > 4 * ed[ref.HEALTHY]


def test_planted_admission_spike_in_the_complex_team_last_month(medium):
    panel, frames = medium
    enc, pidx, month = _state_of_encounters(panel, frames)
    adm = enc["kind"].to_numpy() == "admission"
    team = panel.team[pidx, month]
    state = panel.state[pidx, month]
    in_group = adm & (team == ref.SPIKE_TEAM) & (state == ref.COMPLEX)
    members = ((panel.team == ref.SPIKE_TEAM) & (panel.state == ref.COMPLEX)).sum(axis=0)
    counts = np.bincount(month[in_group], minlength=panel.months)
    last = panel.months - 1
    usual = counts[:last].sum() / members[:last].sum()
    expected = usual * members[last]
    assert counts[last] >= 2 * expected
    # one-sided exact Poisson test: P(X >= observed | usual rate) < 0.01
    tail = 1 - sum(math.exp(-expected) * expected**k / math.factorial(k) for k in range(counts[last]))
    assert tail < 0.01


def test_best_team_controls_diabetes_better_than_worst_team(medium):
    panel, frames = medium
    m = frames["measurements.csv"]
    a1c = m[(m["code"] == HBA1C) & (m["measured_date"] >= "2025-04-01")]
    pidx = a1c["patient_id"].str[1:].astype(int).to_numpy() - 1
    diabetic = panel.g_on[pidx, ref.GROUP_INDEX["diabetes"]] < panel.ms[-1]
    home = panel.home_team[pidx]
    controlled = a1c["value"].to_numpy() < 8
    best = controlled[diabetic & (home == ref.BETTER_TEAM)].mean()
    worst = controlled[diabetic & (home == ref.WORSE_TEAM)].mean()
    assert best > worst + 0.2


def test_slow_team_waits_longer_for_urgent_visits(frames):
    urgent = frames["encounters.csv"].query("is_urgent == 'true'").copy()
    urgent["wait"] = (_days(urgent["start_date"]) - _days(urgent["requested_date"])).astype("timedelta64[D]").astype(int)
    wait = urgent.groupby("team_id")["wait"].mean()
    slow = ref.TEAMS[ref.SLOW_URGENT_TEAM][0]
    assert wait[slow] > wait.drop(slow).max() + 1


def test_staffing_scales_with_the_panel(medium, frames):
    _, big = medium
    fte_small = frames["staff.csv"]["paid_hours_per_year"].sum() / ref.FULL_TIME_HOURS
    fte_big = big["staff.csv"]["paid_hours_per_year"].sum() / ref.FULL_TIME_HOURS
    assert fte_big > 2.5 * fte_small
    per_1000 = fte_big / MEDIUM.patients * 1000
    assert 1.0 < per_1000 < 6.0  # primary care: roughly 2-4 staff FTE per 1,000 adults


def test_polypharmacy_among_complex_and_frail(medium):
    panel, frames = medium
    meds = frames["medications.csv"]
    active = meds[meds["end_date"] == ""].groupby("patient_id").size()
    pidx = active.index.str[1:].astype(int).to_numpy() - 1
    sickest = panel.state.max(axis=1)[pidx]
    many = active.to_numpy() >= 10
    assert many[sickest >= ref.COMPLEX].mean() > 0.25
    assert not many[sickest <= ref.AT_RISK].any()


def test_dates_before_1970_are_kept():
    """Day -1 is 1969-12-31, not a missing value (a birth date the importer would reject as blank)."""
    from sample_data.generator import NEVER, _days_to_dates

    dates = _days_to_dates(np.array([-1, 0, NEVER, -365]))
    assert list(dates.astype(object)) == ["1969-12-31", "1970-01-01", np.nan, "1969-01-01"]
