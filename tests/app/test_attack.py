"""The attack harness (tests/attack.py) on every aggregate page and export, as each audience without
patient-level access to the figures: it finds no count of 1-10 recoverable by subtraction, on the
sample network and on a smaller one. A deliberately broken policy shows the harness finds leaks."""

import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

import core.metrics.scorecard  # noqa: F401 (imported so that broken_policy patches every module reading the rules)
import core.views.review  # noqa: F401
from core.access import suppression
from core.derive.measures import load_measures
from core.derive.subgroups.rules import active_rules_path, load_rules
from core.metrics.scorecard import Selection, build_scorecard
from core.store.db import create_schema, make_engine
from core.store.models import Encounter
from core.store.months import add_months, index_of
from core.store.months import index_of as idx_of
from core.store.queries import months_available, organisation, read_frame
from core.views.cells_read import cell_sums_by
from core.views.review import headline_series, subgroup_moves
from tests import attack
from tests.app.conftest import DASHBOARD

TINY_NETWORK = dict(patients=240, months=15, seed=11)
# (page, role, team of a team leader): aggregate-only executives and admins everywhere; a team
# leader where the figures mix in other teams (network values, the whole network's trends).
VISITS = [
    ("pages/trends.py", "executive", None),
    ("pages/trends.py", "executive", "practice:PR01"),
    ("pages/trends.py", "executive", "practice:PR02"),
    ("pages/trends.py", "executive", "team:TM01"),
    ("pages/compare.py", "executive", None),
    ("pages/payments.py", "executive", None),
    ("pages/true_costs.py", "executive", None),
    ("pages/equity.py", "executive", None),
    ("pages/econsults.py", "executive", None),
    ("pages/review.py", "executive", None),
    ("pages/admin_rules.py", "admin", None),
    ("pages/compare.py", "team_leader", "TM04"),
    ("pages/equity.py", "team_leader", "TM04"),
]


@pytest.fixture
def stores(monkeypatch) -> list:
    """Keep the in-memory file stores and managers AppTest creates, so the harness can read every download."""
    return attack.record_media(monkeypatch)


@pytest.fixture(scope="session")
def tiny_db_url(tmp_path_factory) -> str:
    from core.access.demo import mark_sample_store
    from core.derive.pipeline import load_bundle_and_derive
    from sample_data.generator import NetworkSpec, write_bundle

    bundle = tmp_path_factory.mktemp("tiny_bundle")
    write_bundle(NetworkSpec(**TINY_NETWORK), bundle)
    url = f"sqlite:///{tmp_path_factory.mktemp('tiny_db') / 'tiny.db'}"
    eng = make_engine(url)
    create_schema(eng)
    load_bundle_and_derive(eng, bundle)
    mark_sample_store(eng)  # as the first run marks its own sample: demo mode runs on it
    eng.dispose()
    return url


@pytest.fixture(params=["sample", "tiny"])
def network(request, sample_db_url, monkeypatch) -> str:
    url = sample_db_url if request.param == "sample" else request.getfixturevalue("tiny_db_url")
    monkeypatch.setenv("DATABASE_URL", url)
    return url


def visit(page: str, role: str, team: str | None, month: str | None = None, state: dict | None = None) -> AppTest:
    """Open ``page`` as ``role``; ``team`` is a team leader's team, or the trends' unit (``practice:PR01``)."""
    at = AppTest.from_file(DASHBOARD, default_timeout=120)
    at.session_state["demo_role"] = role
    if team and ":" in team:
        at.session_state["trend_unit"] = team
    elif team:
        at.session_state["demo_team"] = team
    if month:
        at.session_state["month"] = month
    for key, value in (state or {}).items():
        at.session_state[key] = value
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    refused = {"Demo mode refused", "Login required", "Not authorised"} & {t.value for t in at.title}
    assert not refused, f"{page} as {role} was refused ({refused}): the harness would read nothing"
    return at


