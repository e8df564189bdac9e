"""The executive readers' SQL (month of a date, days between dates) on SQLite and PostgreSQL give
the same figures as pandas on the same rows."""

import pandas as pd
import pytest
from sqlalchemy import select

from core.store.models import Attribution, Encounter
from core.store.months import window_months
from core.store.queries import months_available, read_frame
from core.views.econsults import econsults
from core.views.payment_models import payment_inputs


def test_econsults_and_activity_counts_in_sql(sample_store):
    loaded = sample_store
    months = tuple(window_months(months_available(loaded)[-1], "12m"))
    enc = read_frame(loaded, select(Encounter.patient_id, Encounter.kind, Encounter.start_date, Encounter.responded_date,
                                    Encounter.is_internal))  # fmt: skip
    enc["start_date"], enc["responded_date"] = pd.to_datetime(enc["start_date"]), pd.to_datetime(enc["responded_date"])
    enc["month"] = enc["start_date"].dt.to_period("M").dt.to_timestamp().dt.date
    ec = enc.loc[(enc["kind"] == "e_consult") & enc["month"].isin(months)]
    total = econsults(loaded, months, suppress=False)["by_team"].iloc[-1]  # exact: 12-month counts are withheld where suppressed
    assert total["econsults"] == len(ec)
    assert total["mean_response_days"] == pytest.approx((ec["responded_date"] - ec["start_date"]).dt.days.mean())

    att = read_frame(loaded, select(Attribution.patient_id, Attribution.month).where(Attribution.month.in_(list(months))))
    att["month"] = pd.to_datetime(att["month"]).dt.date
    internal = enc.loc[enc["is_internal"].astype(bool)].merge(att, on=["patient_id", "month"])
    counted = payment_inputs(loaded, months)["activities"]
    assert counted["activities"].sum() == len(internal)
    by_kind = counted.groupby("kind")["activities"].sum()
    assert by_kind.to_dict() == internal.groupby("kind").size().astype(float).to_dict()
