"""Subgroup engine: clinical vignettes, boundaries, deaths, overrides and invalid rules files."""

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest

from core.config.catalog import BMI, HBA1C, LDL, SYSTOLIC_BP, TOBACCO
from core.derive.subgroups.evaluate import evaluate_rules, month_thresholds, thresholds_from_counts
from core.derive.subgroups.inputs import compute_inputs
from core.derive.subgroups.overrides import apply_overrides
from core.derive.subgroups.rules import DEFAULT_RULES_PATH, RulesError, load_rules, parse_rules

MONTH = date(2025, 6, 1)
RULES = load_rules(DEFAULT_RULES_PATH)


def born(age: int, month: date = MONTH) -> date:
    """A birth date giving exactly ``age`` completed years on the first of ``month``."""
    return date(month.year - age, month.month, 1)


def frames(people: list[dict], months: tuple[date, ...] = (MONTH,)) -> dict[str, pd.DataFrame]:
    """Frames for compute_inputs from short patient descriptions.

    Keys per person: id, birth (or age), sex, dual, death, codes [(code, onset, resolved)],
    labs [(loinc, date, value)], events [(kind, date)], risk (score for every year), hccs (its
    payment HCCs, default one: ``HCC38``; '' for a score from demographics alone).
    """
    pats, att, cond, meas, enc, risk = [], [], [], [], [], []
    for p in people:
        pid = p["id"]
        pats.append(dict(patient_id=pid, birth_date=p.get("birth", born(p.get("age", 40))), sex=p.get("sex", "female"),
                         dual_status=p.get("dual", False), death_date=p.get("death")))
        att += [dict(patient_id=pid, month=m, practice_id="P1", team_id=p.get("team", "T1")) for m in months]
        cond += [dict(patient_id=pid, code=c, onset_date=o, resolved_date=r) for c, o, r in p.get("codes", [])]
        meas += [dict(patient_id=pid, measured_date=d, code=c, value=v) for c, d, v in p.get("labs", [])]
        enc += [dict(patient_id=pid, kind=k, start_date=d) for k, d in p.get("events", [])]
        risk += [dict(patient_id=pid, year=y, score=p.get("risk", 0.5), hccs=p.get("hccs", "HCC38")) for y in {m.year for m in months}]
    cols = dict(
        conditions=["patient_id", "code", "onset_date", "resolved_date"],
        measurements=["patient_id", "measured_date", "code", "value"],
        encounters=["patient_id", "kind", "start_date"],
    )
    return dict(
        patients=pd.DataFrame(pats), attribution=pd.DataFrame(att),
        conditions=pd.DataFrame(cond, columns=cols["conditions"]),
        measurements=pd.DataFrame(meas, columns=cols["measurements"]),
        encounters=pd.DataFrame(enc, columns=cols["encounters"]),
        risk=pd.DataFrame(risk),
    )


def assign(people: list[dict], rules=RULES, months=(MONTH,)) -> pd.DataFrame:
    f = frames(people, months)
    inputs = compute_inputs(f["patients"], f["attribution"], f["conditions"], f["measurements"], f["encounters"], f["risk"])
    return evaluate_rules(inputs, rules)


def dx(*codes: str, onset: date = date(2023, 3, 1), resolved: date | None = None) -> list[tuple]:
    return [(c, onset, resolved) for c in codes]


# Ten ordinary patients so a single vignette's risk score is not in the top decile by itself.
FILLERS = [dict(id=f"F{i}", age=45, risk=1.0) for i in range(10)]

