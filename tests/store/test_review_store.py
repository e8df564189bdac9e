"""The review log on SQLite and PostgreSQL: saved per team, subgroup and month, open action
items carried forward until closed, and every call checked against the caller's scope."""

from datetime import date

import pytest
from sqlmodel import Session

from core.store.models import Practice, Team
from core.views.review_log import add_entry, close_entry, review_log

MAY, JUNE, JULY = date(2026, 5, 1), date(2026, 6, 1), date(2026, 7, 1)


@pytest.fixture
def teams(store_engine):
    with Session(store_engine) as session:
        session.add(Practice(practice_id="P1", name="Practice"))
        session.commit()
        session.add_all([Team(team_id="T1", practice_id="P1", name="One", subgroup="complex"),
                         Team(team_id="T2", practice_id="P1", name="Two", subgroup="chronic")])  # fmt: skip
        session.commit()
    return store_engine


def _add(engine, kind, text, month=MAY, team="T1", subgroup="complex", **kw):
    return add_entry(engine, ("T1", "T2"), team_id=team, subgroup=subgroup, month=month, kind=kind, text=text,
                     created_by="lead", **kw)  # fmt: skip


def test_entries_are_kept_per_team_subgroup_and_month(teams):
    _add(teams, "note", "May note")
    _add(teams, "decision", "June decision", month=JUNE)
    _add(teams, "note", "other subgroup", subgroup="chronic")
    _add(teams, "note", "other team", team="T2")
    may = review_log(teams, ("T1",), "T1", "complex", MAY)
    assert list(may["text"]) == ["May note"]
    assert list(review_log(teams, ("T1",), "T1", "complex", JUNE)["text"]) == ["June decision"]


def test_open_action_items_are_carried_forward_until_closed(teams):
    action = _add(teams, "action", "Call admitted patients", owner="Nurse lead", due_date=date(2026, 6, 15))
    _add(teams, "note", "a May note is not carried")
    june = review_log(teams, ("T1",), "T1", "complex", JUNE)
    assert list(june["text"]) == ["Call admitted patients"]
    assert june["carried_forward"].tolist() == [True]
    assert june["status"].tolist() == ["open"] and june["owner"].tolist() == ["Nurse lead"]
    assert str(june["due_date"].iloc[0])[:10] == "2026-06-15"

    close_entry(teams, ("T1",), action, "lead")
    assert review_log(teams, ("T1",), "T1", "complex", JULY).empty
    may = review_log(teams, ("T1",), "T1", "complex", MAY)  # still in its own month, as done
    assert may.set_index("entry_id").loc[action, "status"] == "done"
    assert may.set_index("entry_id").loc[action, "closed_by"] == "lead"


def test_scope_is_checked(teams):
    with pytest.raises(PermissionError):
        add_entry(teams, ("T2",), team_id="T1", subgroup="complex", month=MAY, kind="note", text="x", created_by="u")
    entry = _add(teams, "action", "x", owner="o")
    with pytest.raises(PermissionError):
        close_entry(teams, ("T2",), entry, "u")
    with pytest.raises(PermissionError):
        review_log(teams, ("T2",), "T1", "complex", MAY)


@pytest.mark.parametrize(
    "kind,text,owner,message",
    [("note", "  ", "", "no text"), ("action", "do it", "", "owner"), ("memo", "x", "", "kind")],
)
def test_invalid_entries_are_refused(teams, kind, text, owner, message):
    with pytest.raises(ValueError, match=message):
        _add(teams, kind, text, owner=owner)
    assert review_log(teams, None, "T1", "complex", MAY).empty