def page_leaks(at, stores, page) -> list[str]:
    return leaks_of(attack.collect(at, stores, page))


def leaks_of(pub: attack.Published) -> list[str]:
    """What the harness finds in what a page published (:func:`attack.collect`, which builds every download)."""
    return attack.small_counts(pub) + attack.total_leaks(pub) + attack.moves_leaks(pub)


def comparison_window_leaks(url: str, stores, role="executive", team=None, measure="ed_visits", subgroup=None) -> list[str]:
    """The team comparison within ``subgroup`` (None: the page's first choice, the truth of every subgroup) of 12 months to the last month P and to P - 1, and of
    the months P and P - 12: the windows' counts, and (a rate) the counts behind their values x
    member-years."""
    engine = make_engine(url)
    months = months_available(engine)
    engine.dispose()
    idx = {m: index_of(m) for m in months}
    last = months[-1]
    windows: dict = {}
    monthly: dict = {}
    values: dict = {}
    views = [(m, "12m", windows) for m in months if idx[last] - idx[m] in (0, 1)]
    views += [(m, "month", monthly) for m in months if idx[last] - idx[m] in (0, 12)]
    at = visit("pages/compare.py", role, team, None, {"compare_measure": measure} | ({"compare_subgroup": subgroup} if subgroup else {}))
    for m, window, into in views:
        at.sidebar.selectbox(key="month").select(f"{m:%Y-%m}")
        at.sidebar.selectbox(key="compare_window").select(window)
        at.run()
        assert not at.exception, at.exception
        table = next(df.value for df in at.dataframe if "team" in df.value.columns)
        for row in table.to_dict("records"):
            into[(row["team"], idx[m])] = attack.parse_number(row["numerator"])
            if window == "12m":  # the value as shown (to 0.1)
                value = attack.parse_number(row["value"])
                values[(row["team"], idx[m])] = round(value, 1) if isinstance(value, float) else value
    engine = make_engine(url)
    sums = cell_sums_by(engine, ["team_id"], [measure], add_months(months[0], -12), last, subgroup=subgroup)
    labels = {r.team_id: f"{r.practice} · {r.team}" for r in organisation(engine).itertuples()}
    engine.dispose()
    truth = {(labels[r.team_id], idx_of(r.month)): float(r.numerator) for r in sums.itertuples()}
    leaks = attack.window_leaks(windows, monthly, truth)
    if load_measures().by_id()[measure].kind != "rate_per_1000_member_years":
        return leaks
    # member-years of each 12-month window: the attacker rebuilds them from the published monthly members
    years = {(labels[r.team_id], idx_of(r.month)): float(r.denominator) for r in sums.itertuples()}
    member_years = {(u, p): sum(years.get((u, p - i), 0.0) for i in range(12)) for u, p in values}
    leaving = attack.worst_case_leaving(truth, idx_of(months[0]), idx[last])
    base = core.metrics.scorecard.load_suppression_rules().window_rounding_base
    return leaks + attack.rate_window_leaks(values, member_years, leaving, truth, base)


def published_windows(page: str, url: str, windows: dict[str, int], read, window_key: str | None = None) -> dict:
    """Open ``page`` as an executive at every month as the end of each window; ``read(at)`` gives
    {unit: published count}. Returns {length: {(unit, month index): count or "hidden"}}."""
    engine = make_engine(url)
    months = months_available(engine)
    engine.dispose()
    at = visit(page, "executive", None)
    out: dict = {n: {} for n in windows.values()}
    for window, n in windows.items():
        if window_key:
            at.sidebar.selectbox(key=window_key).select(window)
        for m in months:
            at.sidebar.selectbox(key="month").select(f"{m:%Y-%m}")
            at.run()
            assert not at.exception, at.exception
            out[n] |= {(unit, index_of(m)): value for unit, value in read(at).items()}
    return out


