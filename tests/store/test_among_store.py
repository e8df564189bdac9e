"""``among`` (core.store.queries): a long ``IN`` list as one bound parameter (a JSON array on
SQLite, ``= ANY(array)`` on PostgreSQL) selects exactly the rows a plain ``IN`` selects: a chunk
of 10,000 ids, ids that match nothing, one id, an empty list. And ``mark_touched``, which writes its
patients as one bound value (an array on PostgreSQL, a JSON array on SQLite)."""

from datetime import date

from sqlalchemy import func, insert, select

from core.derive.incremental import mark_touched, touched_patients
from core.store.models import DeriveTouched, Patient, Practice, Team
from core.store.queries import among


def _rows(engine):
    with engine.begin() as conn:
        conn.execute(insert(Practice), [{"practice_id": "PR", "name": "Practice"}])
        conn.execute(insert(Team), [{"team_id": "T", "practice_id": "PR", "name": "Team"}])
        conn.execute(insert(Patient), [{"patient_id": f"P{i:05d}", "given_name": "A", "family_name": "B", "sex": "female",
                                        "birth_date": date(1950 + i % 50, 1 + i % 12, 1)} for i in range(12_000)])  # fmt: skip


def test_among_selects_what_in_selects(store_engine):
    _rows(store_engine)
    dialect = store_engine.dialect.name
    p = Patient.__table__.c
    wanted = [f"P{i:05d}" for i in range(0, 12_000, 3)][:10_000] + ["P99999", "nobody"]
    with store_engine.connect() as conn:
        for values in (wanted, ["P00001"], ["nobody"], []):
            got = sorted(conn.execute(select(p.patient_id).where(among(p.patient_id, values, dialect))).scalars())
            assert got == sorted(conn.execute(select(p.patient_id).where(p.patient_id.in_(values))).scalars()), len(values)
        assert conn.execute(select(func.count()).where(among(p.patient_id, wanted, dialect))).scalar_one() == 4_000


def test_among_takes_ids_with_the_array_syntax_in_them(store_engine):
    """Ids holding what PostgreSQL's array text gives a meaning to (quotes, backslashes, commas,
    braces, blanks, NULL) are matched as the plain text they are, alone and among others."""
    odd = ['a"b', "c\\d", "e,f", "{g}", " h ", "NULL", "null", "i'j", "k\\", '"', "é ü", "l\\\"m"]
    with store_engine.begin() as conn:
        conn.execute(insert(Practice), [{"practice_id": "PR", "name": "Practice"}])
        conn.execute(insert(Patient), [{"patient_id": pid, "given_name": "A", "family_name": "B", "sex": "female",
                                        "birth_date": date(1950, 1, 1)} for pid in [*odd, "g", "h", "NUL"]])  # fmt: skip
    p = Patient.__table__.c
    with store_engine.connect() as conn:
        for values in (odd, *([pid] for pid in odd), [*odd[:3], "nobody"]):
            got = sorted(conn.execute(select(p.patient_id).where(among(p.patient_id, values, store_engine.dialect.name))).scalars())
            assert got == sorted(v for v in values if v in odd), values


def test_touched_patients_are_marked_once_each(store_engine):
    _rows(store_engine)
    ids = [f"P{i:05d}" for i in range(5_000)]
    with store_engine.begin() as conn:
        mark_touched(conn, ids[:3_000], "1")
        mark_touched(conn, ids[2_000:], "2")  # 1,000 again: kept once
    assert touched_patients(store_engine) == ids
    odd = ['P"quoted', "P\\back", "Pé", "007", "P 1"]  # written as the text they are (a JSON array on SQLite)
    with store_engine.begin() as conn:
        mark_touched(conn, [*odd, ids[0]], "3")
    assert touched_patients(store_engine) == sorted([*ids, *odd])
    with store_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(DeriveTouched)).scalar_one() == 5_005
