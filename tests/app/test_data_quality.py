"""The Admin data quality page (AppTest on the small sample network)."""

import pytest

from core.store.db import make_engine
from core.views.data_quality import data_quality


def test_data_quality_page_shows_the_store_and_each_import(app, sample_db_url):
    quality = data_quality(make_engine(sample_db_url))
    app.session_state["demo_role"] = "admin"
    app.run()
    app.switch_page("pages/data_quality.py").run()
    assert not app.exception, app.exception
    assert app.title[0].value == "Data quality"
    store = app.dataframe[0].value
    assert list(store["check"]) == list(quality["store"]["check"])
    # the generator writes no paid dates: the run-out setting marks the latest three months
    incomplete = store.loc[store["check"].str.startswith("months with incomplete claims")].iloc[0]
    assert incomplete["count"] == 3 and len(incomplete["examples"].split(", ")) == 3
    assert len(app.expander) == quality["imports"]["import_id"].nunique() >= 1
    assert "Import #" in app.expander[0].label


def test_data_quality_page_is_for_admins_only(app):
    app.session_state["demo_role"] = "executive"
    app.run()
    with pytest.raises(ValueError):  # not registered in an executive's navigation
        app.switch_page("pages/data_quality.py")
