"""Monthly aggregates behind the two pages that used to read every patient of a large selection.

- ``econsult_month`` (month, team, specialty): e-consults, answered, response days (sum and sum of
  squares) and resolved without a visit. The e-consults page sums the rows of its window.
- ``specialist_spend_month`` (month, team and four small distances): attributed member-months and
  their specialist spend. The e-consults page splits the spend of the window by "the patient had an
  e-consult in the window" and counts the window's distinct patients, from these rows alone.
- ``subgroup_move`` (patient, month): the patient-months whose subgroup differs from the month
  before. The review reads one month's moves of a team's subgroup from an index range.
- ``patient_month_cost`` (patient, month, with team, subgroup and cost): the review's costliest
  patients are the first rows of one index range (month, team, subgroup, cost descending).
- ``claims_lag_month`` (service month, paid month): claims and paid amount, from which the claims
  run-out (``core.metrics.runout.claims_lags``: the review's headline, the data-quality page) reads
  its completion factors instead of grouping every claim of the network on each render.
- ``claims_network_month`` (service month, team attributed that month, kind, category, specialty,
  facility, network status): claims and paid amount, from which the true costs page's leakage
  (``core.views.true_costs.claims_by_network``) reads instead of joining every claim of its 12
  months to its attribution on each render.
- ``team_month_minutes`` (month, the encounter's team, kind, role): recorded staff minutes of
  internal encounters, and the encounters without any, from which the true costs page's capacity
  used (``core.derive.costs.used_minutes_by_team_month``) is summed with the process maps of the
  moment, instead of joining every internal encounter of 24 months to its staff minutes.

The window test from monthly grains. A window is the months S..E (1, 3 or 12 of them). A patient
"had an e-consult in the window" when one of their e-consults started in S..E, whichever team it
was with and whether or not they were attributed that month. Seen from one of their attributed
months m of the window, that is: their last e-consult in or before m is at most m - S months back,
or their next one after m is at most E - m months ahead. Both distances are below 12 for every
window there is, so each attributed patient-month carries ``since_econsult`` and ``until_econsult``
(12 standing for "none within 11 months") and the page's test is
``since_econsult <= m - S or until_econsult <= E - m``, row by row, exact. Likewise the window's
distinct patients: a patient-month is its patient's first of the window when the previous
attributed month lies before S, i.e. ``gap > m - S``; ``gap_any`` counts it network-wide,
``gap_team`` within one team (the count a one-team scope sees). A scope of several teams but not
the network cannot be counted this way (a patient moving between two of its teams would count
twice); the page computes it from the patient rows as before (:mod:`core.views.econsults`).

Each attributed patient-month's row of the spend table (team, month, the four distances, the
month's specialist spend) is kept in ``specialist_spend_patient_month``; ``specialist_spend_month``
is its sum per team, month and distances. The rows of one team and month are sums of patient-month
sums, so the spend can differ from a sum over claims in the last bits of a float (tests compare to
1e-9 relative).

The specialist categories (``core/config/executive.toml`` ``[econsults] specialist_categories``)
are read when the spend tables are built; a fingerprint of them is kept (``app_setting``
:data:`SPEND_CATEGORIES_KEY`). When it differs from the categories of the moment, the spend tables
are rebuilt whole (logged): by :func:`ensure_page_aggregates` when the pages open the store and by
every derive (:func:`replace_page_aggregates_of`; the full derive always builds them). The other
tables read no setting: e-consults are ``kind = 'e_consult'``, claims ``is_internal = false``, and
``patient_month_cost`` copies ``patient_month_activity`` (whose costing settings are the activity's
own; ``core.derive.activity``).

Built whole by :func:`build_page_aggregates` (the full derive, after the activity), by month by
:func:`build_page_aggregates_from` (the derive of new months: the rows from its first month; the
spend's patient-month rows of the 11 months before of the patients whose next e-consult moved, and
its sums of those months by difference) and kept exact
by :func:`replace_page_aggregates_of` (the incremental derive): the moves and costs of the touched
patients; then, unless only overrides are pending (an override changes no encounter or
attribution), the claims lags, the claims by network, the minutes and the e-consult volume from the
first month the pending imports can change (whole when not known; a read of the claims, one joined
to their attributions, one of the internal encounters joined to their minutes, one of the
e-consults) and the spend by difference (:func:`replace_spend_of`): the touched patients'
``specialist_spend_patient_month`` rows are read (their contribution before), replaced from their
attributions, e-consults and claims of now, and every ``specialist_spend_month`` row they were or
are in becomes stored - before + now (patient-months that did not change cancel out first; a row
left without a member-month is deleted). Member-months, and so the patients and suppression of the
page, stay exact; a spend that cancels to about 0 is summed again from its patient-months, so money
stays within 1e-9 relative of a full build. Its cost follows the touched patients, not their teams.
"""

import hashlib
import json
import logging
import time
from datetime import date

import pandas as pd
from sqlalchemy import (
    Date,
    Engine,
    Float,
    Integer,
    and_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    extract,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    text,
    tuple_,
    union_all,
)
from sqlalchemy.orm import aliased

from core.derive.subgroups.transitions import moves_frame
from core.store.db import refresh_statistics
from core.store.models import (
    AppSetting,
    Attribution,
    ClaimsLagMonth,
    ClaimsNetworkMonth,
    EconsultMonth,
    Encounter,
    PatientMonthActivity,
    PatientMonthCost,
    SpecialistSpendMonth,
    SpecialistSpendPatientMonth,
    StaffMinutes,
    SubgroupAssignment,
    SubgroupMove,
    TeamMonthMinutes,
)
from core.store.months import month_start_sql
from core.store.queries import create_indexes, drop_secondary_indexes, encounters_in_table_order, utc_now
from core.views.executive_settings import load_executive_settings

log = logging.getLogger(__name__)

FAR = 12  # "none within 11 months": every window is at most 12 months, so this never passes a window test
VERSION_KEY = "page_aggregates_version"
VERSION = "4"  # 2: with claims_lag_month; 3: with specialist_spend_patient_month and the categories' fingerprint;
# 4: with claims_network_month and team_month_minutes
SPEND_CATEGORIES_KEY = "page_aggregates_specialist_categories"  # fingerprint of the categories the spend tables hold
NO_PAID_DATE = date(1900, 1, 1)  # claims_lag_month.paid_month of claims without a paid date