VIGNETTES = [
    # id, person, subgroup, rule, reason
    ("healthy adult, no data", dict(age=40), "healthy", "healthy", "no frailty, chronic condition or risk factor recorded"),
    ("frail: age 75 with falls", dict(birth=date(1950, 6, 1), codes=dx("R29.6")), "frail", "frail_elderly", "age 75 with frailty: R29.6"),
    ("age 74 with falls is not frail", dict(birth=date(1950, 6, 2), codes=dx("R29.6")), "healthy", "healthy", ""),
    ("frail: age 81 with dementia", dict(age=81, codes=dx("F03.90", "G30.9", "Z74.1")), "frail", "frail_elderly", "age 81 with frailty: F03.90, Z74.1"),
    ("frail: dependence Z74.01", dict(age=88, codes=dx("Z74.01")), "frail", "frail_elderly", "frailty: Z74.01"),
    ("disabled at 40: wheelchair", dict(age=40, codes=dx("Z99.3")), "frail", "disabled_institutional", "disability/institutional: Z99.3"),
    ("institutional at 60", dict(age=60, codes=dx("Z59.3", "I10")), "frail", "disabled_institutional", "Z59.3"),
    ("frail beats complex", dict(age=80, codes=dx("R54", "E11.9", "I10", "N18.30")), "frail", "frail_elderly", "frailty: R54"),
    ("complex: 3 chronic conditions", dict(age=60, codes=dx("E11.9", "I10", "N18.30")), "complex", "complex", "3 chronic conditions: E11.9, I10, N18.30"),
    ("chronic: 2 chronic conditions", dict(age=60, codes=dx("E11.9", "I10")), "chronic", "chronic", "2 chronic conditions: E11.9, I10"),
    ("chronic: 1 condition", dict(age=50, codes=dx("F33.1")), "chronic", "chronic", "1 chronic condition: F33.1"),
    ("two diabetes codes are one condition", dict(age=50, codes=dx("E11.9", "E11.65")), "chronic", "chronic", "1 chronic condition: E11.65"),
    ("complex: 2 ED visits in 12 months", dict(age=50, events=[("ed_visit", date(2024, 7, 3)), ("ed_visit", date(2025, 6, 20))]), "complex", "complex", "2 admissions/ED visits in 12 months"),
    ("complex: admission + ED visit", dict(age=50, events=[("admission", date(2025, 1, 3)), ("ed_visit", date(2025, 2, 20))]), "complex", "complex", "2 admissions/ED visits in 12 months"),
    ("ED visit 13 months ago not counted", dict(age=50, events=[("ed_visit", date(2024, 5, 31)), ("ed_visit", date(2025, 2, 20))]), "healthy", "healthy", ""),
    ("complex: top-decile risk", dict(age=70, risk=3.0), "complex", "complex",
     "HCC risk 3.00 in the network's top decile (cut-off 1.00 this month, set across all teams) with 1 payment HCC: HCC38"),
    ("top-decile risk from demographics alone is not complex", dict(age=85, dual=True, risk=3.0, hccs=""), "healthy", "healthy", ""),
    ("top-decile risk, two payment HCCs", dict(age=70, risk=3.0, hccs="HCC38,HCC226"), "complex", "complex", "with 2 payment HCCs: HCC38, HCC226"),
    ("child with a top-decile adult risk score is not complex", dict(age=12, risk=3.0, hccs="HCC38"), "healthy", "healthy", ""),
    ("child with type 1 diabetes is chronic", dict(age=12, risk=3.0, codes=dx("E10.9")), "chronic", "chronic", "1 chronic condition: E10.9"),
    ("child with 2 ED visits is complex", dict(age=9, events=[("ed_visit", date(2025, 1, 3)), ("ed_visit", date(2025, 5, 3))]), "complex", "complex", "2 admissions/ED visits"),
    ("chronic + obesity is chronic", dict(age=50, codes=dx("I10", "E66.9")), "chronic", "chronic", "1 chronic condition: I10"),
    ("at risk: BMI 30.0", dict(age=50, labs=[(BMI, date(2025, 3, 1), 30.0)]), "at_risk", "at_risk", "risk factors: BMI 30.0"),
    ("BMI 29.9 is healthy", dict(age=50, labs=[(BMI, date(2025, 3, 1), 29.9)]), "healthy", "healthy", ""),
    ("latest BMI counts", dict(age=50, labs=[(BMI, date(2025, 1, 1), 33.0), (BMI, date(2025, 5, 1), 28.0)]), "healthy", "healthy", ""),
    ("BMI 13 months old is missing", dict(age=50, labs=[(BMI, date(2024, 5, 1), 35.0)]), "healthy", "healthy", ""),
    ("at risk: BMI and tobacco", dict(age=50, labs=[(BMI, date(2025, 3, 1), 31.2), (TOBACCO, date(2025, 3, 1), 1)]), "at_risk", "at_risk", "risk factors: BMI 31.2 with age 50; tobacco use"),
    ("former smoker is healthy", dict(age=50, labs=[(TOBACCO, date(2025, 3, 1), 0)]), "healthy", "healthy", ""),
    ("at risk: prediabetes code", dict(age=50, codes=dx("R73.03")), "at_risk", "at_risk", "risk factors: prediabetes (R73.03)"),
    ("at risk: smoker code", dict(age=50, codes=dx("F17.210")), "at_risk", "at_risk", "tobacco (F17.210)"),
    ("at risk: HbA1c 5.7", dict(age=50, labs=[(HBA1C, date(2025, 2, 1), 5.7)]), "at_risk", "at_risk", "HbA1c 5.7%"),
    ("HbA1c 5.6 is healthy", dict(age=50, labs=[(HBA1C, date(2025, 2, 1), 5.6)]), "healthy", "healthy", ""),
    ("at risk: SBP 130", dict(age=50, labs=[(SYSTOLIC_BP, date(2025, 6, 30), 130)]), "at_risk", "at_risk", "systolic BP 130 mmHg"),
    ("SBP 129 is healthy", dict(age=50, labs=[(SYSTOLIC_BP, date(2025, 6, 30), 129)]), "healthy", "healthy", ""),
    ("measurement after the month ignored", dict(age=50, labs=[(SYSTOLIC_BP, date(2025, 7, 1), 150)]), "healthy", "healthy", ""),
    ("at risk: LDL 165 + E78.5", dict(age=50, codes=dx("E78.5"), labs=[(LDL, date(2025, 2, 1), 165)]), "at_risk", "at_risk", "hyperlipidaemia (E78.5); LDL 165 mg/dL"),
    ("resolved condition not counted", dict(age=50, codes=dx("I10", resolved=date(2025, 5, 31))), "healthy", "healthy", ""),
    ("condition resolved this month counts", dict(age=50, codes=dx("I10", resolved=date(2025, 6, 2))), "chronic", "chronic", "I10"),
    ("condition starting next month not counted", dict(age=50, codes=dx("I10", onset=date(2025, 7, 1))), "healthy", "healthy", ""),
    ("dementia is frailty, not chronic", dict(age=70, codes=dx("F03.90")), "healthy", "healthy", ""),
    ("unknown sex, no risk score", dict(age=50, sex="unknown", risk=np.nan), "healthy", "healthy", ""),
    # adult thresholds apply from 18; tobacco use and risk-factor diagnoses at any age
    ("child with SBP 135 is not at risk", dict(age=12, labs=[(SYSTOLIC_BP, date(2025, 6, 30), 135)]), "healthy", "healthy", ""),
    ("child with BMI 31 is not at risk", dict(age=12, labs=[(BMI, date(2025, 3, 1), 31.0)]), "healthy", "healthy", ""),
    ("adult from 18: SBP 135", dict(age=18, labs=[(SYSTOLIC_BP, date(2025, 6, 30), 135)]), "at_risk", "at_risk", "systolic BP 135 mmHg"),
    ("child smoker is at risk", dict(age=16, labs=[(TOBACCO, date(2025, 3, 1), 1)]), "at_risk", "at_risk", "tobacco use"),
]


