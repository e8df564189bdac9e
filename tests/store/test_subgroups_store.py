"""Subgroup assignment, overrides, transitions and rule previews against the store (SQLite, PostgreSQL)."""

from datetime import date

import pytest
from sqlmodel import Session, select

from core.access.policy import Scope
from core.derive.subgroups.assign import assign_subgroups
from core.derive.subgroups.overrides import lift_override, set_override
from core.derive.subgroups.rules import DEFAULT_RULES_PATH, load_rules, parse_rules
from core.derive.subgroups.transitions import transitions
from core.store.models import (
    Attribution,
    Condition,
    Encounter,
    Measurement,
    Patient,
    Practice,
    RiskScore,
    SubgroupAssignment,
    SubgroupOverride,
    Team,
)
from core.views.admin_rules import preview_rules

MONTHS = [date(2025, 4, 1), date(2025, 5, 1), date(2025, 6, 1)]
RULES = load_rules()
LEAD = Scope("lead@example.org", "Lead", "admin", (), (), True, True)  # who sets and lifts overrides


def seed(engine) -> None:
    with Session(engine) as s:
        s.add(Practice(practice_id="P1", name="Practice 1"))
        s.add_all([Team(team_id="T1", practice_id="P1", name="Team 1"), Team(team_id="T2", practice_id="P1", name="Team 2")])
        s.flush()
        s.add_all(
            [
                Patient(patient_id="A", birth_date=date(1945, 1, 1), sex="female"),      # 80, falls: frail
                Patient(patient_id="B", birth_date=date(1965, 1, 1), sex="male"),        # I10 from May: healthy -> chronic
                Patient(patient_id="C", birth_date=date(1985, 1, 1), sex="female"),      # BMI 32: at risk
                Patient(patient_id="D", birth_date=date(1950, 1, 1), sex="male", death_date=date(2025, 5, 10)),
                Patient(patient_id="E", birth_date=date(1990, 1, 1), sex="female"),      # healthy
            ]
        )
        s.flush()
        s.add_all(
            [Attribution(patient_id=p, month=m, practice_id="P1", team_id="T2" if p == "C" else "T1") for p in "ABCDE" for m in MONTHS]
        )
        s.add_all(
            [
                Condition(condition_id="c1", patient_id="A", code="R29.6", onset_date=date(2024, 2, 1)),
                Condition(condition_id="c2", patient_id="B", code="I10", onset_date=date(2025, 5, 3)),
                Condition(condition_id="c3", patient_id="D", code="E11.9", onset_date=date(2020, 1, 1)),
                Condition(condition_id="c4", patient_id="D", code="I50.9", onset_date=date(2020, 1, 1)),
                Condition(condition_id="c5", patient_id="D", code="N18.30", onset_date=date(2020, 1, 1)),
            ]
        )
        s.add(Measurement(measurement_id="m1", patient_id="C", measured_date=date(2025, 3, 10), code="39156-5", value=32.0))
        s.add(Encounter(encounter_id="e1", patient_id="E", kind="office_visit", start_date=date(2025, 4, 2), is_internal=True))
        s.commit()


def stored(engine) -> dict[tuple[str, date], tuple[str, bool]]:
    with Session(engine) as s:
        return {(a.patient_id, a.month): (a.subgroup, a.overridden) for a in s.exec(select(SubgroupAssignment))}


