"""Patient-month activity: what was done for each patient in each month, and what it cost.

The clinician's worklist sums a patient's last 12 months of cost, ED visits and admissions
(``core.views.worklist``). Summing encounters and staff minutes for that at every page view costs
three scans of the window; this module does the costing once per import instead and stores
one row per patient and calendar month of encounter start (:class:`PatientMonthActivity`),
so the worklist reads at most 12 short rows per patient.

- Internal cost: TDABC as in ``core.derive.costs`` (recorded minutes x the capacity cost rate of
  the encounter's team and the role, network rate where the team has none; for internal
  activities without recorded minutes, the process-map cost of the team and kind; recorded
  and standard minutes are never mixed within one activity). The rates come from
  ``core.derive.costs.activity_costs`` itself (:func:`cost_rate_tables`) and are joined in SQL as a
  small constant table, so they are exactly those of the cost cells.
- External cost: paid amounts of non-internal encounters.
- ``ed_visits`` / ``admissions``: encounters of kind ``ed_visit`` / ``admission`` (as the
  subgroup rules count them).
- ``last_acute_date`` / ``last_visit_date``: last start date of the worklist rules' acute
  kinds (``flags.recent_acute.kinds``) and visit kinds (``last_visit.kinds``). They follow
  ``core/config/worklist.toml``: after editing those kinds, rebuild (``derive_all`` does).

The table is rebuilt whole by :func:`build_patient_month_activity` with one set-based
``INSERT ... SELECT ... GROUP BY patient, month`` (the database streams and sorts; nothing
is held in Python memory), in one transaction with the delete, so readers see the old rows
or the new ones.
"""

import time
from datetime import date

import pandas as pd
from sqlalchemy import Engine, Float, String, and_, case, column, delete, func, insert, select, tuple_, values

from core.config.catalog import load_catalog
from core.derive.costs import NETWORK, CostSettings, activity_costs, capacity_cost_rates, load_cost_settings
from core.store.db import inserted_rows
from core.store.models import (
    Attribution,
    Encounter,
    PatientMonthActivity,
    Staff,
    StaffMinutes,
    SubgroupAssignment,
    Team,
    TeamMonthActivity,
)
from core.store.months import month_start_sql
from core.store.queries import encounters_in_table_order, read_frame
from core.views.worklist import WorklistRules, load_worklist_rules

ACTIVITY_COLUMNS = ["patient_id", "month", "cost_internal_usd", "cost_external_usd", "ed_visits", "admissions",
                    "last_acute_date", "last_visit_date"]  # fmt: skip


def constant_table(name: str, columns: list[tuple[str, object]], rows: list[tuple]):
    """A small constant table (``WITH name(cols) AS (VALUES ...)``, bound parameters) to join in a query."""
    return values(*[column(c, t) for c, t in columns], name=name).data(rows).cte(name)


def cost_rate_tables(staff: pd.DataFrame, team_ids: list[str], settings: CostSettings | None = None) -> tuple[list, list]:
    """Resolved TDABC rates for SQL: [(team_id, role, usd_per_minute)] and [(team_id, kind, usd_per_activity)].

    Both come from ``core.derive.costs.activity_costs`` on one pseudo activity per team and role (one
    recorded minute) and per team and internal kind (no minutes: the process map), so the team
    rate, the network fallback and the process maps are exactly those of the cost cells.
    ``team_id`` ``*`` stands for activities without a team (network rates).
    """
    settings = settings or load_cost_settings()
    catalog = load_catalog()
    teams = [*team_ids, NETWORK]
    roles = list(catalog.roles)
    kinds = [k for k, v in catalog.activity_kinds.items() if v.internal and k in settings.process_maps]
    per_role = pd.DataFrame([(f"r{i}", t, r) for i, (t, r) in enumerate((t, r) for t in teams for r in roles)],
                            columns=["encounter_id", "team_id", "role"])  # fmt: skip
    per_kind = pd.DataFrame([(f"k{i}", t, k) for i, (t, k) in enumerate((t, k) for t in teams for k in kinds)],
                            columns=["encounter_id", "team_id", "kind"])  # fmt: skip
    pseudo = pd.concat([per_role.assign(kind=""), per_kind], ignore_index=True)
    pseudo = pseudo.assign(patient_id="", start_date=date(2000, 1, 1), is_internal=True,
                           team_id=pseudo["team_id"].where(pseudo["team_id"] != NETWORK, None))  # fmt: skip
    minutes = per_role[["encounter_id", "role"]].assign(minutes=1.0)
    act = activity_costs(pseudo, minutes, capacity_cost_rates(staff, settings), settings.process_maps, settings.rate_scope)
    cost = act.groupby("encounter_id")["cost_usd"].sum()
    role_rates = [(t, r, float(cost.get(e, 0.0))) for e, t, r in per_role.itertuples(index=False)]
    kind_costs = [(t, k, float(cost.get(e, 0.0))) for e, t, k in per_kind.itertuples(index=False)]
    return role_rates, kind_costs