@pytest.mark.parametrize("case, person, subgroup, rule_id, reason", VIGNETTES, ids=[v[0] for v in VIGNETTES])
def test_vignette(case, person, subgroup, rule_id, reason):
    out = assign(FILLERS + [dict(id="X", **person)]).set_index("patient_id").loc["X"]
    assert (out["subgroup"], out["rule_id"]) == (subgroup, rule_id)
    assert reason in out["reason"]


def test_top_decile_edge_is_strictly_above_the_threshold():
    # 11 patients scored 0..10: the 0.9 quantile is exactly 9.0; 10 is above it, 9 is not
    people = [dict(id=f"P{i:02d}", age=50, risk=float(i)) for i in range(11)]
    out = assign(people).set_index("patient_id")
    assert list(out.index[out["subgroup"] == "complex"]) == ["P10"]
    assert out.loc["P10", "reason"] == (
        "HCC risk 10.00 in the network's top decile (cut-off 9.00 this month, set across all teams) with 1 payment HCC: HCC38"
        " with age 50"
    )
    # 20 patients scored 1..20: the 0.9 quantile is 18 + 0.1 * (19 - 18) = 18.1
    people = [dict(id=f"P{i:02d}", age=50, risk=float(i)) for i in range(1, 21)]
    out = assign(people).set_index("patient_id")
    assert list(out.index[out["subgroup"] == "complex"]) == ["P19", "P20"]
    assert out.loc["P19", "reason"].startswith("HCC risk 19.00 in the network's top decile (cut-off 18.10 this month")
    assert out.loc["P18", "subgroup"] == "healthy"


