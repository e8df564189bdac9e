"""The cost report's reads on SQLite and PostgreSQL: the network's costs outside attributed months
from an anti-join in SQL, and a selection's tables from its own patients' rows, each equal to the
pandas computation over every encounter of the months (what ``python -m core costs`` did before)."""

from datetime import date

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from core.config.catalog import load_catalog
from core.derive import costs
from core.metrics import cost_reports
from core.store import models
from tests.builders import add_rows

AUG, SEP, OCT, NOV = date(2026, 8, 1), date(2026, 9, 1), date(2026, 10, 1), date(2026, 11, 1)


def build_network(engine) -> None:
    """Practice A (teams A1 with staff, A2 without), practice B (team B1 with staff). P1 is attributed
    in August to October, P2 in September only (A2), P3 in October only (B1), P4 never; P5 in every
    month (B1). Encounters inside and outside attributed months: recorded minutes, process maps,
    no team, unknown role, claims in and out of network, and one outside the months."""
    rows = [
        models.Practice(practice_id="A", name="A"),
        models.Practice(practice_id="B", name="B"),
        models.Team(team_id="A1", practice_id="A", name="A1"),
        models.Team(team_id="A2", practice_id="A", name="A2"),
        models.Team(team_id="B1", practice_id="B", name="B1"),
        models.Staff(staff_id="S1", team_id="A1", name="Dr", role="physician", annual_cost_usd=300_000, paid_hours_per_year=2000),
        models.Staff(staff_id="S2", team_id="A1", name="RN", role="registered_nurse", annual_cost_usd=100_000, paid_hours_per_year=2000),
        models.Staff(staff_id="S3", team_id="B1", name="Dr B", role="physician", annual_cost_usd=280_000, paid_hours_per_year=1900),
    ]  # fmt: skip
    rows += [models.Patient(patient_id=p, birth_date=date(1950, 1, 1), sex="female") for p in ("P1", "P2", "P3", "P4", "P5")]
    attributed = [("P1", m, "A", "A1") for m in (AUG, SEP, OCT)] + [("P2", SEP, "A", "A2"), ("P3", OCT, "B", "B1")]
    attributed += [("P5", m, "B", "B1") for m in (AUG, SEP, OCT, NOV)]
    rows += [models.Attribution(patient_id=p, month=m, practice_id=pr, team_id=t) for p, m, pr, t in attributed]
    rows += [models.SubgroupAssignment(patient_id="P1", month=m, subgroup="chronic") for m in (AUG, SEP)]
    rows.append(models.SubgroupAssignment(patient_id="P5", month=SEP, subgroup="complex"))

    def encounter(eid, pid, kind, day, internal, paid=0.0, team="A1", in_network=True):
        rows.append(models.Encounter(encounter_id=eid, patient_id=pid, team_id=team, kind=kind, start_date=day,
                                     is_internal=internal, paid_usd=paid, in_network=in_network))  # fmt: skip

    encounter("e01", "P1", "office_visit", date(2026, 9, 3), True)  # recorded minutes, attributed
    encounter("e02", "P1", "office_visit", date(2026, 11, 4), True)  # P1 not attributed in November: outside
    encounter("e03", "P1", "phone_call", date(2026, 11, 9), True, team=None)  # outside, no team: network rates
    encounter("e04", "P1", "admission", date(2026, 11, 20), False, 4100.25)  # outside claim
    encounter("e05", "P2", "office_visit", date(2026, 9, 10), True, team="A2")  # attributed, A2 has no staff
    encounter("e06", "P2", "ed_visit", date(2026, 10, 2), False, 812.4, team=None, in_network=False)  # outside, out of network
    encounter("e07", "P2", "portal_message", date(2026, 10, 5), True, team="A2")  # outside, minutes of an unknown role only
    encounter("e08", "P3", "office_visit", date(2026, 9, 15), True, team="B1")  # outside (P3 attributed in October only)
    encounter("e09", "P3", "specialist_visit", date(2026, 10, 15), False, 333.33, team=None)  # attributed
    encounter("e10", "P4", "e_consult", date(2026, 8, 30), True)  # never attributed
    encounter("e11", "P4", "imaging_lab", date(2026, 10, 31), False, 120.5, team=None)  # never attributed
    encounter("e12", "P4", "admission", date(2026, 12, 1), False, 9999.0, team=None)  # after the months
    encounter("e13", "P5", "office_visit", date(2026, 8, 12), True, team="B1")
    encounter("e14", "P5", "ed_visit", date(2026, 9, 12), False, 640.0, team=None)
    encounter("e15", "P5", "office_visit", date(2026, 11, 30), True, team="B1")
    rows += [models.StaffMinutes(encounter_id="e01", role="physician", minutes=20.0),
             models.StaffMinutes(encounter_id="e01", role="registered_nurse", minutes=10.0),
             models.StaffMinutes(encounter_id="e02", role="physician", minutes=25.0),
             models.StaffMinutes(encounter_id="e07", role="astronaut", minutes=30.0),
             models.StaffMinutes(encounter_id="e08", role="physician", minutes=15.0),
             models.StaffMinutes(encounter_id="e15", role="physician", minutes=12.5)]  # fmt: skip
    add_rows(engine, rows)


