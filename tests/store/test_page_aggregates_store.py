"""The pages' monthly aggregates (core.derive.page_aggregates) give the figures the pages computed
before from every patient row: the e-consults page (volume by team and specialty, specialist spend
of patients with and without an e-consult in the window, its patients and member-months) and the
review's subgroup moves and costliest patients. On the sample network, SQLite and PostgreSQL, after
a full derive and after incremental derives (an override, a small import with an e-consult and a
team change), and on a store derived before the tables existed.
"""

from datetime import date
from unittest import mock

import pandas as pd
import pytest
from sqlalchemy import delete, select, true
from sqlmodel import SQLModel

from core.access.policy import Scope
from core.derive.incremental import derive_touched
from core.derive.page_aggregates import (
    VERSION_KEY,
    build_page_aggregates,
    costliest_patients,
    ensure_page_aggregates,
    stored_subgroup_transitions,
)
from core.derive.pipeline import derive_all
from core.derive.subgroups.overrides import set_override
from core.derive.subgroups.transitions import subgroup_transitions
from core.ingest import import_path
from core.metrics.runout import claims_lags
from core.store.models import AppSetting, Patient, PatientMonthActivity, SubgroupAssignment
from core.store.months import add_months, window_months
from core.views.econsults import (
    _specialist_spend,
    econsult_rows,
    econsult_rows_from_encounters,
    econsults,
    specialist_spend_from_claims,
)
from core.views.true_costs import claims_by_network
from tests.tables import table_frames

AGGREGATES = ("econsult_month", "specialist_spend_month", "subgroup_move", "patient_month_cost", "claims_lag_month",
              "specialist_spend_patient_month", "claims_network_month", "team_month_minutes")  # fmt: skip
LEAD = Scope("lead@example.org", "Lead", "admin", (), (), True, True)


def _frame(engine, stmt) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(stmt, conn)


def _months(engine) -> list[date]:
    s = SubgroupAssignment
    return sorted(pd.to_datetime(_frame(engine, select(s.month).distinct())["month"]).dt.date)


def _teams(engine) -> list[str]:
    s = SubgroupAssignment
    return sorted(_frame(engine, select(s.team_id).distinct())["team_id"].dropna())


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys).reset_index(drop=True)


def assert_econsults_as_before(engine, ends: list[date] | None = None) -> int:
    """Every window (month, quarter, 12 months) ending in every third month and in the last one (or
    in ``ends``: after a change, the windows that hold it), network-wide, per team and for two teams:
    the aggregates' figures equal the encounter and claim computation (counts exactly, sums of money
    to 1e-9). Each team alone: in the windows to the last month and to each of ``ends``; in the
    sweep's earlier windows two teams in turn, so that every team is also compared at an earlier
    end (with every team at every end, these comparisons took 119 of this file's 309 s on
    SQLite). Returns how many spend tables were compared."""
    months, teams = _months(engine), _teams(engine)
    sweep = ends is None
    compared = 0
    for i, end in enumerate(sorted({*months[::3], months[-1]}) if sweep else ends):
        alone = teams if not sweep or end == months[-1] else [teams[(2 * i) % len(teams)], teams[(2 * i + 1) % len(teams)]]
        scopes = [None, *[(t,) for t in alone], tuple(teams[:2])]
        for window in ("month", "quarter", "12m"):
            ms = tuple(window_months(end, window))
            for scope in scopes:
                new, old = econsult_rows(engine, ms, scope), econsult_rows_from_encounters(engine, ms, scope)
                keys = ["team_id", "specialty"]
                new, old = _sorted(new, keys).astype({c: "float64" for c in new.columns[2:]}), _sorted(old, keys).astype(
                    {c: "float64" for c in old.columns[2:]})  # fmt: skip
                pd.testing.assert_frame_equal(new, old, check_exact=True, obj=f"econsults {end} {window} {scope}")
                for suppress in (False, True):
                    got = _specialist_spend(engine, ms, scope, suppress)
                    want = specialist_spend_from_claims(engine, ms, scope, suppress)
                    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9, check_dtype=False,
                                                  obj=f"spend {end} {window} {scope} {suppress}")  # fmt: skip
                    exact = got[["group", "patients", "member_months", "suppressed"]]
                    pd.testing.assert_frame_equal(exact, want[exact.columns], check_dtype=False)  # counts exactly
                    compared += 1
    return compared


