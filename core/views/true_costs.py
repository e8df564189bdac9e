"""Data of the true costs page: capacity cost rates per role with their parts, the process maps,
minutes used against minutes supplied per team and month, the cost of unused capacity, and
out-of-network spend (leakage) by category, specialty, facility, team and month.

Every table is returned with human column labels (units in the label) by :func:`labelled`;
rates and capacity come from the staff roster (core.derive.costs), minutes used are summed in SQL
and claims read from the derive's monthly ``claims_network_month``, so the page does not load
encounters.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np
import pandas as pd
from sqlalchemy import Engine, and_, func, select

from core.config.catalog import load_catalog
from core.derive import costs
from core.metrics.scorecard import is_small, suppress_table
from core.store.models import Attribution, Encounter, Staff, Team
from core.store.months import as_month, month_span, month_start_sql
from core.store.queries import read_frame
from core.views.cells_read import cell_sums_by

NOT_ATTRIBUTED = "not attributed"
NO_SPECIALTY = "not recorded"
NO_FACILITY = "not recorded"

# Column id -> human label with its unit (every table of the page and its downloads).
COLUMN_LABELS = {
    "team_id": "Team", "team": "Team", "role": "Role", "month": "Month", "kind": "Activity", "staff": "Staff",
    "fte": "FTE", "salary_usd_per_year": "Salary, $ a year", "benefits_usd_per_year": "Benefits, $ a year",
    "square_metres": "Space, m²", "space_equipment_usd_per_year": "Space and equipment, $ a year",
    "capacity_cost_usd_per_year": "Capacity cost, $ a year", "practical_hours_per_year": "Practical capacity, hours a year",
    "rate_usd_per_hour": "Capacity cost rate, $ per hour", "minutes": "Standard minutes", "cost_usd": "Cost at network rate, $",
    "capacity_hours": "Hours supplied", "used_hours": "Hours used", "unused_hours": "Hours unused", "utilisation": "Used, %",
    "capacity_cost_usd": "Capacity cost, $", "used_cost_usd": "Cost of capacity used, $", "unused_cost_usd": "Cost of unused capacity, $",
    "cost_category": "Category", "specialty": "Specialty", "facility": "Facility (name or NPI)", "paid_usd": "Claims paid, $",
    "out_of_network_usd": "Out of network, $", "out_of_network_share": "Out of network, %", "claims": "Out-of-network claims",
    "member_months": "Member-months", "out_of_network_pmpm_usd": "Out of network, $ PMPM", "suppressed": "Suppressed",
}  # fmt: skip
PERCENT_COLUMNS = ("utilisation", "out_of_network_share")


def labelled(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with human column labels (same rows)."""
    return frame.rename(columns={c: COLUMN_LABELS.get(c, c.replace("_", " ").capitalize()) for c in frame.columns})


def team_names(engine: Engine) -> dict[str, str]:
    """Team id -> team name."""
    frame = read_frame(engine, select(Team.team_id, Team.name))
    return dict(zip(frame["team_id"], frame["name"], strict=True))


def _staff(engine: Engine) -> pd.DataFrame:
    stmt = select(Staff.staff_id, Staff.team_id, Staff.role, Staff.annual_cost_usd, Staff.paid_hours_per_year)
    return read_frame(engine, stmt)


# --- capacity cost rates and process maps ----------------------------------------------------------


def rate_table(engine: Engine, team_ids: tuple[str, ...] | None = None, network: bool = True,
               settings: costs.CostSettings | None = None) -> pd.DataFrame:  # fmt: skip
    """Capacity cost rate per role with its parts, network-wide (``network``) or per team of ``team_ids``.

    Grain: role (network) or team, role. Columns: staff, fte, salary and benefits a year, square
    metres, space and equipment a year, capacity cost a year, practical hours a year, rate per
    hour. Empty when the store has no staff roster (internal cost not costed).
    """
    settings = settings or costs.load_cost_settings()
    staff = _staff(engine)
    cols = ["role", "staff", *costs.RATE_PARTS, "capacity_cost_usd_per_year", "practical_hours_per_year", "rate_usd_per_hour"]
    if staff.empty:
        return pd.DataFrame(columns=cols)
    rates = costs.capacity_cost_rates(staff, settings)
    rates["practical_hours_per_year"] = rates["practical_minutes_per_year"] / 60.0
    rates["rate_usd_per_hour"] = rates["rate_usd_per_minute"] * 60.0
    if network:
        out = rates.loc[rates["team_id"] == costs.NETWORK, cols]
    else:
        out = rates.loc[rates["team_id"] != costs.NETWORK]
        if team_ids is not None:
            out = out.loc[out["team_id"].isin(team_ids)]
        names = team_names(engine)
        out = out.assign(team=out["team_id"].map(names).fillna(out["team_id"]))[["team", *cols]]
    return out.assign(role=out["role"].map(load_catalog().role_label)).reset_index(drop=True)