ECONSULT_COLUMNS = ["month", "team_id", "specialty", "econsults", "responded", "days_sum", "days_sq", "resolved"]
SPEND_COLUMNS = ["month", "team_id", "since_econsult", "until_econsult", "gap_any", "gap_team", "member_months",
                 "specialist_spend_usd"]  # fmt: skip
SPEND_KEYS = SPEND_COLUMNS[:6]
PATIENT_SPEND_COLUMNS = ["patient_id", "month", "team_id", "since_econsult", "until_econsult", "gap_any", "gap_team",
                         "specialist_spend_usd"]  # fmt: skip
CHUNK = 10_000  # patients per IN list
# whole builds that read every encounter joined to another table: read in table order on SQLite
IN_TABLE_ORDER = ("claims_network_month", "team_month_minutes")
MOVE_COLUMNS = ["patient_id", "month", "team_id", "subgroup", "prev_team_id", "prev_subgroup"]
LAG_COLUMNS = ["service_month", "paid_month", "claims", "paid_usd"]
MINUTES_COLUMNS = ["month", "team_id", "kind", "role", "minutes", "encounters"]
NETWORK_COLUMNS = ["month", "team_id", "kind", "cost_category", "specialty", "facility", "in_network", "claims", "paid_usd"]
COST_COLUMNS = ["patient_id", "month", "team_id", "subgroup", "cost_total_usd", "cost_internal_usd", "cost_external_usd"]


def month_index(dialect: str, column):
    """year * 12 + month of a date column, as an integer (months apart = difference)."""
    if dialect == "postgresql":
        return cast(extract("year", column) * 12 + extract("month", column), Integer)
    return cast(func.strftime("%Y", column), Integer) * 12 + cast(func.strftime("%m", column), Integer)


def _days_between(dialect: str, later, earlier):
    if dialect == "postgresql":
        return later - earlier
    return func.julianday(later) - func.julianday(earlier)


def select_econsult_month(dialect: str, since: date | None = None):
    """E-consults per month of start, team (``unknown`` without one) and specialty (``since``: of
    the e-consults starting on or after that day only)."""
    e = Encounter
    days = _days_between(dialect, e.responded_date, e.start_date)
    responded = e.responded_date.is_not(None)
    team = func.coalesce(e.team_id, "unknown")
    month = month_start_sql(dialect, e.start_date)
    return (
        select(month.label("month"), team.label("team_id"), e.specialty, func.count().label("econsults"),
               func.sum(case((responded, 1), else_=0)).label("responded"),
               func.sum(case((responded, days), else_=0)).label("days_sum"),
               func.sum(case((responded, days * days), else_=0)).label("days_sq"),
               func.sum(case((e.resolved_without_visit.is_(True), 1), else_=0)).label("resolved"))
        .where(e.kind == "e_consult", *([] if since is None else [e.start_date >= since]))
        .group_by(month, team, e.specialty)
    )  # fmt: skip


def specialist_condition(categories: tuple[str, ...] | list[str] | None = None):
    """The claims counted as specialist spend (as the e-consults page has always counted them)."""
    categories = list(categories if categories is not None else load_executive_settings().specialist_categories)
    e = Encounter
    return and_(e.is_internal.is_(False),
                or_(e.cost_category.in_(categories), and_(e.cost_category == "", e.kind == "specialist_visit")))  # fmt: skip


def select_claims_lag_month(dialect: str, since: date | None = None):
    """Claims per service month and paid month (:data:`NO_PAID_DATE` without one): what
    ``core.metrics.runout.claims_lags`` summed from the encounters (``since``: the service months
    from that day only)."""
    e = Encounter
    service = month_start_sql(dialect, e.start_date)
    paid = func.coalesce(month_start_sql(dialect, e.paid_date), literal(NO_PAID_DATE, Date))
    return (
        select(service.label("service_month"), paid.label("paid_month"), func.count().label("claims"),
               func.coalesce(func.sum(e.paid_usd), 0.0).label("paid_usd"))
        .where(e.is_internal.is_(False), *([] if since is None else [e.start_date >= since]))
        .group_by(service, paid)
    )  # fmt: skip


def select_claims_network_month(dialect: str, since: date | None = None):
    """Claims per service month, team the patient was attributed to that month ('' when not
    attributed), kind, category, specialty, facility and network status ('' for a blank text):
    what ``core.views.true_costs.claims_by_network`` summed from the encounters (``since``: the
    service months from that day only)."""
    e, a = Encounter, Attribution
    month = month_start_sql(dialect, e.start_date)
    keys = [func.coalesce(a.team_id, ""), e.kind, func.coalesce(e.cost_category, ""), func.coalesce(e.specialty, ""),
            func.coalesce(e.facility, ""), e.in_network]  # fmt: skip
    return (
        select(month.label("month"), *[k.label(n) for k, n in zip(keys, NETWORK_COLUMNS[1:7], strict=True)],
               func.count().label("claims"), func.coalesce(func.sum(e.paid_usd), 0.0).label("paid_usd"))
        .select_from(e)
        # the attributions of the months from ``since`` only (PostgreSQL then hashes those, not all)
        .outerjoin(a, and_(a.patient_id == e.patient_id, a.month == month,
                           *([] if since is None else [a.month >= since.replace(day=1)])))
        .where(e.is_internal.is_(False), *([] if since is None else [e.start_date >= since]))
        .group_by(month, *keys)
    )  # fmt: skip


def select_team_month_minutes(dialect: str, since: date | None = None):
    """Internal encounters with a team per month of start, team, kind and role: their recorded
    staff minutes, and (role '') the count of those with none recorded: what
    ``core.derive.costs.used_minutes_by_team_month`` summed from the encounters (``since``: the
    months from that day only)."""
    e, m = Encounter, StaffMinutes
    month = month_start_sql(dialect, e.start_date)
    internal = [e.is_internal.is_(True), e.team_id.is_not(None), *([] if since is None else [e.start_date >= since])]
    recorded = (select(month.label("month"), e.team_id, e.kind, m.role, func.sum(m.minutes).label("minutes"),
                       literal(0).label("encounters"))
                .select_from(e).join(m, m.encounter_id == e.encounter_id).where(*internal)
                .group_by(month, e.team_id, e.kind, m.role))  # fmt: skip
    unrecorded = (select(month.label("month"), e.team_id, e.kind, literal("").label("role"), cast(literal(0.0), Float).label("minutes"),
                         func.count().label("encounters"))
                  .select_from(e).where(*internal, ~exists().where(m.encounter_id == e.encounter_id))
                  .group_by(month, e.team_id, e.kind))  # fmt: skip
    return union_all(recorded, unrecorded)