def test_top_decile_needs_a_payment_hcc_with_real_scores():
    """Scores from hccinfhir: an 85-year-old dual patient without a diagnosis tops a young network
    on age, sex and dual status alone (0 payment HCCs) and stays out of complex; with heart
    failure coded the year before, the same patient is complex."""
    from core.derive.risk import risk_scores

    def run(codes: list[str]) -> pd.Series:
        people = [dict(id=f"Y{i:02d}", age=40) for i in range(19)] + [dict(id="OLD", age=85, dual=True)]
        f = frames(people)
        dxs = pd.DataFrame([dict(patient_id="OLD", code=c, onset_date=date(2024, 3, 1), resolved_date=None) for c in codes],
                           columns=["patient_id", "code", "onset_date", "resolved_date"])  # fmt: skip
        risk = risk_scores(f["patients"], dxs, MONTH.year)
        inputs = compute_inputs(f["patients"], f["attribution"], dxs, f["measurements"], f["encounters"], risk)
        out = evaluate_rules(inputs, RULES).set_index("patient_id")
        return inputs.set_index("patient_id").loc["OLD"], out.loc["OLD"]

    inputs, out = run([])
    assert inputs["payment_hcc_count"] == 0 and inputs["risk_score"] > 0.5  # the top score of the month, demographics only
    assert out["subgroup"] == "healthy"
    inputs, out = run(["I50.9"])
    assert inputs["payment_hcc_count"] >= 1
    assert (out["subgroup"], out["rule_id"]) == ("complex", "complex")
    assert "payment HCC" in out["reason"] and "set across all teams" in out["reason"]


def test_ties_at_the_threshold_stay_out():
    people = [dict(id=f"P{i:02d}", age=50, risk=1.0) for i in range(20)]
    assert set(assign(people)["subgroup"]) == {"healthy"}


def test_top_decile_is_per_month():
    may = date(2025, 5, 1)
    core = [dict(id=f"P{i:02d}", age=50, risk=float(i)) for i in range(11)]
    extra = [dict(id=f"E{i:02d}", age=50, risk=100.0 + i) for i in range(10)]
    f = frames(core + extra, (may, MONTH))
    f["attribution"] = f["attribution"][~(f["attribution"]["patient_id"].str.startswith("E") & (f["attribution"]["month"] == MONTH))]
    inputs = compute_inputs(f["patients"], f["attribution"], f["conditions"], f["measurements"], f["encounters"], f["risk"])
    out = evaluate_rules(inputs, RULES)
    complex_ = out[out["subgroup"] == "complex"].groupby(out["month"].dt.month)["patient_id"].apply(sorted).to_dict()
    # May: 21 scores, 0.9 quantile = 20th smallest = 107 -> 108 and 109; June: 11 scores -> 10
    assert complex_ == {5: ["E08", "E09"], 6: ["P10"]}