def assert_review_as_before(engine, months: list[date] | None = None) -> int:
    """Moves and the 10 costliest patients of every team, subgroup and month (or month of ``months``:
    after a change, those it can reach) equal the member-by-member computation. Returns how many
    moves were compared."""
    s, act = SubgroupAssignment, PatientMonthActivity
    keys = _frame(engine, select(s.team_id, s.subgroup, s.month).distinct()
                  .where(s.month.in_(months) if months is not None else true()))  # fmt: skip
    moved = 0
    for team_id, subgroup, month in keys.itertuples(index=False):
        month = pd.Timestamp(month).date()
        want = subgroup_transitions(engine, month, team_id, subgroup)
        got = stored_subgroup_transitions(engine, month, team_id, subgroup)
        pd.testing.assert_frame_equal(got, want, obj=f"moves {team_id} {subgroup} {month}")
        moved += len(got)
        total = act.cost_internal_usd + act.cost_external_usd
        members = select(s.patient_id).where(s.month == month, s.team_id == team_id, s.subgroup == subgroup)
        before = (
            select(act.patient_id, (Patient.family_name + ", " + Patient.given_name).label("name"), total.label("cost_total_usd"),
                   act.cost_internal_usd, act.cost_external_usd)
            .join(Patient, Patient.patient_id == act.patient_id)
            .where(act.month == month, act.patient_id.in_(members))
            .order_by(total.desc(), act.patient_id)
            .limit(10)
        )  # fmt: skip
        pd.testing.assert_frame_equal(costliest_patients(engine, month, team_id, subgroup, 10), _frame(engine, before),
                                      check_exact=True, obj=f"costliest {team_id} {subgroup} {month}")  # fmt: skip
    return moved


def _scanned(engine, read, *args):
    """``read(engine, *args)`` with the tables' version mark taken away: the readers' fallback that
    groups the encounters, as on a store without the tables."""
    with engine.begin() as conn:
        mark = conn.execute(select(AppSetting.value).where(AppSetting.key == VERSION_KEY)).scalar()
        conn.execute(delete(AppSetting.__table__).where(AppSetting.key == VERSION_KEY))
    try:
        return read(engine, *args)
    finally:
        with engine.begin() as conn:
            conn.execute(AppSetting.__table__.insert().values(key=VERSION_KEY, value=mark))


def assert_claims_by_network_as_before(engine) -> int:
    """The true costs page's claims by team, month, category, specialty, facility and network
    status from ``claims_network_month`` equal those grouped from every claim joined to its
    attribution, for the last 12 months, each month alone, one team and two. Returns the claims."""
    months = _months(engine)
    teams = _teams(engine)
    keys = ["team_id", "month", "cost_category", "specialty", "facility", "in_network"]
    cases = [(months[-12:], None), *[([m], None) for m in months[::5]], (months[-12:], (teams[0],)), (months, tuple(teams[:2]))]
    for ms, scope in cases:
        stored = _sorted(claims_by_network(engine, ms, scope), keys)
        scanned = _sorted(_scanned(engine, claims_by_network, ms, scope), keys)
        assert len(stored) > 0
        pd.testing.assert_frame_equal(stored.drop(columns="paid_usd"), scanned.drop(columns="paid_usd"), check_dtype=False,
                                      obj=f"claims {ms[0]}..{ms[-1]} {scope}")  # fmt: skip
        pd.testing.assert_series_equal(stored["paid_usd"], scanned["paid_usd"], check_exact=False, rtol=1e-9)
    whole = claims_by_network(engine, months)
    assert (~whole["in_network"]).any() and whole["in_network"].any()  # both kinds of rows compared
    return int(whole["claims"].sum())


def assert_minutes_used_as_before(engine) -> float:
    """The true costs page's minutes used per team, month and role from ``team_month_minutes``
    equal those summed from every internal encounter and its staff minutes, for the last 12
    months, each month alone and one team. Returns the minutes."""
    from core.derive.costs import load_cost_settings, used_minutes_by_team_month

    maps = load_cost_settings().process_maps
    months, teams = _months(engine), _teams(engine)
    keys = ["team_id", "month", "role"]
    for ms, scope in [(months[-12:], None), *[([m], None) for m in months[::5]], (months, (teams[0],))]:
        stored = _sorted(used_minutes_by_team_month(engine, ms, maps, scope), keys)
        scanned = _sorted(_scanned(engine, used_minutes_by_team_month, ms, maps, scope), keys)
        assert len(stored) > 0
        pd.testing.assert_frame_equal(stored, scanned, check_exact=False, rtol=1e-9, check_dtype=False, obj=f"minutes {ms[0]} {scope}")
    return float(used_minutes_by_team_month(engine, months, maps)["used_minutes"].sum())


def assert_claims_lags_as_before(engine) -> None:
    """The claims run-out lags from ``claims_lag_month`` equal those grouped from every claim (the
    reader's fallback on a store without the tables)."""
    stored = claims_lags(engine)
    scanned = _scanned(engine, claims_lags)
    assert len(stored) > 0 and stored["paid_month"].isna().any() == scanned["paid_month"].isna().any()

    def key(f):
        return (
            f.assign(paid_month=f["paid_month"].astype(str)).sort_values(["service_month", "paid_month"]).reset_index(drop=True)
        )

    pd.testing.assert_frame_equal(key(stored), key(scanned), check_exact=False, rtol=1e-9)


def aggregate_tables(engine) -> dict[str, pd.DataFrame]:
    return table_frames(engine, AGGREGATES)


def whole_derive_without_cells(engine) -> None:
    """``derive_all`` with its last step, the cells, left out: every subgroup, the activity and the
    pages' monthly tables built whole. The cells (three quarters of its time on the sample network)
    read none of these tables and are compared in tests/store/test_incremental_derive_store.py."""
    with mock.patch("core.derive.cells.build_cells", return_value={}) as cells:
        derive_all(engine)
    cells.assert_called_once_with(engine)  # the stand-in, not the real step, was called