def _counts(at, first_col: str, count: str, pick=lambda df: True) -> dict:
    """{(first_col, row label): published ``count``} of the dataframes whose first column is ``first_col``."""
    found = {}
    for df in at.dataframe:
        frame = df.value
        if frame.columns[0] != first_col or not pick(frame):
            continue
        for row in frame.to_dict("records"):
            found[(first_col, str(row[first_col]))] = attack.parse_number(row[count]) if count in frame else "hidden"
    return found


def econsult_window_leaks(url: str, stores) -> list[str]:
    """E-consults by team and by specialty: quarters and 12-month windows ending in every month."""
    published = published_windows("pages/econsults.py", url, {"quarter": 3, "12m": 12},
                                  lambda at: _counts(at, "team_id", "econsults") | _counts(at, "specialty", "econsults"),
                                  "econsult_window")  # fmt: skip
    engine = make_engine(url)
    enc = read_frame(engine, select(Encounter.team_id, Encounter.specialty, Encounter.start_date).where(Encounter.kind == "e_consult"))
    labels = {r.team_id: f"{r.practice} · {r.team}" for r in organisation(engine).itertuples()}
    months = [index_of(m) for m in months_available(engine)]
    engine.dispose()
    enc["month"] = [index_of(d.replace(day=1)) for d in pd.to_datetime(enc["start_date"]).dt.date]
    enc["team"] = enc["team_id"].fillna("unknown").map(lambda t: labels.get(t, t))
    truth = {(("team_id", t), i): float(n) for (t, i), n in enc.groupby(["team", "month"]).size().items()}
    truth |= {(("specialty", sp), i): float(n) for (sp, i), n in enc.groupby(["specialty", "month"]).size().items()}
    leaving = attack.worst_case_leaving(truth, months[0], months[-1])
    return [leak for n, windows in published.items() for leak in attack.window_leaks(windows, leaving, truth, n)]


def payment_window_leaks(url: str, stores) -> list[str]:
    """Payment models: member-months of each subgroup (every model) in the 12 months ending in every month."""
    labels = dict(load_rules(active_rules_path()).subgroup_names)
    published = published_windows("pages/payments.py", url, {"12m": 12},
                                  lambda at: _counts(at, "Subgroup", "Member-months", lambda df: "Model" in df))  # fmt: skip
    engine = make_engine(url)
    months = months_available(engine)
    sums = cell_sums_by(engine, ["subgroup"], ["member_months"], months[0], months[-1])
    engine.dispose()
    truth = {(("Subgroup", labels.get(r.subgroup, r.subgroup)), index_of(r.month)): float(r.numerator) for r in sums.itertuples()}
    leaving = attack.worst_case_leaving(truth, index_of(months[0]), index_of(months[-1]))
    return attack.window_leaks(published[12], leaving, truth, 12)


@pytest.mark.parametrize(("page", "role", "team"), VISITS, ids=[f"{p.split('/')[-1][:-3]}-{r}-{t}" for p, r, t in VISITS])
def test_no_small_count_is_recoverable_on_the_page_or_its_exports(network, stores, page, role, team):
    at = visit(page, role, team)
    assert page_leaks(at, stores, page) == []
    assert attack.unmarked_blanks(at, page) == []


@pytest.mark.parametrize("measure", ["ed_visits", "cost_total_usd"])
def test_the_observed_expected_comparison_leaks_nothing(network, stores, measure):
    at = visit("pages/compare.py", "executive", None, state={"compare_measure": measure, "compare_subgroup": None})
    assert any("Observed / expected" in m.value for m in at.markdown)
    assert page_leaks(at, stores, "compare") == []
    assert attack.unmarked_blanks(at, "compare") == []


def test_no_month_is_recoverable_from_neighbouring_windows(network, stores):
    assert comparison_window_leaks(network, stores) == []
    # complex patients' ED visits: 12-month rates x member-years (rounded numerators: no month pinned)
    assert comparison_window_leaks(network, stores, subgroup="complex") == []


def test_no_month_is_recoverable_from_neighbouring_windows_of_econsults_and_payments(network, stores):
    assert econsult_window_leaks(network, stores) == []
    assert payment_window_leaks(network, stores) == []