def select_patient_spend(dialect: str, patients: list[str] | None = None, since: date | None = None,
                         before: date | None = None):  # fmt: skip
    """Attributed patient-months (:class:`SpecialistSpendPatientMonth`): team, the distances (see the
    module) and the month's specialist spend. ``patients``: theirs only. ``since`` (a first of
    month): the months from it only, with each patient's last e-consult, last attributed month and
    last attributed month with each team of the ``FAR - 1`` months before it (a distance back of
    ``FAR`` or more is capped at ``FAR`` whether or not the earlier rows are read).
    ``before``: the months before that day only.

    Three window passes over attributed months and e-consult months (five before, over every
    specialist claim too: 100,000 patients 24.6 s -> 18.1 s for both spend tables). A month's spend
    is now a plain sum of its claims; the sum over a moving window frame it was before left
    rounding residue (2.8e-14 USD) in months without any claim."""
    from core.store.months import add_months

    a, e = Attribution, Encounter
    idx, att_idx = month_index(dialect, e.start_date), month_index(dialect, a.month)
    specialist, consult = specialist_condition(), e.kind == "e_consult"

    def of_patients(stmt, patient_id):
        return stmt if patients is None else stmt.where(patient_id.in_(patients))

    # each patient-month's specialist spend and whether it holds an e-consult, from one read of
    # the encounters (a few per patient-month, from `since`): the spend looked up from the
    # attributed month that holds it, the e-consult months joining the attributed months in the
    # stream below
    events = of_patients(
        select(e.patient_id, idx.label("idx"), func.sum(case((specialist, e.paid_usd), else_=None)).label("usd"),
               func.max(case((consult, 1), else_=0)).label("ec")).where(or_(specialist, consult)),
        e.patient_id).group_by(e.patient_id, idx)  # fmt: skip
    events = (events if since is None else events.where(e.start_date >= since)).cte("events")
    v = events.c
    att = of_patients(select(a.patient_id, a.team_id, a.month, att_idx.label("idx"), literal(1).label("attributed"), v.usd)
                      .outerjoin(events, and_(v.patient_id == a.patient_id, v.idx == att_idx)), a.patient_id)  # fmt: skip
    ecs = select(v.patient_id, null().label("team_id"), null().label("month"), v.idx, literal(0).label("attributed"),
                 null().label("usd")).where(v.ec == 1)  # fmt: skip
    parts = [att if since is None else att.where(a.month >= since), ecs]
    if since is not None:
        # the FAR - 1 months before `since`, as far as the distances of the months from it reach:
        # all they take from there is a patient's last e-consult, last attributed month and last
        # attributed month with each team (every window below is a running max or a min ahead),
        # so those few rows per patient stand in for the months' stream (100,000 patients, the last
        # two months: the select 11.5 s -> 7.0 s, the table's rebuild 14.4 s -> 9.5 s)
        reach = add_months(since, -(FAR - 1))
        earlier = [e.start_date >= reach, e.start_date < since]
        parts.append(of_patients(select(e.patient_id, null().label("team_id"), null().label("month"), func.max(idx).label("idx"),
                                        literal(0).label("attributed"), null().label("usd"))
                                 .where(consult, *earlier), e.patient_id).group_by(e.patient_id))  # fmt: skip
        # The month before `since` gives most rows from it their previous month and previous month
        # with their team; only the patients with a row from `since` whose team they were not
        # attributed to that month (a move, or no attribution then) need the months before it
        # (100,000 patients, one new month: 961 of 86,765; the select 5.0 s -> 3.3 s).
        prior = add_months(since, -1)
        new, old = aliased(Attribution), aliased(Attribution)
        moved = of_patients(select(new.patient_id).where(new.month >= since, ~exists().where(
            old.patient_id == new.patient_id, old.month == prior, old.team_id == new.team_id)), new.patient_id)  # fmt: skip
        parts.append(of_patients(select(a.patient_id, a.team_id, a.month, att_idx.label("idx"), literal(1).label("attributed"),
                                        null().label("usd")).where(a.month == prior), a.patient_id))  # fmt: skip
        parts.append(of_patients(select(a.patient_id, a.team_id, func.max(a.month).label("month"), func.max(att_idx).label("idx"),
                                        literal(1).label("attributed"), null().label("usd"))
                                 .where(a.month >= reach, a.month < prior, a.patient_id.in_(moved)), a.patient_id)
                     .group_by(a.patient_id, a.team_id))  # fmt: skip
    # one stream of the patients' attributed months and e-consults, each as a month number, a
    # month's e-consults before its attributed row: one sort per patient gives every distance
    # (window functions; no join, so no plan that reads a table once per row). The functions of
    # one window definition share a pass over the stream (SQLite makes one pass per definition):
    # everything before a row (the last e-consult, in this month or before, and the previous
    # attributed month), everything after it (the next e-consult, of a later month), and the
    # previous attributed month with the same team.
    stream = union_all(*parts).subquery("stream")
    s = stream.c
    in_order = {"partition_by": s.patient_id, "order_by": [s.idx, s.attributed]}
    ec_idx, attributed_idx = case((s.attributed == 0, s.idx), else_=None), case((s.attributed == 1, s.idx), else_=None)
    dist = (
        select(s.patient_id, s.team_id, s.month, s.idx, s.attributed, s.usd,
               func.max(ec_idx).over(**in_order, rows=(None, -1)).label("last_ec"),
               func.max(attributed_idx).over(**in_order, rows=(None, -1)).label("prev_any"),
               func.min(ec_idx).over(**in_order, rows=(1, None)).label("next_ec"),
               func.max(attributed_idx).over(partition_by=[s.patient_id, s.team_id], order_by=s.idx, rows=(None, -1)).label("prev_team"))
        .subquery("dist")
    )  # fmt: skip
    d = dist.c

    def capped(expr):
        return case((expr.is_(None), FAR), (expr >= FAR, FAR), else_=expr)

    return (
        select(d.patient_id, d.month, d.team_id, capped(d.idx - d.last_ec).label("since_econsult"),
               capped(d.next_ec - d.idx).label("until_econsult"), capped(d.idx - d.prev_any).label("gap_any"),
               capped(d.idx - d.prev_team).label("gap_team"), func.coalesce(d.usd, 0.0).label("specialist_spend_usd"))
        .where(d.attributed == 1, *([] if since is None else [d.month >= since]), *([] if before is None else [d.month < before]))
    )  # fmt: skip