@pytest.fixture
def network(store_engine):
    build_network(store_engine)
    return store_engine


WINDOWS = [[AUG, SEP, OCT, NOV], [SEP, OCT], [NOV], [AUG]]


@pytest.mark.parametrize("months", WINDOWS)
def test_unattributed_costs_in_sql_equal_the_pandas_computation(network, months):
    catalog = load_catalog()
    settings = costs.load_cost_settings(catalog=catalog)
    expected = costs.unattributed_costs(costs.load_cost_inputs(network, months), settings, catalog)  # every encounter read
    got = costs.unattributed_costs_in_store(network, months, settings, catalog)
    assert_frame_equal(got, expected, check_exact=True)


def test_unattributed_costs_in_sql_by_hand(network):
    settings = costs.load_cost_settings()
    got = costs.unattributed_costs_in_store(network, [AUG, SEP, OCT, NOV], settings).set_index("month")
    assert got.index.tolist() == [AUG, SEP, OCT, NOV]
    assert got["patients"].tolist() == [1, 1, 2, 1]  # P4; P3; P2 (e07 costs nothing, e06 does) and P4; P1
    assert got[costs.COST_EXTERNAL].tolist() == pytest.approx([0.0, 0.0, 812.4 + 120.5, 4100.25])
    assert got[costs.COST_OUT_OF_NETWORK].tolist() == pytest.approx([0.0, 0.0, 812.4, 0.0])
    assert (got.loc[[AUG, SEP, NOV], costs.COST_INTERNAL] > 0).all() and got.loc[OCT, costs.COST_INTERNAL] == 0
    inputs = costs.load_unattributed_inputs(network, [AUG, SEP, OCT, NOV])
    assert inputs.encounters["encounter_id"].tolist() == ["e02", "e03", "e04", "e06", "e07", "e08", "e10", "e11"]
    assert inputs.staff_minutes["encounter_id"].tolist() == ["e02", "e07", "e08"]
    assert inputs.attribution.empty and len(inputs.staff) == 3


def test_nothing_outside_attributed_months(network):
    """Every encounter of August falls in an attributed month but P4's: without P4 nothing is left."""
    from sqlalchemy import delete

    with network.begin() as conn:
        conn.execute(delete(models.Encounter).where(models.Encounter.patient_id == "P4"))
    settings = costs.load_cost_settings()
    got = costs.unattributed_costs_in_store(network, [AUG], settings)
    expected = costs.unattributed_costs(costs.load_cost_inputs(network, [AUG]), settings)
    assert got.empty and list(got.columns) == list(expected.columns)
    assert costs.load_unattributed_inputs(network, [AUG]).staff_minutes.empty