def process_map_table(engine: Engine, settings: costs.CostSettings | None = None) -> pd.DataFrame:
    """The process maps (standard minutes by role per internal activity) costed at the network rate.

    Grain: kind, role. Columns: minutes, rate_usd_per_hour, cost_usd (NaN when the role has no
    staff: not costed). A total row per activity carries the activity's cost.
    """
    settings = settings or costs.load_cost_settings()
    catalog = load_catalog()
    staff = _staff(engine)
    rates = (
        costs.capacity_cost_rates(staff, settings)
        if len(staff)
        else pd.DataFrame(columns=["team_id", "role", "rate_usd_per_minute"])
    )
    network = rates.loc[rates["team_id"] == costs.NETWORK].set_index("role")["rate_usd_per_minute"]
    rows = []
    for kind, roles in settings.process_maps.items():
        label = catalog.activity_kinds[kind].label if kind in catalog.activity_kinds else kind
        for role, minutes in roles.items():
            rate = float(network.get(role, np.nan))
            rows.append({"kind": label, "role": catalog.role_label(role), "minutes": float(minutes), "rate_usd_per_hour": rate * 60.0,
                         "cost_usd": minutes * rate})  # fmt: skip
        part = [r for r in rows if r["kind"] == label]
        cost = sum(r["cost_usd"] for r in part)
        rows.append({"kind": label, "role": "all roles", "minutes": sum(r["minutes"] for r in part), "rate_usd_per_hour": np.nan,
                     "cost_usd": cost})  # fmt: skip
    return pd.DataFrame(rows, columns=["kind", "role", "minutes", "rate_usd_per_hour", "cost_usd"])


# --- capacity used against supplied -----------------------------------------------------------


def capacity_use(engine: Engine, months: Sequence[date], team_ids: tuple[str, ...] | None = None,
                 settings: costs.CostSettings | None = None) -> pd.DataFrame:  # fmt: skip
    """Capacity supplied and used per team, month and role (core.derive.costs.capacity_use, minutes
    used summed in SQL). Grain: team_id, month, role. Empty when there is no staff roster."""
    settings = settings or costs.load_cost_settings()
    staff = _staff(engine)
    if staff.empty:
        return pd.DataFrame(columns=["team_id", "month", "role", "capacity_minutes", "used_minutes", "unused_minutes",
                                     "capacity_cost_usd", "used_cost_usd", "unused_cost_usd"])  # fmt: skip
    used = costs.used_minutes_by_team_month(engine, months, settings.process_maps)
    out = costs.capacity_use(staff, used, [as_month(m) for m in months], settings)
    if team_ids is not None:
        out = out.loc[out["team_id"].isin(team_ids)]
    return out.reset_index(drop=True)


