"""Data of the e-consults page: volume, specialist response time and resolution without a visit,
by specialty and by team, and the specialist spend of patients with and without an e-consult.
Read from the monthly aggregates ``econsult_month`` and ``specialist_spend_month``
(:mod:`core.derive.page_aggregates`): rows per team and month, whatever the number of patients;
no patient rows leave the database."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
from sqlalchemy import Engine, and_, case, func, or_, select

from core.derive.page_aggregates import FAR
from core.metrics.scorecard import suppress_table, window_counts_published
from core.metrics.stats import t_interval
from core.store.models import Attribution, EconsultMonth, Encounter, SpecialistSpendMonth
from core.store.months import as_month, month_span, month_start_sql
from core.store.queries import read_frame
from core.views.executive_settings import load_executive_settings


def _days_between(engine: Engine, later, earlier):
    if engine.dialect.name == "postgresql":
        return later - earlier
    return func.julianday(later) - func.julianday(earlier)


def econsults(engine: Engine, months: tuple[date, ...], team_ids: tuple[str, ...] | None = None,
              suppress: bool = True) -> dict:
    """E-consult volume, specialist response time and % resolved without a visit, by specialty and
    by team, and specialist spend of patients with and without an e-consult (aggregates only).

    Summed from ``econsult_month`` (e-consults by month of start, team and specialty; the same counts
    as the encounters of kind ``e_consult`` that started in the months);
    response days = responded_date - start_date. ``by_specialty`` (grain: specialty) and
    ``by_team`` (grain: team_id): econsults, responded, mean_response_days (t interval),
    resolved, resolved_pct; with ``suppress``, each figure whose own counts include 1-10 is
    hidden, with complementary suppression against the All row (:data:`FAMILIES`). ``spend`` (grain: group): patients,
    member_months, specialist_spend_usd, specialist_pmpm_usd; the specialist spend is of
    attributed patient-months (claims in cost categories of executive.toml).

    With ``suppress``, a window longer than a month publishes no counts (e-consults, responded,
    resolved, patients, member-months) and no spend total (spend / PMPM = member-months); the
    columns are dropped (:data:`WINDOW_TOTALS`): two
    neighbouring windows and the month leaving them would give a month's count back
    (:func:`core.metrics.scorecard.window_counts_published`); response times, shares and PMPMs stay.
    ``all_suppressed``: for the All row, whether each family (e-consults, responded, resolved) is suppressed.
    """
    months = tuple(sorted(months))
    raw = econsult_rows(engine, months, team_ids)
    if raw.empty:
        raw = pd.DataFrame(columns=["team_id", "specialty", "econsults", "responded", "days_sum", "days_sq", "resolved"])
    raw = raw.astype({c: "float64" for c in ("econsults", "responded", "days_sum", "days_sq", "resolved")})
    out = {"by_specialty": _econsult_table(raw, "specialty", suppress), "by_team": _econsult_table(raw, "team_id", suppress),
           "spend": _specialist_spend(engine, months, team_ids, suppress)}  # fmt: skip
    total = out["by_team"].iloc[-1]
    out["all_suppressed"] = {c: bool(pd.isna(total[c])) for c in ("econsults", "responded", "resolved")}  # before withholding
    if suppress and not window_counts_published(len(months)):
        for name, cols in WINDOW_TOTALS.items():
            out[name] = out[name].drop(columns=cols)
    return out


# The window totals an e-consult table withholds where suppression applies and the window is longer than a month.
WINDOW_TOTALS = {"by_specialty": ["econsults", "responded", "resolved"], "by_team": ["econsults", "responded", "resolved"],
                 "spend": ["patients", "member_months", "specialist_spend_usd"]}  # fmt: skip


# The figures of an e-consult table, each with the counts it is built from: a figure is hidden only
# where one of its own counts is 1-10 (a row's volume stays published when only its resolved share
# rests on a small count), with complementary suppression of that family against the All row.
FAMILIES = {
    "econsults": (["econsults"], ["econsults"]),
    "response": (["responded"], ["responded", "mean_response_days", "response_ci_low", "response_ci_high"]),
    "resolved": (["resolved", "not_resolved"], ["resolved", "resolved_pct"]),
}


def _econsult_table(raw: pd.DataFrame, key: str, suppress: bool = True) -> pd.DataFrame:
    """One e-consult table with its All row (grain: ``key``). Columns: key, econsults, responded,
    mean_response_days, response_ci_low, response_ci_high, resolved, resolved_pct, suppressed
    (every figure of the row hidden); a hidden figure is NaN (see :data:`FAMILIES`)."""
    cols = ["econsults", "responded", "days_sum", "days_sq", "resolved"]
    table = raw.groupby(key, as_index=False)[cols].sum()
    table = pd.concat([table, table[cols].sum().to_frame().T.assign(**{key: "All"})], ignore_index=True)
    table["not_resolved"] = table["econsults"] - table["resolved"]
    mean, low, high = t_interval(table["days_sum"], table["responded"], table["days_sq"])
    table = table.assign(mean_response_days=mean, response_ci_low=low, response_ci_high=high,
                         resolved_pct=100 * table["resolved"] / table["econsults"].where(table["econsults"] > 0))  # fmt: skip
    table["suppressed"] = False
    if suppress:
        hidden_everywhere = np.ones(len(table), dtype=bool)
        for counts, shown in FAMILIES.values():
            parts = suppress_table(table.iloc[:-1], counts, total=True)["suppressed"].to_numpy(dtype=bool)
            whole = suppress_table(table.iloc[-1:], counts, total=False)["suppressed"].to_numpy(dtype=bool)
            hidden = np.concatenate([parts, whole])
            table[shown] = table[shown].astype("float64")
            table.loc[hidden, shown] = np.nan
            hidden_everywhere &= hidden
        table["suppressed"] = hidden_everywhere
    return table[[key, "econsults", "responded", "mean_response_days", "response_ci_low", "response_ci_high", "resolved",
                  "resolved_pct", "suppressed"]]  # fmt: skip


def econsult_rows(engine: Engine, months: tuple[date, ...], team_ids: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The ``econsult_month`` rows of the months (team_id, specialty, econsults, responded, days_sum,
    days_sq, resolved), summed over the months; the teams ``team_ids`` only (None: all, ``unknown`` too)."""
    t = EconsultMonth
    cols = (t.econsults, t.responded, t.days_sum, t.days_sq, t.resolved)
    stmt = (select(t.team_id, t.specialty, *[func.sum(c).label(c.key) for c in cols])
            .where(t.month.in_(list(months))).group_by(t.team_id, t.specialty))  # fmt: skip
    if team_ids is not None:
        stmt = stmt.where(t.team_id.in_(list(team_ids)))
    return read_frame(engine, stmt)


