"""``read_sql_frame`` (core.store.queries) gives ``pandas.read_sql``'s frame on SQLite and PostgreSQL, column by column and
dtype by dtype: booleans (with and without a missing one), dates, integers with a missing value,
a column without any value, no row at all; a type it does not process itself goes to read_sql.
And ``on_distinct``, the helper it shares with the derive: one call per distinct value."""

from datetime import date, datetime
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    func,
    select,
    type_coerce,
)

from core.store.db import make_engine
from core.store.queries import on_distinct, read_sql_frame
from tests.conftest import _drop_database, _postgres_engine

META = MetaData()
ROWS = Table(
    "t", META,
    Column("id", Integer, primary_key=True), Column("name", String), Column("n", Integer), Column("x", Float),
    Column("flag", Boolean), Column("nullable_flag", Boolean), Column("day", Date), Column("empty", String),
    Column("empty_flag", Boolean), Column("at", DateTime), Column("amount", Numeric(10, 2)),
)  # fmt: skip
t = ROWS.c


@pytest.fixture(params=["memory", "file", "postgresql"])
def rows_engine(request, tmp_path):
    if request.param == "postgresql":  # a database of its own on the server at TEST_DATABASE_URL
        name, engine = _postgres_engine()
        request.addfinalizer(lambda: (engine.dispose(), _drop_database(name)))
    else:
        engine = make_engine("sqlite://" if request.param == "memory" else f"sqlite:///{tmp_path / 'rows.db'}")
    META.create_all(engine)
    rows = [{"id": i, "name": None if i < 20 else f"name {i}", "n": None if i % 7 == 0 else i, "x": i / 3,
             "flag": i % 2 == 0, "nullable_flag": None if i % 5 == 0 else i % 3 == 0,
             "day": None if i % 11 == 0 else date(2024, 1 + i % 12, 1 + i % 28), "empty": None, "empty_flag": None,
             "at": datetime(2024, 1, 1, i % 24), "amount": Decimal(i) / 4} for i in range(300)]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(ROWS.insert(), rows)
    yield engine
    engine.dispose()


STATEMENTS = {
    "every column": select(t.id, t.name, t.n, t.x, t.flag, t.nullable_flag, t.day, t.empty, t.empty_flag),
    "dates as text": select(t.id, type_coerce(t.day, String).label("day")),
    "booleans without a missing one": select(t.id, t.flag).where(t.id < 100),
    "a missing boolean in a few rows": select(t.nullable_flag).where(t.id.in_([5, 6, 7])),
    "no row": select(t.id, t.name, t.flag, t.day).where(t.id < 0),
    "a sum per group": select(t.flag, func.sum(t.x).label("x"), func.count().label("rows")).group_by(t.flag),
    "a date time (read_sql itself)": select(t.id, t.at, t.flag),
    "a decimal (read_sql itself: its floats)": select(t.id, t.amount, t.flag),
}


@pytest.mark.parametrize("name", list(STATEMENTS))
def test_the_frame_is_pandas_read_sql_s(rows_engine, name):
    stmt = STATEMENTS[name]
    with rows_engine.connect() as conn:
        want = pd.read_sql(stmt, conn)
    got = read_sql_frame(rows_engine, stmt)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    for column in got.columns:  # the values themselves: Python bools and dates, None where missing
        assert [type(v) for v in got[column].tolist()] == [type(v) for v in want[column].tolist()], column


def test_on_distinct_converts_each_distinct_value_once_and_keeps_rows_in_place():
    seen = []

    def upper(distinct):
        seen.append(list(distinct))
        return [v.upper() for v in distinct]

    values = pd.Series(["b", "a", None, "b", "a", "c"], dtype="str")
    out = on_distinct(values, upper, missing="?")
    assert out.tolist() == ["B", "A", "?", "B", "A", "C"]
    assert seen == [["b", "a", "c"]]  # one call, each value once
    numbers = on_distinct(pd.Series([3, 3, None, 5]), lambda d: d * 10, np.nan, "float64")
    np.testing.assert_array_equal(numbers, [30.0, 30.0, np.nan, 50.0])
    assert on_distinct(pd.Series([None, None], dtype="str"), upper, missing="?").tolist() == ["?", "?"]
    assert on_distinct(pd.Series([], dtype="str"), upper).tolist() == []