def assert_same_as_full_derive(engine) -> None:
    incremental = aggregate_tables(engine)
    whole_derive_without_cells(engine)
    full = aggregate_tables(engine)
    for name in AGGREGATES:
        assert len(incremental[name]) == len(full[name]) > 0, name
        floats = ("specialist_spend_month", "claims_lag_month", "specialist_spend_patient_month",
                  "claims_network_month", "team_month_minutes")  # float sums: to 1e-9
        exact = name not in floats
        if name == "specialist_spend_month":  # counts exactly
            pd.testing.assert_frame_equal(incremental[name].drop(columns="specialist_spend_usd"),
                                          full[name].drop(columns="specialist_spend_usd"), obj=name)  # fmt: skip
        pd.testing.assert_frame_equal(incremental[name], full[name], check_exact=exact, rtol=1e-9, obj=name)


def test_the_pages_figures_from_the_aggregates_equal_todays(sample_store):
    engine = sample_store
    assert assert_econsults_as_before(engine) > 0
    assert assert_review_as_before(engine) > 0
    assert_claims_lags_as_before(engine)
    assert assert_claims_by_network_as_before(engine) > 0
    assert assert_minutes_used_as_before(engine) > 0
    data = econsults(engine, tuple(window_months(_months(engine)[-1], "12m")), None, False)
    spend = data["spend"].set_index("group")
    assert set(spend.index) == {"with e-consult", "without e-consult"}  # the window test splits the network
    assert (spend["patients"] < spend["member_months"]).all()  # distinct patients, not member-months


def test_a_whole_build_that_fails_keeps_the_tables_and_their_indexes(sample_store, monkeypatch):
    """A whole build drops each table's secondary indexes for its write; failing at its last step
    (the specialist spend) it rolls back with every row and index (on SQLite, DDL before the first
    write of the transaction would otherwise be committed on its own)."""
    from sqlalchemy import inspect

    import core.derive.page_aggregates as page_aggregates

    engine = sample_store

    def indexes() -> dict[str, set]:  # the secondary indexes and the primary key (PostgreSQL drops it too)
        found = inspect(engine)
        return {name: {i["name"] for i in found.get_indexes(name)} | {tuple(found.get_pk_constraint(name)["constrained_columns"])}
                for name in AGGREGATES}  # fmt: skip

    wanted = {name: {i.name for i in SQLModel.metadata.tables[name].indexes}
              | {tuple(c.name for c in SQLModel.metadata.tables[name].primary_key.columns)} for name in AGGREGATES}  # fmt: skip
    assert wanted["subgroup_move"] and wanted["patient_month_cost"]  # the first tables written
    assert all(indexes()[name] >= wanted[name] for name in AGGREGATES)
    build_page_aggregates(engine)  # a whole build puts back what it dropped
    assert all(indexes()[name] >= wanted[name] for name in AGGREGATES), indexes()
    before = aggregate_tables(engine)

    def disk_full(conn):
        raise RuntimeError("disk full")

    monkeypatch.setattr(page_aggregates, "build_spend", disk_full)
    with pytest.raises(RuntimeError, match="disk full"):
        build_page_aggregates(engine)
    after = indexes()
    assert all(after[name] >= wanted[name] for name in AGGREGATES), after
    for name, frame in aggregate_tables(engine).items():
        pd.testing.assert_frame_equal(frame, before[name], obj=name)


def _with_econsult_and_team_change(tables: dict) -> None:
    """An e-consult and a specialist claim for the first patient; the second patient's last month
    moved to another team."""
    att = tables["attribution.csv"]
    first, last_month = att.iloc[0], max(att["month"])
    enc = tables["encounters.csv"]
    rows = [{c: "" for c in enc.columns} | {"encounter_id": "E_NEW_EC", "patient_id": first["patient_id"], "kind": "e_consult",
                                            "start_date": f"{last_month}-05", "responded_date": f"{last_month}-09",
                                            "resolved_without_visit": "true", "specialty": "cardiology", "in_network": "true",
                                            "paid_usd": "0"},
            {c: "" for c in enc.columns} | {"encounter_id": "E_NEW_SV", "patient_id": first["patient_id"], "kind": "specialist_visit",
                                            "start_date": f"{last_month}-12", "in_network": "false", "paid_usd": "321.5"}]  # fmt: skip
    tables["encounters.csv"] = pd.concat([enc, pd.DataFrame(rows)], ignore_index=True)
    second = att["patient_id"].drop_duplicates().iloc[1]
    teams = sorted(att["team_id"].unique())
    here = (att["patient_id"] == second) & (att["month"] == max(att.loc[att["patient_id"] == second, "month"]))
    other = next(t for t in teams if t != att.loc[here, "team_id"].iloc[0])
    practice = att.loc[att["team_id"] == other, "practice_id"].iloc[0]
    att.loc[here, ["team_id", "practice_id"]] = [other, practice]
    pcp = att.loc[att["team_id"] == other, "pcp_id"].iloc[0] if "pcp_id" in att else None
    if pcp is not None:
        att.loc[here, "pcp_id"] = pcp
    tables["attribution.csv"] = att


