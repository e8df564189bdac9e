"""An import of one new month re-derives the months it can change, and gives exactly what a full
derive gives (``core.derive.incremental.derive_months``; issue 21).

A small network's first months are imported and derived, then its last month is imported
(``sample_data.split``) and derived by month; every subgroup assignment, risk score, activity row
and cell is then compared, value for value, with a full derive of the same store. SQLite and
PostgreSQL.
"""

from datetime import date

import pandas as pd
import pytest
from sqlalchemy import func, select

from core.derive.incremental import derive_touched, first_changed_month, from_month_mark, reach_metrics, touched_patients
from core.derive.pipeline import derive_all
from core.derive.subgroups.assign import stored_thresholds
from core.ingest import import_path
from core.store.models import SubgroupAssignment
from core.store.queries import derive_pending
from sample_data.split import split_bundle
from tests.store.test_incremental_derive_store import assert_same_as_full_derive, derived_tables
from tests.tables import table_frames

NETWORK = dict(patients=400, months=13, seed=11, end_month=date(2026, 11, 1))


def _no_full_derive(*_args, **_kwargs):
    raise AssertionError("a full derive ran")


PAGE_TABLES = ("econsult_month", "specialist_spend_month", "specialist_spend_patient_month", "subgroup_move", "claims_lag_month",
               "patient_month_cost", "claims_network_month", "team_month_minutes")


def page_tables(engine) -> dict[str, pd.DataFrame]:
    """The pages' monthly aggregates (core.derive.page_aggregates), rows in key order."""
    return table_frames(engine, PAGE_TABLES)


def assert_same_pages(by_month: dict, full: dict) -> None:
    """Same rows; counts, keys and text exact, float sums to a relative 1e-9 (a sum's rows may come
    in another order from the database)."""
    for name in PAGE_TABLES:
        a, b = by_month[name], full[name]
        assert len(a) == len(b), name
        floats = [c for c in b.columns if pd.api.types.is_float_dtype(b[c])]
        rest = [c for c in b.columns if c not in floats]
        pd.testing.assert_frame_equal(a[rest], b[rest], check_exact=True, obj=name)
        pd.testing.assert_frame_equal(a[floats], b[floats], check_exact=False, rtol=1e-9, atol=1e-6, obj=name)


@pytest.fixture(scope="module")
def month_bundles(tmp_path_factory):
    from sample_data.generator import NetworkSpec, write_bundle

    root = tmp_path_factory.mktemp("months")
    write_bundle(NetworkSpec(**NETWORK), root / "whole")
    counts = split_bundle(root / "whole", "2026-11", root / "before", root / "after")
    assert counts["attribution.csv"][1] > 0 and counts["encounters.csv"][1] > 0
    return root


def _imported(folder: str, derive):
    def build(engine) -> None:
        report = import_path(engine, folder)
        assert report.ok, report.to_text()
        derive(engine)

    return build


# The stores the tests start from, each built once a session on each backend and copied for each
# test (``StoreTemplates`` in tests/conftest.py).
@pytest.fixture(params=["sqlite", "postgresql"])
def before_store(request, store_templates, month_bundles, tmp_path):
    """The months before November imported and derived as a first import is (``derive_touched``)."""
    build = _imported(month_bundles / "before", derive_touched)
    yield from store_templates.copy(request.param, "months before, derived as imported", build, tmp_path)


@pytest.fixture(params=["sqlite", "postgresql"])
def before_derived_whole(request, store_templates, month_bundles, tmp_path):
    """The months before November imported and derived whole (``derive_all``)."""
    build = _imported(month_bundles / "before", derive_all)
    yield from store_templates.copy(request.param, "months before, derived whole", build, tmp_path)


@pytest.fixture(params=["sqlite", "postgresql"])
def whole_store(request, store_templates, month_bundles, tmp_path):
    """Every month, November included, imported and derived whole."""
    build = _imported(month_bundles / "whole", derive_all)
    yield from store_templates.copy(request.param, "months whole, derived whole", build, tmp_path)


@pytest.fixture
def before_store_pg(store_templates, month_bundles, tmp_path):
    """``before_store`` on PostgreSQL only (planner statistics are PostgreSQL's histograms)."""
    build = _imported(month_bundles / "before", derive_touched)
    yield from store_templates.copy("postgresql", "months before, derived as imported", build, tmp_path)


def _in_statistics(engine, table: str, column: str, month: str = "2026-11") -> bool:
    """Whether PostgreSQL's planner statistics of ``table.column`` know a value of ``month``."""
    with engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT most_common_vals::text, histogram_bounds::text FROM pg_stats "
                                   "WHERE tablename = %s AND attname = %s", (table, column)).first()  # fmt: skip
    return row is not None and month in " ".join(v or "" for v in row)


