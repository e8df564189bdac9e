"""Benchmark: generate, import and derive a network of N patients, then time what the pages ask.

``python -m core bench`` calls :func:`run_bench`. Every heavy step (generate, import, assign,
cells, queries, page renders, naive baseline) runs in its own child process
(``python -m core.cli.bench STEP JSON``), so that the step's peak memory is the child's peak
resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which includes the Python
interpreter and the imported libraries, about 150-250 MB) or, when the step runs worker
processes (cells), the peak of the sum over the child and its workers sampled from /proc every
0.2 s, whichever is larger. Times are wall-clock seconds; each step also reports its CPU seconds
(user + system of the child and its workers, not of the database server), a steadier figure
when other jobs share the machine. The report also gives the machine's speed at the run's start
and end (:func:`machine_speed`: a Python loop, SQLite key searches, a synced write), by which runs
of other hours and machines compare.

Latencies are the median (p50), the 95th percentile (p95, nearest rank) and the slowest (max) of
``reps`` repetitions after one warm-up call; the database file or server is warm (no cache drop).
p95 is reported only from 20 repetitions up: below that it would be the slowest call again.
Page renders (AppTest, every page by a role that may open it) are cold: a fresh AppTest runs the
role's home page with every Streamlit cache cleared (``home_s``), then ``st.cache_data`` is
cleared again and the page is opened with ``switch_page`` (``render_s``: the page's own queries
and rendering, the engine already made).

The naive baseline recomputes three figures of one team + subgroup over 12 months
(admissions per 1,000 member-years, HbA1c < 8 % control, total cost PMPM) from the raw
tables in pandas, the way a dashboard without cells would, and is compared with the product
path (build_scorecard + cost_pmpm_from_cells on cells) for the same selection.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from core.store.months import window_months

REPS = 20
BASELINE_REPS = 3  # calls of the naive baseline
WORKLIST_PATIENTS = 2_500
STEPS = ("generate", "import", "assign", "activity", "cells", "queries", "baseline", "pages", "new_month")


def _peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (Linux reports kilobytes)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


P95_MIN_REPS = 20  # below this the nearest-rank 95th percentile is the slowest call


def percentiles(seconds: list[float]) -> dict:
    """p50, p95 (nearest rank) and the slowest of a list of durations, in milliseconds. With fewer
    than 20 durations the nearest-rank p95 is only the slowest call again, so ``p95_ms`` is None
    and the slowest call is reported as what it is (``max_ms``)."""
    ms = np.sort(np.asarray(seconds, dtype="float64") * 1000.0)
    p95 = round(float(ms[int(np.ceil(0.95 * len(ms))) - 1]), 1) if len(ms) >= P95_MIN_REPS else None
    return {"p50_ms": round(float(np.median(ms)), 1), "p95_ms": p95, "max_ms": round(float(ms[-1]), 1), "reps": len(ms)}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def time_call(fn, reps: int = REPS) -> dict:
    """Latency of ``fn()``: one warm-up call, then ``reps`` timed calls."""
    fn()
    seconds = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - t0)
    return percentiles(seconds)


# --- steps (each runs in a child process) -----------------------------------------------


def step_generate(args: dict) -> dict:
    from sample_data.generator import NetworkSpec, write_bundle

    end = date.fromisoformat(args["end_month"] + "-01") if args.get("end_month") else None
    spec = NetworkSpec(patients=args["patients"], months=args["months"], seed=args.get("seed", 42), end_month=end)
    summary = write_bundle(spec, Path(args["bundle"]))
    return {"rows": int(sum(v for v in summary.get("rows", {}).values())) if isinstance(summary.get("rows"), dict) else None}


def step_import(args: dict) -> dict:
    from core.access.demo import mark_sample_store
    from core.ingest import import_path
    from core.store.db import create_schema, make_engine, wait_for_checkpoints
    from core.store.queries import has_patients

    engine = make_engine(args["database_url"])
    create_schema(engine)
    empty = not has_patients(engine)
    report = import_path(engine, Path(args["bundle"]), fmt="csv")
    if not report.ok:
        raise RuntimeError(report.to_text())
    wait_for_checkpoints()  # the import's pages copied into the database file count too
    server_cpu = server_cpu_s(engine)
    if empty:  # the benchmark's own generated network alone, as on a first run: the pages open in demo mode
        mark_sample_store(engine)
    return {"rows": int(sum(report.loaded.values())), "loaded": report.loaded, "server_cpu_s": server_cpu}


def server_cpu_s(engine) -> float | None:
    """PostgreSQL on this machine: CPU seconds (user + system, from /proc) of the server processes
    serving the store's open connections, i.e. the database's share of a step's work (the
    engine's pooled connections are the ones the step used). None on SQLite or a remote server."""
    if engine.dialect.name != "postgresql":
        return None
    from sqlalchemy import text

    with engine.connect() as conn:
        pids = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")).scalars().all()
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # another machine, or the process ended
            return None
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return round(total, 2)


def columnar_load(bundle: Path) -> dict:
    """A plain columnar load of every CSV file of the bundle into memory, with type inference and no
    checks: the speed of the data that the import is compared with. DuckDB's ``read_csv`` when
    ``duckdb`` is installed (requirements-dev.txt), else ``pyarrow.csv.read_csv`` (the report
    says which)."""
    files = sorted(Path(bundle).glob("*.csv"))
    try:
        import duckdb
    except ImportError:
        duckdb = None
    if duckdb is not None:
        con = duckdb.connect(":memory:")
        rows = 0
        for i, path in enumerate(files):
            literal = "'" + str(path).replace("'", "''") + "'"
            con.execute(f"CREATE TABLE t{i} AS SELECT * FROM read_csv({literal})")
            rows += con.execute(f"SELECT count(*) FROM t{i}").fetchone()[0]
        con.close()
        return {"engine": f"duckdb {duckdb.__version__} read_csv", "files": len(files), "rows": int(rows)}
    import pyarrow as pa
    import pyarrow.csv as pacsv

    tables = [pacsv.read_csv(path) for path in files]
    return {"engine": f"pyarrow {pa.__version__} csv.read_csv (duckdb is not installed)", "files": len(files),
            "rows": int(sum(t.num_rows for t in tables))}


def step_columnar(args: dict) -> dict:
    return columnar_load(Path(args["bundle"]))


def step_assign(args: dict) -> dict:
    from core.cli.bench_engines import use_engine
    from core.derive.subgroups.assign import assign_subgroups
    from core.store.db import create_schema, make_engine

    engine = make_engine(args["database_url"])
    create_schema(engine)  # a store imported by an earlier version gets the current columns
    use_engine(args.get("engine"))
    summary = assign_subgroups(engine)
    return {"rows": int(summary["rows"]), "parts": summary.get("parts", {})}