def select_patient_month_activity(dialect: str, role_rates: list, kind_costs: list, rules: WorklistRules,
                                  patients: list[str] | None = None, since: date | None = None):  # fmt: skip
    """The select behind the table: one row per patient and month of encounter start (:data:`ACTIVITY_COLUMNS`).

    One pass over ``encounter``, left-joined to the minute cost of each encounter (staff
    minutes x role rate, summed per encounter; a role without a rate adds nothing) and to the
    process-map cost of its team and kind, which counts only when the encounter has no staff
    minutes at all. ``patients``: those patients' rows only (None: every patient). ``since``:
    the encounters starting on or after that day only (the derive of new months), the minute
    costs of those encounters only.
    """
    e, sm, e2 = Encounter, StaffMinutes, Encounter.__table__.alias("minutes_encounter")

    def fsum(expr, *order):
        """A float sum; on PostgreSQL in a fixed order (``sum(x ORDER BY key)``), so a patient's
        rows sum to the same bits whichever plan reads them (the incremental derive reads some
        patients, the full one all). SQLite (3.40 here) has no ordered aggregates."""
        return func.sum(expr).aggregate_order_by(*order) if dialect == "postgresql" else func.sum(expr)

    rate = constant_table("role_rate", [("team_id", String), ("role", String), ("usd", Float)], role_rates)
    per_kind = constant_table("kind_cost", [("team_id", String), ("kind", String), ("usd", Float)], kind_costs)
    minute_cost = (
        select(sm.encounter_id, fsum(sm.minutes * rate.c.usd, sm.role).label("usd"))
        .join(e2, e2.c.encounter_id == sm.encounter_id)
        .outerjoin(rate, and_(rate.c.team_id == func.coalesce(e2.c.team_id, NETWORK), rate.c.role == sm.role))
        .where(*([] if patients is None else [e2.c.patient_id.in_(patients)]),
               # the encounters from `since`: SQLite looks their minutes up by key when they come as
               # a list (else it reads every staff-minute row); PostgreSQL bounds the encounter it
               # joins for the team (a list joined the encounters a second time, one look-up per
               # staff-minute row: 0.25 s of a month's 1.2 s at 100,000 patients)
               *([] if since is None else [e2.c.start_date >= since] if dialect == "postgresql"
                 else [sm.encounter_id.in_(select(e.encounter_id).where(e.start_date >= since))]))  # fmt: skip
        .group_by(sm.encounter_id)
        .subquery("minute_cost")
    )
    internal = case((minute_cost.c.encounter_id.is_not(None), minute_cost.c.usd), else_=per_kind.c.usd)
    month = month_start_sql(dialect, e.start_date).label("month")
    acute, visit = rules.flags["recent_acute"]["kinds"], rules.visit_kinds
    return (
        select(e.patient_id, month,
               func.coalesce(fsum(case((e.is_internal, internal), else_=None), e.encounter_id), 0.0).label("cost_internal_usd"),
               func.coalesce(fsum(case((e.is_internal, 0.0), else_=e.paid_usd), e.encounter_id), 0.0).label("cost_external_usd"),
               func.sum(case((e.kind == "ed_visit", 1), else_=0)).label("ed_visits"),
               func.sum(case((e.kind == "admission", 1), else_=0)).label("admissions"),
               func.max(case((e.kind.in_(acute), e.start_date), else_=None)).label("last_acute_date"),
               func.max(case((e.kind.in_(visit), e.start_date), else_=None)).label("last_visit_date"))
        .outerjoin(minute_cost, minute_cost.c.encounter_id == e.encounter_id)
        .outerjoin(per_kind, and_(per_kind.c.team_id == func.coalesce(e.team_id, NETWORK), per_kind.c.kind == e.kind))
        .where(*([] if patients is None else [e.patient_id.in_(patients)]), *([] if since is None else [e.start_date >= since]))
        .group_by(e.patient_id, month)
    )  # fmt: skip


TEAM_ACTIVITY_COLUMNS = ["month", "team_id", "subgroup", "kind", "activities"]


def select_team_month_activity(dialect: str, since: date | None = None):
    """The select behind ``team_month_activity``: internal encounters of attributed patient-months
    counted per month of start, team of that month, subgroup of that month and kind.

    ``since`` (a first of the month): the months from it only, bounded on the encounters' start
    (their index) rather than on the attributions, which would walk every encounter (16.1 s against
    1.8 s for the last two months of 100,000 patients on SQLite)."""
    e, a, s = Encounter, Attribution, SubgroupAssignment
    subgroup = func.coalesce(s.subgroup, "unassigned")
    return (
        select(a.month, a.team_id, subgroup.label("subgroup"), e.kind, func.count().label("activities"))
        .join(a, and_(a.patient_id == e.patient_id, a.month == month_start_sql(dialect, e.start_date)))
        .outerjoin(s, and_(s.patient_id == a.patient_id, s.month == a.month))
        .where(e.is_internal.is_(True), *([] if since is None else [e.start_date >= since, a.month >= since]))
        .group_by(a.month, a.team_id, subgroup, e.kind)
    )


