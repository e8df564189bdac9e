"""Care gaps and transitions of care: each rule on hand-made patients, expected status and dates
worked out by hand."""

from datetime import date

import numpy as np
import pandas as pd
import pytest
from dateutil.relativedelta import relativedelta

from core.views.care_gaps import GapInputs, _months_later, filter_by_care, gap_summary, load_gap_rules, patient_gaps
from core.views.transitions import deadline, follow_ups, load_transition_rules

AS_OF = date(2026, 11, 30)


def inputs(patients, conditions=(), procedures=(), measurements=(), medications=()) -> GapInputs:
    """patients: (id, subgroup, birth, sex); conditions: (id, code, onset, resolved); procedures:
    (id, day, code, system); measurements: (id, day, code); medications: (id, description, start, end)."""
    return GapInputs(
        pd.DataFrame(list(patients), columns=["patient_id", "subgroup", "birth_date", "sex"]),
        pd.DataFrame(list(conditions), columns=["patient_id", "code", "onset_date", "resolved_date"]),
        pd.DataFrame(list(procedures), columns=["patient_id", "performed_date", "code", "code_system"]),
        pd.DataFrame(list(measurements), columns=["patient_id", "measured_date", "code"]),
        pd.DataFrame([(p, "", d, s, e) for p, d, s, e in medications],
                     columns=["patient_id", "code", "description", "start_date", "end_date"]),
    )


def status(gaps: pd.DataFrame, patient: str, gap: str):
    row = gaps[(gaps["patient_id"] == patient) & (gaps["gap_id"] == gap)]
    return None if row.empty else (row["status"].iloc[0], row["last_done"].iloc[0], row["due_date"].iloc[0])


def test_rules_load_and_each_names_a_measure_it_closes():
    rules = load_gap_rules()
    assert {"colorectal_screening", "breast_screening", "flu_vaccination", "hba1c_test", "statin", "care_plan",
            "advance_care_planning"} <= set(rules.labels)


def test_colorectal_screening_due_date_is_the_latest_over_tests():
    gaps = patient_gaps(inputs(
        [("A", "healthy", "1960-03-01", "male"), ("B", "healthy", "1960-03-01", "male"), ("C", "healthy", "1960-03-01", "male"),
         ("Y", "healthy", "1995-03-01", "male")],
        procedures=[("A", "2020-05-10", "45378", "CPT"), ("A", "2026-02-01", "82274", "CPT"),  # colonoscopy wins: due 2030
                    ("B", "2025-12-15", "82274", "CPT")],  # FIT: due 2026-12-15, within 60 days
    ), AS_OF)
    assert status(gaps, "A", "colorectal_screening") == ("up to date", date(2026, 2, 1), date(2030, 5, 10))
    assert status(gaps, "B", "colorectal_screening") == ("due soon", date(2025, 12, 15), date(2026, 12, 15))
    assert status(gaps, "C", "colorectal_screening") == ("overdue", None, None)  # never recorded
    assert status(gaps, "Y", "colorectal_screening") is None  # 31 years old: not eligible


def test_a_due_date_without_its_day_in_the_month_falls_on_the_months_last_day():
    people = [(p, "chronic", "1960-01-01", "female") for p in ("D", "E")] + [("L", "healthy", "1960-03-01", "male")]
    gaps = patient_gaps(inputs(people, conditions=[(p, "E11.9", "2015-01-01", None) for p in ("D", "E")],
                               measurements=[("D", "2026-05-31", "4548-4"), ("E", "2026-08-31", "4548-4")],
                               procedures=[("L", "2020-02-29", "45378", "CPT")]), AS_OF)
    assert status(gaps, "D", "hba1c_test") == ("overdue", date(2026, 5, 31), date(2026, 11, 30))  # due on the day
    assert status(gaps, "E", "hba1c_test") == ("up to date", date(2026, 8, 31), date(2027, 2, 28))
    assert status(gaps, "L", "colorectal_screening") == ("up to date", date(2020, 2, 29), date(2030, 2, 28))


@pytest.mark.parametrize("months", [1, 6, 12, 27, 120])
def test_months_later_is_the_calendars_every_day_of_four_years(months):
    days = pd.Series(pd.date_range("2023-01-01", "2026-12-31", freq="D"))
    expected = [d + relativedelta(months=months) for d in days]
    assert _months_later(days, months).tolist() == expected


def test_mammogram_for_women_of_the_age_only():
    gaps = patient_gaps(inputs([("W", "at_risk", "1965-01-01", "female"), ("M", "at_risk", "1965-01-01", "male")],
                               procedures=[("W", "2024-06-01", "77067", "CPT")]), AS_OF)
    assert status(gaps, "W", "breast_screening") == ("overdue", date(2024, 6, 1), date(2026, 9, 1))  # 27 months
    assert status(gaps, "M", "breast_screening") is None