def step_activity(args: dict) -> dict:
    from core.derive.activity import build_patient_month_activity
    from core.derive.page_aggregates import build_page_aggregates
    from core.store.db import create_schema, make_engine

    engine = make_engine(args["database_url"])
    create_schema(engine)  # a store made by an earlier version gets the current tables
    summary = build_patient_month_activity(engine)
    pages = build_page_aggregates(engine)  # the derive builds them with the activity
    return {"rows": int(summary["rows"]), "team_rows": int(summary["team_rows"]), "page_aggregates": pages}


def step_cells(args: dict) -> dict:
    from core.cli.bench_engines import use_engine
    from core.derive.cells import build_cells
    from core.derive.incremental import clear_touched, touched_patients
    from core.store.db import make_engine
    from core.store.queries import bump_data_version, derive_pending

    engine = make_engine(args["database_url"])
    use_engine(args.get("engine"))
    summary = build_cells(engine)
    # assign, activity and cells are the whole derive, timed step by step: the import's pending
    # mark and its touched patients are caught up with, as the pipeline's own derive would leave them
    bump_data_version(engine, derived=derive_pending(engine))
    clear_touched(engine, touched_patients(engine))
    return {"rows": int(summary["rows"]), "blocks": summary["blocks"], "parts": summary["seconds"]}


DERIVED_TABLES = ("subgroup_assignment", "risk_score", "cell")


def step_checksum(args: dict) -> dict:
    """``{table: "<rows>:<sha256 of the rows in primary-key order>"}`` of the derived tables."""
    import hashlib

    from sqlalchemy import select
    from sqlmodel import SQLModel

    from core.store.db import make_engine

    engine = make_engine(args["database_url"])
    out = {}
    with engine.connect() as conn:
        for name in DERIVED_TABLES:
            table = SQLModel.metadata.tables[name]
            digest, n = hashlib.sha256(), 0
            for row in conn.execute(select(table).order_by(*table.primary_key.columns)).yield_per(50_000):
                digest.update(repr(tuple(row)).encode())
                n += 1
            out[name] = f"{n}:{digest.hexdigest()}"
    return out


def selections(engine) -> dict:
    """Period, the biggest practice and team (last month), its biggest subgroup, the team +
    chronic subgroup of the naive baseline, the team + subgroup and the team nearest a 2,500-patient
    worklist, and the team + subgroup of the biggest list the worklist page shows."""
    from core.store.queries import months_available, panel_counts
    from core.views.worklist import load_worklist_rules

    period = months_available(engine)[-1]
    panel = panel_counts(engine, period)
    practice = panel.groupby("practice_id")["members"].sum().idxmax()
    team = panel.groupby("team_id")["members"].sum().idxmax()
    mine = panel.loc[(panel["team_id"] == team) & (panel["subgroup"] != "unassigned")]
    subgroup = mine.loc[mine["members"].idxmax(), "subgroup"] if len(mine) else None
    chronic = panel.loc[panel["subgroup"] == "chronic"]
    pick = chronic.loc[chronic["members"].idxmax()] if len(chronic) else None
    baseline = (pick["team_id"], "chronic") if pick is not None else (team, subgroup)
    # the worklist target is set for a 2,500-patient list: the team + subgroup nearest that size
    assigned = panel.loc[panel["subgroup"] != "unassigned"].groupby(["team_id", "subgroup"])["members"].sum()
    near = (assigned - WORKLIST_PATIENTS).abs().idxmin() if len(assigned) else (team, subgroup)
    teams = panel.groupby("team_id")["members"].sum()
    near_team = (teams - WORKLIST_PATIENTS).abs().idxmin()
    # the biggest list the worklist page shows (it lists at most worklist.toml's max_patients)
    shown = assigned[assigned <= load_worklist_rules().max_patients]
    biggest = shown.idxmax() if len(shown) else near
    return {"period": period, "practice_id": practice, "team_id": team, "subgroup": subgroup, "baseline": baseline,
            "worklist": [*near, int(assigned.get(near, 0))], "worklist_team": [near_team, int(teams[near_team])],
            "worklist_biggest": [*biggest, int(assigned.get(biggest, 0))]}


def step_queries(args: dict) -> dict:
    from sqlalchemy import select

    from core.metrics.cost_reports import cost_pmpm_from_cells
    from core.metrics.scorecard import Selection, build_scorecard
    from core.store.db import make_engine
    from core.store.models import SubgroupAssignment
    from core.store.queries import patient_record, read_frame
    from core.views.worklist import member_counts, team_worklist

    engine = make_engine(args["database_url"])
    reps = int(args.get("reps", REPS))
    s = selections(engine)
    period, practice, team, subgroup = s["period"], s["practice_id"], s["team_id"], s["subgroup"]
    months12 = window_months(period, "12m")
    out: dict[str, dict] = {}

    def card(**kw):
        return lambda: build_scorecard(engine, Selection(period=period, **kw))

    cases = {
        "scorecard network month": card(window="month"),
        "scorecard network 12m": card(window="12m"),
        "scorecard practice quarter": card(practice_id=practice, window="quarter"),
        "scorecard team+subgroup month": card(team_id=team, subgroup=subgroup, window="month"),
        "scorecard team+subgroup 12m": card(team_id=team, subgroup=subgroup, window="12m"),
        "scorecard network 12m by age_band": card(window="12m", stratum="age_band"),
        "scorecard team 12m by race_ethnicity": card(team_id=team, window="12m", stratum="race_ethnicity"),
        "cost PMPM network by team+subgroup 12m": lambda: cost_pmpm_from_cells(engine, ("team_id", "subgroup"), months12),
        "cost PMPM team+subgroup 12m": lambda: cost_pmpm_from_cells(engine, (), months12, None, team, subgroup),
        "trend network by month (member-months, cost)": lambda: cost_pmpm_from_cells(engine, ("month",)),
        "trend team by month and subgroup": lambda: cost_pmpm_from_cells(engine, ("month", "subgroup"), team_id=team),
        "worklist member_counts (biggest team)": lambda: member_counts(engine, period, (team,)),
    }
    # The worklist page lists at most worklist.toml's max_patients (10,000): the lists timed are
    # the team + subgroup nearest 2,500 patients and the whole team nearest 2,500.
    near_team, near_subgroup, _n = s["worklist"]
    whole_team, _members = s["worklist_team"]
    cases[f"worklist team_worklist (~{WORKLIST_PATIENTS:,} patients)"] = lambda: team_worklist(engine, period, (near_team,), near_subgroup)
    cases["worklist team_worklist (whole team nearest 2,500)"] = lambda: team_worklist(engine, period, (whole_team,), None)
    sa = SubgroupAssignment
    patient_id = read_frame(engine, select(sa.patient_id).where(sa.month == period, sa.team_id == team, sa.subgroup == subgroup)
                            .order_by(sa.patient_id).limit(1))["patient_id"].iloc[0]  # fmt: skip
    cases["patient page patient_record"] = lambda: patient_record(engine, patient_id, (team,))
    for name, fn in cases.items():
        out[name] = time_call(fn, reps)
    return {"selection": {**s, "period": str(period), "patient_id": patient_id, "team_members": member_counts(engine, period, (team,))[None]},
            "latency": out}  # fmt: skip