def test_postgresql_plans_the_new_month_with_its_rows_in_the_statistics(before_store_pg, month_bundles):
    """Autovacuum analyses a table once a tenth of it changed, so a month's rows stayed outside the
    statistics and the month's derive got plans made for a handful of rows (100,000 patients: 304 s
    against 149 s for the whole network's). The import and the derive refresh what they wrote."""
    engine = before_store_pg
    assert _in_statistics(engine, "attribution", "month", "2026-10") and not _in_statistics(engine, "attribution", "month")
    report = import_path(engine, month_bundles / "after")
    assert report.ok and not report.warnings, report.to_text()
    assert _in_statistics(engine, "attribution", "month") and _in_statistics(engine, "encounter", "start_date")
    assert not _in_statistics(engine, "subgroup_assignment", "month")
    assert derive_touched(engine)["mode"] == "months"
    for table in ("subgroup_assignment", "patient_month_activity", "cell", "specialist_spend_patient_month", "subgroup_move"):
        assert _in_statistics(engine, table, "month"), table


def test_an_import_whose_statistics_fail_is_kept_with_a_warning(before_store_pg, month_bundles, monkeypatch):
    from sqlalchemy.exc import OperationalError

    def fail(conn, tables, changed=None):
        raise OperationalError("ANALYZE", {}, Exception("canceling statement due to lock timeout"))

    monkeypatch.setattr("core.store.db.refresh_statistics", fail)  # (on the connections of the analysis's threads)
    report = import_path(before_store_pg, month_bundles / "after")
    assert report.ok and report.import_id is not None, report.to_text()
    assert any("planner statistics were not refreshed" in w.message and "lock timeout" in w.message for w in report.warnings)
    with before_store_pg.connect() as conn:  # the month is there
        assert conn.exec_driver_sql("SELECT count(*) FROM attribution WHERE month = '2026-11-01'").scalar_one() > 0


def test_readmissions_and_first_diagnoses_look_forward_so_earlier_months_are_re_derived():
    assert first_changed_month(date(2026, 11, 1)) == date(2026, 10, 1)  # a discharge on 2 Oct, readmitted 1 Nov
    assert first_changed_month(date(2026, 3, 1)) == date(2026, 1, 1)  # 30 days before 1 March is in January


def test_one_new_month_re_derives_only_the_months_it_can_change(before_store, month_bundles, monkeypatch):
    engine = before_store
    before = derived_tables(engine)
    before_pages = page_tables(engine)
    report = import_path(engine, month_bundles / "after")
    assert report.ok, report.to_text()
    assert from_month_mark(engine) == date(2026, 11, 1)  # the earliest date of its rows
    monkeypatch.setattr("core.derive.pipeline.derive_all", _no_full_derive)
    summary = derive_touched(engine)
    monkeypatch.undo()
    # November whole; October (a discharge there, readmitted in November) for the forward-looking measures only
    assert summary["mode"] == "months" and summary["from_month"] == "2026-11-01", summary
    assert summary["reach"] == {"from_month": "2026-10-01", "months": 1, "metrics": list(reach_metrics())}, summary
    assert {"readmission_30d", "progression_to_chronic"} <= set(reach_metrics())
    assert derive_pending(engine) is None and touched_patients(engine) == [] and from_month_mark(engine) is None
    after = derived_tables(engine)
    def standing(name: str, table: pd.DataFrame) -> pd.DataFrame:  # the rows before November but the reach measures' October cells
        month = pd.to_datetime(table["month"])
        reach = (month == pd.Timestamp("2026-10-01")) & (table["metric"].isin(reach_metrics()) if name == "cell" else False)
        return table[(month < pd.Timestamp("2026-11-01")) & ~reach].reset_index(drop=True)

    for name in (n for n, table in after.items() if "month" in table):  # nothing of those changed
        pd.testing.assert_frame_equal(standing(name, before[name]), standing(name, after[name]), check_exact=True, obj=name)
    assert (pd.to_datetime(after["cell"]["month"]) == pd.Timestamp("2026-11-01")).any()
    with engine.connect() as conn:
        cut_offs = stored_thresholds(conn)  # the cut-offs an override evaluates with
    pages_before, pages = before_pages, page_tables(engine)
    assert summary["page_aggregates"]["from_month"] == "2026-11-01"  # by month, not whole
    for name in PAGE_TABLES:  # rows of earlier months untouched (the spend from 11 months before)
        column = "service_month" if name == "claims_lag_month" else "month"
        edge = pd.Timestamp("2025-12-01" if name.startswith("specialist_spend") else "2026-11-01")
        old_rows = pages_before[name][pd.to_datetime(pages_before[name][column]) < edge].reset_index(drop=True)
        kept_rows = pages[name][pd.to_datetime(pages[name][column]) < edge].reset_index(drop=True)
        pd.testing.assert_frame_equal(old_rows, kept_rows, check_exact=True, obj=name)
    assert_same_as_full_derive(engine)
    assert_same_pages(pages, page_tables(engine))
    with engine.connect() as conn:
        assert cut_offs == stored_thresholds(conn)


