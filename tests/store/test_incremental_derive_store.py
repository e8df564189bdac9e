"""The incremental derive gives what a full derive gives.

An override, its lifting and a small import re-derive only the patients they touched
(``core.derive.incremental``; a full derive is made impossible while they run); then every
subgroup assignment, risk score, activity row and cell is compared with a full derive of the same
store: a small import value for value; an override (which applies the difference of the
patient's cells) with the same keys, every integer and text column exact and the cells' float
sums to a relative 1e-9 (absolute 1e-6 where a sum cancels to about 0). An import that moves the
top-decile risk cut-off falls back to a full derive and says so. SQLite and PostgreSQL.
"""

import re
import shutil
from datetime import date

import pandas as pd
import pytest
from sqlalchemy import event, func, select
from sqlmodel import SQLModel

from core.access.policy import Scope
from core.derive.incremental import derive_touched, touched_patients
from core.derive.pipeline import derive_all
from core.derive.subgroups.overrides import lift_override, set_override
from core.ingest import import_path
from core.store.db import make_engine
from core.store.models import Encounter
from core.store.queries import COUNTED_TABLES, derive_pending, table_counts
from tests.tables import table_frames

DERIVED = ("subgroup_assignment", "risk_score", "patient_month_activity", "team_month_activity", "cell")
LEAD = Scope("lead@example.org", "Lead", "admin", (), (), True, True)


def derived_tables(engine, names: tuple[str, ...] = DERIVED) -> dict[str, pd.DataFrame]:
    """Every derived table (or those of ``names``), rows in key order."""
    return table_frames(engine, names)


CELL_FLOATS = ["numerator", "denominator", "sum_sq"]


def assert_same_as_full_derive(engine, exact: bool = True) -> None:
    """Every derived table as a full derive of the store makes it. ``exact`` False (an override's
    difference): the cells' float sums to a relative 1e-9 (absolute 1e-6), all else exact."""
    incremental = derived_tables(engine)
    derive_all(engine)
    full = derived_tables(engine)
    for name in DERIVED:
        assert len(incremental[name]) == len(full[name]), name
        floats = CELL_FLOATS if name == "cell" and not exact else []
        rest = [c for c in full[name].columns if c not in floats]
        pd.testing.assert_frame_equal(incremental[name][rest], full[name][rest], check_exact=True, obj=name)
        if floats:
            pd.testing.assert_frame_equal(incremental[name][floats], full[name][floats], check_exact=False, rtol=1e-9,
                                          atol=1e-6, obj=name)  # fmt: skip


def assert_counts_recorded(engine) -> None:
    """The row counts recorded with the data version (an override carries them over) are the tables' own."""
    counts, recorded, _ = table_counts(engine)
    assert recorded
    with engine.connect() as conn:
        for model in COUNTED_TABLES:
            assert counts[model.__tablename__] == conn.execute(select(func.count()).select_from(model)).scalar_one(), model


def _no_full_derive(*_args, **_kwargs):
    raise AssertionError("a full derive ran")