def naive_team_scorecard(engine, period: date, team_id: str, subgroup: str) -> dict:
    """Admissions per 1,000 member-years, HbA1c < 8 % share and total cost PMPM of one team and
    subgroup over the 12 months ending ``period``, recomputed from raw tables in pandas.

    Follows the measure definitions of core/config/measures.toml (admissions: encounters of kind
    ``admission`` starting in an attributed month of the selection; HbA1c: diabetic patients aged
    18-75 in the selection at ``period``, latest 4548-4 value of the 12 months < 8.0) and the cost
    model of core/derive/costs.py (TDABC internal + claims paid). Only the raw rows of the patients
    attributed to the team in the window are read (one SQL filter; everything else in pandas), so
    it also runs at 1,000,000 patients: a baseline that favours the naive side.
    """
    from sqlalchemy import select

    from core.store.models import Attribution

    months = window_months(period, "12m")
    team = select(Attribution.patient_id).where(Attribution.team_id == team_id, Attribution.month.in_(months)).distinct()
    sel = _naive_selection(engine, team, months, team_id, subgroup)
    member_months = len(sel)
    admissions = _naive_admissions(engine, team, sel)
    admissions_per_1000 = 1000.0 * admissions / (member_months / 12.0) if member_months else float("nan")
    hba1c = _naive_hba1c_control(engine, team, sel, period, months)
    pmpm = _naive_cost_pmpm(engine, team, months, team_id, subgroup)
    return {"admissions_per_1000": round(admissions_per_1000, 2), "hba1c_control_pct": round(float(hba1c), 2),
            "cost_total_pmpm_usd": round(pmpm, 2), "member_months": member_months}


def _naive_selection(engine, team, months: list[date], team_id: str, subgroup: str) -> pd.DataFrame:
    """Attributed patient-months of the team and subgroup in the months (grain: patient, month)."""
    from sqlalchemy import select

    from core.store.models import Attribution, SubgroupAssignment
    from core.store.queries import read_frame

    att = read_frame(engine, select(Attribution.patient_id, Attribution.month, Attribution.team_id).where(Attribution.patient_id.in_(team)))
    sub = read_frame(engine, select(SubgroupAssignment.patient_id, SubgroupAssignment.month, SubgroupAssignment.subgroup)
                     .where(SubgroupAssignment.patient_id.in_(team)))  # fmt: skip
    for f in (att, sub):
        f["month"] = pd.to_datetime(f["month"]).dt.to_period("M")
    sel = att.merge(sub, on=["patient_id", "month"], how="left")
    window = pd.PeriodIndex([pd.Period(m, "M") for m in months])
    return sel[(sel["team_id"] == team_id) & (sel["subgroup"] == subgroup) & sel["month"].isin(window)]


def _naive_admissions(engine, team, sel: pd.DataFrame) -> int:
    """Admissions starting in a patient-month of the selection."""
    from sqlalchemy import select

    from core.store.models import Encounter
    from core.store.queries import read_frame

    enc = read_frame(engine, select(Encounter.patient_id, Encounter.kind, Encounter.start_date).where(Encounter.patient_id.in_(team)))
    enc["month"] = pd.to_datetime(enc["start_date"]).dt.to_period("M")
    return len(enc[enc["kind"] == "admission"].merge(sel[["patient_id", "month"]], on=["patient_id", "month"]))


def _naive_hba1c_control(engine, team, sel: pd.DataFrame, period: date, months: list[date]) -> float:
    """% of diabetic patients aged 18-75 in the selection at ``period`` whose latest HbA1c of the months is < 8.0."""
    from sqlalchemy import select

    from core.store.models import Condition, Measurement, Patient
    from core.store.queries import read_frame

    last = sel[sel["month"] == pd.Period(period, "M")][["patient_id"]]
    pts = read_frame(engine, select(Patient.patient_id, Patient.birth_date).where(Patient.patient_id.in_(team)))
    cond = read_frame(engine, select(Condition.patient_id, Condition.code, Condition.onset_date, Condition.resolved_date)
                      .where(Condition.patient_id.in_(team)))  # fmt: skip
    end = pd.Timestamp(period) + pd.offsets.MonthEnd(0)
    active = cond[cond["code"].str.replace(".", "", regex=False).str[:3].isin(["E10", "E11", "E12", "E13"])
                  & (pd.to_datetime(cond["onset_date"]) <= end)
                  & (pd.to_datetime(cond["resolved_date"]).isna() | (pd.to_datetime(cond["resolved_date"]) > end))]
    den = last[last["patient_id"].isin(active["patient_id"])].merge(pts, on="patient_id")
    birth = pd.to_datetime(den["birth_date"])
    age = end.year - birth.dt.year - (birth.dt.month > end.month)
    den = den[(age >= 18) & (age <= 75)]
    meas = read_frame(engine, select(Measurement.patient_id, Measurement.code, Measurement.value, Measurement.measured_date)
                      .where(Measurement.patient_id.in_(team)))  # fmt: skip
    start = pd.Timestamp(months[0])
    a1c = meas[meas["code"] == "4548-4"].copy()
    a1c["measured_date"] = pd.to_datetime(a1c["measured_date"])
    a1c = a1c[(a1c["measured_date"] >= start) & (a1c["measured_date"] <= end)]
    latest = a1c.sort_values("measured_date").groupby("patient_id")["value"].last()
    controlled = den["patient_id"].map(latest).lt(8.0).sum()
    return 100.0 * controlled / len(den) if len(den) else float("nan")