@pytest.mark.parametrize("window", ["quarter", "12m"])
def test_the_reviews_longer_windows_publish_no_count(network, stores, window):
    """The review's quarter and 12-month scorecards, as an executive, of a small subgroup: no small
    count and no numerator or denominator at all (neighbouring windows would give a month back)."""
    at = visit("pages/review.py", "executive", None, None, {"team": "TM04", "subgroup": "complex", "review_window": window})
    pub = attack.collect(at, stores, "review")
    assert leaks_of(pub) == [] and attack.unmarked_blanks(at, "review") == []
    card = next(t for t in pub.tables.values() if "O/E" in t.columns)
    assert {attack.parse_number(v) for v in [*card["Numerator"], *card["Denominator"]]} <= {"hidden", None}


# --- a test of the test: a policy without complementary suppression leaks, and the harness says so


@pytest.fixture
def broken_policy(monkeypatch):
    """Suppression of counts of 1-10 alone: no complementary suppression, window counts published."""
    real = suppression.load_suppression_rules()
    broken = replace(real, complementary=False)
    for module in list(sys.modules.values()):
        if module is not suppression and getattr(module, "load_suppression_rules", None) is suppression.load_suppression_rules:
            monkeypatch.setattr(module, "load_suppression_rules", lambda: broken)
    assert core.metrics.scorecard.load_suppression_rules().complementary is False


def leaky_review(url: str) -> tuple[str, str, str] | None:
    """A team, subgroup and month whose hidden moves all go one way and the members change gives them back."""
    engine = make_engine(url)
    try:
        for month in months_available(engine)[-3:]:
            for team in organisation(engine)["team_id"]:
                for subgroup in ("healthy", "at_risk", "chronic", "complex", "frail"):
                    members = headline_series(engine, team, subgroup, month, None)["members"].iloc[-2:]
                    moves = subgroup_moves(engine, team, subgroup, month, None, False)["summary"]
                    hidden = moves["patients"].isna()
                    if members.isna().any() or not hidden.any() or moves.loc[hidden, "direction"].nunique() != 1:
                        continue
                    signed = np.where(moves["direction"] == "entered", 1, -1) * moves["patients"].fillna(0)
                    if attack.is_small(abs(members.iloc[1] - members.iloc[0] - signed.sum())):
                        return team, subgroup, f"{month:%Y-%m}"
    finally:
        engine.dispose()
    return None


def test_the_harness_finds_the_leaks_of_a_policy_without_complementary_suppression(sample_db_url, monkeypatch, stores,
                                                                                    broken_policy):  # fmt: skip
    monkeypatch.setenv("DATABASE_URL", sample_db_url)
    trends = visit("pages/trends.py", "executive", "practice:PR01")
    assert any("All subgroups" in leak or "patients of" in leak for leak in page_leaks(trends, stores, "trends"))

    case = leaky_review(sample_db_url)
    assert case is not None, "the sample network has a review whose moves the members headline gives back"
    team, subgroup, month = case
    review = visit("pages/review.py", "executive", None, month, {"team": team, "subgroup": subgroup})
    assert any("members change" in leak for leak in attack.moves_leaks(attack.collect(review, stores, "review")))

    assert comparison_window_leaks(sample_db_url, stores)


@pytest.fixture
def unrounded_policy(monkeypatch):
    """The real policy without controlled rounding of window numerators (window_rounding_base = 1)."""
    real = suppression.load_suppression_rules()
    unrounded = replace(real, window_rounding_base=1)
    for module in list(sys.modules.values()):
        if module is not suppression and getattr(module, "load_suppression_rules", None) is suppression.load_suppression_rules:
            monkeypatch.setattr(module, "load_suppression_rules", lambda: unrounded)
    assert core.metrics.scorecard.load_suppression_rules().window_rounding_base == 1