def replace_spend_from(conn, start: date) -> dict:
    """In the caller's transaction (the derive of the months from ``start``): both spend tables'
    rows those months can change. Every row from ``start``, rebuilt. Of the ``FAR - 1`` months
    before it, only the patient-month rows whose next e-consult was or may now be from ``start`` on
    change: nothing else of an earlier row depends on a later month (its team, spend, gaps and last
    e-consult are its own month's and earlier ones'), and its ``until_econsult`` only on the first
    e-consult after it. So the patients with a stored earlier row pointing at an e-consult from
    ``start`` on, and those with an e-consult from ``start`` on now, get those months' rows again,
    and the sums by the difference (:func:`replace_spend_of`; it raises :class:`StaleSpend`, having
    written nothing, when the sums do not hold their rows). 100,000 patients, one new month: the
    sums of 11 months were grouped again from 1 M patient-month rows (4.9 s); by difference they
    read the 700 patients' rows. Returns the rows from ``start``, the patients rebuilt from earlier
    and the seconds of each part."""
    from core.store.months import add_months

    t0 = time.perf_counter()
    dialect = conn.dialect.name
    p, e = SpecialistSpendPatientMonth, Encounter
    per_patient, spend = SpecialistSpendPatientMonth.__table__, SpecialistSpendMonth.__table__
    spend_from = add_months(start, -(FAR - 1))
    start_idx = start.year * 12 + start.month  # as month_index in SQL
    pointed = select(p.patient_id).where(p.month >= spend_from, p.month < start, p.until_econsult < FAR,
                                         month_index(dialect, p.month) + p.until_econsult >= start_idx)  # fmt: skip
    new = select(e.patient_id).where(e.kind == "e_consult", e.start_date >= start)
    patients = sorted(set(conn.execute(pointed.distinct()).scalars()) | set(conn.execute(new.distinct()).scalars()))
    earlier = replace_spend_of(conn, patients, since=spend_from, before=start)
    t1 = time.perf_counter()
    conn.execute(delete(per_patient).where(per_patient.c.month >= start))
    conn.execute(insert(per_patient).from_select(PATIENT_SPEND_COLUMNS, select_patient_spend(dialect, since=start)))
    t2 = time.perf_counter()
    conn.execute(delete(spend).where(spend.c.month >= start))
    conn.execute(insert(spend).from_select(SPEND_COLUMNS, select_specialist_spend(start)))

    def count(t) -> int:
        return int(conn.execute(select(func.count()).select_from(t).where(t.c.month >= start)).scalar_one())

    return {"rows_from_month": count(per_patient), "sums_from_month": count(spend), "patients_from_earlier": len(patients),
            "earlier": earlier, "seconds": {"earlier": round(t1 - t0, 2), "rows": round(t2 - t1, 2),
                                            "sums": round(time.perf_counter() - t2, 2)}}  # fmt: skip


def select_specialist_spend(since: date | None = None):
    """``specialist_spend_month`` from ``specialist_spend_patient_month``: member-months and spend
    per team, month and distances (``since``: the months from that day only)."""
    p = SpecialistSpendPatientMonth
    keys = [p.month, p.team_id, p.since_econsult, p.until_econsult, p.gap_any, p.gap_team]
    return select(*keys, func.count().label("member_months"),
                  func.coalesce(func.sum(p.specialist_spend_usd), 0.0).label("specialist_spend_usd")).where(
        *([] if since is None else [p.month >= since])).group_by(*keys)  # fmt: skip


def spend_fingerprint(categories: tuple[str, ...] | list[str] | None = None) -> str:
    """A fingerprint of the specialist categories (order and repeats aside)."""
    categories = categories if categories is not None else load_executive_settings().specialist_categories
    text = json.dumps({"specialist_categories": sorted(set(categories))})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _setting(conn, key: str) -> str | None:
    return conn.execute(select(AppSetting.value).where(AppSetting.key == key)).scalar()


def _put_setting(conn, key: str, value: str) -> None:
    table = AppSetting.__table__
    conn.execute(delete(table).where(table.c.key == key))
    conn.execute(insert(table).values(key=key, value=value, updated_at=utc_now()))


def spend_stale(conn) -> bool:
    """Whether the spend tables were built with other specialist categories than today's."""
    return _setting(conn, SPEND_CATEGORIES_KEY) != spend_fingerprint()


def build_spend(conn) -> dict:
    """In the caller's transaction: both spend tables whole, and the categories' fingerprint."""
    per_patient, spend = SpecialistSpendPatientMonth.__table__, SpecialistSpendMonth.__table__
    conn.execute(delete(spend))
    keys = drop_secondary_indexes(conn, per_patient, primary_key=True)  # every row is new (on PostgreSQL its key)
    conn.execute(delete(per_patient))
    conn.execute(text(encounters_in_table_order(conn, insert(per_patient).from_select(PATIENT_SPEND_COLUMNS, select_patient_spend(conn.dialect.name)))))
    create_indexes(conn, keys)
    conn.execute(insert(spend).from_select(SPEND_COLUMNS, select_specialist_spend()))
    _put_setting(conn, SPEND_CATEGORIES_KEY, spend_fingerprint())
    count = lambda t: int(conn.execute(select(func.count()).select_from(t)).scalar_one())  # noqa: E731
    return {"specialist_spend_month": count(spend), "specialist_spend_patient_month": count(per_patient)}


def _rebuild_spend(conn, why: str) -> dict:
    log.warning("page aggregates: %s; rebuilding specialist_spend_month", why)
    t0 = time.perf_counter()
    out = build_spend(conn)
    return {**out, "why": why, "seconds": round(time.perf_counter() - t0, 2)}


def _patient_spend_frame(rows) -> pd.DataFrame:
    """Rows of :data:`PATIENT_SPEND_COLUMNS` as a frame of fixed dtypes (months as dates)."""
    frame = pd.DataFrame([tuple(r) for r in rows], columns=PATIENT_SPEND_COLUMNS)
    frame["month"] = pd.Series([pd.Timestamp(m).date() for m in frame["month"]], index=frame.index, dtype=object)
    ints = {c: "int64" for c in PATIENT_SPEND_COLUMNS[3:7]}
    return frame.astype({"patient_id": object, "team_id": object, **ints, "specialist_spend_usd": "float64"})