def _metric_total(cells: pd.DataFrame, metric: str, month: str) -> tuple[float, float]:
    rows = cells[(cells["metric"] == metric) & (pd.to_datetime(cells["month"]) == pd.Timestamp(month)) & (cells["stratum"] == "all")]
    return float(rows["numerator"].sum()), float(rows["denominator"].sum())


@pytest.mark.parametrize("block", [None, 150], ids=["one block", "blocks on two workers"])
def test_a_november_readmission_and_first_diagnosis_change_october_for_those_measures_only(
    before_store, month_bundles, tmp_path, monkeypatch, block
):
    """November's rows reach back into October only through the measures that look forward: an
    October discharge readmitted on 1 November, and a first diagnosis in November of a patient
    without one in October. October's cells of those measures change (as a full derive makes them);
    everything else of October stands.

    In blocks of 150 patients on two local workers, the cells of both months are built on the
    workers while this process writes the activity and the pages' tables; their sums then add up
    in other blocks than the full derive's one, so they equal its to a relative 1e-9."""
    import core.derive.blocks as blocks
    from core.derive.measures import _normalise_code, load_measures

    engine = before_store
    before = derived_tables(engine, ("cell",))
    read = {p.name: pd.read_csv(p, dtype=str, keep_default_na=False) for p in (month_bundles / "after").glob("*.csv")}
    old = {p.name: pd.read_csv(p, dtype=str, keep_default_na=False) for p in (month_bundles / "before").glob("*.csv")}
    encounters, conditions = pd.concat([old["encounters.csv"], read["encounters.csv"]]), old["conditions.csv"]
    admissions = encounters[encounters["kind"] == "admission"]
    # an October discharge (alive) with no admission 1-30 days after it
    stays = admissions[(admissions["end_date"] >= "2026-10-02") & (admissions["end_date"] <= "2026-10-31")]
    alive = set(old["patients.csv"].loc[old["patients.csv"]["death_date"] == "", "patient_id"])
    stays = stays[stays["patient_id"].isin(alive) & (stays["discharge_disposition"] != "died")]
    later = admissions.merge(stays[["patient_id", "end_date"]], on="patient_id", suffixes=("", "_index"))
    gap = (pd.to_datetime(later["start_date"]) - pd.to_datetime(later["end_date_index"])).dt.days
    stay = stays[~stays["patient_id"].isin(later.loc[(gap >= 1) & (gap <= 30), "patient_id"])].iloc[[0]]
    again = stay.assign(encounter_id="E_REACH_1", start_date="2026-11-01", end_date="2026-11-03", paid_date="")
    # a first diagnosis on 10 November of a patient attributed in October without one of the list
    catalogue = load_measures()
    listed = catalogue.code_lists[catalogue.by_id()["progression_to_chronic"].params["list"]]
    matches = conditions["code"].map(lambda c: _normalise_code(c).startswith(listed))
    october = set(old["attribution.csv"].loc[old["attribution.csv"]["month"].str.startswith("2026-10"), "patient_id"])
    patient = sorted(october & alive - set(conditions.loc[matches, "patient_id"]))[0]
    first = conditions[matches].iloc[[0]].assign(condition_id="C_REACH_1", patient_id=patient, onset_date="2026-11-10",
                                                 resolved_date="")  # fmt: skip
    read["encounters.csv"] = pd.concat([read["encounters.csv"], again])
    read["conditions.csv"] = pd.concat([read["conditions.csv"], first])
    folder = tmp_path / "after"
    folder.mkdir()
    for name, frame in read.items():
        frame.to_csv(folder / name, index=False)
    report = import_path(engine, folder)
    assert report.ok, report.to_text()
    assert from_month_mark(engine) == date(2026, 11, 1)
    monkeypatch.setattr("core.derive.pipeline.derive_all", _no_full_derive)
    pools = []
    if block is not None:
        real_pool = blocks.local_pool
        monkeypatch.setattr(blocks, "BLOCK_PATIENTS", block)
        monkeypatch.setenv(blocks.WORKERS_ENV, "2")
        monkeypatch.setattr(blocks, "local_pool", lambda n: pools.append(n) or real_pool(n))
    summary = derive_touched(engine)
    monkeypatch.undo()
    assert pools == ([] if block is None else [2])  # one pool: the subgroups' second pass, then the cells
    assert summary["from_month"] == "2026-11-01" and summary["reach"]["months"] == 1 and summary["cells"]["reach_rows"] > 0
    assert summary["activity"]["rows"] > 0 and summary["activity"]["team_rows"] > 0  # (counted on PostgreSQL too)
    after = derived_tables(engine, ("cell",))
    for metric in ("readmission_30d", "progression_to_chronic"):  # one more event in October, same denominator
        was, now = _metric_total(before["cell"], metric, "2026-10-01"), _metric_total(after["cell"], metric, "2026-10-01")
        assert now[0] > was[0] and now[1] == was[1], metric
    assert_same_as_full_derive(engine, exact=block is None)


