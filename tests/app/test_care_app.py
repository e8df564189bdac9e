"""A clinician's day on the pages: care gaps on the worklist (column and filter), the discharge
and ED follow-up list, and outreach recorded on the patient page, shown back on the worklist and
audited."""

from datetime import date

from core.access.audit import search_events
from core.store import models
from tests.app.test_patient import frame_with, open_patient
from tests.app.test_worklist import open_worklist, tiny_db  # noqa: F401  (fixture)
from tests.builders import add_rows


def test_worklist_shows_and_filters_care_gaps(tiny_db):  # noqa: F811
    add_rows(tiny_db, [models.Procedure(procedure_id="X1", patient_id="P_CALM", performed_date=date(2026, 10, 3), code="150",
                                        code_system="CVX")])  # fmt: skip
    at = open_worklist()
    shown = at.dataframe[0].value.set_index("patient_id")
    assert "Flu vaccine" not in shown.loc["P_CALM", "care_gaps"] and "Flu vaccine" in shown.loc["P_DM", "care_gaps"]
    at.multiselect(key="gaps").set_value(["flu_vaccination"]).run()
    assert "P_CALM" not in at.dataframe[0].value["patient_id"].tolist()
    assert "P_DM" in at.dataframe[0].value["patient_id"].tolist()


def test_worklist_lists_the_follow_up_of_recent_ed_visits(tiny_db):  # noqa: F811
    at = open_worklist()
    follow = next(df.value for df in at.dataframe if "follow_up" in df.value.columns)
    acute = follow[follow["name"] == "Acute, Given"]
    assert acute[["event", "follow_up"]].values.tolist() == [["ED visit", "Follow-up within 7 days"]]
    assert "P_OTHER" not in " ".join(follow["name"])  # another team's ED visit is not listed


def test_outreach_recorded_on_the_patient_page_shows_on_the_worklist(tiny_db):  # noqa: F811
    at = open_patient("P_LATE")
    gaps = frame_with(at, "rule")
    assert "Care plan review" in gaps["label"].tolist()
    next(s for s in at.selectbox if s.label == "Channel").set_value("call")
    next(s for s in at.selectbox if s.label == "Outcome").set_value("reached")
    next(t for t in at.text_input if t.label.startswith("Note")).input("Booked a PROMIS visit")
    next(b for b in at.button if b.label == "Record outreach").click().run()
    assert not at.exception, at.exception
    assert any("Recorded: Phone call, reached." in s.value for s in at.success)
    log = frame_with(at, "channel")
    assert log[["channel", "outcome", "note"]].values.tolist() == [["Phone call", "Reached", "Booked a PROMIS visit"]]
    assert search_events(tiny_db, action="outreach")["target"].tolist() == ["P_LATE"]

    at = open_worklist()
    shown = at.dataframe[0].value.set_index("patient_id")
    assert shown.loc["P_LATE", "last_outreach"].startswith("Phone call: Reached")
    at.checkbox(key="hide_reached").check().run()
    assert "P_LATE" not in at.dataframe[0].value["patient_id"].tolist()


def test_no_outreach_form_without_patient_level_access(tiny_db):  # noqa: F811
    at = open_patient("P_LATE", role="team_leader")
    assert any(b.label == "Record outreach" for b in at.button)  # team leaders have patient-level access
