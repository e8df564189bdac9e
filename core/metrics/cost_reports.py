"""Cost reports of a selection for the CLI and the pages: PMPM tables (from stored cells when
there are any, else from the cost model of core.derive.costs), cost composition, recorded
versus standard minutes, unused capacity per team, costs outside attributed months, and the
reconciliation of patient-month costs against every activity and claim of the months.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from sqlalchemy import Engine, Select, and_, func, select

from core.config.catalog import Catalog, load_catalog
from core.derive.costs import (
    COST_EXTERNAL,
    COST_INTERNAL,
    COST_TOTAL,
    UNASSIGNED_SUBGROUP,
    CostingStatus,
    CostInputs,
    CostSettings,
    activity_costs,
    add_pmpm,
    build_patient_month_costs,
    capacity_cost_rates,
    capacity_use,
    category_metric,
    cost_metrics,
    cost_pmpm,
    costing_status_of,
    isin,
    load_cost_inputs,
    load_cost_settings,
    minutes_source_shares,
    patient_month_sums,
    unattributed_costs,
    unattributed_costs_in_store,
    uncosted_encounters,
    used_minutes_by_team_month,
)
from core.store.models import Attribution, Cell, Encounter, SubgroupAssignment, Team
from core.store.months import as_month, month_of, month_span
from core.store.queries import read_frame, where_selection

PMPM_COLUMNS = ["member_months", "cost_total_pmpm_usd", "cost_internal_pmpm_usd", "cost_external_pmpm_usd",
                "cost_out_of_network_pmpm_usd", "standard_minutes_share"]
UNUSED_SUMS = ["capacity_minutes", "used_minutes", "unused_minutes", "capacity_cost_usd", "unused_cost_usd"]


# --- selection ----------------------------------------------------------------------------


def select_patient_months(frame: pd.DataFrame, practice_id: str | None = None, team_id: str | None = None,
                          subgroup: str | None = None) -> pd.DataFrame:
    """Rows of a patient-month frame in a selection (None = all); same grain as ``frame``."""
    keep = np.ones(len(frame), dtype=bool)
    for column, value in (("practice_id", practice_id), ("team_id", team_id), ("subgroup", subgroup)):
        if value is not None:
            keep &= (frame[column] == value).to_numpy()
    return frame.loc[keep]


def last_attributed_month(engine: Engine) -> date | None:
    """The latest month with any attribution (the default period of the CLI)."""
    with engine.connect() as conn:
        last = conn.execute(select(func.max(Attribution.month))).scalar_one_or_none()
    if last is None:
        return None
    return as_month(last)


# --- PMPM from cells ----------------------------------------------------------------------


def has_cost_cells(engine: Engine) -> bool:
    """True when core.derive.cells has stored cost cells."""
    with engine.connect() as conn:
        return conn.execute(select(Cell.metric).where(Cell.metric == COST_TOTAL).limit(1)).first() is not None


def cost_pmpm_from_cells(
    engine: Engine,
    by: Sequence[str] = (),
    months: Sequence[date] | None = None,
    practice_id: str | None = None,
    team_id: str | None = None,
    subgroup: str | None = None,
) -> pd.DataFrame:
    """The same table as :func:`core.derive.costs.cost_pmpm`, summed from stored additive cells
    (stratum ``all``). Grain: ``by``.

    Returns an empty frame when no cost cells are stored yet.
    """
    keys = {"practice_id": Cell.practice_id, "team_id": Cell.team_id, "subgroup": Cell.subgroup, "month": Cell.month}
    group = [keys[b] for b in by]
    stmt = (
        select(*group, Cell.metric, func.sum(Cell.numerator).label("numerator"), func.sum(Cell.denominator).label("denominator"))
        .where(Cell.stratum == "all", Cell.metric.in_(cost_metrics()))
        .group_by(*group, Cell.metric)
    )
    stmt = where_selection(stmt, practice_id=practice_id, team_id=team_id, subgroup=subgroup)
    if months is not None:
        stmt = stmt.where(Cell.month.in_(list(months)))
    long = read_frame(engine, stmt)
    if long.empty:
        return long
    index = list(by) or None
    if index:
        wide = long.pivot_table(index=index, columns="metric", values="numerator", aggfunc="sum").reset_index()
        mm = long.loc[long["metric"] == COST_TOTAL].groupby(index)["denominator"].sum().rename("member_months").reset_index()
        wide = mm.merge(wide, on=index, how="left")
    else:
        totals = long.groupby("metric")["numerator"].sum()
        wide = pd.DataFrame([{"member_months": float(long.loc[long["metric"] == COST_TOTAL, "denominator"].sum()), **totals.to_dict()}])
    metrics = [m for m in cost_metrics() if m in wide]
    return add_pmpm(wide[[*by, "member_months", *metrics]], metrics)


# --- reconciliation -----------------------------------------------------------------------


@dataclass(frozen=True)
class CostReconciliation:
    """Attributed + unattributed cost against the raw activities and claims of the months."""

    attributed_internal_usd: float
    attributed_external_usd: float
    unattributed_internal_usd: float
    unattributed_external_usd: float
    activities_internal_usd: float
    claims_paid_usd: float
    uncosted_internal_encounters: int

    @property
    def difference_usd(self) -> float:
        """(attributed + unattributed) - (activities + claims); 0 when everything is accounted for."""
        counted = self.attributed_internal_usd + self.attributed_external_usd + self.unattributed_internal_usd + self.unattributed_external_usd
        return counted - (self.activities_internal_usd + self.claims_paid_usd)


def reconcile_costs(engine: Engine, months: Sequence[date] | None = None, settings: CostSettings | None = None) -> CostReconciliation:
    """Check that the patient-month costs plus the unattributed remainder equal every activity
    (TDABC, costed independently per activity row) and every claim (summed in SQL) of the months."""
    catalog = load_catalog()
    settings = settings or load_cost_settings(catalog=catalog)
    inputs = load_cost_inputs(engine, months)
    wide = build_patient_month_costs(inputs, settings, catalog)
    outside = unattributed_costs(inputs, settings, catalog)
    rates = capacity_cost_rates(inputs.staff, settings)
    act = activity_costs(inputs.encounters, inputs.staff_minutes, rates, settings.process_maps, settings.rate_scope)
    claims = select(func.coalesce(func.sum(Encounter.paid_usd), 0.0)).where(Encounter.is_internal.is_(False))
    ranges = [month_span([m]) for m in inputs.months] if months is not None else [None]
    claims_paid = 0.0
    with engine.connect() as conn:
        for bounds in ranges:
            stmt = claims if bounds is None else claims.where(Encounter.start_date >= bounds[0], Encounter.start_date < bounds[1])
            claims_paid += float(conn.execute(stmt).scalar_one())
    return CostReconciliation(
        attributed_internal_usd=float(wide[COST_INTERNAL].sum()),
        attributed_external_usd=float(wide[COST_EXTERNAL].sum()),
        unattributed_internal_usd=float(outside[COST_INTERNAL].sum()),
        unattributed_external_usd=float(outside[COST_EXTERNAL].sum()),
        activities_internal_usd=float(act["cost_usd"].sum()),
        claims_paid_usd=claims_paid,
        uncosted_internal_encounters=len(uncosted_encounters(inputs.encounters, act)),
    )


# --- cost report --------------------------------------------------------------------------


def cost_report(
    engine: Engine,
    months: Sequence[date],
    practice_id: str | None = None,
    team_id: str | None = None,
    subgroup: str | None = None,
    settings: CostSettings | None = None,
) -> dict[str, pd.DataFrame | str]:
    """Cost tables for a selection: PMPM by team and subgroup (from cells when stored, else from
    encounters), composition by category, recorded vs standard minutes, unused capacity per team,
    and costs outside attributed months.

    Grains: ``pmpm_total`` one row; ``pmpm_by_team_subgroup`` practice_id, team_id, subgroup;
    ``composition`` cost_category; ``minutes_source`` minutes_source; ``unused_capacity``
    team_id; ``unattributed`` month. ``source`` says where the PMPMs come from (``cells`` or
    ``encounters``); ``costing`` is the :class:`CostingStatus` note ('' = fully costed). Without
    a staff roster the internal and total PMPMs are NaN (not costed, never $0); a team without
    staff has no capacity, so its unused capacity is NaN (never negative) with ``capacity``
    ``no staff``. A selection reads only its own patients' rows; the network-wide ``unattributed``
    table then comes from an anti-join in SQL (:func:`core.derive.costs.unattributed_costs_in_store`).
    """
    catalog = load_catalog()
    settings = settings or load_cost_settings(catalog=catalog)
    patients = selection_patients(months, practice_id, team_id, subgroup)
    # the selection's patients only; each patient-month's cost depends on its own encounters and the rates
    inputs = load_cost_inputs(engine, months, patients)
    sums = patient_month_sums(inputs, settings, catalog)
    wide = select_patient_months(build_patient_month_costs(inputs, settings, catalog, sums), practice_id, team_id, subgroup)
    if patients is None:
        unattributed = unattributed_costs(inputs, settings, catalog, sums)
    else:  # network-wide, from the encounters outside attributed months only (an anti-join in SQL)
        unattributed = unattributed_costs_in_store(engine, months, settings, catalog, inputs.staff)
    pmpm, total, source = _pmpm_tables(engine, wide, months, practice_id, team_id, subgroup)
    rates = capacity_cost_rates(inputs.staff, settings)
    unused = _unused_capacity_by_team(engine, inputs, settings, practice_id, team_id)
    status = costing_status_of(inputs.staff["role"], settings)
    pmpm, total = _blank_not_costed(status, pmpm, total)
    # each activity is costed on its own: the selection's encounters only
    selected = _selected_encounters(inputs, practice_id, team_id, subgroup)
    act_selected = activity_costs(inputs.encounters.loc[isin(inputs.encounters["encounter_id"], selected)],
                                  inputs.staff_minutes.loc[isin(inputs.staff_minutes["encounter_id"], selected)], rates,
                                  settings.process_maps, settings.rate_scope)  # fmt: skip
    return {
        "source": source,
        "costing": status.note(),
        "pmpm_total": total,
        "pmpm_by_team_subgroup": pmpm,
        "composition": _composition(wide, catalog),
        "minutes_source": minutes_source_shares(act_selected) if len(act_selected) else pd.DataFrame(columns=["minutes_source", "minutes", "cost_usd", "cost_share"]),
        "unused_capacity": unused,
        "unattributed": unattributed[["month", "patients", COST_INTERNAL, COST_EXTERNAL, COST_TOTAL]],
    }


def selection_patients(months: Sequence[date], practice_id: str | None = None, team_id: str | None = None,
                       subgroup: str | None = None) -> Select | None:  # fmt: skip
    """A select of the ids of the patients attributed to the selection in any of ``months`` (None for
    the whole network): every patient with a patient-month that :func:`select_patient_months` keeps."""
    if practice_id is None and team_id is None and subgroup is None:
        return None
    stmt = select(Attribution.patient_id).where(Attribution.month.in_(sorted({as_month(m) for m in months})))
    if practice_id is not None:
        stmt = stmt.where(Attribution.practice_id == practice_id)
    if team_id is not None:
        stmt = stmt.where(Attribution.team_id == team_id)
    if subgroup is not None:
        assigned = and_(SubgroupAssignment.patient_id == Attribution.patient_id, SubgroupAssignment.month == Attribution.month)
        stmt = stmt.outerjoin(SubgroupAssignment, assigned)
        unassigned = subgroup == UNASSIGNED_SUBGROUP
        stmt = stmt.where(SubgroupAssignment.subgroup.is_(None) if unassigned else SubgroupAssignment.subgroup == subgroup)
    return stmt.distinct()


def _pmpm_tables(engine: Engine, wide: pd.DataFrame, months: Sequence[date], practice_id: str | None,
                 team_id: str | None, subgroup: str | None) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """PMPM by practice_id, team_id, subgroup and in total (one row), and their source: the
    stored cells when there are any for the selection, else the patient-month costs ``wide``."""
    by = ["practice_id", "team_id", "subgroup"]
    pmpm = pd.DataFrame()
    total = pd.DataFrame()
    source = "encounters"
    if has_cost_cells(engine):
        pmpm = cost_pmpm_from_cells(engine, by, months, practice_id, team_id, subgroup)
        total = cost_pmpm_from_cells(engine, (), months, practice_id, team_id, subgroup)
        source = "cells"
    if pmpm.empty:
        pmpm, total, source = cost_pmpm(wide, by), cost_pmpm(wide), "encounters"
    pmpm = pmpm[[*by, *[c for c in PMPM_COLUMNS if c in pmpm]]]
    total = total[[c for c in PMPM_COLUMNS if c in total]]
    return pmpm, total, source


def _composition(wide: pd.DataFrame, catalog: Catalog) -> pd.DataFrame:
    """Cost by category of the patient-month costs ``wide``. Grain: cost_category. Columns:
    cost_usd, pmpm_usd (NaN at zero member-months), share (of all categories)."""
    sums = cost_pmpm(wide)
    mm = float(sums["member_months"].iloc[0]) if len(wide) else 0.0
    composition = pd.DataFrame({
        "cost_category": list(catalog.cost_categories),
        "cost_usd": [float(wide[category_metric(c)].sum()) for c in catalog.cost_categories],
    })
    composition["pmpm_usd"] = composition["cost_usd"] / mm if mm else np.nan
    grand = composition["cost_usd"].sum()
    composition["share"] = composition["cost_usd"] / grand if grand else np.nan
    return composition


def _unused_capacity_by_team(engine: Engine, inputs: CostInputs, settings: CostSettings,
                             practice_id: str | None, team_id: str | None) -> pd.DataFrame:
    """Unused capacity of the selected teams over the months. Grain: team_id. Columns: the sums
    of :data:`UNUSED_SUMS`, utilisation, capacity (``staffed``/``no staff``; NaN unused then).
    The minutes used are summed in SQL (``used_minutes_by_team_month``, the true costs page's
    figures), not costed encounter by encounter."""
    team_practice = read_frame(engine, select(Team.team_id, Team.practice_id))
    teams = None  # the selected teams' minutes only
    if team_id is not None or practice_id is not None:
        teams = team_practice.loc[select_patient_months(team_practice, practice_id, team_id).index, "team_id"].tolist()
    used = used_minutes_by_team_month(engine, list(inputs.months), settings.process_maps, teams)
    unused = capacity_use(inputs.staff, used, list(inputs.months), settings)
    unused = unused.merge(team_practice, on="team_id", how="left")
    if practice_id is not None:
        unused = unused.loc[unused["practice_id"] == practice_id]
    if team_id is not None:
        unused = unused.loc[unused["team_id"] == team_id]
    unused = unused.groupby("team_id", as_index=False)[UNUSED_SUMS].sum()
    unused["utilisation"] = unused["used_minutes"] / unused["capacity_minutes"].replace(0.0, np.nan)
    no_staff = unused["capacity_minutes"] <= 0
    unused["capacity"] = np.where(no_staff, "no staff", "staffed")
    unused.loc[no_staff, ["unused_minutes", "capacity_cost_usd", "unused_cost_usd"]] = np.nan
    return unused


def _blank_not_costed(status: CostingStatus, pmpm: pd.DataFrame, total: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Copies of the PMPM tables (same grains) in which the columns that depend on internal cost
    are NaN when internal cost is unknown; the tables themselves when it is known."""
    if status.costed:
        return pmpm, total
    unknown = [c for c in ("cost_total_pmpm_usd", "cost_internal_pmpm_usd", "standard_minutes_share") if c in pmpm]
    return pmpm.assign(**dict.fromkeys(unknown, np.nan)), total.assign(**dict.fromkeys(unknown, np.nan))


def _selected_encounters(inputs: CostInputs, practice_id: str | None, team_id: str | None, subgroup: str | None) -> pd.Series:
    """Encounter ids of attributed patient-months in the selection."""
    att = select_patient_months(inputs.attribution, practice_id, team_id, subgroup)[["patient_id", "month"]]
    enc = inputs.encounters[["encounter_id", "patient_id", "start_date"]]
    enc = enc.assign(month=month_of(enc["start_date"]) if len(enc) else pd.Series([], dtype=object))
    return enc.merge(att, on=["patient_id", "month"], how="inner")["encounter_id"]
