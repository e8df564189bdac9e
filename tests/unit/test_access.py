"""Permission rules for every role, page and action, scope resolution and the demo-mode rule."""

import pandas as pd
import pytest

from core.access.demo import DemoSettingError, demo_setting, demo_wanted
from core.access.policy import (
    ACCESS_PATH,
    AccessRulesError,
    allowed_pages,
    can_act,
    can_open,
    home_page,
    load_access_rules,
    resolve_scope,
)

ORG = pd.DataFrame({"practice_id": ["A", "A", "B"], "team_id": ["A1", "A2", "B1"]})


def scope(role, teams="", practices="", patient_level=None):
    return resolve_scope(user_key="u", name="U", role=role, practice_ids=practices, team_ids=teams,
                         patient_level=patient_level, organisation=ORG)  # fmt: skip


# role, patient-level grant, page -> may open
CASES = [
    ("clinician", None, "worklist", True), ("clinician", None, "patient", True), ("clinician", None, "review", False),
    ("clinician", None, "trends", False), ("clinician", None, "data", False), ("clinician", None, "rules", False),
    ("clinician", None, "users", False), ("clinician", None, "audit", False),
    ("team_leader", None, "review", True), ("team_leader", None, "worklist", True), ("team_leader", None, "patient", True),
    ("team_leader", None, "trends", True), ("team_leader", None, "data", False), ("team_leader", None, "users", False),
    ("team_leader", None, "audit", False), ("team_leader", None, "rules", False),
    ("executive", None, "trends", True), ("executive", None, "review", True), ("executive", None, "worklist", False),
    ("executive", None, "patient", False), ("executive", True, "worklist", True), ("executive", True, "patient", True),
    ("executive", None, "data", False), ("executive", None, "rules", False), ("executive", None, "users", False), ("executive", None, "audit", False),
    ("admin", None, "data", True), ("admin", None, "upload", True), ("team_leader", None, "upload", False),
    ("clinician", None, "upload", False), ("executive", None, "upload", False), ("admin", None, "rules", True), ("admin", None, "users", True), ("admin", None, "audit", True),
    ("admin", None, "trends", True), ("admin", None, "review", True), ("admin", None, "worklist", False), ("admin", None, "patient", False), ("admin", True, "patient", True),
    ("clinician", None, "no-such-page", False),
    # executive views: aggregates; team leaders get trends, compare and equity of their own teams
    ("executive", None, "compare", True), ("executive", None, "payments", True), ("executive", None, "equity", True),
    ("executive", None, "econsults", True), ("admin", None, "compare", True), ("admin", None, "payments", True),
    ("admin", None, "equity", True), ("admin", None, "econsults", True), ("team_leader", None, "compare", True),
    ("team_leader", None, "equity", True), ("team_leader", None, "payments", False), ("team_leader", None, "econsults", False),
    ("clinician", None, "compare", False), ("clinician", None, "payments", False), ("clinician", None, "equity", False),
    ("clinician", None, "econsults", False),
    # true costs and leakage: executives and admins
    ("executive", None, "true_costs", True), ("admin", None, "true_costs", True), ("team_leader", None, "true_costs", False),
    ("clinician", None, "true_costs", False),
    # data quality: admins only
    ("admin", None, "quality", True), ("executive", None, "quality", False), ("team_leader", None, "quality", False),
    ("clinician", None, "quality", False),
]  # fmt: skip


@pytest.mark.parametrize("role,grant,page,expected", CASES)
def test_can_open(role, grant, page, expected):
    assert can_open(scope(role, teams="A1", patient_level=grant), page) is expected


def test_every_page_is_covered_for_every_role():
    pages = set(load_access_rules().pages)
    for role in ("clinician", "team_leader", "executive", "admin"):
        assert {page for r, _, page, _ in CASES if r == role} >= pages


@pytest.mark.parametrize("role,home", [("clinician", "worklist"), ("team_leader", "review"), ("executive", "trends"), ("admin", "data")])
def test_home_page_is_allowed(role, home):
    s = scope(role, teams="A1")
    assert home_page(s) == home and home in allowed_pages(s)