def test_a_row_sent_again_with_an_earlier_date_lowers_the_month(before_derived_whole, month_bundles, tmp_path):
    engine = before_derived_whole
    folder = tmp_path / "again"
    folder.mkdir()
    tables = {p.name: pd.read_csv(p, dtype=str, keep_default_na=False) for p in (month_bundles / "before").glob("*.csv")}
    measurements = tables["measurements.csv"]
    row = measurements.sort_values("measured_date").iloc[[-1]].copy()  # the latest, moved to a later date
    earlier = row["measured_date"].iloc[0]
    row["measured_date"] = "2026-11-15"
    for name, frame in tables.items():
        if name == "measurements.csv":
            frame = row
        elif name == "patients.csv":
            frame = frame[frame["patient_id"] == row["patient_id"].iloc[0]]
        elif name not in ("practices.csv", "teams.csv", "staff.csv"):
            frame = frame.iloc[0:0]
        frame.to_csv(folder / name, index=False)
    assert import_path(engine, folder).ok
    assert from_month_mark(engine) == date.fromisoformat(earlier[:8] + "01")
    summary = derive_touched(engine)
    assert summary["mode"] == "incremental"  # one patient: by patient
    assert from_month_mark(engine) is None
    assert_same_as_full_derive(engine)


# --- the look-back: the month path reads only the rows its months need ---------------------------

FIRST = date(2026, 10, 1)  # the first month the path computes (an import of November: October for the readmissions)
MONTHS = [FIRST, date(2026, 11, 1)]
WORK_DAYS, PHQ9, BMI = "local:work-days-missed", "44261-6", "39156-5"


def _boundary_rows(engine) -> dict[str, str]:
    """Rows at the edges of the look-backs, each for a patient attributed in October and November
    (the patient's other rows of the code removed, so the edge row decides): returns who is who."""
    from sqlalchemy import delete, update
    from sqlmodel import Session

    from core.store.models import Attribution, Condition, Encounter, Measurement, Patient

    with engine.connect() as conn:
        both = [set(conn.execute(select(Attribution.patient_id).where(Attribution.month == m)).scalars()) for m in MONTHS]
        alive = set(conn.execute(select(Patient.patient_id).where(Patient.death_date.is_(None))).scalars())
    ids = sorted(both[0] & both[1] & alive)[:7]
    who = dict(zip(["work_days", "phq9", "bmi", "stay", "hospice", "open_stay", "died_stay"], ids, strict=True))
    m = Measurement.__table__
    with engine.begin() as conn:
        for key, code in (("work_days", WORK_DAYS), ("phq9", PHQ9), ("bmi", BMI)):
            conn.execute(delete(m).where(m.c.patient_id == who[key], m.c.code == code))
        deaths = {"hospice": date(2026, 10, 1), "open_stay": date(2026, 11, 10), "died_stay": date(2026, 11, 12)}
        for key, day in deaths.items():
            conn.execute(update(Patient.__table__).where(Patient.patient_id == who[key]).values(death_date=day))

    def measurement(n, key, code, day, value):
        return Measurement(measurement_id=f"edge-m{n}", patient_id=who[key], measured_date=day, code=code, value=value)

    def encounter(n, key, kind, start, end, disposition=""):
        return Encounter(encounter_id=f"edge-e{n}", patient_id=who[key], kind=kind, start_date=start, end_date=end,
                         is_internal=False, discharge_disposition=disposition)  # fmt: skip

    with Session(engine) as session:
        session.add_all([
            # latest value, 3 months: August is the earliest month October reads; July is not read
            measurement(1, "work_days", WORK_DAYS, date(2026, 8, 1), 9.0),
            measurement(2, "work_days", WORK_DAYS, date(2026, 7, 31), 5.0),
            # PHQ-9 remission at 12 months: the index of October 2026 would be October 2025, but the
            # elevated score of October 2024 (12 months before it, the edge) makes it no index
            Condition(condition_id="edge-c1", patient_id=who["phq9"], code="F32.9", onset_date=date(2024, 1, 1)),
            measurement(3, "phq9", PHQ9, date(2024, 10, 1), 15.0),
            measurement(4, "phq9", PHQ9, date(2025, 10, 15), 15.0),
            measurement(5, "phq9", PHQ9, date(2026, 10, 20), 3.0),
            measurement(6, "phq9", PHQ9, date(2024, 9, 30), 16.0),
            # BMI change: the baseline of October 2026 is the latest of Nov 2024-Oct 2025 (the edge: 1 Nov 2024)
            measurement(7, "bmi", BMI, date(2024, 11, 1), 31.0),
            measurement(8, "bmi", BMI, date(2026, 10, 5), 29.0),
            measurement(9, "bmi", BMI, date(2024, 10, 31), 40.0),
            # a stay admitted in September, discharged in October (days at home, readmission); one ended in September
            encounter(1, "stay", "admission", date(2026, 9, 20), date(2026, 10, 3)),
            encounter(2, "stay", "admission", date(2026, 9, 1), date(2026, 9, 19)),
            # hospice 180 days before a death on 1 October (the edge), and 181 days
            encounter(3, "hospice", "home_visit", date(2026, 4, 1), date(2026, 4, 4), "hospice"),
            encounter(4, "hospice", "home_visit", date(2026, 3, 30), date(2026, 4, 3), "hospice"),
            # deaths at home: a stay still open since January 2025 spans the death; a stay that ended in death long before
            encounter(5, "open_stay", "snf_stay", date(2025, 1, 5), None),
            encounter(6, "died_stay", "admission", date(2025, 3, 1), date(2025, 3, 2), "died"),
            # the subgroup inputs' 12-month windows: November 2025 is the earliest month October reads
            measurement(10, "stay", "4548-4", date(2025, 11, 1), 9.5),
            encounter(7, "stay", "ed_visit", date(2025, 11, 2), None),
        ])  # fmt: skip
        session.commit()
    return who