def _patient_spend_rows(conn, patients: list[str], since: date | None = None, before: date | None = None) -> pd.DataFrame:
    p = SpecialistSpendPatientMonth.__table__
    months = [*([] if since is None else [p.c.month >= since]), *([] if before is None else [p.c.month < before])]
    return _patient_spend_frame(
        conn.execute(select(*(p.c[k] for k in PATIENT_SPEND_COLUMNS)).where(p.c.patient_id.in_(patients), *months)).all()
    )


def _by_key(rows: pd.DataFrame) -> pd.DataFrame:
    """Member-months and spend per key of ``specialist_spend_month`` (index: the key)."""
    if not len(rows):
        return pd.DataFrame({"member_months": pd.Series(dtype="int64"), "specialist_spend_usd": pd.Series(dtype="float64")},
                            index=pd.MultiIndex.from_tuples([], names=SPEND_KEYS))  # fmt: skip
    out = rows.groupby(SPEND_KEYS).agg(member_months=("patient_id", "size"), specialist_spend_usd=("specialist_spend_usd", "sum"))
    return out.astype({"member_months": "int64", "specialist_spend_usd": "float64"})


class StaleSpend(RuntimeError):
    """``specialist_spend_month`` does not hold what ``specialist_spend_patient_month`` says the
    touched patients added to it."""


def replace_spend_of(conn, patients: list[str], since: date | None = None, before: date | None = None) -> dict:
    """In the caller's transaction: the touched patients' ``specialist_spend_patient_month`` rows
    from their data of now, and ``specialist_spend_month`` by the difference (the module); of the
    months from ``since`` and before ``before`` only, when given (the rows of other months stand).
    Raises :class:`StaleSpend`, having written nothing, when the stored rows do not hold the
    patients' member-months (a row would fall below 0)."""
    from core.derive.subgroups.frames import insert_frame

    per_patient, spend = SpecialistSpendPatientMonth.__table__, SpecialistSpendMonth.__table__
    dialect = conn.dialect.name
    was, now = [_patient_spend_frame([])], [_patient_spend_frame([])]
    for start in range(0, len(patients), CHUNK):
        part = patients[start : start + CHUNK]
        was.append(_patient_spend_rows(conn, part, since, before))
        now.append(_patient_spend_frame(conn.execute(select_patient_spend(dialect, part, since=since, before=before)).all()))
    was, now = (pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True) for frames in (was, now))
    both = was.merge(now, on=PATIENT_SPEND_COLUMNS, how="outer", indicator=True)  # unchanged patient-months cancel out
    was, now = _by_key(both[both["_merge"] == "left_only"]), _by_key(both[both["_merge"] == "right_only"])
    keys = was.index.union(now.index)
    summary = {"patient_months": int(len(both) - (both["_merge"] == "both").sum()), "rows": len(keys)}
    if not len(keys):
        return summary | {"changed": 0, "inserted": 0, "deleted": 0}
    changed = both[both["_merge"] != "both"]
    gone, new = changed[changed["_merge"] == "left_only"], changed[changed["_merge"] == "right_only"]
    was, now = was.reindex(keys, fill_value=0), now.reindex(keys, fill_value=0)
    frame = keys.to_frame(index=False)
    teams, months = sorted(set(frame["team_id"])), sorted(set(frame["month"]))
    stmt = select(*(spend.c[k] for k in SPEND_COLUMNS)).where(spend.c.team_id.in_(teams), spend.c.month.in_(months))
    stored = pd.DataFrame([tuple(r) for r in conn.execute(stmt).all()], columns=SPEND_COLUMNS)
    stored = stored.set_index(SPEND_KEYS)
    stored = stored[stored.index.isin(keys)]
    present = keys.isin(stored.index)
    base = stored.reindex(keys).fillna(0)
    members = base["member_months"].astype("int64") - was["member_months"] + now["member_months"]
    usd = base["specialist_spend_usd"].astype("float64") - was["specialist_spend_usd"] + now["specialist_spend_usd"]
    if (members < 0).any() or (~present & (was["member_months"] > 0)).any():
        raise StaleSpend("specialist_spend_month does not hold the touched patients' member-months")
    # the patient-months that changed: the old ones deleted by key, the new ones inserted
    if len(gone):
        conn.execute(delete(per_patient).where(per_patient.c.patient_id == bindparam("k_patient"), per_patient.c.month == bindparam("k_month")),
                     [{"k_patient": p, "k_month": m} for p, m in zip(gone["patient_id"], gone["month"], strict=True)])  # fmt: skip
    if len(new):
        insert_frame(conn, per_patient, new[PATIENT_SPEND_COLUMNS].assign(month=lambda f: pd.to_datetime(f["month"])))
    scale = base["specialist_spend_usd"].abs() + was["specialist_spend_usd"].abs() + now["specialist_spend_usd"].abs()
    cancelled = (members > 0) & (scale > 0) & (usd.abs() < 1e-5 * scale)  # most digits cancelled: sum its patient-months again
    if cancelled.any():
        p = SpecialistSpendPatientMonth
        again = conn.execute(
            select(p.month, p.team_id, p.since_econsult, p.until_econsult, p.gap_any, p.gap_team,
                   func.coalesce(func.sum(p.specialist_spend_usd), 0.0))
            .where(tuple_(p.month, p.team_id, p.since_econsult, p.until_econsult, p.gap_any, p.gap_team).in_(list(keys[cancelled.to_numpy()])))
            .group_by(p.month, p.team_id, p.since_econsult, p.until_econsult, p.gap_any, p.gap_team)).all()  # fmt: skip
        for *key, total in again:
            usd.loc[tuple(key)] = float(total)
    old = [dict(zip(SPEND_KEYS, key, strict=True)) for key in keys[present]]
    if old:  # the stored rows replaced or emptied, one primary-key lookup each
        conn.execute(delete(spend).where(*(spend.c[k] == bindparam(f"k_{k}") for k in SPEND_KEYS)),
                     [{f"k_{k}": v for k, v in row.items()} for row in old])  # fmt: skip
    kept = (members > 0).to_numpy()
    rows = [dict(zip(SPEND_KEYS, key, strict=True)) | {"member_months": int(m), "specialist_spend_usd": float(u)}
            for key, m, u in zip(keys[kept], members[kept], usd[kept], strict=True)]  # fmt: skip
    if rows:
        conn.execute(insert(spend), rows)
    return summary | {"changed": int((present & kept).sum()), "inserted": int((~present & kept).sum()),
                      "deleted": int((present & ~kept).sum())}  # fmt: skip