def team_month_activity_sql(conn) -> str:
    """The INSERT of ``team_month_activity`` as SQL text for the connection's database.

    On SQLite the encounters are read with ``NOT INDEXED``: left to itself the planner walks
    them through the (start_date, kind) index and fetches every row at random, ten times slower
    than reading the table in order (67 s against 7 s at 100,000 patients).
    """
    stmt = insert(TeamMonthActivity.__table__).from_select(TEAM_ACTIVITY_COLUMNS, select_team_month_activity(conn.dialect.name))
    return encounters_in_table_order(conn, stmt)


def replace_activity_of(conn, patients: list[str], keys: pd.DataFrame, rules: WorklistRules | None = None,
                        settings: CostSettings | None = None) -> dict:  # fmt: skip
    """Rebuild, in the caller's transaction, the ``patient_month_activity`` rows of ``patients``
    and the ``team_month_activity`` rows of ``keys`` (team_id, subgroup, month: the team-month-
    subgroups whose members changed), from the stored assignments (already the new ones).
    Returns rows and team_rows written."""
    rules = rules or load_worklist_rules()
    staff = pd.read_sql(select(Staff.staff_id, Staff.team_id, Staff.role, Staff.annual_cost_usd, Staff.paid_hours_per_year), conn)
    team_ids = [t for (t,) in conn.execute(select(Team.team_id)).all()]
    role_rates, kind_costs = cost_rate_tables(staff, team_ids, settings)
    table, team_table = PatientMonthActivity.__table__, TeamMonthActivity.__table__
    conn.execute(delete(table).where(table.c.patient_id.in_(patients)))
    stmt = select_patient_month_activity(conn.dialect.name, role_rates, kind_costs, rules, patients)
    rows = inserted_rows(conn, insert(table).from_select(ACTIVITY_COLUMNS, stmt))
    team_rows = 0
    for team_id, part in keys.groupby("team_id"):
        pairs = list(zip(part["subgroup"], part["month"], strict=True))
        conn.execute(delete(team_table).where(team_table.c.team_id == team_id,
                                              tuple_(team_table.c.subgroup, team_table.c.month).in_(pairs)))  # fmt: skip
        a, s = Attribution, SubgroupAssignment
        sub = select_team_month_activity(conn.dialect.name).where(
            a.team_id == team_id, tuple_(func.coalesce(s.subgroup, "unassigned"), a.month).in_(pairs))
        team_rows += inserted_rows(conn, insert(team_table).from_select(TEAM_ACTIVITY_COLUMNS, sub))
    return {"rows": int(rows), "team_rows": int(team_rows)}


def build_patient_month_activity(engine: Engine, rules: WorklistRules | None = None, settings: CostSettings | None = None) -> dict:
    """Rebuild ``patient_month_activity`` and ``team_month_activity`` from every encounter, in one
    transaction (after the subgroups: the team table counts by subgroup).

    ``rules`` (default: the worklist rules) give the acute and visit kinds; ``settings``
    (default: the costing settings) the rates and process maps. Returns rows (patient-months),
    team_rows, seconds.
    """
    t0 = time.perf_counter()
    rules = rules or load_worklist_rules()
    staff = read_frame(engine, select(Staff.staff_id, Staff.team_id, Staff.role, Staff.annual_cost_usd, Staff.paid_hours_per_year))
    team_ids = [t for (t,) in read_frame(engine, select(Team.team_id)).itertuples(index=False)]
    role_rates, kind_costs = cost_rate_tables(staff, team_ids, settings)
    table = PatientMonthActivity.__table__
    stmt = select_patient_month_activity(engine.dialect.name, role_rates, kind_costs, rules)
    team_table = TeamMonthActivity.__table__
    with engine.begin() as conn:
        conn.execute(delete(table))
        conn.execute(insert(table).from_select(ACTIVITY_COLUMNS, stmt))
        conn.execute(delete(team_table))
        conn.exec_driver_sql(team_month_activity_sql(conn))
        rows = conn.execute(select(func.count()).select_from(table)).scalar_one()
        team_rows = conn.execute(select(func.count()).select_from(team_table)).scalar_one()
    return {"rows": int(rows), "team_rows": int(team_rows), "seconds": round(time.perf_counter() - t0, 2)}


def ensure_patient_month_activity(engine: Engine) -> dict | None:
    """Build the tables when encounters exist but ``patient_month_activity`` is empty, or
    attributions too but ``team_month_activity`` is empty (a store derived before the tables
    existed); returns the build summary, or None when nothing was needed. One-row reads only."""
    def some(column) -> bool:
        return conn.execute(select(column).limit(1)).first() is not None

    with engine.connect() as conn:
        if not some(Encounter.encounter_id):
            return None
        needed = not some(PatientMonthActivity.patient_id) or (some(Attribution.patient_id) and not some(TeamMonthActivity.team_id))
    return build_patient_month_activity(engine) if needed else None