def _patient_with_months(engine, n: int = 6) -> tuple[str, date, str]:
    """A patient assigned in at least ``n`` months, a month in the middle and its subgroup there."""
    rows = derived_tables(engine, ("subgroup_assignment",))["subgroup_assignment"]
    counts = rows.groupby("patient_id").size()
    patient = counts[counts >= n].index[len(counts[counts >= n]) // 2]
    mine = rows[rows["patient_id"] == patient].sort_values("month")
    middle = mine.iloc[len(mine) // 2]
    return patient, middle["month"], middle["subgroup"]


def test_an_override_and_its_lifting_re_derive_only_the_patient(sample_store, monkeypatch):
    engine = sample_store
    patient, month, subgroup = _patient_with_months(engine)
    other = "complex" if subgroup != "complex" else "healthy"
    before = derived_tables(engine)
    monkeypatch.setattr("core.derive.pipeline.derive_all", _no_full_derive)
    monkeypatch.setattr("core.derive.incremental.derive_patients", _no_full_derive)  # the difference, not a recomputation
    oid = set_override(engine, LEAD, patient, other, month, "weekly calls")
    monkeypatch.undo()
    assert derive_pending(engine) is None and touched_patients(engine) == []
    after = derived_tables(engine)
    moved = after["subgroup_assignment"].set_index(["patient_id", "month"])["subgroup"]
    assert moved.loc[(patient, month)] == other  # the patient moved ...
    changed_cells = before["cell"].merge(after["cell"], how="outer", indicator=True)
    assert (changed_cells["_merge"] != "both").any()  # ... and so did the cells
    assert_same_as_full_derive(engine, exact=False)

    monkeypatch.setattr("core.derive.pipeline.derive_all", _no_full_derive)
    monkeypatch.setattr("core.derive.incremental.derive_patients", _no_full_derive)
    summary = lift_override(engine, LEAD, oid)
    monkeypatch.undo()
    assert summary["mode"] == "override" and summary["patients"] == 1
    assert summary["cells"]["changed"] > 0
    assert_same_as_full_derive(engine, exact=False)


def test_an_override_into_a_subgroup_new_to_the_team_inserts_cells_and_its_lifting_deletes_them(sample_store):
    """Cells the patient alone is in appear with the override and go with its lifting (no cell
    without a patient stays), as a full derive has them."""
    engine = sample_store
    assignments = derived_tables(engine, ("subgroup_assignment",))["subgroup_assignment"]
    patient, month, subgroup = _patient_with_months(engine)
    team = assignments.set_index(["patient_id", "month"]).loc[(patient, month), "team_id"]
    there = assignments[(assignments["team_id"] == team) & (assignments["month"] == month)]
    target = there["subgroup"].value_counts().reindex(["frail", "complex", "chronic", "at_risk", "healthy"]).fillna(0).idxmin()
    if target == subgroup:
        target = next(s for s in ("frail", "complex") if s != subgroup)
    oid = set_override(engine, LEAD, patient, target, month, "new to the team's subgroup")
    with engine.connect() as conn:
        mine = conn.execute(select(SQLModel.metadata.tables["cell"]).where(
            SQLModel.metadata.tables["cell"].c.team_id == team, SQLModel.metadata.tables["cell"].c.subgroup == target,
            SQLModel.metadata.tables["cell"].c.month == month)).all()  # fmt: skip
    assert mine and min(r.patients for r in mine) >= 1
    assert_counts_recorded(engine)
    assert_same_as_full_derive(engine, exact=False)
    summary = lift_override(engine, LEAD, oid)
    assert summary["mode"] == "override" and summary["cells"]["deleted"] > 0
    assert_counts_recorded(engine)  # carried over with the cells deleted, not counted again
    cells = derived_tables(engine, ("cell",))["cell"]
    assert (cells["patients"] > 0).all()
    assert_same_as_full_derive(engine, exact=False)


def test_an_override_without_kept_thresholds_counts_the_scores_and_keeps_them(sample_store):
    """A store derived before the thresholds were kept: the override counts every stored score
    once, gives the same result and keeps the thresholds for the next one."""
    from core.derive.subgroups.assign import THRESHOLDS_KEY, stored_thresholds

    engine = sample_store
    with engine.connect() as conn:
        kept = stored_thresholds(conn)
    assert kept and all(len(per) > 0 for per in kept.values())  # the full derive kept them
    table = SQLModel.metadata.tables["app_setting"]
    with engine.begin() as conn:
        conn.execute(table.delete().where(table.c.key == THRESHOLDS_KEY))
    patient, month, subgroup = _patient_with_months(engine)
    set_override(engine, LEAD, patient, "complex" if subgroup != "complex" else "healthy", month, "weekly calls")
    with engine.connect() as conn:
        assert stored_thresholds(conn) == kept
    assert_same_as_full_derive(engine, exact=False)


def _small_bundle(sample_bundle, folder, patients: list[str], change) -> object:
    """The sample's practices, teams and staff, and every row of ``patients``, after ``change(tables)``."""
    folder.mkdir()
    tables = {p.name: pd.read_csv(p, dtype=str, keep_default_na=False) for p in sample_bundle.glob("*.csv")}
    encounters = tables["encounters.csv"]
    mine = set(encounters.loc[encounters["patient_id"].isin(patients), "encounter_id"])
    for name, frame in tables.items():
        if "patient_id" in frame:
            tables[name] = frame[frame["patient_id"].isin(patients)]
        elif name == "staff_minutes.csv":
            tables[name] = frame[frame["encounter_id"].isin(mine)]
    change(tables)
    for name, frame in tables.items():
        frame.to_csv(folder / name, index=False)
    return folder


def _add_ed_visit_and_unscored_patient(tables: dict) -> None:
    """An ED visit for the first patient; a new patient of unknown sex (no risk score) in the last month."""
    att = tables["attribution.csv"]
    first = att.iloc[0]
    last_month = max(att["month"])
    enc = tables["encounters.csv"]
    visit = {c: "" for c in enc.columns} | {"encounter_id": "E_NEW_1", "patient_id": first["patient_id"], "kind": "ed_visit",
                                            "start_date": f"{last_month}-03", "in_network": "false", "paid_usd": "1234.56"}  # fmt: skip
    tables["encounters.csv"] = pd.concat([enc, pd.DataFrame([visit])], ignore_index=True)
    pts = tables["patients.csv"]
    new = pts.iloc[0].to_dict() | {"patient_id": "P_NEW_1", "sex": "unknown", "birth_date": "1980-05-05", "death_date": ""}
    tables["patients.csv"] = pd.concat([pts, pd.DataFrame([new])], ignore_index=True)
    tables["attribution.csv"] = pd.concat([att, pd.DataFrame([first.to_dict() | {"patient_id": "P_NEW_1", "month": last_month}])],
                                          ignore_index=True)  # fmt: skip


def test_a_small_import_re_derives_only_its_patients(sample_store, sample_bundle, tmp_path, monkeypatch):
    engine = sample_store
    ids = sorted(derived_tables(engine, ("subgroup_assignment",))["subgroup_assignment"]["patient_id"].unique())[::60]  # 10 of 600
    bundle = _small_bundle(sample_bundle, tmp_path / "small", ids, _add_ed_visit_and_unscored_patient)
    report = import_path(engine, bundle)
    assert report.ok, report.to_text()
    assert touched_patients(engine) == sorted([*ids, "P_NEW_1"])
    monkeypatch.setattr("core.derive.pipeline.derive_all", _no_full_derive)
    summary = derive_touched(engine)
    monkeypatch.undo()
    assert summary["mode"] == "incremental" and summary["patients"] == len(ids) + 1
    assert derive_pending(engine) is None
    assert "P_NEW_1" in set(derived_tables(engine, ("subgroup_assignment",))["subgroup_assignment"]["patient_id"])
    assert_same_as_full_derive(engine)


def test_staff_minutes_of_encounters_loaded_before_touch_those_patients(sample_store, sample_bundle, tmp_path):
    """A correction of staff minutes alone (no encounter rows) touches the patients of their
    encounters, found in the store; the encounters of the file's other rows are the load's own."""
    engine = sample_store
    ids = sorted(derived_tables(engine, ("subgroup_assignment",))["subgroup_assignment"]["patient_id"].unique())[::100]
    corrected = ids[:2]
    minutes = pd.read_csv(sample_bundle / "staff_minutes.csv", dtype=str, keep_default_na=False)
    with engine.connect() as conn:
        rows = conn.execute(select(Encounter.patient_id, Encounter.encounter_id).where(Encounter.patient_id.in_(corrected))).all()
    theirs = {p: e for p, e in sorted(rows, reverse=True) if e in set(minutes["encounter_id"])}  # one each, with minutes
    assert sorted(theirs) == corrected

    def correct_minutes(tables: dict) -> None:
        fixed = minutes[minutes["encounter_id"].isin(theirs.values())].assign(minutes="41")
        tables["staff_minutes.csv"] = pd.concat([tables["staff_minutes.csv"], fixed], ignore_index=True)

    bundle = _small_bundle(sample_bundle, tmp_path / "minutes", ids[2:], correct_minutes)
    assert import_path(engine, bundle).ok
    assert touched_patients(engine) == sorted(ids)
    assert derive_touched(engine)["mode"] == "incremental"
    assert_same_as_full_derive(engine)


def test_an_import_that_moves_the_risk_cut_off_falls_back_to_a_full_derive(sample_store, sample_bundle, tmp_path):
    engine = sample_store
    ids = sorted(derived_tables(engine, ("subgroup_assignment",))["subgroup_assignment"]["patient_id"].unique())[:20]

    def sicker(tables: dict) -> None:  # heart failure, CKD and diabetes for all of them since long ago: higher scores
        rows = [{"condition_id": f"C_NEW_{p}_{code}", "patient_id": p, "code": code, "code_system": "ICD-10-CM",
                 "description": "", "onset_date": "2015-01-01", "resolved_date": ""}
                for p in ids for code in ("I50.9", "N18.4", "E11.9")]  # fmt: skip
        tables["conditions.csv"] = pd.concat([tables["conditions.csv"], pd.DataFrame(rows)], ignore_index=True)

    assert import_path(engine, _small_bundle(sample_bundle, tmp_path / "sicker", ids, sicker)).ok
    summary = derive_touched(engine)
    assert summary["mode"] == "full" and "cut-off moved" in summary["why"]
    assert derive_pending(engine) is None and touched_patients(engine) == []


def test_an_import_that_changes_staff_derives_everything(sample_store, sample_bundle, tmp_path):
    engine = sample_store

    def raise_pay(tables: dict) -> None:
        staff = tables["staff.csv"].copy()
        staff.loc[staff.index[0], "annual_cost_usd"] = "99999.0"
        tables["staff.csv"] = staff

    ids = sorted(derived_tables(engine, ("subgroup_assignment",))["subgroup_assignment"]["patient_id"].unique())[:3]
    assert import_path(engine, _small_bundle(sample_bundle, tmp_path / "pay", ids, raise_pay)).ok
    assert touched_patients(engine) == ["*"]
    summary = derive_touched(engine)
    assert summary["mode"] == "full" and "network-wide" in summary["why"]


def test_a_full_derive_that_stops_half_way_leaves_everything_to_do(sample_store, monkeypatch):
    engine = sample_store

    def stop(*_args, **_kwargs):
        raise RuntimeError("stopped half-way")

    monkeypatch.setattr("core.derive.cells.build_cells", stop)  # subgroups rewritten for everyone, cells not
    with pytest.raises(RuntimeError, match="half-way"):
        derive_all(engine)
    monkeypatch.undo()
    assert touched_patients(engine) == ["*"] and derive_pending(engine) is not None
    summary = derive_touched(engine)
    assert summary["mode"] == "full" and "network-wide" in summary["why"]
    assert touched_patients(engine) == [] and derive_pending(engine) is None


@pytest.mark.parametrize("damage", ["deleted", "no_patients"])
def test_an_override_over_cells_that_lack_the_patient_recomputes_them(sample_store, damage):
    """When the stored cells do not hold what the difference takes away (changed outside the
    derive: the cells gone, or counting no patient), nothing is subtracted: the patient's
    team-subgroup-months are recomputed."""
    engine = sample_store
    patient, month, subgroup = _patient_with_months(engine)
    team = derived_tables(engine, ("subgroup_assignment",))["subgroup_assignment"].set_index(["patient_id", "month"]).loc[(patient, month), "team_id"]
    cell = SQLModel.metadata.tables["cell"]
    mine = [cell.c.team_id == team, cell.c.subgroup == subgroup, cell.c.month == month]
    with engine.begin() as conn:  # the cells the patient is in this month
        if damage == "deleted":
            conn.execute(cell.delete().where(*mine))
        else:
            conn.execute(cell.update().where(*mine).values(patients=0))
    oid = set_override(engine, LEAD, patient, "complex" if subgroup != "complex" else "healthy", month, "weekly calls")
    assert derive_pending(engine) is None
    summary = lift_override(engine, LEAD, oid)
    assert summary["mode"] == "override"  # the store is whole again: the difference applies
    assert_same_as_full_derive(engine, exact=False)


# Tables with rows per patient (or per encounter): an override must reach them by the patient.
PATIENT_TABLES = {"attribution", "subgroup_assignment", "risk_score", "encounter", "condition", "measurement", "medication",
                  "procedure", "staff_minutes", "patient", "patient_month_activity", "subgroup_move", "patient_month_cost",
                  "subgroup_override"}  # fmt: skip
# A few rows whatever the number of patients (derive_touched: the work list, the patient alone here)
SMALL_TABLES = {"team", "practice", "staff", "month_pair", "derive_touched"}


def _derived(statement: str, name: str) -> bool:
    """Whether ``name`` is a subquery or a common table expression of ``statement`` (``WITH name AS
    (``, ``) AS name``): a scan of its rows reads what its own plan lines say, checked on their own.
    A table's alias (``subgroup_assignment AS cur``) is not one."""
    return re.search(rf"\b{name}\s+AS\s*\(|\)\s+AS\s+{name}\b", statement) is not None


def _whole_table_reads(statement: str, plan_line: str) -> list[str]:
    """What is wrong with one line of SQLite's query plan for an override: a table scanned whole
    (but the small ones and constant rows), or a table with rows per patient searched otherwise
    than by the patient or its encounters (one index entry, a min or max or ``LIMIT`` read, is fine)."""
    found = re.match(r"(SCAN|SEARCH) (\w+)", plan_line)
    if found is None or found[2].isdigit() or found[2] in SMALL_TABLES or _derived(statement, found[2]):
        return []
    one_entry = re.search(r"\b(min|max)\(|\bLIMIT\b", statement, re.IGNORECASE) is not None or "(rowid=?)" in plan_line
    if found[1] == "SCAN" and not one_entry:
        return [f"{plan_line}: {statement[:160]}"]
    by_patient = re.search(r"\b(patient_id|encounter_id)=", plan_line) is not None
    if found[1] == "SEARCH" and found[2] in PATIENT_TABLES and not by_patient and not one_entry:
        return [f"{plan_line}: {statement[:160]}"]
    return []


def test_an_override_reads_the_patients_rows_only(sample_db_url, tmp_path):
    """Every statement a set and a lift issue (SQLite's query plan of each, with its parameters)
    reads by an index: no table is scanned whole but the teams, practices and staff, and the
    tables with rows per patient are searched by the patient. So an override's work stays one
    patient's, whatever the size of the network or of the patient's team (issue 21: under 2 s at
    100,000 patients; counting every table after the override read them all)."""
    path = tmp_path / "store.db"
    shutil.copy(sample_db_url.removeprefix("sqlite:///"), path)
    engine = make_engine(f"sqlite:///{path}")
    patient, month, subgroup = _patient_with_months(engine)
    statements = []

    def record(_conn, _cursor, statement, parameters, _context, executemany):
        statements.append((statement, parameters[0] if executemany else parameters))

    event.listen(engine, "before_cursor_execute", record)
    oid = set_override(engine, LEAD, patient, "complex" if subgroup != "complex" else "healthy", month, "weekly calls")
    summary = lift_override(engine, LEAD, oid)
    event.remove(engine, "before_cursor_execute", record)
    assert summary["mode"] == "override"
    problems, planned = [], 0
    raw = engine.raw_connection()
    try:
        for statement, parameters in statements:
            if not statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "INSERT", "WITH")):
                continue
            planned += 1
            for row in raw.cursor().execute("EXPLAIN QUERY PLAN " + statement, parameters or ()):
                problems += _whole_table_reads(statement, row[3])
    finally:
        raw.close()
        engine.dispose()
    assert planned > 50  # the override's statements were seen
    assert not problems, "\n".join(problems)


def test_clearing_the_touched_forgets_those_derived_and_keeps_the_mark_while_others_wait(store_engine):
    """Patients touched since the derive started stay for the next one, and so does the month mark."""
    from core.derive.incremental import FROM_MONTH_KEY, clear_touched, from_month_mark, mark_touched
    from core.store.db import create_schema

    create_schema(store_engine)
    derived = [f"P{i:06d}" for i in range(120_000)]  # more than one chunk
    with store_engine.begin() as conn:
        mark_touched(conn, [*derived, "LATE1", "LATE2"], "1", date(2026, 3, 14))

    clear_touched(store_engine, derived)
    assert touched_patients(store_engine) == ["LATE1", "LATE2"]
    assert from_month_mark(store_engine) == date(2026, 3, 1)

    clear_touched(store_engine, ["LATE1", "LATE2", "NEVER"])
    assert touched_patients(store_engine) == [] and from_month_mark(store_engine) is None
    with store_engine.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT count(*) FROM app_setting WHERE key = '{FROM_MONTH_KEY}'").scalar_one() == 0