def test_gaps_follow_the_patients_subgroup():
    gaps = patient_gaps(inputs([("F", "frail", "1935-01-01", "female")]), AS_OF)
    assert set(gaps["gap_id"]) == {"flu_vaccination", "pneumococcal_vaccination", "care_plan", "advance_care_planning"}


def test_hba1c_test_every_six_months_for_diabetics_only():
    people = [("D", "chronic", "1960-01-01", "female"), ("N", "chronic", "1960-01-01", "female")]
    gaps = patient_gaps(inputs(people, conditions=[("D", "E11.9", "2015-01-01", None)],
                               measurements=[("D", "2026-04-20", "4548-4"), ("N", "2026-01-01", "4548-4")]), AS_OF)
    assert status(gaps, "D", "hba1c_test") == ("overdue", date(2026, 4, 20), date(2026, 10, 20))
    assert status(gaps, "N", "hba1c_test") is None


def test_statin_gap_while_none_is_active():
    people = [(p, "chronic", "1960-01-01", "male") for p in ("ON", "STOPPED", "NEVER")]
    dm = [(p, "E11.9", "2015-01-01", None) for p in ("ON", "STOPPED", "NEVER")]
    gaps = patient_gaps(inputs(people, conditions=dm, medications=[
        ("ON", "atorvastatin 20 MG Oral Tablet", "2024-01-01", None),
        ("STOPPED", "simvastatin 20 MG", "2023-01-01", "2026-05-31"),
    ]), AS_OF)
    assert status(gaps, "ON", "statin") == ("up to date", date(2024, 1, 1), None)
    assert status(gaps, "STOPPED", "statin") == ("overdue", date(2023, 1, 1), date(2026, 5, 31))
    assert status(gaps, "NEVER", "statin") == ("overdue", None, None)


def test_summary_and_filter():
    gaps = patient_gaps(inputs([("A", "healthy", "1970-03-01", "male"), ("B", "healthy", "1990-03-01", "male")],
                               procedures=[("A", "2026-10-01", "150", "CVX"), ("B", "2026-10-01", "150", "CVX")]), AS_OF)
    summary = gap_summary(gaps)
    assert summary.loc["A", "care_gaps"] == "Colorectal cancer screening"  # flu done, pneumococcal not due under 65
    assert "B" not in summary.index  # nothing open
    worklist = pd.DataFrame({"patient_id": ["A", "B"]}).join(summary.assign(reached_this_cycle=[True]), on="patient_id")
    assert filter_by_care(worklist, ("colorectal_screening",))["patient_id"].tolist() == ["A"]
    assert filter_by_care(worklist, ())["patient_id"].tolist() == ["A", "B"]
    assert filter_by_care(worklist, (), hide_reached=True)["patient_id"].tolist() == ["B"]


def summary_row_by_row(gaps: pd.DataFrame) -> dict:
    """gap_summary read patient by patient, in the rows' order: the reference."""
    out = {}
    for row in gaps[gaps["status"] != "up to date"].itertuples():
        item = out.setdefault(row.patient_id, {"care_gaps": [], "gaps_due_soon": [], "gap_ids": []})
        item["care_gaps" if row.status == "overdue" else "gaps_due_soon"].append(row.label)
        item["gap_ids"].append(row.gap_id)
    return {p: {k: (tuple(v) if k == "gap_ids" else ", ".join(v) or None) for k, v in item.items()} for p, item in out.items()}


@pytest.mark.parametrize(("labels", "most"), [(8, 6), (40, 14)])  # 41 ** 14 > 2 ** 62: the plain group-by
def test_summary_equals_the_row_by_row_reading_in_any_row_order(labels, most):
    rng = np.random.default_rng(labels)
    rows = [(f"P{p:03d}", f"g{k}", f"Label {k}", rng.choice(["overdue", "due soon", "up to date"]))
            for p in range(300) for k in rng.choice(labels, size=rng.integers(0, most + 1), replace=False)]
    gaps = pd.DataFrame(rows, columns=["patient_id", "gap_id", "label", "status"]).sample(frac=1, random_state=1)
    summary = gap_summary(gaps)
    got = {p: {k: (None if isinstance(v, float) else v) for k, v in row.items()} for p, row in summary.to_dict("index").items()}
    assert got == summary_row_by_row(gaps)
    assert list(summary.index) == sorted(summary.index) and summary.index.name == "patient_id"


@pytest.mark.parametrize("event, within, unit, expected", [
    (date(2026, 11, 25), 2, "business_days", date(2026, 11, 27)),  # Wednesday -> Friday
    (date(2026, 11, 27), 2, "business_days", date(2026, 12, 1)),  # Friday -> Tuesday
    (date(2026, 11, 28), 2, "business_days", date(2026, 12, 1)),  # Saturday -> Tuesday
    (date(2026, 11, 25), 7, "days", date(2026, 12, 2)),
])
def test_window_deadlines(event, within, unit, expected):
    assert deadline(event, within, unit) == expected