def test_assign_override_recompute_lift_round_trip(store_engine):
    seed(store_engine)
    summary = assign_subgroups(store_engine, RULES)
    # D died in May: assigned April and May only
    assert summary["rows"] == 14 and summary["months"] == 3
    rows = stored(store_engine)
    assert (("D", date(2025, 6, 1)) in rows, rows[("D", date(2025, 5, 1))][0]) == (False, "complex")
    assert rows[("A", date(2025, 6, 1))] == ("frail", False)
    assert [rows[("B", m)][0] for m in MONTHS] == ["healthy", "chronic", "chronic"]
    assert rows[("C", date(2025, 6, 1))][0] == "at_risk"
    assert sum(summary["mix"].values()) == 14
    with Session(store_engine) as s:
        risk = {(r.patient_id, r.year): r for r in s.exec(select(RiskScore))}
        a = s.get(SubgroupAssignment, ("D", date(2025, 5, 1)))
    assert risk[("D", 2025)].hccs == "HCC38,HCC226,HCC329"
    assert a.risk_score == pytest.approx(risk[("D", 2025)].score)
    assert "3 chronic conditions: E11.9, I50.9, N18.30" in a.reason

    # override: pin E to complex from May, with a note; shown at once
    with pytest.raises(ValueError, match="note"):
        set_override(store_engine, LEAD, "E", "complex", date(2025, 5, 1), "  ", RULES)
    with pytest.raises(ValueError, match="unknown subgroup"):
        set_override(store_engine, LEAD, "E", "vip", date(2025, 5, 1), "why", RULES)
    oid = set_override(store_engine, LEAD, "E", "complex", date(2025, 5, 17), "caregiver just died; weekly calls", RULES)
    rows = stored(store_engine)
    assert [rows[("E", m)] for m in MONTHS] == [("healthy", False), ("complex", True), ("complex", True)]

    # recomputation (e.g. after a rule change or an import) keeps the override
    assign_subgroups(store_engine, RULES)
    rows = stored(store_engine)
    assert [rows[("E", m)] for m in MONTHS] == [("healthy", False), ("complex", True), ("complex", True)]
    with Session(store_engine) as s:
        a = s.get(SubgroupAssignment, ("E", date(2025, 6, 1)))
        assert "caregiver just died; weekly calls" in a.reason and a.rule_id == "override"

    # transitions in May: B moved healthy -> chronic, E was overridden, D left (died after May: in June)
    may = transitions(store_engine, date(2025, 5, 1)).set_index("patient_id")
    assert sorted(may.index) == ["B", "E"]
    assert (may.loc["B", "from_subgroup"], may.loc["B", "to_subgroup"], may.loc["B", "team_id"]) == ("healthy", "chronic", "T1")
    assert "1 chronic condition: I10" in may.loc["B", "reason"]
    assert bool(may.loc["E", "overridden"])
    june = transitions(store_engine, date(2025, 6, 1)).set_index("patient_id")
    assert (june.loc["D", "from_subgroup"], june.loc["D", "to_subgroup"]) == ("complex", None)
    assert transitions(store_engine, date(2025, 5, 1), team_id="T2").empty

    # lifting: kept with who and when, rules apply again
    lift_override(store_engine, LEAD, oid, RULES)
    rows = stored(store_engine)
    assert [rows[("E", m)] for m in MONTHS] == [("healthy", False)] * 3
    with Session(store_engine) as s:
        o = s.get(SubgroupOverride, oid)
        assert o.lifted_by == "lead@example.org" and o.lifted_at is not None
    with pytest.raises(ValueError, match="already lifted"):
        lift_override(store_engine, LEAD, oid, RULES)


def test_reassign_a_month_replaces_only_that_month(store_engine):
    seed(store_engine)
    assign_subgroups(store_engine, RULES)
    older = parse_rules(
        '[[subgroups]]\nid = "older"\nname = "Older"\n[[subgroups]]\nid = "healthy"\nname = "Healthy"\n'
        '[[rules]]\nid = "older"\nsubgroup = "older"\nmin_age = 60\n[[rules]]\nid = "rest"\nsubgroup = "healthy"\n'
    )
    summary = assign_subgroups(store_engine, older, months=[date(2025, 6, 1)])
    assert summary["rows"] == 4 and summary["mix"] == {"older": 2, "healthy": 2}
    rows = stored(store_engine)
    assert rows[("A", date(2025, 6, 1))][0] == "older" and rows[("A", date(2025, 5, 1))][0] == "frail"
    assert len(rows) == 14


def test_preview_rules_counts_now_and_under_a_draft(store_engine):
    seed(store_engine)
    assign_subgroups(store_engine, RULES)
    draft = parse_rules(DEFAULT_RULES_PATH.read_text().replace("min_age = 75", "min_age = 85"))
    out = preview_rules(store_engine, draft, date(2025, 6, 1), current=RULES).set_index("rule_id")
    assert out.loc["frail_elderly", ["patients_current", "patients_draft", "change"]].tolist() == [1, 0, -1]
    assert out["change"].sum() == 0 and (out["change"] == 1).sum() == 1  # A (80, falls) goes to another rule
    assert out["patients_current"].sum() == out["patients_draft"].sum() == 4