def _naive_cost_pmpm(engine, team, months: list[date], team_id: str, subgroup: str) -> float:
    """Total cost (TDABC internal + claims paid) per member-month of the team and subgroup."""
    from core.derive import costs
    from core.metrics.cost_reports import select_patient_months

    catalog = costs.load_catalog()
    settings = costs.load_cost_settings(catalog=catalog)
    wide = costs.build_patient_month_costs(costs.load_cost_inputs(engine, months, team), settings, catalog)
    wide = select_patient_months(wide, team_id=team_id, subgroup=subgroup)
    return float(wide[costs.COST_TOTAL].sum() / len(wide)) if len(wide) else float("nan")


def product_team_scorecard(engine, period: date, team_id: str, subgroup: str) -> dict:
    """The same three figures from cells (build_scorecard + cost_pmpm_from_cells)."""
    from core.metrics.cost_reports import cost_pmpm_from_cells
    from core.metrics.scorecard import Selection, build_scorecard

    card = build_scorecard(engine, Selection(team_id=team_id, subgroup=subgroup, period=period, window="12m"))
    cost = cost_pmpm_from_cells(engine, (), window_months(period, "12m"), None, team_id, subgroup)
    value = card.set_index("measure_id")["value"]
    return {"admissions_per_1000": round(float(value.get("admissions", np.nan)), 2),
            "hba1c_control_pct": round(float(value.get("hba1c_control", np.nan)), 2),
            "cost_total_pmpm_usd": round(float(cost["cost_total_pmpm_usd"].iloc[0]), 2) if len(cost) else None}


def step_baseline(args: dict) -> dict:
    from core.store.db import make_engine

    engine = make_engine(args["database_url"])
    s = selections(engine)
    # the team with the most chronic patients: every measure of the baseline applies to that subgroup
    period, (team, subgroup) = s["period"], s["baseline"]
    reps = int(args.get("baseline_reps", 3))
    seconds = []
    for _ in range(reps):
        t0 = time.perf_counter()
        naive = naive_team_scorecard(engine, period, team, subgroup)
        seconds.append(time.perf_counter() - t0)
    product = time_call(lambda: product_team_scorecard(engine, period, team, subgroup), int(args.get("reps", REPS)))
    naive_ms = float(np.median(seconds) * 1000.0)
    return {"selection": f"team {team}, subgroup {subgroup}, 12 months to {period:%Y-%m}",
            "naive": {**percentiles(seconds), "figures": naive},
            "product": {**product, "figures": product_team_scorecard(engine, period, team, subgroup)},
            "ratio": round(naive_ms / max(product["p50_ms"], 1e-6), 1), "team_id": team, "subgroup": subgroup}


def _month_database(database_url: str, out: Path) -> str:
    """A fresh store of the new-month step beside the benchmark's own: an SQLite file in ``out``, or
    a database ``<name>_new_month`` on the same PostgreSQL server (dropped and created)."""
    from sqlalchemy.engine import make_url

    from core.store.copies import create_database, drop_database, remove_sqlite, server

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = out / "new_month.db"
        remove_sqlite(path)
        return f"sqlite:///{path}"
    name = f"{url.database}_new_month"
    with server(url) as conn:
        drop_database(conn, name)
        create_database(conn, name)
    return url.set(database=name).render_as_string(hide_password=False)


def _cpu_s() -> float:
    return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))


MONTH_REPS = 3  # runs of the new month, each on the store as the full pipeline left it


def step_new_month(args: dict) -> dict:
    """One new month (issue 21): the bundle is split into the rows before its last month and the
    rows of that month (``sample_data.split``); a fresh store imports and derives the first (the
    full pipeline), then imports the last month and derives what it changed, as ``python -m core
    import`` does. Wall and CPU seconds (this process and its workers) of both, their ratio and
    the load average after each.

    The month is run ``month_reps`` times (default :data:`MONTH_REPS`), each time on the store as
    the full pipeline left it (saved once, put back before each run after the first:
    :func:`_save_store`), because one run of about 30 s moves by a second or two from minute to
    minute on a shared machine, which is several tenths of a point of the ratio. ``after`` is the
    median run by wall seconds (the lower of the middle two for an even count), ``after_runs``
    every run in order, ``ratio`` and ``cpu_ratio`` the median's, ``ratios`` each run's."""
    from core.derive.incremental import derive_touched
    from core.ingest import import_path
    from core.store.db import create_schema, make_engine, wait_for_checkpoints
    from sample_data.split import split_bundle

    bundle = Path(args["bundle"])
    out = bundle.parent / "new_month"
    months = sorted(pd.read_csv(bundle / "attribution.csv", usecols=["month"], dtype=str)["month"].str.slice(0, 7).unique())
    split_bundle(bundle, months[-1], out / "before", out / "after")
    url = _month_database(args["database_url"], out)
    engine = make_engine(url)
    create_schema(engine)
    result = {"months": len(months), "new_month": months[-1]}

    def run(name: str) -> dict:
        t0, c0 = time.perf_counter(), _cpu_s()
        report = import_path(engine, out / name, fmt="csv")
        if not report.ok:
            raise RuntimeError(report.to_text())
        t1 = time.perf_counter()
        summary = derive_touched(engine) or {}
        wait_for_checkpoints()  # the import's checkpoint runs beside the derive; it counts too
        t2, c2 = time.perf_counter(), _cpu_s()
        return {"rows": int(sum(report.loaded.values())), "import_s": round(t1 - t0, 2), "derive_s": round(t2 - t1, 2),
                "seconds": round(t2 - t0, 2), "cpu_s": round(c2 - c0, 2), "mode": summary.get("mode"),
                "why": summary.get("why"), "parts": summary.get("parts"),
                "load_average": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip

    result["before"] = run("before")
    reps = max(1, int(args.get("month_reps", MONTH_REPS)))
    saved = None
    if reps > 1:
        engine.dispose()
        saved = _save_store(url)
    runs = []
    try:
        for i in range(reps):
            if i:
                engine.dispose()
                _restore_store(url, saved)
            runs.append(run("after"))
    finally:
        engine.dispose()
        if saved is not None:
            _drop_saved_store(url, saved)
    before = result["before"]
    result["after"] = sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]
    result["after_runs"] = runs
    result["ratios"] = [round(r["seconds"] / max(before["seconds"], 1e-9), 4) for r in runs]
    result["ratio"] = round(result["after"]["seconds"] / max(before["seconds"], 1e-9), 4)
    result["cpu_ratio"] = round(result["after"]["cpu_s"] / max(before["cpu_s"], 1e-9), 4)
    return result


