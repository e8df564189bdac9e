"""A hand-built network for the worklist and patient page: one patient per flag rule, as of Oct 2026.

Team A1 (complex) holds the patients below; team A2 (chronic) holds P_OTHER, who must never
appear in A1's worklist. Every patient answered PROMIS physical and PHQ-9 on 2026-09-01 unless
said otherwise, so only the rule a patient is built for fires. ``EXPECTED`` lists A1's
patients in worklist order with the flags each raises. The derived patient-month activity is
built at the end (subgroups are given by hand; cells are not needed).
"""

from datetime import date

from core.access.demo import mark_sample_store
from core.derive.activity import build_patient_month_activity
from core.store import models
from tests.builders import add_rows

MONTH = date(2026, 10, 1)
MONTHS = [date(2026, m, 1) for m in range(1, 11)]
PROMIS, PHQ9, HBA1C, SYS, DIA = "71971-6", "44261-6", "4548-4", "8480-6", "8462-4"

# patient id -> (family name, risk score, flags raised), in the expected worklist order
EXPECTED = [
    ("P_ACUTE", "Acute", 1.0, {"recent_acute"}),
    ("P_RISING", "Rising", 1.0, {"phq9_rising"}),  # PHQ-9 4 -> 9: up 5, still under 10
    ("P_LOW", "Low", 1.0, {"phq9_high"}),  # PHQ-9 14 -> 12: 10 or more, falling
    ("P_DM", "Sugar", 1.0, {"uncontrolled_diabetes"}),
    ("P_BP", "Pressure", 1.0, {"uncontrolled_bp"}),
    ("P_COST", "Costly", 1.0, {"rising_cost"}),
    ("P_LATE", "Late", 1.0, {"overdue_questionnaire"}),
    ("P_MOVED", "Mover", 1.0, {"moved_subgroup"}),
    ("P_CALM", "Calm", 2.5, set()),  # no flag: ranked by risk score, highest first
    ("P_EDGE", "Edge", 1.5, set()),  # HbA1c exactly 9.0 (the rule is > 9) and BP 139/89
    ("P_OLDED", "Earlier", 0.5, set()),  # ED visit 46 days before the as-of date (rule: 30)
]