def _sorted(cells: pd.DataFrame) -> pd.DataFrame:
    return cells.sort_values(list(cells.columns[:7])).reset_index(drop=True)


def test_the_month_path_reads_only_the_look_back_and_gives_the_same_cells(whole_store, month_bundles):
    from dataclasses import replace
    from datetime import timedelta

    from core.derive.cells import block_cells
    from core.derive.measures import load_store_frames, patient_month_flags, read_bounds

    engine = whole_store
    who = _boundary_rows(engine)
    bounds = read_bounds(FIRST)
    assert dict((c, s) for s, codes in bounds.measurements for c in codes)[PHQ9] == date(2024, 10, 1)

    frames = load_store_frames(engine, None, bounds)
    read = set(zip(frames.measurements["patient_id"], frames.measurements["measured_date"].dt.date))
    assert {(who["work_days"], date(2026, 8, 1)), (who["phq9"], date(2024, 10, 1)), (who["bmi"], date(2024, 11, 1))} <= read
    assert not {(who["work_days"], date(2026, 7, 31)), (who["phq9"], date(2024, 9, 30)), (who["bmi"], date(2024, 10, 31))} & read
    stays = set(zip(frames.encounters["patient_id"], frames.encounters["start_date"].dt.date))
    assert {(who["stay"], date(2026, 9, 20)), (who["hospice"], date(2026, 4, 1)), (who["open_stay"], date(2025, 1, 5)),
            (who["died_stay"], date(2025, 3, 1))} <= stays  # fmt: skip
    assert not {(who["stay"], date(2026, 9, 1)), (who["hospice"], date(2026, 3, 30))} & stays
    assert frames.attribution["month"].min() == pd.Timestamp(FIRST)
    whole = load_store_frames(engine)
    assert len(frames.measurements) < len(whole.measurements) and len(frames.encounters) < len(whole.encounters)

    # the cells of October and November: the same to the bit from the bounded reads as from every row
    bounded, _ = block_cells(engine, MONTHS, None, None, None, True)
    every, _ = block_cells(engine, MONTHS)
    pd.testing.assert_frame_equal(_sorted(bounded), _sorted(every), check_exact=True)

    # the edge rows count: a bound one day later gives other measure values
    full = patient_month_flags(whole, MONTHS, month_as_index=True)
    later = replace(bounds, measurements=tuple((s + timedelta(days=1), c) for s, c in bounds.measurements))
    tight = patient_month_flags(load_store_frames(engine, None, later), MONTHS, month_as_index=True)
    key = ["patient_id", "month", "metric"]
    both = full.merge(tight, on=key, how="outer", suffixes=("", "_tight"), indicator=True)
    differ = both[(both["_merge"] != "both") | (both["numerator"] != both["numerator_tight"])]
    assert {who["work_days"], who["phq9"], who["bmi"]} <= set(differ["patient_id"])
    assert {"depression_remission_12m", "bmi_change", "work_days_missed_mean"} <= set(differ["metric"])