def test_sample_network_mix_and_teams(sample_engine):
    """The generated sample network: a mix near the paper's 40/30/20/10 and patients in every served subgroup."""
    with Session(sample_engine) as s:
        rows = s.exec(
            select(SubgroupAssignment.subgroup, Attribution.team_id, Team.subgroup, SubgroupAssignment.team_id)
            .join(Attribution, (Attribution.patient_id == SubgroupAssignment.patient_id) & (Attribution.month == SubgroupAssignment.month))
            .join(Team, Team.team_id == Attribution.team_id)
        ).all()
    assert rows
    total = len(rows)
    share = {sg: 100 * sum(r[0] == sg for r in rows) / total for sg in RULES.subgroup_ids}
    assert 35 <= share["healthy"] <= 50 and 20 <= share["at_risk"] <= 35 and 10 <= share["chronic"] <= 25, share
    assert 8 <= share["complex"] + share["frail"] <= 20 and share["frail"] > 0, share
    assert all(copied == team for _, team, _, copied in rows)  # each assignment carries its month's team
    served = {(team, serves) for _, team, serves, _ in rows if serves}
    present = {(team, sg) for sg, team, _, _ in rows}
    assert served and served <= present  # every team that serves one subgroup has patients in it


def test_second_override_keeps_the_rules_reason(store_engine):
    seed(store_engine)
    assign_subgroups(store_engine, RULES)
    set_override(store_engine, LEAD, "B", "complex", date(2025, 5, 1), "first note", RULES)
    set_override(store_engine, LEAD, "B", "frail", date(2025, 6, 1), "second note", RULES)
    with Session(store_engine) as s:
        june = s.get(SubgroupAssignment, ("B", date(2025, 6, 1)))
        may = s.get(SubgroupAssignment, ("B", date(2025, 5, 1)))
    assert (june.subgroup, may.subgroup) == ("frail", "complex")
    assert "second note" in june.reason and "(rules: chronic, 1 chronic condition: I10)" in june.reason
    assign_subgroups(store_engine, RULES)  # the same after a recompute
    with Session(store_engine) as s:
        again = s.get(SubgroupAssignment, ("B", date(2025, 6, 1)))
    assert (again.subgroup, again.overridden) == ("frail", True)
    assert "(rules: chronic, 1 chronic condition: I10)" in again.reason


def test_subgroup_transitions_of_one_team_and_subgroup(store_engine):
    """Entered: in the subgroup at the team this month, not last month. Left: in it at the team
    last month, not this month; a patient who changes team and subgroup at once left at the old
    team and entered at the new one."""
    from sqlalchemy import delete, update

    from core.derive.subgroups.transitions import subgroup_transitions
    from tests.worklist_network import MONTH, build_worklist_network

    build_worklist_network(store_engine)
    a, sa = Attribution, SubgroupAssignment
    with store_engine.begin() as conn:  # P_OTHER: chronic at A2 in September, complex at A1 in October
        conn.execute(update(a).where(a.patient_id == "P_OTHER", a.month == MONTH).values(team_id="A1"))
        conn.execute(update(sa).where(sa.patient_id == "P_OTHER", sa.month == MONTH).values(team_id="A1", subgroup="complex"))
        conn.execute(delete(sa).where(sa.patient_id == "P_CALM", sa.month == MONTH))  # not assigned in October
    entered = subgroup_transitions(store_engine, MONTH, "A1", "complex")
    assert entered[["patient_id", "team_id", "from_subgroup", "to_subgroup"]].values.tolist() == [
        ["P_MOVED", "A1", "chronic", "complex"], ["P_OTHER", "A1", "chronic", "complex"], ["P_CALM", "A1", "complex", None]]  # fmt: skip
    calm = entered.set_index("patient_id").loc["P_CALM"]
    assert calm["reason"].startswith("no assignment this month") and calm["rule_id"] == "" and not calm["overridden"]
    assert entered.set_index("patient_id").loc["P_MOVED", "reason"] == "hand-built complex"
    left = subgroup_transitions(store_engine, MONTH, "A2", "chronic")
    assert left[["patient_id", "team_id", "from_subgroup", "to_subgroup"]].values.tolist() == [["P_OTHER", "A2", "chronic", "complex"]]
    assert subgroup_transitions(store_engine, MONTH, "A1", "chronic")["patient_id"].tolist() == ["P_MOVED"]
    assert subgroup_transitions(store_engine, MONTH, "A2", "complex").empty