def select_subgroup_moves(dialect: str, months: list, patients: list[str] | None = None, after_last: bool = True,
                          since: date | None = None):  # fmt: skip
    """Patient-months whose subgroup differs from the month before (:class:`SubgroupMove`):
    this month's assignment against last month's, and last month's without one this month.
    ``months``: every assigned month (``after_last``: the month after the last is added), or the
    months of the pairs the ``patients`` can have (:func:`_patient_pair_months`, ``after_last`` False).
    ``since``: the months from that day only.

    One pass over the assignments in key order (patient, month): each row with the month number,
    team and subgroup of the patient's row before it and the month number of the row after it
    (window functions). A row arrived when the row before is not the month before or holds another
    subgroup; it is the last of a run when the row after is not the month after, and then the
    patient is gone the month after (when that month is one of the pairs). A self-join of each
    month with the month before read the table twice at random, through its month index and its
    key: 15.9 s against 7.7 s at 100,000 patients."""
    from core.store.months import add_months

    s = SubgroupAssignment
    base = select(s.patient_id, s.month, s.team_id, s.subgroup, month_index(dialect, s.month).label("idx"))
    if patients is not None:
        base = base.where(s.patient_id.in_(patients))
    if since is not None:  # the rows of the month before ``since`` are the pairs' first "before"
        base = base.where(s.month >= add_months(since, -1))
    b = base.subquery("assigned").c
    by_patient = {"partition_by": b.patient_id, "order_by": b.month}
    seq = select(b.patient_id, b.month, b.team_id, b.subgroup, b.idx,
                 func.lag(b.idx).over(**by_patient).label("prev_idx"), func.lag(b.team_id).over(**by_patient).label("prev_team_id"),
                 func.lag(b.subgroup).over(**by_patient).label("prev_subgroup"),
                 func.lead(b.idx).over(**by_patient).label("next_idx")).subquery("seq")  # fmt: skip

    def edge(c):  # (follows the month before, arrived, last of a run) of a row of the sequence
        follows = c.idx - c.prev_idx == 1  # NULL (not true) for a patient's first row
        return follows, or_(c.prev_idx.is_(None), c.idx - c.prev_idx != 1, c.prev_subgroup != c.subgroup), or_(
            c.next_idx.is_(None), c.next_idx - c.idx != 1)  # fmt: skip

    _, changed, ends = edge(seq.c)
    edges = select(seq).where(or_(changed, ends)).cte("edges")  # the few rows of either kind, read twice
    e = edges.c
    follows, changed, ends = edge(e)
    pairs = _month_pairs(months, after_last, since)
    p = pairs.c
    arrived = select(e.patient_id, e.month, e.team_id, e.subgroup, case((follows, e.prev_team_id), else_=None).label("prev_team_id"),
                     case((follows, e.prev_subgroup), else_=None).label("prev_subgroup")).where(e.month.in_(select(p.month)), changed)  # fmt: skip
    gone = (
        select(e.patient_id, p.month, null().label("team_id"), null().label("subgroup"), e.team_id.label("prev_team_id"),
               e.subgroup.label("prev_subgroup"))
        .join(pairs, p.prev == e.month)
        .where(ends)
    )  # fmt: skip
    return union_all(arrived, gone)


def _month_pairs(months: list, after_last: bool = True, since: date | None = None):
    """(month, the month before) of every month of ``months`` (and of the month after the last one;
    ``since``: the months from that day only)."""
    from core.derive.activity import constant_table
    from core.store.months import add_months

    months = sorted({pd.Timestamp(m).date() for m in months})
    if months and after_last:
        months.append(add_months(months[-1], 1))
    months = [m for m in months if since is None or m >= since]
    rows = [(m, add_months(m, -1)) for m in months] or [(pd.Timestamp("1900-02-01").date(), pd.Timestamp("1900-01-01").date())]
    return constant_table("month_pair", [("month", Date), ("prev", Date)], rows)


def select_patient_month_cost(patients: list[str] | None = None, since: date | None = None):
    """Assigned patient-months with activity: team, subgroup and cost (total = internal + external, as
    the review sums it; ``since``: the months from that day only)."""
    act, s = PatientMonthActivity, SubgroupAssignment
    stmt = (
        select(act.patient_id, act.month, s.team_id, s.subgroup, (act.cost_internal_usd + act.cost_external_usd).label("cost_total_usd"),
               act.cost_internal_usd, act.cost_external_usd)
        .join(s, and_(s.patient_id == act.patient_id, s.month == act.month))
    )  # fmt: skip
    if since is not None:  # the bound on both sides: PostgreSQL then reads the months' assignments only, not all of them
        stmt = stmt.where(act.month >= since, s.month >= since)
    return stmt if patients is None else stmt.where(act.patient_id.in_(patients))


def _assigned_months(conn) -> list:
    s = SubgroupAssignment
    return conn.execute(select(s.month).distinct()).scalars().all()


def _has_month(conn, month) -> bool:
    """Whether anyone is assigned in ``month`` (one index entry)."""
    s = SubgroupAssignment
    return conn.execute(select(s.month).where(s.month == month).limit(1)).first() is not None


def _patient_pair_months(conn, patients: list[str]) -> list:
    """The months of the pairs :func:`select_subgroup_moves` over every assigned month gives
    ``patients`` rows in: their own assigned months, and each month after one of theirs that
    they have no assignment in, when the network has assignments then or it follows the
    network's last. Index lookups only (a distinct of every assigned month reads the whole
    table on PostgreSQL)."""
    from core.store.months import add_months, as_month

    s = SubgroupAssignment
    mine = {as_month(m) for m in conn.execute(select(s.month).distinct().where(s.patient_id.in_(patients))).scalars()}
    after = {add_months(m, 1) for m in mine} - mine
    if after:
        last = as_month(conn.execute(select(func.max(s.month))).scalar())
        after = {m for m in after if m == add_months(last, 1) or _has_month(conn, m)}
    return sorted(mine | after)


def _mark_built(conn) -> None:
    _put_setting(conn, VERSION_KEY, VERSION)