def test_no_assignment_after_death_month():
    months = (date(2025, 3, 1), date(2025, 4, 1), date(2025, 5, 1), MONTH)
    out = assign([dict(id="D", age=80, death=date(2025, 4, 15)), dict(id="A", age=50)], months=months)
    assert sorted(out.loc[out["patient_id"] == "D", "month"].dt.date) == [date(2025, 3, 1), date(2025, 4, 1)]
    assert len(out[out["patient_id"] == "A"]) == 4


def test_patient_moves_between_subgroups_over_months():
    months = (date(2025, 4, 1), date(2025, 5, 1), MONTH)
    out = assign([dict(id="X", age=60, codes=dx("I10", onset=date(2025, 5, 10)))], months=months)
    assert out.sort_values("month")["subgroup"].tolist() == ["healthy", "chronic", "chronic"]


def test_grain_is_unique_and_order_follows_inputs():
    out = assign(FILLERS + [dict(id="X", age=70)], months=(date(2025, 5, 1), MONTH))
    assert not out.duplicated(["patient_id", "month"]).any()
    assert list(out.columns) == ["patient_id", "month", "subgroup", "rule_id", "reason"]


def test_rules_are_data_rename_reorder_threshold():
    text = """
[[subgroups]]
id = "older"
name = "Older adults"
[[subgroups]]
id = "everyone"
name = "Everyone"
[[rules]]
id = "older"
subgroup = "older"
name = "65+"
min_age = 65
[[rules]]
id = "rest"
subgroup = "everyone"
"""
    out = assign([dict(id="A", age=65), dict(id="B", age=64)], rules=parse_rules(text)).set_index("patient_id")
    assert out["subgroup"].to_dict() == {"A": "older", "B": "everyone"}
    assert out.loc["A", "reason"] == "age 65"
    assert out.loc["B", "reason"] == "rest"


def test_all_of_and_max_conditions():
    text = """
[[subgroups]]
id = "a"
name = "A"
[[subgroups]]
id = "b"
name = "B"
[[rules]]
id = "young_smoker"
subgroup = "a"
all_of = [{ max_age = 30 }, { tobacco_use = true }]
max_chronic_conditions = 0
[[rules]]
id = "rest"
subgroup = "b"
"""
    people = [
        dict(id="A", age=30, labs=[(TOBACCO, date(2025, 1, 1), 1)]),
        dict(id="B", age=31, labs=[(TOBACCO, date(2025, 1, 1), 1)]),
        dict(id="C", age=25, codes=dx("J45.909"), labs=[(TOBACCO, date(2025, 1, 1), 1)]),
    ]
    out = assign(people, rules=parse_rules(text)).set_index("patient_id")
    assert out["subgroup"].to_dict() == {"A": "a", "B": "b", "C": "b"}
    assert out.loc["A", "reason"] == "no chronic conditions with age 30 with tobacco use"