def test_follow_ups_done_due_and_missed():
    events = pd.DataFrame([
        ("A", "Alpha", "complex", "discharge", date(2026, 11, 10)),  # contact on day 1, visit on day 9: missed
        ("B", "Beta", "chronic", "discharge", date(2026, 11, 27)),  # Friday: contact due until Tuesday
        ("C", "Gamma", "frail", "ed_visit", date(2026, 11, 20)),  # reached by outreach on day 2
    ], columns=["patient_id", "name", "subgroup", "event_id", "event_date"])
    contacts = pd.DataFrame([("A", "phone_call", "2026-11-11"), ("A", "office_visit", "2026-11-19"),
                             ("B", "office_visit", "2026-11-27")],  # the discharge day itself does not count
                            columns=["patient_id", "kind", "start_date"])
    outreach = pd.DataFrame([("C", "2026-11-22", "reached")], columns=["patient_id", "day", "outcome"])
    out = follow_ups(events, contacts, outreach, AS_OF, load_transition_rules())
    got = {(r.patient_id, r.follow_up): (r.status, r.done_on) for r in out.itertuples()}
    assert got == {
        ("A", "Contact within 2 business days"): ("done", date(2026, 11, 11)),
        ("A", "Visit within 7 days"): ("missed", None),  # complex: 7 days; the visit came on day 9
        ("B", "Contact within 2 business days"): ("due", None),
        ("B", "Visit within 14 days"): ("due", None),
        ("C", "Follow-up within 7 days"): ("done", date(2026, 11, 22)),
    }
    assert out["status"].tolist()[:2] == ["due", "due"]  # what needs doing first


def _follow_ups_row_by_row(events, contacts, outreach, as_of, rules) -> list[tuple]:
    """The rows of the follow-ups as first written (every contact row filtered for each window):
    the reference the grouped lookup must equal."""
    labels, out = {e.id: e.label for e in rules.events}, []
    contacts = contacts.assign(start_date=pd.to_datetime(contacts["start_date"]).dt.date)
    outreach = outreach.assign(day=pd.to_datetime(outreach["day"]).dt.date) if len(outreach) else outreach
    for ev in events.itertuples(index=False):
        for fu in rules.follow_ups:
            if ev.event_id not in fu.events or not fu.applies_to(ev.subgroup):
                continue
            end = deadline(ev.event_date, fu.within, fu.unit)
            mine = contacts[(contacts["patient_id"] == ev.patient_id) & contacts["kind"].isin(fu.kinds)]
            days = [d for d in mine["start_date"] if ev.event_date < d <= min(end, as_of)]
            if fu.outreach and len(outreach):
                reached = outreach[(outreach["patient_id"] == ev.patient_id) & outreach["outcome"].isin(fu.outreach)]
                days += [d for d in reached["day"] if ev.event_date <= d <= min(end, as_of)]
            done_on = min(days) if days else None
            status = "done" if done_on else ("missed" if end < as_of else "due")
            out.append((ev.patient_id, ev.name, ev.subgroup, labels[ev.event_id], ev.event_date, fu.label, end, status, done_on))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_follow_ups_equal_the_row_by_row_reading_on_a_random_team(seed):
    from collections import Counter

    import numpy as np

    rng = np.random.default_rng(seed)
    rules = load_transition_rules()
    days = pd.date_range("2026-09-01", "2026-12-05").date
    patients = [f"P{i:03d}" for i in range(120)]
    subgroups = ["healthy", "at_risk", "chronic", "complex", "frail"]
    events = pd.DataFrame([(p, f"Name {p}", rng.choice(subgroups), rng.choice(["discharge", "ed_visit"]), rng.choice(days))
                           for p in rng.choice(patients, 150)],
                          columns=["patient_id", "name", "subgroup", "event_id", "event_date"]).drop_duplicates()  # fmt: skip
    kinds = ["phone_call", "portal_message", "office_visit", "virtual_visit", "home_visit", "care_management", "lab_visit"]
    contacts = pd.DataFrame([(p, rng.choice(kinds), str(rng.choice(days))) for p in rng.choice(patients, 900)],
                            columns=["patient_id", "kind", "start_date"])  # fmt: skip
    outreach = pd.DataFrame([(p, str(rng.choice(days)), rng.choice(["reached", "visit_booked", "no_answer"]))
                             for p in rng.choice(patients, 200)], columns=["patient_id", "day", "outcome"])  # fmt: skip
    for their_outreach in (outreach, outreach.iloc[:0]):
        got = follow_ups(events, contacts, their_outreach, AS_OF, rules)
        want = _follow_ups_row_by_row(events, contacts, their_outreach, AS_OF, rules)
        assert len(got) > 100 and set(got["status"]) == {"done", "due", "missed"}
        assert Counter(got.itertuples(index=False, name=None)) == Counter(want)  # the same rows, each as often
        assert got["status"].map({"due": 0, "missed": 1, "done": 2}).is_monotonic_increasing  # what needs doing first