def _save_store(url: str) -> str:
    """A copy of the store at ``url`` (no session may be open on it), to put back with
    :func:`_restore_store` (:mod:`core.store.copies`): an SQLite file beside it, or a PostgreSQL
    database ``<name>_saved`` made with the store as its template. Returns the copy's path or name."""
    from sqlalchemy.engine import make_url

    from core.store.copies import copy_database, copy_sqlite

    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        saved = f"{u.database}.saved"
        copy_sqlite(u.database, saved)
        return saved
    saved = f"{u.database}_saved"
    copy_database(u, u.database, saved)
    return saved


def _restore_store(url: str, saved: str) -> None:
    """Put the copy :func:`_save_store` made back in place of the store at ``url``."""
    from sqlalchemy.engine import make_url

    from core.store.copies import copy_database, copy_sqlite

    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        copy_sqlite(saved, u.database)
    else:
        copy_database(u, saved, u.database)


def _drop_saved_store(url: str, saved: str) -> None:
    from sqlalchemy.engine import make_url

    from core.store.copies import drop_database, remove_sqlite, server

    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        remove_sqlite(saved)
        return
    with server(u) as conn:
        drop_database(conn, saved)


def _override_patients(engine) -> list[tuple[str, int, str]]:
    """One patient of every team, the biggest team first: (team, its patients, a patient attributed
    to it in every attributed month, else in the most; the first by id)."""
    from sqlalchemy import func, select

    from core.store.models import Attribution as a

    with engine.connect() as conn:
        sizes = conn.execute(select(a.team_id, func.count(a.patient_id.distinct())).group_by(a.team_id)).all()
        out = []
        for team, size in sorted(sizes, key=lambda r: (-r[1], r[0])):
            months = func.count().label("months")
            row = conn.execute(select(a.patient_id, months).where(a.team_id == team).group_by(a.patient_id)
                               .order_by(months.desc(), a.patient_id).limit(1)).first()  # fmt: skip
            out.append((team, int(size), row.patient_id))
    return out