def test_apply_overrides_pins_from_start_month_and_keeps_rules_reason():
    assignments = pd.DataFrame(
        dict(
            patient_id=["X", "X", "Y"],
            month=pd.to_datetime(["2025-05-01", "2025-06-01", "2025-06-01"]),
            subgroup=["chronic", "chronic", "healthy"],
            rule_id=["chronic", "chronic", "healthy"],
            reason=["1 chronic condition: I10"] * 2 + ["none"],
        )
    )
    overrides = pd.DataFrame(
        dict(override_id=[7], patient_id=["X"], subgroup=["complex"], start_month=[date(2025, 6, 1)],
             note=["lives alone, poor health literacy"], created_by=["lead@example.org"],
             created_at=[datetime(2025, 6, 3, tzinfo=UTC)])
    )
    out = apply_overrides(assignments, overrides)
    assert out["subgroup"].tolist() == ["chronic", "complex", "healthy"]
    assert out["overridden"].tolist() == [False, True, False]
    assert out.loc[1, "rule_id"] == "override"
    assert "lives alone, poor health literacy" in out.loc[1, "reason"]
    assert "rules: chronic, 1 chronic condition: I10" in out.loc[1, "reason"]
    assert assignments["subgroup"].tolist() == ["chronic", "chronic", "healthy"]  # input not mutated


def test_latest_override_wins():
    assignments = pd.DataFrame(dict(patient_id=["X"], month=pd.to_datetime(["2025-06-01"]), subgroup=["healthy"], rule_id=["healthy"], reason=["-"]))
    overrides = pd.DataFrame(
        dict(override_id=[1, 2], patient_id=["X", "X"], subgroup=["chronic", "frail"],
             start_month=[date(2025, 1, 1), date(2025, 3, 1)], note=["a", "b"], created_by=["u", "u"],
             created_at=[datetime(2025, 1, 1, tzinfo=UTC)] * 2)
    )
    assert apply_overrides(assignments, overrides).loc[0, "subgroup"] == "frail"


BASE = """
[[subgroups]]
id = "sick"
name = "Sick"
[[subgroups]]
id = "well"
name = "Well"
"""
INVALID_RULES = [
    ("unknown key", '[[rules]]\nid = "r1"\nsubgroup = "sick"\nmin_agee = 75\n[[rules]]\nid = "r2"\nsubgroup = "well"', "rule 'r1': unknown key(s) ['min_agee']"),
    ("unknown subgroup", '[[rules]]\nid = "r1"\nsubgroup = "frail"\nmin_age = 75\n[[rules]]\nid = "r2"\nsubgroup = "well"', "rule 'r1': subgroup 'frail' is not one of"),
    ("no catch-all last", '[[rules]]\nid = "r1"\nsubgroup = "sick"\nmin_age = 75', "the last rule 'r1' has conditions"),
    ("rule after catch-all", '[[rules]]\nid = "r1"\nsubgroup = "well"\n[[rules]]\nid = "r2"\nsubgroup = "sick"\nmin_age = 1', "rule 'r2': comes after the catch-all"),
    ("text age", '[[rules]]\nid = "r1"\nsubgroup = "sick"\nmin_age = "75"\n[[rules]]\nid = "r2"\nsubgroup = "well"', "rule 'r1': min_age must be a number"),
    ("fractional age", '[[rules]]\nid = "r1"\nsubgroup = "sick"\nmin_age = 74.5\n[[rules]]\nid = "r2"\nsubgroup = "well"', "min_age must be a whole number"),
    ("bool as number", '[[rules]]\nid = "r1"\nsubgroup = "sick"\nbmi_min = true\n[[rules]]\nid = "r2"\nsubgroup = "well"', "bmi_min must be a number"),
    ("fraction out of range", '[[rules]]\nid = "r1"\nsubgroup = "sick"\nrisk_score_top_fraction = 10\n[[rules]]\nid = "r2"\nsubgroup = "well"', "risk_score_top_fraction must be between 0 and 1"),
    ("flag not bool", '[[rules]]\nid = "r1"\nsubgroup = "sick"\nany_frailty = "yes"\n[[rules]]\nid = "r2"\nsubgroup = "well"', "any_frailty must be true or false"),
    ("unknown risk-factor group", '[[rules]]\nid = "r1"\nsubgroup = "sick"\nrisk_factor_codes = ["obesity", "stress"]\n[[rules]]\nid = "r2"\nsubgroup = "well"', "unknown risk-factor groups ['stress']"),
    ("unknown key in any_of", '[[rules]]\nid = "r1"\nsubgroup = "sick"\nany_of = [{ min_ag = 1 }]\n[[rules]]\nid = "r2"\nsubgroup = "well"', "rule 'r1' any_of[0]: unknown key(s) ['min_ag']"),
    ("empty any_of", '[[rules]]\nid = "r1"\nsubgroup = "sick"\nany_of = []\n[[rules]]\nid = "r2"\nsubgroup = "well"', "any_of must be a non-empty list"),
    ("duplicate rule id", '[[rules]]\nid = "r1"\nsubgroup = "sick"\nmin_age = 1\n[[rules]]\nid = "r1"\nsubgroup = "well"', "rule 'r1': duplicate rule id"),
    ("rule without id", '[[rules]]\nsubgroup = "well"', "rule #1: needs a text `id`"),
    ("no rules", "", "no [[rules]] defined"),
    ("not TOML", "[[rules]\nid=", "not valid TOML"),
]