def test_the_subgroup_inputs_of_the_new_months_read_their_12_month_windows_only(whole_store, month_bundles):
    from core.derive.incremental import _norm, _stored_counts, _stored_range
    from core.derive.risk import DEFAULT_MODEL
    from core.derive.subgroups.assign import _block_assignments
    from core.derive.subgroups.evaluate import thresholds_from_counts, top_fractions
    from core.derive.subgroups.frames import Run, load_frames, run_of
    from core.derive.subgroups.rules import active_rules_path, load_rules

    engine = whole_store
    who = _boundary_rows(engine)
    rules = load_rules(active_rules_path())
    with engine.connect() as conn:
        run = run_of(conn, None, DEFAULT_MODEL)
        every = Run(MONTHS, (2026,), run.first, run.last, DEFAULT_MODEL)
        bounded = Run(MONTHS, (2026,), run.first, run.last, DEFAULT_MODEL, pd.Timestamp(FIRST))
        frames = load_frames(conn, bounded, None)
        assert frames["measurements"]["measured_date"].min() == pd.Timestamp("2025-11-01")  # the edge row
        assert frames["encounters"]["start_date"].min() >= pd.Timestamp("2025-11-01")
        assert (frames["encounters"]["patient_id"] == who["stay"]).any()
        assert len(frames["measurements"]) < len(load_frames(conn, every, None)["measurements"])
        thresholds = thresholds_from_counts(_norm(_stored_counts(conn)), top_fractions(rules))
        month_range = _stored_range(conn)
        a, risk_a = _block_assignments(conn, bounded, None, month_range, rules, thresholds)
        b, risk_b = _block_assignments(conn, every, None, month_range, rules, thresholds)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    pd.testing.assert_frame_equal(risk_a, risk_b, check_exact=True)


def test_the_spend_of_earlier_months_follows_an_e_consult_added_or_taken_away(before_derived_whole, month_bundles):
    """The specialist spend's earlier rows rebuilt by month are those whose next e-consult is or was
    in the new months (``replace_spend_from``), with their sums by difference: an e-consult added in
    November reaches back 11 months; taken away again (its kind changed), the same rows go back; added
    again over sums that lost a month's rows, both tables are rebuilt whole. Each time the tables
    equal a whole rebuild from the same store."""
    from sqlalchemy import delete, update
    from sqlmodel import Session

    from core.derive.page_aggregates import build_page_aggregates, build_page_aggregates_from
    from core.store.models import Attribution, Encounter, SpecialistSpendMonth

    engine = before_derived_whole
    assert import_path(engine, month_bundles / "after").ok
    derive_touched(engine)
    with engine.connect() as conn:
        attributed = set(conn.execute(select(Attribution.patient_id).where(Attribution.month == date(2025, 12, 1))).scalars())
        attributed &= set(conn.execute(select(Attribution.patient_id).where(Attribution.month == date(2026, 9, 1))).scalars())
        consulted = set(conn.execute(select(Encounter.patient_id).where(Encounter.kind == "e_consult",
                                                                        Encounter.start_date >= date(2025, 12, 1))).scalars())  # fmt: skip
    patient = sorted(attributed - consulted)[0]

    def spend_until(engine) -> pd.Series:
        rows = page_tables(engine)["specialist_spend_patient_month"]
        rows = rows[(rows["patient_id"] == patient) & (pd.to_datetime(rows["month"]) < pd.Timestamp(FIRST))]
        return rows.set_index(pd.to_datetime(rows["month"]))["until_econsult"]

    def by_month_equals_whole() -> dict:
        summary = build_page_aggregates_from(engine, FIRST)
        by_month = page_tables(engine)
        build_page_aggregates(engine)
        assert_same_pages(by_month, page_tables(engine))
        return summary["specialist_spend"]

    assert (spend_until(engine) == 12).all()  # no e-consult within 11 months of any earlier month
    with Session(engine) as session:
        session.add(Encounter(encounter_id="late-ec", patient_id=patient, kind="e_consult", start_date=date(2026, 11, 5),
                              requested_date=date(2026, 11, 5), is_internal=False, specialty="cardiology"))  # fmt: skip
        session.commit()
    spend = by_month_equals_whole()
    assert spend["patients_from_earlier"] >= 1 and spend["earlier"]["patient_months"] >= 10  # the sums by difference
    until = spend_until(engine)
    assert until[pd.Timestamp("2025-12-01")] == 11 and until[pd.Timestamp("2026-09-01")] == 2
    with engine.begin() as conn:
        conn.execute(update(Encounter.__table__).where(Encounter.encounter_id == "late-ec").values(kind="phone_call"))
    assert "why" not in by_month_equals_whole()
    assert (spend_until(engine) == 12).all()
    # sums that do not hold the rows they are made of (a month's rows lost): both tables rebuilt whole
    with engine.begin() as conn:
        conn.execute(update(Encounter.__table__).where(Encounter.encounter_id == "late-ec").values(kind="e_consult"))
        conn.execute(delete(SpecialistSpendMonth.__table__).where(SpecialistSpendMonth.month == date(2025, 12, 1)))
    assert "member-months" in by_month_equals_whole()["why"]
    assert spend_until(engine)[pd.Timestamp("2025-12-01")] == 11


def _patients_only(bundle, folder, change) -> None:
    """An import folder: the network's files, the patients' rows ``change`` returns, no other row."""
    folder.mkdir()
    for path in bundle.glob("*.csv"):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        if path.name == "patients.csv":
            frame = change(frame)
        elif path.name not in ("practices.csv", "teams.csv", "staff.csv"):
            frame = frame.iloc[0:0]
        frame.to_csv(folder / path.name, index=False)