def test_setting_and_lifting_an_override_write_audit_events(store_engine):
    from core.access.audit import search_events

    seed(store_engine)
    assign_subgroups(store_engine, RULES)
    oid = set_override(store_engine, LEAD, "E", "complex", date(2025, 5, 1), "weekly calls", RULES)
    lift_override(store_engine, LEAD, oid, RULES)
    events = search_events(store_engine, action="override").sort_values("audit_id")
    assert events[["user_key", "role", "target"]].values.tolist() == [["lead@example.org", "admin", "E"]] * 2
    assert events["detail"].tolist() == [f"set #{oid}: complex from 2025-05", f"lifted #{oid}"]


def test_thin_history_is_stored_and_a_month_rerun_reads_earlier_enrolment(store_engine):
    seed(store_engine)
    # every patient's April and May (the store starts in April), and B's June: 5 x 2 + 1
    assert assign_subgroups(store_engine, RULES)["thin_history"] == 11
    with Session(store_engine) as s:
        rows = {(a.patient_id, a.month.month): (a.thin_history, a.history_note) for a in s.exec(select(SubgroupAssignment))}
    # B: nothing recorded before the I10 of 3 May; E: a visit in April; A: a condition from 2024
    assert rows[("B", 4)] == (True, "Not enough history: 0 of 6 months of data")
    assert rows[("B", 6)] == (True, "Not enough history: 2 of 6 months of data")
    assert rows[("E", 5)] == (True, "Not enough history: 2 of 6 months of data")
    assert rows[("E", 6)] == (False, "") and rows[("A", 6)] == (False, "")
    # June alone: April and May are still read as enrolment
    assign_subgroups(store_engine, RULES, months=[date(2025, 6, 1)])
    with Session(store_engine) as s:
        june = {a.patient_id: a.thin_history for a in s.exec(select(SubgroupAssignment).where(SubgroupAssignment.month == date(2025, 6, 1)))}
    assert june == {"A": False, "B": True, "C": False, "E": False}


def test_store_made_before_thin_history_is_upgraded(store_engine):
    from sqlalchemy import text

    from core.store.db import upgrade_schema

    seed(store_engine)
    assign_subgroups(store_engine, RULES)
    with store_engine.begin() as conn:  # the table as the previous version made it
        conn.execute(text("DROP INDEX ix_subgroup_assignment_thin"))
        conn.execute(text("ALTER TABLE subgroup_assignment DROP COLUMN thin_history"))
        conn.execute(text("ALTER TABLE subgroup_assignment DROP COLUMN history_note"))
        conn.execute(text("INSERT INTO subgroup_assignment (patient_id, month, subgroup, team_id, rule_id, reason, overridden)"
                          " VALUES ('A', '2025-03-01', 'frail', 'T1', 'frail_elderly', 'old row', false)"))  # fmt: skip
    assert upgrade_schema(store_engine) == [
        "added subgroup_assignment.thin_history", "added subgroup_assignment.history_note", "built index ix_subgroup_assignment_thin"]  # fmt: skip
    assert upgrade_schema(store_engine) == []
    with Session(store_engine) as s:
        old = s.get(SubgroupAssignment, ("A", date(2025, 3, 1)))
    assert (old.thin_history, old.history_note) == (False, "")
    assert assign_subgroups(store_engine, RULES)["rows"] == 14


def test_review_moves_say_when_a_move_rests_on_thin_history(store_engine):
    from core.derive.page_aggregates import build_page_aggregates
    from core.views.review import subgroup_moves

    seed(store_engine)
    assign_subgroups(store_engine, RULES)
    build_page_aggregates(store_engine)  # the review reads the moves the derive stores (subgroup_move)
    moves = subgroup_moves(store_engine, "T1", "chronic", date(2025, 5, 1), None, patient_level=True)["patients"]
    b = moves.set_index("patient_id").loc["B"]  # healthy -> chronic in May, recorded only from 3 May
    assert b["direction"] == "entered"
    assert b["reason"] == "1 chronic condition: I10 · Not enough history: 1 of 6 months of data"