def test_incremental_derives_keep_the_aggregates_exact(sample_store, sample_bundle, tmp_path):
    from tests.store.test_incremental_derive_store import _patient_with_months, _small_bundle

    engine = sample_store
    patient, month, subgroup = _patient_with_months(engine)
    set_override(engine, LEAD, patient, "complex" if subgroup != "complex" else "healthy", month, "weekly calls")
    assert assert_review_as_before(engine, [month, add_months(month, 1)]) > 0  # its moves in and out, its cost's subgroup
    assert_same_as_full_derive(engine)

    ids = sorted(aggregate_tables(engine)["patient_month_cost"]["patient_id"].unique())[::60]
    bundle = _small_bundle(sample_bundle, tmp_path / "small", ids, _with_econsult_and_team_change)
    report = import_path(engine, bundle)
    assert report.ok, report.to_text()
    summary = derive_touched(engine)
    assert summary["mode"] == "incremental", summary.get("why")
    spend = summary["activity"]["pages"]["spend"]
    assert spend["changed"] + spend["inserted"] >= 2 and spend["patient_months"] >= 2  # the e-consult, the team change
    assert_econsults_as_before(engine, _months(engine)[-1:])  # the e-consult's month, and the 12 months to it
    assert_review_as_before(engine)  # the team change is in the second patient's last month: every month
    assert_claims_lags_as_before(engine)
    assert_claims_by_network_as_before(engine)
    assert_minutes_used_as_before(engine)
    assert_same_as_full_derive(engine)


def _last_month_only(tables: dict) -> None:
    """The patients' rows of the last month only (the other dated files emptied), with an
    e-consult, an out-of-network claim and a team change in that month."""
    last = max(tables["attribution.csv"]["month"])
    tables["attribution.csv"] = tables["attribution.csv"].loc[lambda f: f["month"] == last].copy()
    tables["encounters.csv"] = tables["encounters.csv"].loc[lambda f: f["start_date"] >= f"{last}-01"]
    kept = set(tables["encounters.csv"]["encounter_id"])
    tables["staff_minutes.csv"] = tables["staff_minutes.csv"].loc[lambda f: f["encounter_id"].isin(kept)]
    for name in ("conditions.csv", "measurements.csv", "medications.csv", "procedures.csv"):
        if name in tables:
            tables[name] = tables[name].iloc[0:0]
    _with_econsult_and_team_change(tables)


def test_an_import_of_one_month_rebuilds_the_monthly_tables_from_that_month(sample_store, sample_bundle, tmp_path):
    """The claims lags, claims by network, minutes and e-consult volume are rebuilt from the first
    month the import can change, not whole, and equal a full derive."""
    from tests.store.test_incremental_derive_store import _small_bundle

    engine = sample_store
    last = _months(engine)[-1]
    ids = sorted(aggregate_tables(engine)["patient_month_cost"]["patient_id"].unique())[::80]
    before = aggregate_tables(engine)
    report = import_path(engine, _small_bundle(sample_bundle, tmp_path / "month", ids, _last_month_only))
    assert report.ok, report.to_text()
    summary = derive_touched(engine)
    assert summary["mode"] == "incremental", summary.get("why")
    assert summary["activity"]["pages"]["monthly_from"] == last.isoformat()
    after = aggregate_tables(engine)
    new_claims = after["claims_network_month"].loc[lambda f: pd.to_datetime(f["month"]).dt.date == last, "claims"].sum()
    assert new_claims == before["claims_network_month"].loc[lambda f: pd.to_datetime(f["month"]).dt.date == last, "claims"].sum() + 1
    assert_claims_by_network_as_before(engine)
    assert_minutes_used_as_before(engine)
    assert_claims_lags_as_before(engine)
    assert_econsults_as_before(engine, [last])  # the windows that hold the new month
    assert_same_as_full_derive(engine)


def test_a_store_derived_before_the_tables_gets_them_once(sample_store):
    engine = sample_store
    before = aggregate_tables(engine)
    with engine.begin() as conn:
        for name in AGGREGATES:
            conn.execute(delete(SQLModel.metadata.tables[name]))
        conn.execute(delete(AppSetting.__table__).where(AppSetting.key == VERSION_KEY))
    assert ensure_page_aggregates(engine)["subgroup_move"] == len(before["subgroup_move"])
    assert ensure_page_aggregates(engine) is None
    after = aggregate_tables(engine)
    for name in AGGREGATES:
        pd.testing.assert_frame_equal(after[name], before[name], obj=name)
    assert build_page_aggregates(engine)["econsult_month"] == len(before["econsult_month"])