@pytest.mark.parametrize("case, body, message", INVALID_RULES, ids=[c[0] for c in INVALID_RULES])
def test_invalid_rules_rejected_with_clear_message(case, body, message):
    with pytest.raises(RulesError) as err:
        parse_rules(BASE + body, "rules.toml")
    assert message in str(err.value)


def test_unknown_top_level_key_and_missing_subgroups():
    with pytest.raises(RulesError, match="unknown top-level key"):
        parse_rules(BASE + '[payments]\nhealthy = 5\n[[rules]]\nid = "r"\nsubgroup = "well"')
    with pytest.raises(RulesError, match=r"no \[\[subgroups\]\]"):
        parse_rules('[[rules]]\nid = "r"\nsubgroup = "well"')


def test_default_rules_file_shape():
    assert RULES.subgroup_ids == ("frail", "complex", "chronic", "at_risk", "healthy")
    assert RULES.subgroup_names["frail"] == "Frail elderly & disabled"
    assert RULES.rules[-1].is_catch_all
    table = RULES.to_frame()
    assert table["order"].tolist() == list(range(1, len(RULES.rules) + 1))
    assert table.loc[0, "conditions"] == "min_age = 75 and any_frailty = true"


def test_load_rules_missing_file(tmp_path):
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "nope.toml")


def test_thresholds_from_block_counts_equal_the_thresholds_of_all_scores():
    """Scores counted block by block give each month's quantile to the bit (NaN and ties included)."""
    rng = np.random.default_rng(11)
    months = pd.to_datetime(["2025-01-01", "2025-02-01", "2025-03-01"])
    scores = pd.DataFrame({"month": months[rng.integers(0, 3, 5000)], "risk_score": rng.choice(rng.random(300) * 3, 5000)})
    scores.loc[rng.random(5000) < 0.05, "risk_score"] = np.nan
    scores.loc[scores["month"] == months[2], "risk_score"] = np.nan  # a month without any score
    blocks = [scores.iloc[i : i + 700] for i in range(0, len(scores), 700)]
    counts = pd.concat([b.dropna().value_counts() for b in blocks]).groupby(level=["month", "risk_score"]).sum()
    for fraction, got in thresholds_from_counts(counts, {0.1, 0.25}).items():
        want = month_thresholds(scores, fraction)
        assert got[months[0]] == want[months[0]] and got[months[1]] == want[months[1]]
        assert pd.isna(want[months[2]]) and months[2] not in got.index  # maps to NaN either way


def test_given_thresholds_replace_those_of_the_inputs():
    people = [dict(id=f"P{i:02d}", age=50, risk=float(i)) for i in range(11)]
    f = frames(people)
    inputs = compute_inputs(f["patients"], f["attribution"], f["conditions"], f["measurements"], f["encounters"], f["risk"])
    network = {0.1: pd.Series([5.5], index=pd.to_datetime([MONTH]))}  # as if the network's decile were lower
    out = evaluate_rules(inputs, RULES, network).set_index("patient_id")
    assert list(out.index[out["subgroup"] == "complex"]) == [f"P{i:02d}" for i in range(6, 11)]