def econsult_rows_from_encounters(engine: Engine, months: tuple[date, ...], team_ids: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The same figures as :func:`econsult_rows` counted from the encounters (what the page read
    before ``econsult_month``; kept as the tests' reference)."""
    first, end = month_span(months)
    days = _days_between(engine, Encounter.responded_date, Encounter.start_date)
    responded = Encounter.responded_date.is_not(None)
    team = func.coalesce(Encounter.team_id, "unknown")
    stmt = (
        select(team.label("team_id"), Encounter.specialty, func.count().label("econsults"),
               func.sum(case((responded, 1), else_=0)).label("responded"),
               func.sum(case((responded, days), else_=0)).label("days_sum"),
               func.sum(case((responded, days * days), else_=0)).label("days_sq"),
               func.sum(case((Encounter.resolved_without_visit.is_(True), 1), else_=0)).label("resolved"))
        .where(Encounter.kind == "e_consult", Encounter.start_date >= first, Encounter.start_date < end)
        .group_by(team, Encounter.specialty)
    )  # fmt: skip
    if team_ids is not None:
        stmt = stmt.where(Encounter.team_id.in_(list(team_ids)))
    return read_frame(engine, stmt)


def _specialist_spend(engine: Engine, months: tuple[date, ...], team_ids: tuple[str, ...] | None,
                      suppress: bool = True) -> pd.DataFrame:
    """Specialist spend of patients with and without an e-consult in the window, from
    ``specialist_spend_month`` (the window test: :mod:`core.derive.page_aggregates`). A scope of
    several teams that is not the network is counted from the claims (:func:`specialist_spend_from_claims`)."""
    months = tuple(sorted(as_month(m) for m in months))
    position = {m: _month_number(m) - _month_number(months[0]) for m in months} if months else {}
    span = position[months[-1]] + 1 if months else 0
    if (team_ids is not None and len(set(team_ids)) > 1) or span != len(months) or span > FAR:
        return specialist_spend_from_claims(engine, months, team_ids, suppress)
    t = SpecialistSpendMonth
    stmt = select(t.month, t.since_econsult, t.until_econsult, t.gap_any, t.gap_team, t.member_months, t.specialist_spend_usd)
    stmt = stmt.where(t.month.in_(list(months)))
    if team_ids is not None:
        stmt = stmt.where(t.team_id.in_(list(team_ids)))
    rows = read_frame(engine, stmt)
    if rows.empty:
        return _spend_table(pd.DataFrame(columns=["group", "patients", "member_months", "specialist_spend_usd"]), suppress)
    after_start = pd.Series([position[as_month(m)] for m in rows["month"]], index=rows.index)  # m - S
    before_end = span - 1 - after_start  # E - m
    had = (rows["since_econsult"] <= after_start) | (rows["until_econsult"] <= before_end)
    gap = rows["gap_any"] if team_ids is None else rows["gap_team"]
    first = gap > after_start  # the patient's first attributed month of the window (in the scope)
    frame = pd.DataFrame({"group": np.where(had, "with e-consult", "without e-consult"),
                          "patients": np.where(first, rows["member_months"], 0).astype("float64"),
                          "member_months": rows["member_months"].astype("float64"),
                          "specialist_spend_usd": rows["specialist_spend_usd"].astype("float64")})  # fmt: skip
    table = frame.groupby("group", as_index=False)[["patients", "member_months", "specialist_spend_usd"]].sum()
    return _spend_table(table, suppress)


def _month_number(month: date) -> int:
    return month.year * 12 + month.month


def _spend_table(table: pd.DataFrame, suppress: bool) -> pd.DataFrame:
    """The spend table's PMPM, suppression and order (grain: group)."""
    if table.empty:
        return pd.DataFrame(columns=["group", "patients", "member_months", "specialist_spend_usd", "specialist_pmpm_usd", "suppressed"])
    table = table.astype({"member_months": "float64", "patients": "float64", "specialist_spend_usd": "float64"}).fillna({"specialist_spend_usd": 0.0})
    table["specialist_pmpm_usd"] = table["specialist_spend_usd"] / table["member_months"]
    table = suppress_table(table, ["patients", "member_months"], total=True,
                           value_cols=["specialist_spend_usd", "specialist_pmpm_usd"]) if suppress else table.assign(suppressed=False)  # fmt: skip
    return table.sort_values("group", ascending=False).reset_index(drop=True)[
        ["group", "patients", "member_months", "specialist_spend_usd", "specialist_pmpm_usd", "suppressed"]]


def specialist_spend_from_claims(engine: Engine, months: tuple[date, ...], team_ids: tuple[str, ...] | None,
                                 suppress: bool = True) -> pd.DataFrame:
    """The specialist spend table counted from the claims and the attribution (what the page read
    before ``specialist_spend_month``; the tests' reference, and the count of a several-team scope)."""
    settings = load_executive_settings()
    first, end = month_span(months)
    had = select(Encounter.patient_id).where(Encounter.kind == "e_consult", Encounter.start_date >= first, Encounter.start_date < end)
    group = case((Attribution.patient_id.in_(had), "with e-consult"), else_="without e-consult").label("group")
    scoped = Attribution.month.in_(list(months))
    if team_ids is not None:
        scoped = and_(scoped, Attribution.team_id.in_(list(team_ids)))
    members = select(group, func.count().label("member_months"), func.count(func.distinct(Attribution.patient_id)).label("patients"))
    members = members.where(scoped).group_by(group)
    specialist = or_(Encounter.cost_category.in_(settings.specialist_categories),
                     and_(Encounter.cost_category == "", Encounter.kind == "specialist_visit"))  # fmt: skip
    spend = (
        select(group, func.sum(Encounter.paid_usd).label("specialist_spend_usd"))
        .join(Attribution, and_(Attribution.patient_id == Encounter.patient_id, Attribution.month == month_start_sql(engine.dialect.name, Encounter.start_date)))
        .where(scoped, Encounter.is_internal.is_(False), specialist)
        .group_by(group)
    )  # fmt: skip
    table = read_frame(engine, members).merge(read_frame(engine, spend), on="group", how="left")
    return _spend_table(table, suppress)