def test_the_spend_rows_from_a_month_equal_those_of_the_whole_stream(sample_store):
    """The specialist spend rows of the months from ``since`` (the derive of new months), read
    from those months and a few summary rows per patient of the 11 months before, equal the rows
    of the whole stream: distances to the last and next e-consult, the previous attributed month
    and the previous month with the same team; of some patients, and before a month, too."""
    from core.derive.page_aggregates import select_patient_spend

    engine, dialect = sample_store, sample_store.dialect.name
    months = _months(engine)
    key = ["patient_id", "month"]

    def rows(stmt) -> pd.DataFrame:
        frame = _frame(engine, stmt).assign(month=lambda f: pd.to_datetime(f["month"]).dt.date)
        return frame.sort_values(key).reset_index(drop=True)

    whole = rows(select_patient_spend(dialect))
    assert whole["since_econsult"].lt(12).any() and whole["gap_team"].ne(whole["gap_any"]).any()  # the cases are there
    for since in (months[1], months[len(months) // 2], months[-1]):
        want = whole[whole["month"] >= since].reset_index(drop=True)
        pd.testing.assert_frame_equal(rows(select_patient_spend(dialect, since=since)), want, check_dtype=False)
    ids = sorted(whole["patient_id"].unique())[::7]
    since, before = months[len(months) // 3], months[-2]
    want = whole[whole["patient_id"].isin(ids) & (whole["month"] >= since) & (whole["month"] < before)].reset_index(drop=True)
    pd.testing.assert_frame_equal(rows(select_patient_spend(dialect, ids, since=since, before=before)), want, check_dtype=False)


def test_the_spend_rows_from_a_month_read_back_past_the_month_before_for_moves_and_gaps(store_engine):
    """From a month, the rows take their previous month and previous month with the team from the
    month before, and from further back only for the patients not with that team then: one back
    with the team they left, one back after two months without a team, one new to a team, one who
    left a team and comes back to it within the window's reach and beyond it. Each equals the
    whole stream, from every month."""
    from core.derive.page_aggregates import select_patient_spend
    from core.store.models import Attribution
    from tests.builders import two_team_network

    months = tuple(date(2025, m, 1) for m in range(8, 13)) + tuple(date(2026, m, 1) for m in range(1, 7))
    two_team_network(store_engine, months)
    a = Attribution.__table__
    with store_engine.begin() as conn:
        def team(patient, since, until, to):
            conn.execute(a.update().where(a.c.patient_id == patient, a.c.month >= since, a.c.month <= until).values(team_id=to))
        team("P1", date(2026, 4, 1), date(2026, 4, 1), "A2")  # A1, A2 in April, A1 again in May
        conn.execute(delete(a).where(a.c.patient_id == "P2", a.c.month.in_([date(2026, 3, 1), date(2026, 4, 1)])))  # back in May
        team("P4", date(2026, 5, 1), date(2026, 6, 1), "A1")  # new to A1 in May
        team("P5", date(2025, 9, 1), date(2026, 4, 1), "A1")  # with A2 in August, back in May: 9 months later
        team("P6", date(2025, 8, 1), date(2025, 8, 1), "A1")  # with A1 in August only: 10 months before June, after a move
        team("P6", date(2026, 6, 1), date(2026, 6, 1), "A1")
    dialect, key = store_engine.dialect.name, ["patient_id", "month"]

    def rows(stmt) -> pd.DataFrame:
        frame = _frame(store_engine, stmt).assign(month=lambda f: pd.to_datetime(f["month"]).dt.date)
        return frame.sort_values(key).reset_index(drop=True)

    whole = rows(select_patient_spend(dialect)).set_index(key)
    may, june = date(2026, 5, 1), date(2026, 6, 1)
    assert whole.loc[("P1", may), ["gap_any", "gap_team"]].tolist() == [1, 2]
    assert whole.loc[("P2", may), ["gap_any", "gap_team"]].tolist() == [3, 3]
    assert whole.loc[("P4", may), ["gap_any", "gap_team"]].tolist() == [1, 12]
    assert whole.loc[("P5", may), ["gap_any", "gap_team"]].tolist() == [1, 9]
    assert whole.loc[("P6", june), ["gap_any", "gap_team"]].tolist() == [1, 10]
    whole = whole.reset_index()
    for since in months[1:]:
        want = whole[whole["month"] >= since].reset_index(drop=True)
        pd.testing.assert_frame_equal(rows(select_patient_spend(dialect, since=since)), want, check_dtype=False, obj=str(since))


def test_the_window_test_on_a_hand_built_network(store_engine):
    """An e-consult in a month the patient is not attributed counts for the windows holding it, one
    a year back counts for 12 months only, and a patient who changes team is one patient of the
    network and one of each team."""
    from core.store.models import Attribution, Encounter
    from tests.builders import add_rows, two_team_network

    months = (date(2026, 8, 1), date(2026, 9, 1), date(2026, 10, 1))
    two_team_network(store_engine, months)
    add_rows(store_engine, [
        Encounter(encounter_id="EC1", patient_id="P1", team_id="A1", kind="e_consult", start_date=date(2026, 7, 20), is_internal=True,
                  responded_date=date(2026, 7, 23), specialty="cardiology"),
        Encounter(encounter_id="SV1", patient_id="P1", kind="specialist_visit", start_date=date(2026, 9, 3), is_internal=False,
                  paid_usd=100.0),
        Encounter(encounter_id="EC2", patient_id="P2", team_id="A1", kind="e_consult", start_date=date(2026, 1, 5), is_internal=True,
                  specialty="cardiology"),
    ])  # fmt: skip
    with store_engine.begin() as conn:
        conn.execute(Attribution.__table__.update().where(Attribution.patient_id == "P4", Attribution.month == months[-1])
                     .values(team_id="A1"))  # fmt: skip
    build_page_aggregates(store_engine)

    def spend(end, window, scope=None):
        ms = tuple(window_months(end, window))
        got = _specialist_spend(store_engine, ms, scope, False)
        want = specialist_spend_from_claims(store_engine, ms, scope, False)
        pd.testing.assert_frame_equal(got, want, check_dtype=False)
        return got.set_index("group")

    quarter_to_sep = spend(date(2026, 9, 1), "quarter")  # July to September: the July e-consult is in it
    assert quarter_to_sep.loc["with e-consult", ["patients", "member_months", "specialist_spend_usd"]].tolist() == [1, 2, 100.0]
    quarter_to_oct = spend(date(2026, 10, 1), "quarter")  # August to October: no e-consult
    assert list(quarter_to_oct.index) == ["without e-consult"] and quarter_to_oct["patients"].iloc[0] == 6
    year = spend(date(2026, 10, 1), "12m")
    assert year.loc["with e-consult", "patients"] == 2  # P1 and P2 (January)
    assert spend(date(2026, 10, 1), "quarter", ("A1",))["patients"].sum() == 4  # P4's October at A1
    assert spend(date(2026, 10, 1), "quarter", ("A2",))["patients"].sum() == 3
    assert spend(date(2026, 10, 1), "quarter", ("A1", "A2"))["patients"].sum() == 6  # from the claims: P4 once


def _moves_by_hand(assigned: pd.DataFrame) -> pd.DataFrame:
    """The subgroup moves of ``assigned`` (patient_id, month, team_id, subgroup), month by month:
    for every assigned month and the month after the last, each patient's row against their row of
    the month before (arrived: none before or another subgroup; gone: none now)."""
    rows = {(r.patient_id, r.month): r for r in assigned.itertuples(index=False)}
    months = sorted(set(assigned["month"]))
    out = []
    for month in [*months, add_months(months[-1], 1)]:
        before = add_months(month, -1)
        for patient in sorted(set(assigned["patient_id"])):
            cur, prev = rows.get((patient, month)), rows.get((patient, before))
            if cur is not None and (prev is None or prev.subgroup != cur.subgroup):
                out.append((patient, month, cur.team_id, cur.subgroup, *((prev.team_id, prev.subgroup) if prev else (None, None))))
            if cur is None and prev is not None:
                out.append((patient, month, None, None, prev.team_id, prev.subgroup))
    frame = pd.DataFrame(out, columns=["patient_id", "month", "team_id", "subgroup", "prev_team_id", "prev_subgroup"])
    return frame.sort_values(["patient_id", "month"]).reset_index(drop=True)


def test_the_moves_of_gaps_returns_and_changes_on_a_hand_built_network(store_engine):
    """Subgroup moves from one pass over the assignments in key order equal a month-by-month
    comparison, for a patient with a month missing (gone, then back with nothing before), a
    subgroup change, a team change in the same subgroup (no move), a patient who leaves, one who
    joins late, and everyone gone the month after the last; built whole, from a month, and for
    a few patients."""
    from core.derive.page_aggregates import build_page_aggregates_from, replace_patient_rows_of
    from core.store.models import SubgroupMove
    from tests.builders import two_team_network

    months = tuple(date(2026, m, 1) for m in range(1, 7))
    two_team_network(store_engine, months)
    s = SubgroupAssignment
    with store_engine.begin() as conn:
        conn.execute(delete(s).where(s.patient_id == "P1", s.month == date(2026, 3, 1)))  # a gap in March
        conn.execute(s.__table__.update().where(s.patient_id == "P2", s.month >= date(2026, 4, 1)).values(subgroup="frail"))
        conn.execute(s.__table__.update().where(s.patient_id == "P3", s.month >= date(2026, 5, 1)).values(team_id="A2"))
        conn.execute(delete(s).where(s.patient_id == "P4", s.month >= date(2026, 3, 1)))  # leaves after February
        conn.execute(delete(s).where(s.patient_id == "P6", s.month < date(2026, 3, 1)))  # joins in March
    assigned = _frame(store_engine, select(s.patient_id, s.month, s.team_id, s.subgroup))
    assigned["month"] = pd.to_datetime(assigned["month"]).dt.date
    want = _moves_by_hand(assigned)
    columns = list(want.columns)

    def stored() -> pd.DataFrame:
        got = _frame(store_engine, select(*[SubgroupMove.__table__.c[c] for c in columns]))
        got["month"] = pd.to_datetime(got["month"]).dt.date
        return got.sort_values(["patient_id", "month"]).reset_index(drop=True)

    build_page_aggregates(store_engine)
    pd.testing.assert_frame_equal(stored(), want, check_dtype=False)
    by_patient = want.set_index(["patient_id", "month"])
    assert pd.isna(by_patient.loc[("P1", date(2026, 3, 1)), "subgroup"])  # gone in the gap
    assert pd.isna(by_patient.loc[("P1", date(2026, 4, 1)), "prev_subgroup"])  # back, with nothing the month before
    assert by_patient.loc[("P2", date(2026, 4, 1)), "prev_subgroup"] == "complex"
    assert ("P3", date(2026, 5, 1)) not in by_patient.index  # another team, same subgroup: not a move
    assert len(want[want["month"] == date(2026, 7, 1)]) == 5  # everyone assigned in June is gone in July

    with store_engine.begin() as conn:
        conn.execute(delete(SubgroupMove.__table__).where(SubgroupMove.month >= date(2026, 4, 1)))
    build_page_aggregates_from(store_engine, date(2026, 4, 1))
    pd.testing.assert_frame_equal(stored(), want, check_dtype=False)

    with store_engine.begin() as conn:
        conn.execute(delete(SubgroupMove.__table__).where(SubgroupMove.patient_id.in_(["P1", "P4", "P6"])))
        replace_patient_rows_of(conn, ["P1", "P4", "P6"])
    pd.testing.assert_frame_equal(stored(), want, check_dtype=False)


def _biggest_team_patient(engine) -> tuple[str, str, int]:
    """A patient of the team with the most patients in the last month: (patient, team, the team's patients)."""
    from core.store.models import Attribution

    a = Attribution
    att = _frame(engine, select(a.patient_id, a.team_id, a.month))
    last = att[att["month"] == att["month"].max()]
    team = last["team_id"].value_counts().idxmax()
    members = sorted(last.loc[last["team_id"] == team, "patient_id"])
    return members[len(members) // 2], team, att.loc[att["team_id"] == team, "patient_id"].nunique()


def test_a_one_patient_import_into_a_big_team_changes_its_spend_by_difference(sample_store, sample_bundle, tmp_path):
    """The spend follows the patient's own patient-months (not the team's): an e-consult and a
    specialist claim added, the rows they move are changed, and every table equals a full derive."""
    from tests.store.test_incremental_derive_store import _small_bundle

    engine = sample_store
    patient, team, members = _biggest_team_patient(engine)
    assert members > 50  # a team of many patients
    before = aggregate_tables(engine)

    def econsult_and_claim(tables: dict) -> None:
        enc, att = tables["encounters.csv"], tables["attribution.csv"]
        month = max(att["month"])
        rows = [{c: "" for c in enc.columns} | {"encounter_id": "E_BIG_EC", "patient_id": patient, "kind": "e_consult", "team_id": team,
                                                "start_date": f"{month}-04", "responded_date": f"{month}-06", "specialty": "neurology",
                                                "resolved_without_visit": "false", "in_network": "true", "paid_usd": "0"},
                {c: "" for c in enc.columns} | {"encounter_id": "E_BIG_SV", "patient_id": patient, "kind": "specialist_visit",
                                                "start_date": f"{month}-20", "in_network": "false", "paid_usd": "987.25"}]  # fmt: skip
        tables["encounters.csv"] = pd.concat([enc, pd.DataFrame(rows)], ignore_index=True)

    report = import_path(engine, _small_bundle(sample_bundle, tmp_path / "one", [patient], econsult_and_claim))
    assert report.ok, report.to_text()
    summary = derive_touched(engine)
    assert summary["mode"] == "incremental", summary.get("why")
    spend = summary["activity"]["pages"]["spend"]
    months = int((before["specialist_spend_patient_month"]["patient_id"] == patient).sum())
    assert 1 <= spend["patient_months"] <= 2 * months  # the patient's changed months (old and new), not the team's
    assert 1 <= spend["rows"] <= 2 * months and spend["changed"] + spend["inserted"] >= 1
    after = aggregate_tables(engine)
    mine = after["specialist_spend_patient_month"]
    assert mine.loc[mine["patient_id"] == patient, "specialist_spend_usd"].sum() == pytest.approx(
        before["specialist_spend_patient_month"].query("patient_id == @patient")["specialist_spend_usd"].sum() + 987.25
    )
    others = [f.loc[f["patient_id"] != patient].reset_index(drop=True) for f in (before["specialist_spend_patient_month"], mine)]
    pd.testing.assert_frame_equal(others[1], others[0])  # nobody else's patient-months were rewritten
    assert_econsults_as_before(engine, _months(engine)[-1:])  # the windows that hold the claims' month
    assert_same_as_full_derive(engine)


def _with_claim(patient: str, kind: str, paid_usd: str):
    """A bundle change: one claim of ``kind`` for ``patient`` in the last month."""

    def change(tables: dict) -> None:
        enc, month = tables["encounters.csv"], max(tables["attribution.csv"]["month"])
        row = {c: "" for c in enc.columns} | {"encounter_id": f"E_{kind}", "patient_id": patient, "kind": kind,
                                             "start_date": f"{month}-15", "in_network": "false", "paid_usd": paid_usd}  # fmt: skip
        tables["encounters.csv"] = pd.concat([enc, pd.DataFrame([row])], ignore_index=True)

    return change


def test_the_spend_is_rebuilt_when_it_does_not_hold_the_touched_patients(sample_store, sample_bundle, tmp_path):
    """A spend table changed outside the derive (a row gone): the difference cannot be taken, the
    derive rebuilds the spend whole, and it equals a full derive."""
    from core.store.models import SpecialistSpendMonth
    from tests.store.test_incremental_derive_store import _small_bundle

    engine = sample_store
    patient, _team, _members = _biggest_team_patient(engine)
    t = SpecialistSpendMonth.__table__
    with engine.begin() as conn:
        conn.execute(delete(t))
    report = import_path(
        engine, _small_bundle(sample_bundle, tmp_path / "one", [patient], _with_claim(patient, "specialist_visit", "55.5"))
    )
    assert report.ok, report.to_text()
    summary = derive_touched(engine)
    assert summary["mode"] == "incremental", summary.get("why")
    assert "does not hold" in summary["activity"]["pages"]["spend"]["why"]
    assert_same_as_full_derive(engine)


def test_changed_specialist_categories_rebuild_the_spend(sample_store, sample_bundle, tmp_path, monkeypatch, caplog):
    """The spend tables keep a fingerprint of the specialist categories they were built with: after
    the categories change, opening the store (ensure_page_aggregates) rebuilds them (and logs it),
    the page's figures follow the new categories, and an incremental derive does the same."""
    import dataclasses

    import core.derive.page_aggregates as aggregates
    import core.views.econsults as econsult_views
    from core.views.executive_settings import load_executive_settings
    from tests.store.test_incremental_derive_store import _small_bundle

    engine = sample_store
    months = tuple(window_months(_months(engine)[-1], "12m"))
    spend_before = _specialist_spend(engine, months, None, False)["specialist_spend_usd"].sum()
    assert ensure_page_aggregates(engine) is None  # built with today's categories: nothing to do

    def use(categories: tuple[str, ...]) -> None:
        settings = dataclasses.replace(load_executive_settings(), specialist_categories=categories)
        monkeypatch.setattr(aggregates, "load_executive_settings", lambda: settings)
        monkeypatch.setattr(econsult_views, "load_executive_settings", lambda: settings)

    use(("specialist", "imaging_lab"))
    with caplog.at_level("WARNING", logger="core.derive.page_aggregates"):
        rebuilt = ensure_page_aggregates(engine)
    assert rebuilt is not None and "specialist categories" in rebuilt["why"] and rebuilt["specialist_spend_month"] > 0
    assert "rebuilding specialist_spend_month" in caplog.text
    assert ensure_page_aggregates(engine) is None  # the new fingerprint is kept
    spend_after = _specialist_spend(engine, months, None, False)["specialist_spend_usd"].sum()
    assert spend_after > spend_before  # imaging and lab claims count now
    assert_econsults_as_before(engine)  # equal to the claims counted with the new categories

    use(("specialist",))  # back, and a derive (not the pages) sees it first
    patient, _team, _members = _biggest_team_patient(engine)
    report = import_path(
        engine, _small_bundle(sample_bundle, tmp_path / "one", [patient], _with_claim(patient, "ed_visit", "1200"))
    )
    assert report.ok, report.to_text()
    summary = derive_touched(engine)
    assert summary["mode"] == "incremental", summary.get("why")
    assert "specialist categories" in summary["activity"]["pages"]["spend"]["why"]
    assert _specialist_spend(engine, months, None, False)["specialist_spend_usd"].sum() == pytest.approx(spend_before, rel=1e-9)
    assert_econsults_as_before(engine, [months[-1]])  # rebuilt whole: the windows to the claim's month


def test_a_spend_that_cancels_is_summed_again(store_engine):
    """Two patients' claims in one spend row, one of them a million dollars: taking that patient's
    claim away by difference would leave 0.01 plus rounding; the row is summed again from its
    patient-months and equals the full build exactly. A patient who leaves empties no row of others."""
    from core.derive.page_aggregates import replace_spend_of
    from core.store.models import Attribution, Encounter
    from tests.builders import add_rows, two_team_network

    months = (date(2026, 9, 1), date(2026, 10, 1))
    two_team_network(store_engine, months)
    add_rows(store_engine, [
        Encounter(encounter_id="SV1", patient_id="P1", kind="specialist_visit", start_date=date(2026, 10, 3), is_internal=False,
                  paid_usd=0.01),
        Encounter(encounter_id="SV2", patient_id="P2", kind="specialist_visit", start_date=date(2026, 10, 8), is_internal=False,
                  paid_usd=1_000_000.07),
    ])  # fmt: skip
    build_page_aggregates(store_engine)
    with store_engine.begin() as conn:  # as an import would: P2's claim corrected away, P3 gone from the team
        conn.execute(delete(Encounter.__table__).where(Encounter.encounter_id == "SV2"))
        conn.execute(delete(Attribution.__table__).where(Attribution.patient_id == "P3"))
        done = replace_spend_of(conn, ["P2", "P3"])
    assert done["changed"] >= 1 and done["patient_months"] == 4  # P2's October, P3's two months
    got = aggregate_tables(store_engine)["specialist_spend_month"]
    october = got[(got["month"] == date(2026, 10, 1)) & (got["team_id"] == "A1")]
    assert october["specialist_spend_usd"].tolist() == [0.01] and october["member_months"].tolist() == [2]
    build_page_aggregates(store_engine)
    pd.testing.assert_frame_equal(got, aggregate_tables(store_engine)["specialist_spend_month"], check_exact=True)