def build_worklist_network(engine, origin: str = "sample") -> None:
    """Insert the network (and a committed ImportRun); ``origin`` sample also marks the store as the
    first run marks its own sample, so demo mode runs on it."""
    rows = [
        models.Practice(practice_id="A", name="Practice A"),
        models.Team(team_id="A1", practice_id="A", name="Complex team", subgroup="complex"),
        models.Team(team_id="A2", practice_id="A", name="Chronic team", subgroup="chronic"),
        models.Staff(staff_id="S1", team_id="A1", name="Dr One", role="physician", annual_cost_usd=300_000, paid_hours_per_year=2080),
        models.Staff(staff_id="S3", team_id="A1", name="Nurse Three", role="registered_nurse", annual_cost_usd=120_000, paid_hours_per_year=2080),
        models.Staff(staff_id="S2", team_id="A2", name="Dr Two", role="physician", annual_cost_usd=280_000, paid_hours_per_year=2080),
    ]  # fmt: skip
    people = [(pid, family, risk, "A1") for pid, family, risk, _ in EXPECTED] + [("P_OTHER", "Other", 3.0, "A2")]
    for i, (pid, family, risk, team) in enumerate(people):
        rows.append(models.Patient(patient_id=pid, given_name="Given", family_name=family, birth_date=date(1950 + i, 6, 15),
                                   sex="female" if i % 2 else "male", language="English"))  # fmt: skip
        for month in MONTHS:
            subgroup = "chronic" if team == "A2" or (pid == "P_MOVED" and month < MONTH) else "complex"
            rows.append(models.Attribution(patient_id=pid, month=month, practice_id="A", team_id=team,
                                           pcp_id="S1" if team == "A1" else "S2"))  # fmt: skip
            rows.append(models.SubgroupAssignment(patient_id=pid, month=month, subgroup=subgroup, team_id=team, rule_id="test",
                                                  reason=f"hand-built {subgroup}", risk_score=risk))  # fmt: skip
        if pid != "P_LATE":
            rows.append(models.Measurement(measurement_id=f"{pid}-promis", patient_id=pid, measured_date=date(2026, 9, 1), code=PROMIS, value=45.0))
        rows.append(models.Measurement(measurement_id=f"{pid}-phq", patient_id=pid, measured_date=date(2026, 9, 1), code=PHQ9,
                                       value=12.0 if pid == "P_LOW" else 4.0))  # fmt: skip

    def measure(pid, code, day, value, n=""):
        rows.append(models.Measurement(measurement_id=f"{pid}-{code}-{day}{n}", patient_id=pid, measured_date=day, code=code, value=value))

    def encounter(eid, pid, kind, day, internal, paid=0.0, team="A1"):
        rows.append(models.Encounter(encounter_id=eid, patient_id=pid, team_id=team, kind=kind, start_date=day,
                                     is_internal=internal, paid_usd=paid))  # fmt: skip

    encounter("E-acute", "P_ACUTE", "ed_visit", date(2026, 10, 20), False, 400.0)
    encounter("E-other", "P_OTHER", "ed_visit", date(2026, 10, 25), False, 900.0, team="A2")
    measure("P_DM", HBA1C, date(2025, 12, 1), 7.0)
    measure("P_DM", HBA1C, date(2026, 9, 1), 9.5)
    measure("P_EDGE", HBA1C, date(2025, 11, 1), 11.0)
    measure("P_EDGE", HBA1C, date(2026, 8, 1), 9.0)
    measure("P_EDGE", SYS, date(2026, 8, 1), 139.0)
    measure("P_EDGE", DIA, date(2026, 8, 1), 89.0)
    measure("P_BP", SYS, date(2026, 10, 5), 150.0)
    measure("P_BP", DIA, date(2026, 10, 5), 85.0)
    measure("P_BP", SYS, date(2026, 10, 5), 155.0, "b")  # two readings that day: the lowest counts
    for m in (5, 6, 7):
        encounter(f"E-cost-{m}", "P_COST", "specialist_visit", date(2026, m, 10), False, 100.0)
    for m in (8, 9, 10):
        encounter(f"E-cost-{m}", "P_COST", "specialist_visit", date(2026, m, 10), False, 1000.0)
    measure("P_LATE", PROMIS, date(2026, 1, 15), 40.0)  # complex: due every 6 months
    measure("P_RISING", PHQ9, date(2026, 10, 2), 9.0)  # the latest; 4.0 on 2026-09-01 is the previous
    measure("P_LOW", PHQ9, date(2026, 3, 1), 14.0)  # before the 12.0 of 2026-09-01
    measure("P_EDGE", PHQ9, date(2026, 3, 1), 8.0)  # 8 -> 4: falling, no flag
    encounter("E-old-ed", "P_OLDED", "ed_visit", date(2026, 9, 15), False, 300.0)
    # internal activities: one with recorded minutes, one costed by the office-visit process map
    encounter("E-calm-1", "P_CALM", "office_visit", date(2026, 9, 3), True)
    rows.append(models.StaffMinutes(encounter_id="E-calm-1", role="physician", minutes=20.0))
    rows.append(models.StaffMinutes(encounter_id="E-calm-1", role="registered_nurse", minutes=10.0))
    encounter("E-calm-2", "P_CALM", "office_visit", date(2026, 10, 12), True)
    encounter("E-calm-ec", "P_CALM", "e_consult", date(2026, 10, 2), True)
    rows[-1].requested_date, rows[-1].responded_date = date(2026, 10, 2), date(2026, 10, 5)
    rows[-1].specialty, rows[-1].resolved_without_visit = "cardiology", True
    rows.append(models.Condition(condition_id="C-calm", patient_id="P_CALM", code="I10", description="Essential hypertension",
                                 onset_date=date(2020, 1, 1)))  # fmt: skip
    rows.append(models.ImportRun(source="hand-built", format="csv", origin=origin, status="committed"))
    add_rows(engine, rows)
    build_patient_month_activity(engine)  # derived, as an import's derive step would
    if origin == "sample":
        mark_sample_store(engine)