def step_override(args: dict) -> dict:
    """A subgroup override set and lifted for one patient of every team (issue 21: under 2 s),
    the biggest team first, as the patient page does (``set_override`` / ``lift_override``: the
    audited write, then the difference of the patient's cells). Wall and CPU seconds of each call
    and the 1-minute load average before it; the first call is the process's first (``cold``:
    measure catalogue, settings and risk model loaded then), and ``import_s`` the import of the
    modules it needs. The store keeps the lifted overrides and their audit events."""
    t0, c0 = time.perf_counter(), _cpu_s()
    from sqlalchemy import select

    from core.access.policy import Scope
    from core.derive.subgroups.overrides import lift_override, set_override
    from core.derive.subgroups.rules import active_rules_path, load_rules
    from core.store.db import make_engine
    from core.store.models import SubgroupAssignment as s

    imports = {"import_s": round(time.perf_counter() - t0, 2), "import_cpu_s": round(_cpu_s() - c0, 2)}
    engine = make_engine(args["database_url"])
    subgroups = list(load_rules(active_rules_path()).subgroup_ids)
    scope = Scope("bench", "Benchmark", "admin", (), (), True, True)
    calls = []
    for team, size, patient in _override_patients(engine):
        with engine.connect() as conn:
            months = conn.execute(select(s.month, s.subgroup).where(s.patient_id == patient).order_by(s.month)).all()
        month, current = months[len(months) // 2]
        target = next(g for g in subgroups if g != current)
        for action in ("set", "lift"):
            load, t0, c0 = os.getloadavg()[0], time.perf_counter(), _cpu_s()
            if action == "set":
                override_id = set_override(engine, scope, patient, target, month, "benchmark: set and lifted at once")
            else:
                lift_override(engine, scope, override_id)
            calls.append({"team": team, "team_patients": size, "patient": patient, "action": action, "to": target,
                          "from_month": str(month), "wall_s": round(time.perf_counter() - t0, 2),
                          "cpu_s": round(_cpu_s() - c0, 2), "load": round(load, 1), "cold": not calls})  # fmt: skip
    warm = [c for c in calls if not c["cold"]]
    return {**imports, "calls": calls, "rows": len(calls), "warm_max_wall_s": max((c["wall_s"] for c in warm), default=None),
            "warm_max_cpu_s": max((c["cpu_s"] for c in warm), default=None)}  # fmt: skip


OVERRIDE_TARGET_S = 2.0  # a subgroup override set or lifted, wall seconds (issue 21)


def format_override(r: dict) -> list[str]:
    """The override table: one patient of every team, set then lifted; ``!`` marks a call over target."""
    lines = [f"subgroup override, one patient of every team (set, then lift; modules imported in {r['import_s']:.2f} s, "
             f"{r['import_cpu_s']:.2f} CPU s)", f"{'team (patients)':24s} {'patient':12s} {'action':6s} {'wall s':>7s} {'CPU s':>6s} {'load':>5s}"]  # fmt: skip
    for c in r["calls"]:
        mark, team = "!" if c["wall_s"] > OVERRIDE_TARGET_S else " ", f"{c['team']} ({c['team_patients']:,})"
        lines.append(f"{team:24s} {c['patient']:12s} {c['action']:6s} {c['wall_s']:>6.2f}{mark} "
                     f"{c['cpu_s']:>6.2f} {c['load']:>5.1f}{'  first call of the process' if c['cold'] else ''}")  # fmt: skip
    if r["warm_max_wall_s"] is not None:
        met = "met" if r["warm_max_wall_s"] < OVERRIDE_TARGET_S else "NOT met"
        lines.append(f"slowest after the first call: {r['warm_max_wall_s']:.2f} s wall, {r['warm_max_cpu_s']:.2f} CPU s "
                     f"(target under {OVERRIDE_TARGET_S:.0f} s: {met} in wall time)")  # fmt: skip
    return lines


STEP_FUNCTIONS = {"generate": step_generate, "import": step_import, "columnar": step_columnar, "assign": step_assign, "activity": step_activity, "cells": step_cells,
                  "queries": step_queries, "baseline": step_baseline, "new_month": step_new_month, "override": step_override,
                  "checksum": step_checksum}
# The page renders need Streamlit, which core/ never imports: that step lives in
# ui/bench_pages.py, imported by name in the child process only.
STEP_MODULES = {"pages": "ui.bench_pages", "clicks": "ui.bench_pages"}


def child_main(step_function, args_json: str) -> None:
    """Run one step in this (child) process and print its result line for :func:`run_step`."""
    args = json.loads(args_json)
    t0 = time.perf_counter()
    result = step_function(args)
    seconds = time.perf_counter() - t0
    # CPU time of this process and its (finished) worker processes: steadier than wall time on a busy machine
    cpu = round(_cpu_s(), 2)
    print("BENCH_RESULT " + json.dumps({"seconds": round(seconds, 2), "cpu_s": cpu, "peak_rss_mb": _peak_rss_mb(), "result": result},
                                       default=str))


def tree_rss_mb(root: int) -> float:
    """Resident memory of process ``root`` and all its descendants now, in MB (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:  # the process ended meanwhile
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        pid = int(entry.name)
        children.setdefault(int(fields.get("PPid", "0")), []).append(pid)
        rss[pid] = int(fields["VmRSS"].split()[0]) if "VmRSS" in fields else 0
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return round(total / 1024, 1)


def tree_cpu_s(root: int, seen: dict[int, float]) -> None:
    """Record in ``seen`` the CPU seconds (user + system) so far of process ``root`` and each
    descendant (Linux /proc); a process that ends keeps its last reading."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / ticks
    mine, todo = {root}, [root]
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in mine:
                mine.add(child)
                todo.append(child)
    for pid in mine:
        if pid in cpu:
            seen[pid] = max(seen.get(pid, 0.0), cpu[pid])


def run_step(step: str, args: dict) -> dict:
    """Run one step in a child process; returns seconds, peak_rss_mb, the 1-minute load average at
    its start and end (``load``), the CPU seconds of the child and every process under it
    (``cpu_tree_s``, sampled every 0.2 s: counts worker processes that the child does not wait
    for, such as Ray's) and the step's result.

    ``peak_rss_mb`` is the larger of the child's own peak and the peak of the memory of the
    child with all its worker processes, sampled every 0.2 s (``peak_tree_rss_mb``).
    """
    load = os.getloadavg()[0]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "core.cli.bench", step, json.dumps(args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    peak = [0.0]
    cpu: dict[int, float] = {}

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_mb(proc.pid))
            tree_cpu_s(proc.pid, cpu)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    sampler.join()
    for line in stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            result = json.loads(line[len("BENCH_RESULT "):])
            result["peak_tree_rss_mb"] = peak[0]
            result["peak_rss_mb"] = max(result["peak_rss_mb"], peak[0])
            result["cpu_tree_s"] = round(max(sum(cpu.values()), result.get("cpu_s", 0.0)), 1)
            result["load"] = [round(load, 2), round(os.getloadavg()[0], 2)]
            return result
    raise RuntimeError(f"bench step {step} failed (exit {proc.returncode}):\n{stderr[-3000:]}")


# --- the whole run ----------------------------------------------------------------------


def _has_patients(database_url: str) -> bool:
    from core.store.db import create_schema, make_engine
    from core.store.queries import has_patients

    engine = make_engine(database_url)
    create_schema(engine)
    return has_patients(engine)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def machine() -> dict:
    """Cores, memory, load, versions: the context of the figures."""
    import platform

    import sqlalchemy

    mem = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), 0)
    return {"cpus": os.cpu_count(), "memory_gib": round(mem / 2**20, 1), "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "pandas": pd.__version__, "numpy": np.__version__,
            "sqlalchemy": sqlalchemy.__version__, **{name: _version(name) for name in ("streamlit", "psycopg")}, "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


SPEED_LOOP = 20_000_000  # additions of the Python loop of :func:`machine_speed`
SPEED_KEYS, SPEED_SEARCHES = 100_000, 200_000  # its SQLite table's rows and the key searches in it
SPEED_WRITE_MIB = 256  # MiB it writes and syncs to the benchmark's folder


def machine_speed(folder: Path) -> dict:
    """How quick the machine is at this moment, by three fixed tasks timed at the start and the end
    of a run, so that runs of other hours and machines compare: this 2-core machine has been 2.5x
    slower from one hour to the next (BENCHMARKS.md), which the load average alone does not show.

    - ``python_loop_s``: a Python loop of :data:`SPEED_LOOP` additions at a module's top level
      (one core, the interpreter: what pandas glue, the import's checks and the pages' Python
      spend; 2.0-3.5 s on the machines of 6-8 December);
    - ``sqlite_searches_s``: :data:`SPEED_SEARCHES` searches by text key of a
      :data:`SPEED_KEYS`-row SQLite table in memory, the keys read from one JSON array as the
      pages' reads take their members (one core, B-tree searches);
    - ``write_mb_s``: :data:`SPEED_WRITE_MIB` MiB written to ``folder`` and synced to its disk
      (None when the disk refuses them).
    """
    import sqlite3

    # at a module's top level, as `python -c` runs it: the loop earlier sections timed by hand
    loop = compile(f"total = 0\nfor i in range({SPEED_LOOP}):\n    total += i\n", "<speed>", "exec")
    start = time.perf_counter()
    exec(loop, {})  # noqa: S102 (our own constant code)
    loop_s = time.perf_counter() - start

    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v REAL)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", ((f"P{i:07d}", float(i)) for i in range(SPEED_KEYS)))
    keys = json.dumps([f"P{(i * 7919) % SPEED_KEYS:07d}" for i in range(SPEED_SEARCHES)])
    start = time.perf_counter()
    conn.execute("SELECT count(*), sum(v) FROM json_each(?) AS j JOIN t ON t.k = j.value", (keys,)).fetchone()
    searches_s = time.perf_counter() - start
    conn.close()

    path = folder / f".speed-{os.getpid()}"
    chunk = os.urandom(8 << 20)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with open(path, "wb") as f:
            for _ in range(SPEED_WRITE_MIB // 8):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        write_mb_s = round(SPEED_WRITE_MIB * 1.048576 / (time.perf_counter() - start))
    except OSError:  # a full or read-only disk: the run's own steps say what they can
        write_mb_s = None
    finally:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    return {"python_loop_s": round(loop_s, 2), "sqlite_searches_s": round(searches_s, 3), "write_mb_s": write_mb_s}


def speed_text(report: dict) -> str | None:
    """The machine's speed at the run's start and end (:func:`machine_speed`) in words, or None."""
    start, end = report["machine"].get("speed"), report["machine"].get("speed_end")
    if not start:
        return None

    def both(key: str, fmt: str) -> str:
        return " / ".join("-" if run[key] is None else f"{run[key]:{fmt}}" for run in (start, end) if run)

    return (f"machine speed at the start{' / end' if end else ''}: a Python loop of {SPEED_LOOP / 1e6:g} M additions "
            f"{both('python_loop_s', '.2f')} s; {SPEED_SEARCHES:,} SQLite key searches {both('sqlite_searches_s', '.3f')} s; "
            f"{SPEED_WRITE_MIB} MiB written and synced at {both('write_mb_s', ',')} MB/s")  # fmt: skip


def run_bench(patients: int, months: int, database_url: str, out: Path, reuse: bool = False, seed: int = 42,
              end_month: str | None = None, reps: int = REPS, steps: tuple[str, ...] = STEPS,
              baseline_reps: int = BASELINE_REPS, progress=lambda _text: None, engines: tuple[str, ...] = (),
              month_reps: int = MONTH_REPS) -> dict:
    """Run the benchmark steps; returns a report dict (see :func:`format_report`).

    ``out``: folder of the CSV bundle. ``reuse``: keep an existing bundle and an already
    imported database (generate and import are then reported as reused).
    ``engines`` (:data:`core.cli.bench_engines.ENGINES`): the derive steps of ``steps`` (assign,
    activity, cells) run once per engine, each followed by a checksum of the derived tables
    (``report["engines"]``); ``report["engines_identical"]`` says whether every engine stored the
    same subgroups, risk scores and cells. The other steps then run after the last engine.
    """
    out = Path(out)
    args = {"patients": patients, "months": months, "seed": seed, "end_month": end_month, "bundle": str(out / "bundle"),
            "database_url": database_url, "reps": reps, "baseline_reps": baseline_reps, "month_reps": month_reps}
    report: dict = {"patients": patients, "months": months, "database": database_url.split("://")[0],
                    "machine": {**machine(), "speed": machine_speed(out)}, "steps": {}}
    if "generate" in steps:
        if reuse and (out / "bundle" / "patients.csv").exists():
            report["steps"]["generate"] = {"reused": True}
        else:
            progress("generate")
            report["steps"]["generate"] = run_step("generate", args)
    if "import" in steps:
        if reuse and _has_patients(database_url):
            report["steps"]["import"] = {"reused": True}
        else:
            progress("import")
            step = run_step("import", args)
            step["rows_per_s"] = round(step["result"]["rows"] / max(step["seconds"], 1e-9))
            report["steps"]["import"] = step
            progress("import: " + json.dumps(step, default=str))  # kept if a later step fails
            # the same bundle by a plain columnar load, in the same run: the speed of the data
            progress("columnar")
            columnar = run_step("columnar", args)
            columnar["ratio"] = round(step["seconds"] / max(columnar["seconds"], 1e-9), 1)
            # CPU: the import's process and, on PostgreSQL on this machine, the server's share
            columnar["cpu_ratio"] = round((step["cpu_s"] + (step["result"].get("server_cpu_s") or 0.0)) / max(columnar["cpu_s"], 1e-9), 1)
            report["steps"]["columnar"] = columnar
            progress("columnar: " + json.dumps(columnar, default=str))
    derive = [name for name in ("assign", "activity", "cells") if name in steps]
    if engines:
        report["engines"] = {}
        for engine in engines:
            runs = report["engines"][engine] = {}
            for name in derive:
                progress(f"{name} on {engine}")
                runs[name] = run_step(name, {**args, "engine": engine})
                progress(f"{name} on {engine}: " + json.dumps(runs[name], default=str))  # kept if a later step fails
            progress(f"checksum after {engine}")
            runs["checksum"] = run_step("checksum", args)["result"]
            progress(f"checksum after {engine}: " + json.dumps(runs["checksum"]))
        report["engines_identical"] = len({json.dumps(r["checksum"], sort_keys=True) for r in report["engines"].values()}) == 1
    for name in ("assign", "activity", "cells", "queries", "baseline", "pages", "clicks", "new_month", "override"):
        if name in steps and not (engines and name in derive):
            progress(name)
            report["steps"][name] = run_step(name, args)
            progress(f"{name}: " + json.dumps(report["steps"][name], default=str))  # kept if a later step fails
    report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    report["machine"]["speed_end"] = machine_speed(out)
    return report


def format_report(report: dict) -> str:
    """The report as a readable text table."""
    lines = [f"benchmark: {report['patients']:,} patients x {report['months']} months on {report['database']}",
             "machine: " + ", ".join(f"{k} {v}" for k, v in report["machine"].items() if k not in ("speed", "speed_end")),
             *filter(None, [speed_text(report)]), "",
             f"{'step':52s} {'seconds':>9s} {'CPU s':>9s} {'peak MB':>9s}  notes"]
    steps = report["steps"]
    for name in STEPS:
        step = steps.get(name)
        if step is None:
            continue
        if step.get("reused"):
            lines.append(f"{name:52s} {'reused':>9s}")
            continue
        note = ""
        if name == "import":
            note = f"{step['result']['rows']:,} rows, {step['rows_per_s']:,} rows/s"
            if step["result"].get("server_cpu_s") is not None:
                note += f", PostgreSQL server CPU {step['result']['server_cpu_s']:.1f} s"
        elif name == "new_month":
            note = "see below"
        elif name in ("assign", "activity", "cells"):
            note = f"{step['result']['rows']:,} rows" + (f" {step['result']['parts']}" if step["result"].get("parts") else "")
        lines.append(f"{name:52s} {step['seconds']:>9.1f} {step.get('cpu_s', float('nan')):>9.1f} {step['peak_rss_mb']:>9.0f}  {note}")
        if name == "import" and "columnar" in steps:
            c = steps["columnar"]
            lines.append(f"{'  columnar load of the same bundle (no checks)':52s} {c['seconds']:>9.1f} {c.get('cpu_s', float('nan')):>9.1f} "
                         f"{c['peak_rss_mb']:>9.0f}  {c['result']['rows']:,} rows, {c['result']['engine']}")  # fmt: skip
            lines.append(f"{'  import (validate + load) / columnar':52s} {c['ratio']:>8.1f}x {c['cpu_ratio']:>8.1f}x"
                         "            target: within 3x (wall)")  # fmt: skip
        if name == "cells" and all(steps.get(d) and not steps[d].get("reused") for d in ("assign", "activity", "cells")):
            derive = [steps[d] for d in ("assign", "activity", "cells")]
            lines.append(f"{'  derive (assign + activity + cells)':52s} {sum(d['seconds'] for d in derive):>9.1f} "
                         f"{sum(d.get('cpu_s', 0.0) for d in derive):>9.1f} {max(d['peak_rss_mb'] for d in derive):>9.0f}")  # fmt: skip
    if report.get("engines"):
        lines += ["", *format_engines(report)]
    if "queries" in steps:
        q = steps["queries"]["result"]
        reps = next((lat["reps"] for lat in q["latency"].values() if "reps" in lat), 0)
        lines += ["", f"query latency ({q['selection']}; {reps} calls after a warm-up)",
                  f"{'query':52s} {'p50 ms':>9s} {'p95 ms':>9s} {'max ms':>9s}"]  # fmt: skip
        for name, lat in q["latency"].items():
            lines.append(f"{name:52s} {lat['p50_ms']:>9.1f} {_ms(lat['p95_ms']):>9s} {lat['max_ms']:>9.1f}"
                         if "p50_ms" in lat else f"{name:52s} {lat}")  # fmt: skip
        if reps < P95_MIN_REPS:
            lines.append(f"p95 needs at least {P95_MIN_REPS} calls (--reps {P95_MIN_REPS}); with {reps} it would be the slowest call")
    if "baseline" in steps:
        b = steps["baseline"]["result"]
        lines += ["", f"naive baseline vs product ({b['selection']})",
                  f"  naive   p50 {b['naive']['p50_ms']:>10.1f} ms  {b['naive']['figures']}",
                  f"  product p50 {b['product']['p50_ms']:>10.1f} ms  {b['product']['figures']}",
                  f"  ratio {b['ratio']:,}x"]
    if "pages" in steps:
        lines += ["", f"{'page (AppTest, cold caches)':52s} {'render s':>9s} {'home s':>9s} {'rows':>7s}  error"]
        for page, r in steps["pages"]["result"].items():
            rows = "" if r.get("rows") is None else f"{r['rows']:,}"
            lines.append(f"{page + ' (' + r['role'] + ')':52s} {r['render_s']:>9.2f} {r['home_s']:>9.2f} {rows:>7s}  {r['error'] or ''}")
    if "clicks" in steps:
        lines += ["", *format_clicks(steps["clicks"]["result"])]
    if "new_month" in steps:
        lines += ["", *format_new_month(steps["new_month"]["result"])]
    if "override" in steps:
        lines += ["", *format_override(steps["override"]["result"])]
    return "\n".join(lines)


FIRST_RENDER_TARGET_S, WIDGET_TARGET_S = 2.0, 1.0
NEW_MONTH_TARGET = 0.15  # an import of one new month: under 15 % of the full pipeline (issue 21)


def format_new_month(r: dict) -> list[str]:
    """The new-month table: the full pipeline of the months before the last, then the last month."""
    lines = [f"one new month ({r['new_month']}, after {r['months'] - 1} months): import + derive",
             f"{'':36s} {'rows':>11s} {'import s':>9s} {'derive s':>9s} {'total s':>8s} {'CPU s':>8s}  load  derive"]  # fmt: skip
    runs = r.get("after_runs") or [r["after"]]
    rows = [(f"full pipeline, {r['months'] - 1} months", r["before"])]
    rows += [(f"the new month, run {i + 1} of {len(runs)}" if len(runs) > 1 else "the new month", x) for i, x in enumerate(runs)]
    for label, x in rows:
        lines.append(f"{label:36s} {x['rows']:>11,} {x['import_s']:>9.1f} {x['derive_s']:>9.1f} {x['seconds']:>8.1f} {x['cpu_s']:>8.1f}  "
                     f"{x['load_average'][0]:>4.1f}  {x['mode']}{' (' + x['why'] + ')' if x.get('why') else ''}")  # fmt: skip
    met = "met" if r["ratio"] < NEW_MONTH_TARGET else "NOT met"
    median = f" (median of {len(runs)} runs: {', '.join(f'{x:.1%}' for x in r['ratios'])})" if len(runs) > 1 else ""
    lines.append(f"ratio: {r['ratio']:.1%} wall{median}, {r['cpu_ratio']:.1%} CPU (target under {NEW_MONTH_TARGET:.0%}: {met} in wall time)")
    return lines


def format_engines(report: dict) -> list[str]:
    """The derive steps per engine (wall, CPU of the step's process and of every process under it,
    peak memory of them all, 1-minute load at start and end) and the checksums of what each stored."""
    lines = [f"{'derive step on engine':30s} {'wall s':>8s} {'CPU s':>8s} {'CPU tree s':>10s} {'peak MB':>8s} {'load':>11s}  notes"]
    for engine, runs in report["engines"].items():
        for name, step in runs.items():
            if name == "checksum":
                continue
            parts, load = step["result"].get("parts"), f"{step['load'][0]:.1f}-{step['load'][1]:.1f}"
            lines.append(f"{name + ' on ' + engine:30s} {step['seconds']:>8.1f} {step.get('cpu_s', float('nan')):>8.1f} "
                         f"{step.get('cpu_tree_s', float('nan')):>10.1f} {step['peak_rss_mb']:>8.0f} "
                         f"{load:>11s}  {step['result']['rows']:,} rows" + (f" {parts}" if parts else ""))  # fmt: skip
    lines.append("")
    for engine, runs in report["engines"].items():
        lines.append(f"checksums after {engine}: " + ", ".join(f"{t} {v[:22]}" for t, v in runs["checksum"].items()))
    lines.append("engines identical (subgroup_assignment, risk_score, cell): " + ("yes" if report["engines_identical"] else "NO"))
    return lines


def format_clicks(clicks: dict) -> list[str]:
    """The click table: each page's first render and each widget change, server-side seconds,
    with the 1-minute load average when the page was measured; ``!`` marks a time over target
    (first render 2 s, widget change 1 s)."""
    lines = [f"{'page (role)':44s} {'first render s (CPU s)':>22s} {'load':>5s}  widget changes: wall s (CPU s)"]
    for page, r in clicks.items():
        mark = "!" if r["first_render_s"] > FIRST_RENDER_TARGET_S else " "
        changes = "; ".join(
            f"{w['widget']} {w['s']:.2f}{'!' if w['s'] > WIDGET_TARGET_S else ''} ({w.get('cpu_s', float('nan')):.2f})"
            if w["s"] is not None else f"{w['widget']} ({w['error']})"
            for w in r["widgets"]
        )  # fmt: skip
        first = f"{r['first_render_s']:.2f}{mark} ({r.get('first_render_cpu_s', float('nan')):.2f})"
        lines.append(f"{page + ' (' + r['role'] + ')':44s} {first:>22s} {r['load']:>5.1f}  {changes or '-'}"
                     + (f"  ERROR {r['error']}" if r.get("error") else ""))  # fmt: skip
    return lines


def step_function(step: str):
    """The function of a step; steps of :data:`STEP_MODULES` are imported by name, in the child only."""
    if step in STEP_MODULES:
        import importlib

        return getattr(importlib.import_module(STEP_MODULES[step]), f"step_{step}")
    return STEP_FUNCTIONS[step]


if __name__ == "__main__":
    child_main(step_function(sys.argv[1]), sys.argv[2])
