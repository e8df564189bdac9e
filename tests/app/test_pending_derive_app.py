"""While a derive is pending every page says so, and an admin can finish it from the banner."""

from streamlit.testing.v1 import AppTest

from core.store.queries import derive_pending, mark_derive_pending
from tests.app.conftest import DASHBOARD

BANNER = "being brought up to date after import #7"


def test_a_pending_derive_shows_a_banner_that_an_admin_can_clear(private_db):
    mark_derive_pending(private_db, "7")  # import #7 committed, its derive never ran
    at = AppTest.from_file(DASHBOARD, default_timeout=180)
    at.session_state["demo_role"] = "clinician"
    at.run()
    assert not at.exception, at.exception
    assert any(BANNER in w.value for w in at.warning)
    assert not [b for b in at.button if b.key == "finish_pending_derive"]  # only admins rebuild

    at.session_state["demo_role"] = "admin"
    at.run()
    at.button(key="finish_pending_derive").click().run()
    assert not at.exception, at.exception
    assert derive_pending(private_db) is None
    assert not any(BANNER in w.value for w in at.warning)