def build_page_aggregates(engine: Engine) -> dict:
    """Rebuild the tables whole, in one transaction (after the subgroups and the activity).
    Returns the rows of each, seconds, and each table's seconds."""
    t0 = time.perf_counter()
    dialect = engine.dialect.name
    out, table_seconds = {}, {}
    with engine.begin() as conn:
        months = _assigned_months(conn)
        parts = {
            "subgroup_move": (SubgroupMove, MOVE_COLUMNS, select_subgroup_moves(dialect, months)),
            "patient_month_cost": (PatientMonthCost, COST_COLUMNS, select_patient_month_cost()),
            **{name: (model, columns, stmt) for name, (model, columns, _month, stmt) in _monthly_parts(dialect, None).items()},
        }  # fmt: skip
        for name, (model, columns, stmt) in parts.items():
            t1 = time.perf_counter()
            table = model.__table__
            indexes = drop_secondary_indexes(conn, table, primary_key=True)  # every row is new (on PostgreSQL the key too)
            conn.execute(delete(table))
            stmt = insert(table).from_select(columns, stmt)
            conn.execute(text(encounters_in_table_order(conn, stmt)) if name in IN_TABLE_ORDER else stmt)
            create_indexes(conn, indexes)
            out[name] = int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            table_seconds[name] = round(time.perf_counter() - t1, 2)
        t1 = time.perf_counter()
        out.update(build_spend(conn))
        table_seconds["specialist_spend"] = round(time.perf_counter() - t1, 2)
        _mark_built(conn)
    return {**out, "table_seconds": table_seconds, "seconds": round(time.perf_counter() - t0, 2)}


def build_page_aggregates_from(engine: Engine, start: date) -> dict:
    """The rows of the months from ``start`` of the tables, in one transaction (the derive of new
    months, :func:`core.derive.incremental.derive_months`, after its subgroups and activity): the
    rows of earlier months cannot change (every row of a month is made from that month's
    encounters, attributions, assignments and activity, and the moves from the month before),
    except the specialist spend rows, whose distances reach ``FAR - 1`` months ahead to the next
    e-consult: :func:`replace_spend_from` (every patient's rows from ``start``, the earlier rows of
    the patients whose next e-consult is or was from ``start`` on, and their sums by difference);
    both spend tables whole when the specialist categories changed or the sums do not hold the rows.
    The claims lags, claims by network and minutes of earlier months stand: an encounter or an
    attribution of an earlier month moves the derive's first month to it. Returns the rows of the
    months written and seconds."""
    t0 = time.perf_counter()
    dialect = engine.dialect.name
    start = start.replace(day=1)
    out = {}
    with engine.begin() as conn:
        months = _assigned_months(conn)
        parts = {
            "subgroup_move": (SubgroupMove, MOVE_COLUMNS, "month", select_subgroup_moves(dialect, months, since=start)),
            "patient_month_cost": (PatientMonthCost, COST_COLUMNS, "month", select_patient_month_cost(since=start)),
            **_monthly_parts(dialect, start),
        }
        table_seconds = {}
        t1 = time.perf_counter()
        if spend_stale(conn):
            out.update(build_spend(conn))
        else:
            try:
                out["specialist_spend"] = replace_spend_from(conn, start)
            except StaleSpend as err:
                out["specialist_spend"] = _rebuild_spend(conn, str(err))
        table_seconds["specialist_spend"] = round(time.perf_counter() - t1, 2)
        for name, (model, columns, month, stmt) in parts.items():
            t1 = time.perf_counter()
            table = model.__table__
            conn.execute(delete(table).where(table.c[month] >= start))
            conn.execute(insert(table).from_select(columns, stmt))
            out[name] = int(conn.execute(select(func.count()).select_from(table).where(table.c[month] >= start)).scalar_one())
            table_seconds[name] = round(time.perf_counter() - t1, 2)
        # PostgreSQL: the months' rows in the planner's statistics, for the pages that read them
        # (of the date columns only where they are a small share of a table: refresh_statistics)
        changed = {m.__tablename__: out[name] for name, (m, *_) in parts.items()}
        spend = out.get("specialist_spend")
        if isinstance(spend, dict) and "rows_from_month" in spend:  # (not rebuilt whole)
            earlier = spend["earlier"].get("patient_months", 0)
            changed[SpecialistSpendPatientMonth.__tablename__] = spend["rows_from_month"] + earlier
            changed[SpecialistSpendMonth.__tablename__] = spend["sums_from_month"] + spend["earlier"].get("rows", 0)
        spend_tables = [SpecialistSpendPatientMonth.__tablename__, SpecialistSpendMonth.__tablename__]
        refresh_statistics(conn, [*changed, *spend_tables], changed)
        _mark_built(conn)
    return {**out, "from_month": start.isoformat(), "table_seconds": table_seconds, "seconds": round(time.perf_counter() - t0, 2)}


def replace_patient_rows_of(conn, patients: list[str]) -> None:
    """In the caller's transaction: the ``subgroup_move`` and ``patient_month_cost`` rows of
    ``patients`` from their stored assignments and activity (all an override changes here)."""
    moves, costs = SubgroupMove.__table__, PatientMonthCost.__table__
    for start in range(0, len(patients), 10_000):
        part = patients[start : start + 10_000]
        conn.execute(delete(moves).where(moves.c.patient_id.in_(part)))
        conn.execute(delete(costs).where(costs.c.patient_id.in_(part)))
        months = _patient_pair_months(conn, part)
        conn.execute(insert(moves).from_select(MOVE_COLUMNS, select_subgroup_moves(conn.dialect.name, months, part, after_last=False)))
        conn.execute(insert(costs).from_select(COST_COLUMNS, select_patient_month_cost(part)))


def _monthly_parts(dialect: str, since: date | None) -> dict:
    """The tables summed per month straight from the encounters and attributions of that month:
    name -> (model, columns, month column, select of the months from ``since``; None: every month)."""
    return {
        "claims_lag_month": (ClaimsLagMonth, LAG_COLUMNS, "service_month", select_claims_lag_month(dialect, since)),
        "econsult_month": (EconsultMonth, ECONSULT_COLUMNS, "month", select_econsult_month(dialect, since)),
        "claims_network_month": (ClaimsNetworkMonth, NETWORK_COLUMNS, "month", select_claims_network_month(dialect, since)),
        "team_month_minutes": (TeamMonthMinutes, MINUTES_COLUMNS, "month", select_team_month_minutes(dialect, since)),
    }


def _pending_from_month(conn) -> date | None:
    """The earliest month the changes being derived can alter (the loader's mark,
    ``core.derive.incremental.FROM_MONTH_KEY``); None when unknown or every month."""
    from core.derive.incremental import EVERY_MONTH, FROM_MONTH_KEY

    value = _setting(conn, FROM_MONTH_KEY)
    return None if value in (None, EVERY_MONTH) else date.fromisoformat(value).replace(day=1)