@pytest.mark.parametrize(
    "role,teams,practices,expected,network",
    [
        ("clinician", "A1", "", ("A1",), False),
        ("clinician", "", "", (), False),  # a clinician with no team sees nothing, never everything
        ("clinician", "A1,ZZ", "", ("A1",), False),  # unknown team ids are dropped
        ("team_leader", "", "A", ("A1", "A2"), False),
        ("executive", "", "", ("A1", "A2", "B1"), True),
        ("executive", "", "B", ("B1",), False),
        ("admin", "", "", ("A1", "A2", "B1"), True),
    ],
)
def test_resolve_scope(role, teams, practices, expected, network):
    s = scope(role, teams=teams, practices=practices)
    assert s.team_ids == expected and s.network is network


def test_patient_level_defaults_by_role():
    assert scope("clinician", "A1").patient_level and scope("team_leader", "A1").patient_level
    assert not scope("executive").patient_level and not scope("admin").patient_level
    assert scope("executive", patient_level=True).patient_level


@pytest.mark.parametrize("role", ["clinician", "team_leader", "executive", "admin"])
def test_actions_follow_the_rules_file(role):
    assert can_act(scope(role, "A1"), "override_subgroup") == (role == "team_leader")
    assert can_act(scope(role, "A1"), "rebuild_derive") == (role == "admin")


def _rules_with(tmp_path, old: str, new: str):
    text = ACCESS_PATH.read_text()
    assert old in text
    path = tmp_path / f"access_{len(list(tmp_path.iterdir()))}.toml"  # a new file each time (the rules are cached by path)
    path.write_text(text.replace(old, new))
    return load_access_rules(path)


def test_an_action_granted_in_the_file_is_granted_and_a_bad_one_is_refused(tmp_path):
    granted = _rules_with(tmp_path, '[actions.override_subgroup]\nroles = ["team_leader"]',
                          '[actions.override_subgroup]\nroles = ["team_leader", "clinician"]')  # fmt: skip
    assert can_act(scope("clinician", "A1"), "override_subgroup", granted)
    assert not can_act(scope("executive"), "override_subgroup", granted)
    with pytest.raises(AccessRulesError, match="override_subgroup"):
        _rules_with(tmp_path, 'roles = ["team_leader"]\n\n[actions.rebuild', 'roles = ["superuser"]\n\n[actions.rebuild')
    with pytest.raises(AccessRulesError, match="exactly"):
        _rules_with(tmp_path, "[actions.rebuild_derive]", "[actions.rebuild_everything]")


def test_an_override_no_role_may_take_says_so(tmp_path, monkeypatch):
    import core.views.patient as patient_views

    nobody = _rules_with(tmp_path, '[actions.override_subgroup]\nroles = ["team_leader"]', '[actions.override_subgroup]\nroles = []')
    monkeypatch.setattr(patient_views, "load_access_rules", lambda path=None: nobody)
    with pytest.raises(PermissionError, match="no role may override a subgroup"):
        patient_views._check_override_scope(None, scope("team_leader", "A1"), "P1")  # refused before any read


def test_unknown_role_is_rejected():
    with pytest.raises(ValueError):
        scope("superuser")


@pytest.mark.parametrize(
    "env,expected", [({}, None), ({"SCORECARDS_DEMO": ""}, None), ({"SCORECARDS_DEMO": "1"}, True),
                     ({"SCORECARDS_DEMO": "on"}, True), ({"SCORECARDS_DEMO": "0"}, False), ({"SCORECARDS_DEMO": "False"}, False)],
)  # fmt: skip
def test_demo_mode_is_the_operators_setting(env, expected):
    assert demo_setting(env) is expected


def test_a_setting_that_is_neither_on_nor_off_is_refused():
    with pytest.raises(DemoSettingError):
        demo_setting({"SCORECARDS_DEMO": "maybe"})


# setting, database URL, login configured -> demo mode wanted (it also needs the store's sample mark)
@pytest.mark.parametrize(
    "setting,url,auth,expected",
    [(None, "sqlite:///data/scorecards.db", False, True), (None, "sqlite:///data/scorecards.db", True, False),
     (None, "postgresql://db/scorecards", False, False), (True, "postgresql://db/scorecards", True, True),
     (False, "sqlite:///data/scorecards.db", False, False)],
)  # fmt: skip
def test_demo_mode_default_is_on_for_sqlite_without_login_only(setting, url, auth, expected):
    assert demo_wanted(setting, url, auth) is expected