def test_the_first_pass_from_stored_scores_counts_what_the_full_derive_counts(before_store, month_bundles, tmp_path, monkeypatch):
    """The derive of new months takes the top-decile counts from the stored risk scores
    (``core.derive.subgroups.assign.stored_scores``). Patient-months that must not count do not:
    the November of the highest-scoring patient, reported dead in October after November was
    imported (an attribution after death stays stored), and those without a stored score (new
    patients are scored fresh; unknown sex has none). The assignments, scores and cut-offs equal
    a full derive's."""
    from core.derive.subgroups.assign import stored_scores
    from core.derive.subgroups.frames import Run, run_of
    from core.store.models import Attribution, RiskScore

    engine = before_store
    assert import_path(engine, month_bundles / "after").ok
    derive_touched(engine)
    with engine.connect() as conn:
        november = set(conn.execute(select(Attribution.patient_id).where(Attribution.month == date(2026, 11, 1))).scalars())
        scores = pd.read_sql(select(RiskScore.patient_id, RiskScore.score).where(RiskScore.year == 2026), conn)
    top = scores[scores["patient_id"].isin(november)].sort_values(["score", "patient_id"])["patient_id"].iloc[-1]
    _patients_only(month_bundles / "whole", tmp_path / "death", lambda f: f[f["patient_id"] == top].assign(death_date="2026-10-20"))
    assert import_path(engine, tmp_path / "death").ok
    assert from_month_mark(engine) == date(2026, 10, 1)
    monkeypatch.setattr("core.derive.pipeline.derive_all", _no_full_derive)
    monkeypatch.setattr("core.derive.incremental.MAX_TOUCHED_SHARE", 0.0)  # one patient: by month, not by patient
    summary = derive_touched(engine)
    monkeypatch.undo()
    assert summary["mode"] == "months", summary
    with engine.connect() as conn:
        run = run_of(conn, MONTHS, "CMS-HCC Model V28")
        counts = list(stored_scores(conn, Run(MONTHS, (2026,), run.first, run.last, run.model), True))
        stored = conn.execute(select(func.count()).select_from(Attribution)
                              .where(Attribution.patient_id == top, Attribution.month == date(2026, 11, 1))).scalar_one()  # fmt: skip
        assigned = conn.execute(select(func.count()).select_from(SubgroupAssignment)
                                .where(SubgroupAssignment.month >= FIRST, SubgroupAssignment.risk_score.is_not(None))).scalar_one()  # fmt: skip
        after_death = conn.execute(select(func.count()).select_from(SubgroupAssignment)
                                   .where(SubgroupAssignment.patient_id == top, SubgroupAssignment.month == date(2026, 11, 1))).scalar_one()  # fmt: skip
    assert stored == 1 and after_death == 0  # attributed after the month of death: not assigned
    assert sum(int(c.sum()) for c, _months, _ in counts) == assigned  # every scored patient-month of the months once
    assert_same_as_full_derive(engine)


def test_the_second_pass_takes_the_stored_scores_of_the_months_years(before_store, month_bundles, monkeypatch):
    """When no change reaches a score of the new months' years, the assignments of those months
    carry the stored score (``core.derive.subgroups.frames.stored_risk_for``) instead of a CMS-HCC
    run: a stored 2026 score altered by hand shows in November's assignment (a full derive would
    compute it again). Patients without a stored score are scored: every November row has one
    where the full derive gives one (``test_one_new_month_re_derives_only_the_months_it_can_change``)."""
    from core.store.models import Attribution, Condition, RiskScore

    engine = before_store
    assert import_path(engine, month_bundles / "after").ok
    r = RiskScore.__table__
    with engine.begin() as conn:
        november = select(Attribution.patient_id).where(Attribution.month == date(2026, 11, 1))
        recent = select(Condition.patient_id).where(Condition.onset_date >= date(2026, 10, 1))
        patient = conn.execute(select(RiskScore.patient_id).where(RiskScore.year == 2026, RiskScore.patient_id.in_(november),
                                                                  RiskScore.patient_id.not_in(recent))
                               .order_by(RiskScore.patient_id).limit(1)).scalar_one()  # fmt: skip
        conn.execute(r.update().where(r.c.patient_id == patient, r.c.year == 2026).values(score=9.8765))
    monkeypatch.setattr("core.derive.pipeline.derive_all", _no_full_derive)
    summary = derive_touched(engine)
    assert summary["mode"] == "months", summary
    with engine.connect() as conn:
        stored = conn.execute(select(SubgroupAssignment.risk_score).where(SubgroupAssignment.patient_id == patient,
                                                                          SubgroupAssignment.month == date(2026, 11, 1))).scalar_one()  # fmt: skip
    assert stored == pytest.approx(9.8765)