def test_conditions_that_match_no_code_group_leave_everyone_unconditioned():
    # An import whose diagnoses are all outside the code lists (e.g. only Z codes) is ordinary data.
    people = [dict(id=f"P{i}", age=50, codes=dx("Z00.00", "Z23")) for i in range(3)]
    out = assign(people)
    assert list(out["subgroup"]) == ["healthy"] * 3


# --- thin history ----------------------------------------------------------------------------

SIX_MONTHS = tuple(date(2025, m, 1) for m in range(1, 7))


def history(people: list[dict], months=SIX_MONTHS, rules=RULES) -> pd.DataFrame:
    from core.derive.subgroups.evaluate import history_flags

    f = frames(people, months)
    inputs = compute_inputs(f["patients"], f["attribution"], f["conditions"], f["measurements"], f["encounters"], f["risk"],
                            history_lookback=rules.history.lookback_months)  # fmt: skip
    out = evaluate_rules(inputs, rules)
    out["history_months"] = inputs["history_months"].to_numpy()
    out["thin_history"], out["history_note"] = history_flags(inputs, rules)
    return out.set_index(["patient_id", out["month"].dt.month])


def test_thin_history_counts_enrolled_months_with_records():
    # R: a visit in January; N: nothing recorded ever; L: first record in May
    people = [
        dict(id="R", age=50, events=[("office_visit", date(2025, 1, 10))]),
        dict(id="N", age=50),
        dict(id="L", age=50, labs=[(BMI, date(2025, 5, 20), 24.0)]),
    ]
    out = history(people)
    assert out.loc["R", "history_months"].tolist() == [1, 2, 3, 4, 5, 6]
    assert out.loc["R", "thin_history"].tolist() == [True, True, False, False, False, False]
    assert out.loc[("R", 2), "history_note"] == "Not enough history: 2 of 6 months of data"
    assert out.loc[("R", 3), "history_note"] == ""
    assert out.loc["N", "history_months"].tolist() == [0] * 6 and out.loc["N", "thin_history"].all()
    assert out.loc[("N", 6), "subgroup"] == "healthy"  # still assigned from what there is
    assert out.loc["L", "history_months"].tolist() == [0, 0, 0, 0, 1, 2]


def test_thin_history_needs_enrolment_and_an_old_condition_counts():
    # a condition recorded long ago counts as history from the first attributed month on
    out = history([dict(id="C", age=60, codes=dx("I10", onset=date(2019, 1, 1)))], months=SIX_MONTHS[3:])
    assert out.loc["C", "history_months"].tolist() == [1, 2, 3]  # April is the first month attributed
    assert out.loc[("C", 6), "thin_history"] == False  # noqa: E712 (numpy bool)
    assert out.loc[("C", 6), "subgroup"] == "chronic"


def test_history_lookback_and_minimum_are_data():
    text = DEFAULT_RULES_PATH.read_text().replace("lookback_months = 6", "lookback_months = 3").replace("min_months = 3", "min_months = 1")
    rules = parse_rules(text)
    assert (rules.history.lookback_months, rules.history.min_months) == (3, 1)
    out = history([dict(id="R", age=50, events=[("office_visit", date(2025, 1, 10))])], rules=rules)
    assert out.loc["R", "history_months"].tolist() == [1, 2, 3, 3, 3, 3]
    assert not out["thin_history"].any()
    assert out.loc["R", "history_note"].tolist() == [""] * 6
    with pytest.raises(RulesError, match="min_months at most lookback_months"):
        parse_rules(text.replace("min_months = 1", "min_months = 4"))
    with pytest.raises(RulesError, match=r"\[history\]"):
        parse_rules(text.replace("min_months = 1", "min_months = 1\nwindow = 2"))