def capacity_summary(use: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Sum :func:`capacity_use` to ``by`` (any of team_id, month, role; () = network), in hours,
    with utilisation (used / supplied; NaN where nothing was supplied)."""
    sums = ["capacity_minutes", "used_minutes", "unused_minutes", "capacity_cost_usd", "used_cost_usd", "unused_cost_usd"]
    out = use.groupby(list(by), as_index=False)[sums].sum() if by else use[sums].sum().to_frame().T
    for name in ("capacity", "used", "unused"):
        out[f"{name}_hours"] = out[f"{name}_minutes"] / 60.0
    out["utilisation"] = out["used_minutes"] / out["capacity_minutes"].replace(0.0, np.nan)
    return out[
        [
            *by,
            "capacity_hours",
            "used_hours",
            "unused_hours",
            "utilisation",
            "capacity_cost_usd",
            "used_cost_usd",
            "unused_cost_usd",
        ]
    ]


def idle_capacity_by_team(use: pd.DataFrame) -> pd.DataFrame:
    """The cost of unused capacity per team over the months (the fully loaded margin's addition).
    Grain: team_id. Column: idle_capacity_usd."""
    out = use.groupby("team_id", as_index=False)["unused_cost_usd"].sum()
    return out.rename(columns={"unused_cost_usd": "idle_capacity_usd"})


def annualised(amount_usd: float, n_months: int) -> float:
    """An amount over ``n_months`` as a year's worth."""
    return amount_usd * 12.0 / n_months if n_months else float("nan")


# --- leakage --------------------------------------------------------------------------------


def claims_by_network(engine: Engine, months: Sequence[date], team_ids: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Claims of the months by the team the patient was attributed to in the month of service,
    month, category, specialty, facility and network status: the derive's
    ``claims_network_month`` (``core.derive.page_aggregates``), else summed in SQL from the
    encounters joined to their attributions.

    Grain: team_id (``not attributed`` when the patient was not attributed that month), month,
    cost_category (blank in the data: the kind's default category), specialty (``not recorded``
    when blank), facility (``not recorded`` when blank), in_network. Columns: claims, paid_usd. ``team_ids``: only claims of patients
    attributed to those teams.
    """
    from core.derive.page_aggregates import built_in
    from core.store.models import ClaimsNetworkMonth

    months = sorted({as_month(m) for m in months})
    start, end = month_span(months)
    if built_in(engine):  # a few thousand rows a month, not every claim of the months joined to its attribution
        t = ClaimsNetworkMonth
        stmt = (select(t.team_id, t.month, t.kind, t.cost_category, t.specialty, t.facility, t.in_network, t.claims, t.paid_usd)
                .where(t.month >= start, t.month < end))  # fmt: skip
        if team_ids is not None:
            stmt = stmt.where(t.team_id.in_(list(team_ids)))
        frame = read_frame(engine, stmt)
        frame["team_id"] = frame["team_id"].replace("", None)
    else:
        month = month_start_sql(engine.dialect.name, Encounter.start_date)
        stmt = (
            select(Attribution.team_id, month.label("month"), Encounter.kind, Encounter.cost_category, Encounter.specialty,
                   Encounter.facility, Encounter.in_network, func.count().label("claims"), func.coalesce(func.sum(Encounter.paid_usd), 0.0).label("paid_usd"))
            .select_from(Encounter)
            .outerjoin(Attribution, and_(Attribution.patient_id == Encounter.patient_id, Attribution.month == month))
            .where(Encounter.is_internal.is_(False), Encounter.start_date >= start, Encounter.start_date < end)
            .group_by(Attribution.team_id, month, Encounter.kind, Encounter.cost_category, Encounter.specialty, Encounter.facility,
                      Encounter.in_network)
        )  # fmt: skip
        if team_ids is not None:
            stmt = stmt.where(Attribution.team_id.in_(list(team_ids)))
        frame = read_frame(engine, stmt)
    cols = ["team_id", "month", "cost_category", "specialty", "facility", "in_network", "claims", "paid_usd"]
    if frame.empty:
        return pd.DataFrame(columns=cols)
    catalog = load_catalog()
    default = frame["kind"].map({k: v.category for k, v in catalog.activity_kinds.items()})
    category = frame["cost_category"].fillna("").astype(str)
    frame["cost_category"] = category.where(category != "", default).fillna("other")
    frame["specialty"] = frame["specialty"].fillna("").astype(str).replace("", NO_SPECIALTY)
    frame["facility"] = frame["facility"].fillna("").astype(str).str.strip().replace("", NO_FACILITY)
    frame["team_id"] = frame["team_id"].fillna(NOT_ATTRIBUTED)
    frame["month"] = [as_month(m) for m in frame["month"]]
    frame["in_network"] = frame["in_network"].astype(bool)
    frame = frame.loc[frame["month"].isin(months)]
    return frame.groupby(cols[:6], as_index=False)[["claims", "paid_usd"]].sum()[cols]


def leakage_by(claims: pd.DataFrame, by: Sequence[str], member_months: pd.DataFrame | None = None) -> pd.DataFrame:
    """Out-of-network spend of :func:`claims_by_network` by ``by`` (() = the whole selection).

    Columns: claims (out of network), paid_usd (all claims), out_of_network_usd,
    out_of_network_share (of paid), and with ``member_months`` (``by`` and member_months, or one
    row for ``by`` = ()) out_of_network_pmpm_usd. Rows whose out-of-network claims number 1-10 are
    suppressed (their amounts NaN), with complementary suppression (the rows add up to the total).
    """
    frame = claims.assign(out_of_network_usd=claims["paid_usd"].where(~claims["in_network"].astype(bool), 0.0),
                          oon_claims=claims["claims"].where(~claims["in_network"].astype(bool), 0))  # fmt: skip
    sums = ["paid_usd", "out_of_network_usd", "oon_claims"]
    out = frame.groupby(list(by), as_index=False)[sums].sum() if by else frame[sums].sum().to_frame().T
    out = out.rename(columns={"oon_claims": "claims"})
    out["out_of_network_share"] = out["out_of_network_usd"] / out["paid_usd"].replace(0.0, np.nan)
    value_cols = ["paid_usd", "out_of_network_usd", "out_of_network_share"]
    if member_months is not None:
        if by:
            out = out.merge(member_months, on=list(by), how="left")
        else:
            out["member_months"] = float(member_months["member_months"].sum())
        out["out_of_network_pmpm_usd"] = out["out_of_network_usd"] / out["member_months"].replace(0.0, np.nan)
        value_cols.append("out_of_network_pmpm_usd")
    out = out.loc[out["paid_usd"] != 0].reset_index(drop=True)
    if by:
        out = suppress_table(out, ["claims"], total=True, value_cols=value_cols)
    else:
        out["suppressed"] = bool(is_small(out["claims"].to_numpy()).any())
        if out["suppressed"].any():
            out[["claims", *value_cols]] = np.nan
    return out.sort_values("out_of_network_usd", ascending=False, na_position="last").reset_index(drop=True)


def member_months_by(
    engine: Engine, months: Sequence[date], by: Sequence[str], team_ids: tuple[str, ...] | None = None
) -> pd.DataFrame:
    """Member-months of the months from cells, by ``by`` (any of team_id, month; () = one row)."""
    months = [as_month(m) for m in months]
    cell_by = [b for b in by if b != "month"]
    sums = cell_sums_by(engine, cell_by, ["member_months"], min(months), max(months), team_ids)
    sums = sums.loc[sums["month"].isin(months)]
    if not by:
        return pd.DataFrame({"member_months": [float(sums["numerator"].sum())]})
    return sums.groupby(list(by), as_index=False)["numerator"].sum().rename(columns={"numerator": "member_months"})


NO_NETWORK_FLAG = (
    "no claim of these months is flagged out of network: the source may not carry a network flag (Tuva "
    "medical_claim.in_network_flag; FHIR ExplanationOfBenefit benefitPaymentStatus or benefitBalance.network), "
    "so leakage is unknown here, not $0"
)


def leakage_note(report: dict[str, pd.DataFrame]) -> str:
    """Why leakage cannot be read from a :func:`leakage_report` ('' when some claim is out of network)."""
    if not report:
        return "no claims in these months"
    total = report["total"]
    flagged = total["out_of_network_usd"].fillna(1.0).iloc[0] != 0 or bool(total["suppressed"].iloc[0])
    return "" if flagged else NO_NETWORK_FLAG


def leakage_report(engine: Engine, months: Sequence[date], team_ids: tuple[str, ...] | None = None) -> dict[str, pd.DataFrame]:
    """Leakage tables of the months: ``total`` (one row), ``by_category``, ``by_specialty``,
    ``by_facility`` (name or NPI as imported), ``by_team`` (with PMPM; team names), ``by_month`` (the trend, with PMPM). See :func:`leakage_by`."""
    claims = claims_by_network(engine, months, team_ids)
    if claims.empty:
        return {}
    catalog = load_catalog()
    names = team_names(engine)
    by_team = leakage_by(claims, ["team_id"], member_months_by(engine, months, ["team_id"], team_ids))
    by_team.insert(0, "team", by_team["team_id"].map(names).fillna(by_team["team_id"]))
    by_category = leakage_by(claims, ["cost_category"])
    by_category["cost_category"] = by_category["cost_category"].map(catalog.cost_categories).fillna(by_category["cost_category"])
    by_specialty = leakage_by(claims, ["specialty"])
    by_specialty["specialty"] = by_specialty["specialty"].str.replace("_", " ").str.capitalize()
    by_facility = leakage_by(claims, ["facility"])
    by_month = leakage_by(claims, ["month"], member_months_by(engine, months, ["month"], team_ids)).sort_values("month")
    total = leakage_by(claims, [], member_months_by(engine, months, [], team_ids))
    return {"total": total, "by_category": by_category, "by_specialty": by_specialty, "by_facility": by_facility,
            "by_team": by_team.drop(columns="team_id"),
            "by_month": by_month.reset_index(drop=True)}  # fmt: skip