def test_a_patient_row_sent_again_marks_the_months_its_change_reaches(store_engine, month_bundles, tmp_path):
    """The importer compares the stored patient rows before and after a batch: a new name
    changes nothing derived, a death date the months from the earlier of the old and the new one,
    any other value (a decile made blank, a dual status) every month."""
    from core.derive.incremental import EVERY_MONTH, FROM_MONTH_KEY, clear_touched
    from core.store.models import AppSetting

    engine = store_engine
    assert import_path(engine, month_bundles / "before").ok
    stored = pd.read_csv(month_bundles / "before" / "patients.csv", dtype=str, keep_default_na=False)
    alive = stored[(stored["death_date"] == "") & (stored["deprivation_decile"] != "")]["patient_id"].tolist()[:3]

    def mark_after(name: str, change) -> str | None:
        clear_touched(engine, touched_patients(engine))
        _patients_only(month_bundles / "before", tmp_path / name, change)
        assert import_path(engine, tmp_path / name).ok
        with engine.connect() as conn:
            return conn.execute(select(AppSetting.value).where(AppSetting.key == FROM_MONTH_KEY)).scalar_one_or_none()

    def rows(ids, **values):
        return lambda frame: frame[frame["patient_id"].isin(ids)].assign(**values)

    assert mark_after("same", rows(alive)) == "9999-01-01"  # nothing dated changed
    assert mark_after("renamed", rows(alive[:1], given_name="Renamed")) == "9999-01-01"
    assert mark_after("died", rows(alive[:2], death_date="2026-03-10")) == "2026-03-01"
    assert mark_after("died_later", rows(alive[:1], death_date="2026-06-02")) == "2026-03-01"  # the earlier of the two
    assert mark_after("decile", rows(alive[2:], deprivation_decile="")) == EVERY_MONTH
    flipped = stored[stored["patient_id"] == alive[1]]["dual_status"].iloc[0].lower() not in ("true", "1")
    assert mark_after("dual", lambda f: rows(alive[1:2], dual_status=str(flipped).lower(), death_date="2026-03-10")(f)) == EVERY_MONTH


def test_the_earlier_cut_offs_are_the_kept_ones_or_counted_when_some_were_not_kept(before_store, month_bundles, tmp_path, monkeypatch):
    """The derive of new months re-assigns some patients in every month (a condition from the new
    months) with the earlier months' top-decile cut-offs: those the derives kept
    (``subgroup_thresholds``), or, when a month's was never kept (a store derived before they
    were), all counted from every stored score. Here one earlier month's is missing and the
    others are made 0 (everyone in the top decile): they are not used, and the result is a full
    derive's."""
    import json
    import shutil

    from sqlalchemy import update

    from core.derive.subgroups.assign import THRESHOLDS_KEY
    from core.store.models import AppSetting, RiskScore

    engine = before_store
    with engine.begin() as conn:
        kept = stored_thresholds(conn)
        partial = {fraction: {m: 0.0 for m in sorted(per)[1:]} for fraction, per in kept.items()}  # the first month missing
        assert all(len(per) > 6 for per in partial.values())
        conn.execute(update(AppSetting.__table__).where(AppSetting.key == THRESHOLDS_KEY).values(value=json.dumps(partial)))
        # a chronic adult with a payment HCC below the cut-off (complex with a cut-off of 0), given a
        # November diagnosis that changes no group: re-assigned in every month
        s, r = SubgroupAssignment, RiskScore
        who = conn.execute(select(s.patient_id).join(r, (r.patient_id == s.patient_id) & (r.year == 2026))
                           .where(s.month == date(2026, 9, 1), s.subgroup == "chronic", r.hccs != "")
                           .order_by(s.patient_id)).scalars().first()  # fmt: skip
    assert who is not None
    after = tmp_path / "after"
    shutil.copytree(month_bundles / "after", after)
    conditions = pd.read_csv(after / "conditions.csv", dtype=str, keep_default_na=False)
    extra = {"condition_id": "C-late-uri", "patient_id": who, "code": "J06.9", "code_system": "ICD-10-CM",
             "description": "Acute upper respiratory infection", "onset_date": "2026-11-10", "resolved_date": "2026-11-20"}  # fmt: skip
    pd.concat([conditions, pd.DataFrame([extra])]).to_csv(after / "conditions.csv", index=False)
    assert import_path(engine, after).ok
    monkeypatch.setattr("core.derive.pipeline.derive_all", _no_full_derive)
    summary = derive_touched(engine)
    monkeypatch.undo()
    assert summary["mode"] == "months" and summary["subgroups"]["patients_every_month"] > 0, summary
    with engine.connect() as conn:
        september = conn.execute(select(s.subgroup).where(s.patient_id == who, s.month == date(2026, 9, 1))).scalar_one()
    assert september == "chronic"
    assert_same_as_full_derive(engine)