def _report_as_before(engine, months, practice_id=None, team_id=None, subgroup=None) -> dict:
    """The cost report's selection tables computed the way the CLI did before: every encounter of the
    months costed, then the selection's patient-months kept."""
    catalog = load_catalog()
    settings = costs.load_cost_settings(catalog=catalog)
    inputs = costs.load_cost_inputs(engine, months)
    sums = costs.patient_month_sums(inputs, settings, catalog)
    wide = cost_reports.select_patient_months(costs.build_patient_month_costs(inputs, settings, catalog, sums), practice_id, team_id,
                                              subgroup)  # fmt: skip
    selected = cost_reports._selected_encounters(inputs, practice_id, team_id, subgroup)
    rates = costs.capacity_cost_rates(inputs.staff, settings)
    act = costs.activity_costs(inputs.encounters.loc[costs.isin(inputs.encounters["encounter_id"], selected)],
                               inputs.staff_minutes.loc[costs.isin(inputs.staff_minutes["encounter_id"], selected)], rates,
                               settings.process_maps, settings.rate_scope)  # fmt: skip
    used = costs.used_minutes_by_team_month(engine, list(inputs.months), settings.process_maps)  # every team
    unused = costs.capacity_use(inputs.staff, used, list(inputs.months), settings)
    return {"wide": wide, "composition": cost_reports._composition(wide, catalog),
            "minutes_source": costs.minutes_source_shares(act) if len(act) else None,
            "unattributed": costs.unattributed_costs(inputs, settings, catalog, sums), "capacity": unused}  # fmt: skip


SELECTIONS = [
    {},
    {"practice_id": "A"},
    {"practice_id": "B"},
    {"team_id": "A1"},
    {"team_id": "A2"},
    {"team_id": "B1", "subgroup": "complex"},
    {"subgroup": "chronic"},
    {"subgroup": costs.UNASSIGNED_SUBGROUP},
    {"practice_id": "A", "team_id": "B1"},  # nobody
]


@pytest.mark.parametrize("selection", SELECTIONS)
@pytest.mark.parametrize("months", WINDOWS[:2])
def test_a_selections_report_equals_the_report_over_every_encounter(network, selection, months):
    report = cost_reports.cost_report(network, months, **selection)
    before = _report_as_before(network, months, **selection)
    assert report["source"] == "encounters"  # no cells stored: the PMPMs come from the patient-months
    expected_pmpm = costs.cost_pmpm(before["wide"], ["practice_id", "team_id", "subgroup"])
    # (an empty selection reads no rows: its empty frame's id columns are object, not str, and print the same)
    assert_frame_equal(report["pmpm_by_team_subgroup"].reset_index(drop=True),
                       expected_pmpm[report["pmpm_by_team_subgroup"].columns].reset_index(drop=True), check_exact=True,
                       check_dtype=not expected_pmpm.empty)  # fmt: skip
    assert report["pmpm_by_team_subgroup"].empty == (selection == {"practice_id": "A", "team_id": "B1"})
    assert_frame_equal(report["composition"], before["composition"], check_exact=True)
    if before["minutes_source"] is None:
        assert report["minutes_source"].empty
    else:
        assert_frame_equal(report["minutes_source"], before["minutes_source"], check_exact=True)
    columns = ["month", "patients", costs.COST_INTERNAL, costs.COST_EXTERNAL, costs.COST_TOTAL]
    assert_frame_equal(report["unattributed"], before["unattributed"][columns], check_exact=True)
    assert not report["unattributed"].empty  # the network's, whatever the selection
    teams = before["capacity"].merge(pd.DataFrame({"team_id": ["A1", "A2", "B1"], "practice_id": ["A", "A", "B"]}), on="team_id")
    teams = cost_reports.select_patient_months(teams, selection.get("practice_id"), selection.get("team_id"))
    sums = teams.groupby("team_id", as_index=False)[cost_reports.UNUSED_SUMS].sum()
    got = report["unused_capacity"]
    assert got["team_id"].tolist() == sums["team_id"].tolist()
    assert got["used_minutes"].tolist() == sums["used_minutes"].tolist()
    assert got["capacity_minutes"].tolist() == sums["capacity_minutes"].tolist()


def test_selection_patients(network):
    from core.store.queries import read_frame

    def ids(**selection):
        stmt = cost_reports.selection_patients([AUG, SEP, OCT, NOV], **selection)
        return sorted(read_frame(network, stmt)["patient_id"])

    assert cost_reports.selection_patients([SEP]) is None  # the whole network: no filter
    assert ids(practice_id="A") == ["P1", "P2"]
    assert ids(team_id="B1") == ["P3", "P5"]
    assert ids(subgroup="chronic") == ["P1"]
    assert ids(team_id="B1", subgroup="complex") == ["P5"]
    assert ids(subgroup=costs.UNASSIGNED_SUBGROUP) == ["P1", "P2", "P3", "P5"]
    assert ids(practice_id="A", team_id="B1") == []