def replace_page_aggregates_of(conn, patients: list[str], keys: pd.DataFrame | None = None) -> dict:
    """In the caller's transaction (the incremental derive's, after the new assignments and activity
    are written): the moves and costs of ``patients``; the spend tables whole when the specialist
    categories changed since they were built; unless only overrides are pending
    (:func:`_only_overrides_pending`), the claims lags, claims by network, minutes and e-consult
    volume of the months from the pending changes' first month (:func:`_pending_from_month`;
    whole when it is not known: each row is summed from its month's encounters and attributions
    only, so earlier rows stand) and the spend of ``patients`` by difference
    (:func:`replace_spend_of`). ``keys`` (the derive's affected cells) is not needed. Returns the
    patients, what was done to the spend, the first month of the monthly tables and the seconds taken."""
    t0 = time.perf_counter()
    dialect = conn.dialect.name
    replace_patient_rows_of(conn, patients)
    spend: dict = {}
    ready = built(conn)  # else the tables are built whole when the pages next open the store
    if ready and spend_stale(conn):
        spend = _rebuild_spend(conn, "the specialist categories (executive.toml) changed since it was built")
    if _only_overrides_pending(conn):  # an override moves no encounter or attribution: the e-consult tables stand
        return {"patients": len(patients), "spend": spend, "seconds": round(time.perf_counter() - t0, 2)}
    since = _pending_from_month(conn)
    for name, (model, columns, month, stmt) in _monthly_parts(dialect, since).items():
        table = model.__table__
        conn.execute(delete(table) if since is None else delete(table).where(table.c[month] >= since))
        stmt = insert(table).from_select(columns, stmt)
        conn.execute(text(encounters_in_table_order(conn, stmt)) if since is None and name in IN_TABLE_ORDER else stmt)
    t1 = time.perf_counter()
    if ready and not spend:
        try:
            spend = replace_spend_of(conn, patients) | {"seconds": round(time.perf_counter() - t1, 2)}
        except StaleSpend as err:
            spend = _rebuild_spend(conn, str(err))
    return {"patients": len(patients), "spend": spend, "monthly_from": since.isoformat() if since else "every month",
            "volume_and_lags_seconds": round(t1 - t0, 2), "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip


def _only_overrides_pending(conn) -> bool:
    """Whether what the derive catches up with is overrides and lifts only: the pending mark is an
    override's or a lift's (it keeps the first thing pending) and no import ran or finished since it
    was set. Then encounters and attributions are as the e-consult tables were built from."""
    from core.store.models import ImportRun
    from core.store.queries import DERIVE_PENDING_KEY

    row = conn.execute(select(AppSetting.value, AppSetting.updated_at).where(AppSetting.key == DERIVE_PENDING_KEY)).first()
    if row is None or not str(row.value).startswith(("override #", "lift #")):
        return False
    imports = (
        select(func.count())
        .select_from(ImportRun)
        .where(or_(ImportRun.finished_at.is_(None), ImportRun.finished_at >= row.updated_at))
    )
    return conn.execute(imports).scalar_one() == 0


def built(conn) -> bool:
    """Whether the tables are built by this version (else a reader falls back to the patient rows)."""
    return conn.execute(select(AppSetting.value).where(AppSetting.key == VERSION_KEY)).scalar() == VERSION


def built_in(engine: Engine) -> bool:
    """:func:`built`, on a connection of its own (for the pages' readers)."""
    with engine.connect() as conn:
        return built(conn)


def ensure_page_aggregates(engine: Engine) -> dict | None:
    """Build the tables once on a store derived before they existed (assignments there, the
    version mark not), and the spend tables again when the specialist categories changed since
    they were built (logged); returns the build summary, or None when nothing was needed."""
    with engine.connect() as conn:
        if conn.execute(select(SubgroupAssignment.patient_id).limit(1)).first() is None:
            return None
        if not built(conn):
            return build_page_aggregates(engine)
        if not spend_stale(conn):
            return None
    with engine.begin() as conn:
        return _rebuild_spend(conn, "the specialist categories (executive.toml) changed since it was built")


def stored_subgroup_transitions(engine: Engine, month, team_id: str, subgroup: str) -> pd.DataFrame:
    """:func:`core.derive.subgroups.transitions.subgroup_transitions` (same rows, columns and order)
    read from ``subgroup_move``: two index ranges of the month's moves, and the assignment of each
    mover (rule and reason of this month) by its key."""
    from core.store.months import as_month

    month = as_month(month)
    m, s = SubgroupMove, SubgroupAssignment
    rows = []
    for entered in (True, False):
        where = (
            (m.team_id == team_id, m.subgroup == subgroup)
            if entered
            else (m.prev_team_id == team_id, m.prev_subgroup == subgroup)
        )
        stmt = (
            select(m.patient_id, (m.team_id if entered else m.prev_team_id).label("team_id"),
                   m.prev_subgroup.label("from_subgroup"), m.subgroup.label("to_subgroup"), s.rule_id, s.reason, s.overridden)
            .outerjoin(s, and_(s.patient_id == m.patient_id, s.month == m.month))
            .where(m.month == month, *where)
        )  # fmt: skip
        with engine.connect() as conn:
            part = pd.read_sql(stmt, conn)
        if not entered:
            missing = part["to_subgroup"].isna()
            part.loc[missing, "reason"] = "no assignment this month (left the practice or died)"
            part.loc[missing, "rule_id"] = ""
        rows.append(part)
    return moves_frame(rows)


def costliest_patients(engine: Engine, month, team_id: str, subgroup: str, top: int) -> pd.DataFrame:
    """The ``top`` costliest patients of the team's subgroup in the month (patient_id, name,
    cost_total_usd, cost_internal_usd, cost_external_usd; ties by patient id): the first rows of the
    ``patient_month_cost`` index range of (month, team, subgroup)."""
    from core.store.models import Patient

    c = PatientMonthCost
    stmt = (
        select(c.patient_id, (Patient.family_name + ", " + Patient.given_name).label("name"), c.cost_total_usd,
               c.cost_internal_usd, c.cost_external_usd)
        .join(Patient, Patient.patient_id == c.patient_id)
        .where(c.month == month, c.team_id == team_id, c.subgroup == subgroup)
        .order_by(c.cost_total_usd.desc(), c.patient_id)
        .limit(top)
    )  # fmt: skip
    with engine.connect() as conn:
        return pd.read_sql(stmt, conn)