def test_the_harness_finds_months_behind_rates_x_member_years_without_rounding(sample_db_url, monkeypatch, stores,
                                                                              unrounded_policy):  # fmt: skip
    """Counts of 12-month windows are hidden, but a rate to 0.1 x member-years gives them back, and
    neighbouring windows give a month: complex patients' ED visits of TM04 and TM07 in the last month."""
    monkeypatch.setenv("DATABASE_URL", sample_db_url)
    leaks = comparison_window_leaks(sample_db_url, stores, subgroup="complex")
    assert any("x member-years" in leak for leak in leaks), leaks


def test_the_harness_finds_months_in_neighbouring_windows_of_econsults_and_payments_of_a_broken_policy(
        sample_db_url, tiny_db_url, monkeypatch, stores, broken_policy):  # fmt: skip
    # e-consults of the sample network: teams with 1-10 e-consults a month; payment models of the
    # tiny network: subgroups with 1-10 members a month (the sample's are all larger)
    monkeypatch.setenv("DATABASE_URL", sample_db_url)
    assert econsult_window_leaks(sample_db_url, stores)
    monkeypatch.setenv("DATABASE_URL", tiny_db_url)
    assert payment_window_leaks(tiny_db_url, stores)


# --- over-suppression: exact counts where the audience may see the patients anyway -------------


def test_a_team_leader_sees_the_exact_figures_of_their_team_and_an_executive_does_not(sample_db_url, monkeypatch, stores):
    engine = make_engine(sample_db_url)
    month = months_available(engine)[-1]
    small = [s for s in ("healthy", "at_risk", "chronic", "complex", "frail")
             if build_scorecard(engine, Selection(team_id="TM04", subgroup=s, period=month))["suppressed"].any()]
    engine.dispose()
    assert small, "TM04 has a subgroup with a figure built on 1-10 patients"
    monkeypatch.setenv("DATABASE_URL", sample_db_url)
    lead = visit("pages/review.py", "team_leader", "TM04", state={"subgroup": small[0]})
    assert any(c.value.startswith("Exact counts") for c in lead.caption)
    card = next(df.value for df in lead.dataframe if "95% interval" in df.value.columns)
    assert "suppressed" not in set(card["Value"])

    executive = visit("pages/review.py", "executive", None, state={"team": "TM04", "subgroup": small[0]})
    assert any(c.value.startswith("Counts of 1-10 are suppressed") for c in executive.caption)
    card = next(df.value for df in executive.dataframe if "95% interval" in df.value.columns)
    assert "suppressed" in set(card["Value"])
    assert attack.small_counts(attack.collect(executive, stores, "review")) == []


def test_a_review_pack_marked_for_sharing_is_suppressed(sample_db_url, monkeypatch, stores):
    engine = make_engine(sample_db_url)
    month = months_available(engine)[-1]
    small = [s for s in ("healthy", "at_risk", "chronic", "complex", "frail")
             if build_scorecard(engine, Selection(team_id="TM04", subgroup=s, period=month))["suppressed"].any()]
    engine.dispose()
    monkeypatch.setenv("DATABASE_URL", sample_db_url)
    lead = visit("pages/review.py", "team_leader", "TM04", state={"subgroup": small[0]})

    def pack_scorecard(at, pub: attack.Published) -> pd.DataFrame:
        button = next(b for b in at.get("download_button") if b.key == "pack_xlsx")
        return pub.tables[f"download {button.label} sheet Scorecard"]

    assert "suppressed" not in set(pack_scorecard(lead, attack.collect(lead, stores, "review"))["Value"])
    lead.toggle(key="pack_shared").set_value(True).run()
    assert any(c.value.startswith("Counts of 1-10 are suppressed") for c in lead.caption)
    shared = attack.collect(lead, stores, "review")
    assert "suppressed" in set(pack_scorecard(lead, shared)["Value"])
    assert not [t for name, t in shared.tables.items() if name.startswith("download") and attack.small_counts(
        attack.Published("review", {name: t}))]  # fmt: skip
