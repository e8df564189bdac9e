"""True costs: time-driven activity-based costing (TDABC) of internal activities and paid
amounts of claims, per patient-month, with per-member-per-month (PMPM) figures.

Method
- Kaplan & Anderson, "Time-Driven Activity-Based Costing", HBR 2004; Kaplan & Porter, "How to
  solve the cost crisis in health care", HBR 2011. For each staff role a **capacity cost
  rate** = (annual cost + space and equipment) / practical capacity in minutes
  (default 80 % of paid hours x 60). Space and equipment are carried per full-time equivalent
  (square metres of the role x cost per m2, plus equipment) or as a pool shared by paid hours
  (:func:`space_equipment_usd`), never as a flat charge per person. Cost of an internal activity = sum over roles of minutes x
  rate. Where an internal activity has no recorded minutes, the **process map** of its kind
  (core/config/costing.toml) supplies standard minutes by role; recorded and standard minutes
  are never mixed within one encounter.
- Rates are per team and role (``rate_scope = "team"``, the team's own staff mix and
  salaries), falling back to the network rate of the role where the team has no staff in it
  or the encounter has no team; ``rate_scope = "network"`` uses one rate per role.
- Staff have no start or end dates in the data model, so every staff member supplies capacity
  in every month of the window (annual figures / 12).
- External cost = paid amount of each claim (``Encounter.paid_usd`` of non-internal rows),
  in the category of the row (blank: the kind's default category in catalog.toml), flagged
  in or out of network (leakage).
- Month of an encounter = month of its ``start_date`` (an admission spanning two months counts
  in the month it started).

Attribution choice: a cost counts in a patient-month only if the patient is attributed in that
month (``Attribution``), under that month's practice, team and subgroup. Costs of encounters in
months where the patient is not attributed are **not** spread to other months; they are reported
separately by :func:`unattributed_costs`, so that attributed + unattributed = every activity and
claim of the months (checked by ``core.metrics.cost_reports.reconcile_costs``).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine, Select, and_, select

from core.config import config_path, load_toml
from core.config.catalog import Catalog, load_catalog
from core.store.models import Attribution, Encounter, Patient, Staff, StaffMinutes, SubgroupAssignment
from core.store.months import as_month, month_of, month_span
from core.store.queries import read_sql_frame

COSTING_PATH = config_path("costing.toml")
NETWORK = "*"  # team_id of network-wide rate rows
RATE_SCOPES = ("team", "network")
UNASSIGNED_SUBGROUP = "unassigned"

# Metric names shared with core.derive.cells (cells) and the scorecard. Numerator = USD (or minutes),
# denominator = member-months.
COST_INTERNAL = "cost_internal_usd"
COST_EXTERNAL = "cost_external_usd"
COST_TOTAL = "cost_total_usd"
COST_OUT_OF_NETWORK = "cost_out_of_network_usd"
COST_INTERNAL_STANDARD = "cost_internal_standard_minutes_usd"
INTERNAL_MINUTES = "internal_minutes"


def category_metric(category: str) -> str:
    """Metric name of the cost in one category, e.g. ``cost_inpatient_usd``."""
    return f"cost_{category}_usd"


def cost_metrics(catalog: Catalog | None = None) -> list[str]:
    """Every cost metric name, in display order."""
    catalog = catalog or load_catalog()
    return [COST_TOTAL, COST_INTERNAL, COST_EXTERNAL, COST_OUT_OF_NETWORK, COST_INTERNAL_STANDARD, INTERNAL_MINUTES] + [
        category_metric(c) for c in catalog.cost_categories
    ]


# --- settings ---------------------------------------------------------------------------


SPACE_METHODS = ("square_metres", "share")


@dataclass(frozen=True)
class SpaceSettings:
    """How space and equipment cost is allocated to staff (costing.toml ``[space_equipment]``).

    ``square_metres``: each staff member carries the square metres of their role per full-time
    equivalent (FTE) x the cost of a square metre per year, plus the equipment cost of the role per
    FTE, both scaled by the person's FTE (paid hours / full-time hours): a 0.1-FTE role carries a
    tenth of a full-time post's space, so its rate per minute is not inflated by a flat charge.
    ``share``: one annual pool of space and equipment cost split among all staff in proportion to
    their paid hours.
    """

    method: str = "square_metres"
    usd_per_square_metre_per_year: float = 0.0
    square_metres_per_fte: dict[str, float] = field(default_factory=dict)
    equipment_usd_per_fte_per_year: dict[str, float] = field(default_factory=dict)
    pool_usd_per_year: float = 0.0

    def square_metres_for(self, role: str) -> float:
        return self.square_metres_per_fte.get(role, self.square_metres_per_fte.get("default", 0.0))

    def equipment_for(self, role: str) -> float:
        return self.equipment_usd_per_fte_per_year.get(role, self.equipment_usd_per_fte_per_year.get("default", 0.0))


@dataclass(frozen=True)
class CostSettings:
    """TDABC settings (core/config/costing.toml)."""

    practical_capacity_share: float
    rate_scope: str
    space: SpaceSettings
    process_maps: dict[str, dict[str, float]]
    full_time_hours_per_year: float = 2080.0
    benefits_share_of_cost: float = 0.0


def load_cost_settings(path: Path = COSTING_PATH, catalog: Catalog | None = None) -> CostSettings:
    """Load and validate the costing settings; raises ValueError naming the file and key."""
    catalog = catalog or load_catalog()
    raw = load_toml(path)
    return parse_cost_settings(raw, catalog, source=str(path))


def _role_amounts(raw: dict, key: str, catalog: Catalog, source: str) -> dict[str, float]:
    out = {str(k): float(v) for k, v in raw.get(key, {}).items()}
    for role, amount in out.items():
        if role != "default" and role not in catalog.roles:
            raise ValueError(f"{source}: space_equipment.{key} has unknown role {role!r}")
        if amount < 0:
            raise ValueError(f"{source}: space_equipment.{key}.{role} must be >= 0")
    return out


def parse_space_settings(raw: dict, catalog: Catalog, source: str = "costing settings") -> SpaceSettings:
    """Validate the ``[space_equipment]`` table."""
    try:
        method = str(raw.get("method", "square_metres"))
        per_m2 = float(raw.get("usd_per_square_metre_per_year", 0.0))
        pool = float(raw.get("pool_usd_per_year", 0.0))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: malformed space_equipment setting ({exc})") from exc
    if method not in SPACE_METHODS:
        raise ValueError(f"{source}: space_equipment.method must be one of {SPACE_METHODS}, got {method!r}")
    if per_m2 < 0 or pool < 0:
        raise ValueError(f"{source}: space_equipment amounts must be >= 0")
    unknown = set(raw) - {"method", "usd_per_square_metre_per_year", "pool_usd_per_year", "square_metres_per_fte",
                          "equipment_usd_per_fte_per_year"}  # fmt: skip
    if unknown:
        raise ValueError(f"{source}: space_equipment has unknown keys {sorted(unknown)}")
    return SpaceSettings(method, per_m2, _role_amounts(raw, "square_metres_per_fte", catalog, source),
                         _role_amounts(raw, "equipment_usd_per_fte_per_year", catalog, source), pool)  # fmt: skip


def parse_cost_settings(raw: dict, catalog: Catalog, source: str = "costing settings") -> CostSettings:
    """Validate a settings dict (the parsed TOML) against the catalogue."""
    try:
        share = float(raw["capacity"]["practical_capacity_share"])
        scope = str(raw["capacity"].get("rate_scope", "team"))
        full_time = float(raw["capacity"].get("full_time_hours_per_year", 2080.0))
        benefits = float(raw["capacity"].get("benefits_share_of_cost", 0.0))
        maps = {str(k): {str(r): float(m) for r, m in v.items()} for k, v in raw.get("process_maps", {}).items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{source}: missing or malformed setting ({exc})") from exc
    if "space_equipment_usd_per_year" in raw:
        raise ValueError(f"{source}: space_equipment_usd_per_year (a flat charge per person) is replaced by [space_equipment] "
                         "(square metres per FTE or a pool shared by paid hours)")  # fmt: skip
    space = parse_space_settings(raw.get("space_equipment", {}), catalog, source)
    if not 0 < share <= 1:
        raise ValueError(f"{source}: capacity.practical_capacity_share must be in (0, 1], got {share}")
    if scope not in RATE_SCOPES:
        raise ValueError(f"{source}: capacity.rate_scope must be one of {RATE_SCOPES}, got {scope!r}")
    if full_time <= 0:
        raise ValueError(f"{source}: capacity.full_time_hours_per_year must be > 0")
    if not 0 <= benefits < 1:
        raise ValueError(f"{source}: capacity.benefits_share_of_cost must be in [0, 1), got {benefits}")
    for kind, roles in maps.items():
        if kind not in catalog.activity_kinds or not catalog.activity_kinds[kind].internal:
            raise ValueError(f"{source}: process_maps.{kind} is not an internal activity kind of the catalogue")
        for role, minutes in roles.items():
            if role not in catalog.roles:
                raise ValueError(f"{source}: process_maps.{kind} has unknown role {role!r}")
            if minutes < 0:
                raise ValueError(f"{source}: process_maps.{kind}.{role} must be >= 0 minutes")
    return CostSettings(share, scope, space, maps, full_time, benefits)


# --- small helpers ----------------------------------------------------------------------


def isin(values: pd.Series, members) -> np.ndarray:
    """``values.isin(members)`` as a boolean array, fast for large string columns (hash lookup)."""
    index = pd.Index(members).unique()
    return index.get_indexer(values) >= 0


# --- TDABC ------------------------------------------------------------------------------


def space_equipment_usd(staff: pd.DataFrame, settings: CostSettings) -> pd.DataFrame:
    """Space and equipment cost of each staff member, USD per year (same rows as ``staff``).

    Columns: fte (paid hours / full-time hours), square_metres, space_usd, equipment_usd,
    space_equipment_usd. ``square_metres``: m2 of the role per FTE x FTE x USD per m2, plus the
    role's equipment per FTE x FTE. ``share``: the pool x the person's share of all paid hours
    (square metres and equipment then blank, NaN).
    """
    space = settings.space
    hours = staff["paid_hours_per_year"].astype(float).to_numpy()
    fte = hours / settings.full_time_hours_per_year
    out = pd.DataFrame({"fte": fte}, index=staff.index)
    if space.method == "share":
        total = hours.sum()
        out["square_metres"] = np.nan
        out["space_usd"] = space.pool_usd_per_year * hours / total if total > 0 else 0.0
        out["equipment_usd"] = np.nan
        out["space_equipment_usd"] = out["space_usd"]
        return out
    out["square_metres"] = [space.square_metres_for(r) for r in staff["role"]] * fte
    out["space_usd"] = out["square_metres"] * space.usd_per_square_metre_per_year
    out["equipment_usd"] = [space.equipment_for(r) for r in staff["role"]] * fte
    out["space_equipment_usd"] = out["space_usd"] + out["equipment_usd"]
    return out


RATE_PARTS = ["fte", "salary_usd_per_year", "benefits_usd_per_year", "square_metres", "space_equipment_usd_per_year"]


def capacity_cost_rates(staff: pd.DataFrame, settings: CostSettings) -> pd.DataFrame:
    """Capacity cost rate per team and role, plus network-wide rows (``team_id == "*"``).

    In: staff (team_id, role, annual_cost_usd, paid_hours_per_year).
    Out grain: team_id, role. Columns: staff (count), fte, salary_usd_per_year and
    benefits_usd_per_year (the staff's annual cost split by ``benefits_share_of_cost``),
    square_metres, space_equipment_usd_per_year (:func:`space_equipment_usd`),
    capacity_cost_usd_per_year (annual cost + space and equipment), practical_minutes_per_year
    (paid hours x 60 x practical share), rate_usd_per_minute.
    """
    s = staff[["team_id", "role", "annual_cost_usd", "paid_hours_per_year"]].copy()
    space = space_equipment_usd(s, settings)
    cost = s["annual_cost_usd"].astype(float)
    s["fte"] = space["fte"]
    s["benefits_usd_per_year"] = cost * settings.benefits_share_of_cost
    s["salary_usd_per_year"] = cost - s["benefits_usd_per_year"]
    s["square_metres"] = space["square_metres"]
    s["space_equipment_usd_per_year"] = space["space_equipment_usd"]
    s["capacity_cost_usd_per_year"] = cost + s["space_equipment_usd_per_year"]
    s["practical_minutes_per_year"] = s["paid_hours_per_year"].astype(float) * 60.0 * settings.practical_capacity_share
    s["staff"] = 1
    cols = ["staff", *RATE_PARTS, "capacity_cost_usd_per_year", "practical_minutes_per_year"]
    team = s.groupby(["team_id", "role"], as_index=False)[cols].sum(min_count=1)
    network = s.groupby(["role"], as_index=False)[cols].sum(min_count=1)
    network.insert(0, "team_id", NETWORK)
    out = pd.concat([team, network], ignore_index=True)
    out["rate_usd_per_minute"] = out["capacity_cost_usd_per_year"] / out["practical_minutes_per_year"]
    return out


def resolve_minutes(encounters: pd.DataFrame, staff_minutes: pd.DataFrame, process_maps: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Minutes by role of each internal encounter: recorded where any are, else the process map.

    Out grain: encounter_id, role. Columns: minutes, minutes_source (``recorded``/``standard``).
    Internal encounters with neither recorded minutes nor a process map for their kind get no
    rows (they cannot be costed; see :func:`uncosted_encounters`).
    """
    internal = encounters.loc[encounters["is_internal"].astype(bool), ["encounter_id", "kind"]]
    recorded = staff_minutes.loc[isin(staff_minutes["encounter_id"], internal["encounter_id"]), ["encounter_id", "role", "minutes"]].copy()
    recorded["minutes_source"] = "recorded"
    missing = internal.loc[~isin(internal["encounter_id"], recorded["encounter_id"])]
    maps = pd.DataFrame(
        [(kind, role, float(m)) for kind, roles in process_maps.items() for role, m in roles.items()],
        columns=["kind", "role", "minutes"],
    )
    standard = missing.merge(maps, on="kind", how="inner")[["encounter_id", "role", "minutes"]]
    standard["minutes_source"] = "standard"
    out = pd.concat([recorded, standard], ignore_index=True)
    out["minutes"] = out["minutes"].astype(float)
    return out


def activity_costs(
    encounters: pd.DataFrame,
    staff_minutes: pd.DataFrame,
    rates: pd.DataFrame,
    process_maps: dict[str, dict[str, float]],
    rate_scope: str = "team",
) -> pd.DataFrame:
    """TDABC cost of each internal activity by role.

    In: encounters (encounter_id, patient_id, team_id, kind, start_date, is_internal),
    staff_minutes (encounter_id, role, minutes), rates from :func:`capacity_cost_rates`,
    process maps (kind -> role -> standard minutes).
    Out grain: encounter_id, role. Columns: patient_id, team_id, kind, month, role, minutes,
    minutes_source, rate_source (``team``/``network``/``missing``), rate_usd_per_minute, cost_usd.
    A role with no staff anywhere in the network has no rate: its minutes cost 0 and are
    flagged ``missing``.
    """
    if rate_scope not in RATE_SCOPES:
        raise ValueError(f"rate_scope must be one of {RATE_SCOPES}")
    minutes = resolve_minutes(encounters, staff_minutes, process_maps)
    enc = encounters[["encounter_id", "patient_id", "team_id", "kind", "start_date"]]
    out = minutes.merge(enc, on="encounter_id", how="left")
    out["month"] = month_of(out["start_date"]) if len(out) else pd.Series([], dtype=object)
    out = out.drop(columns="start_date")
    net = rates.loc[rates["team_id"] == NETWORK, ["role", "rate_usd_per_minute"]].rename(columns={"rate_usd_per_minute": "network_rate"})
    out = out.merge(net, on="role", how="left")
    if rate_scope == "team":
        team = rates.loc[rates["team_id"] != NETWORK, ["team_id", "role", "rate_usd_per_minute"]].rename(columns={"rate_usd_per_minute": "team_rate"})
        out = out.merge(team, on=["team_id", "role"], how="left")
    else:
        out["team_rate"] = np.nan
    team_rate = out["team_rate"].astype(float)
    network_rate = out["network_rate"].astype(float)
    out["rate_source"] = np.where(team_rate.notna(), "team", np.where(network_rate.notna(), "network", "missing"))
    out["rate_usd_per_minute"] = team_rate.fillna(network_rate).fillna(0.0)
    out["cost_usd"] = out["minutes"] * out["rate_usd_per_minute"]
    cols = ["encounter_id", "patient_id", "team_id", "kind", "month", "role", "minutes", "minutes_source", "rate_source", "rate_usd_per_minute", "cost_usd"]
    return out[cols]


def uncosted_encounters(encounters: pd.DataFrame, activity_cost: pd.DataFrame) -> pd.DataFrame:
    """Internal encounters that got no cost rows (no minutes recorded and no process map). Grain: encounter_id."""
    internal = encounters.loc[encounters["is_internal"].astype(bool)]
    return internal.loc[~isin(internal["encounter_id"], activity_cost["encounter_id"])]


def minutes_source_shares(activity_cost: pd.DataFrame) -> pd.DataFrame:
    """Cost and minutes from recorded versus standard (process-map) minutes.

    Out grain: minutes_source. Columns: minutes, cost_usd, cost_share.
    """
    out = activity_cost.groupby("minutes_source", as_index=False)[["minutes", "cost_usd"]].sum()
    total = out["cost_usd"].sum()
    out["cost_share"] = out["cost_usd"] / total if total else 0.0
    return out


def unused_capacity(staff: pd.DataFrame, activity_cost: pd.DataFrame, months: Sequence[date], settings: CostSettings) -> pd.DataFrame:
    """Capacity supplied minus capacity used, per team, role and month.

    Supplied = practical minutes / 12 of the team's staff in the role; used = minutes of the
    role on internal activities whose encounter belongs to the team (encounters without a
    team are not anyone's capacity and are left out). Dollars at the team's own rate of the
    role (network rate where the team has no staff in it): unused_cost_usd =
    capacity_cost_usd - used_minutes x rate. Over-used capacity shows as negative unused.

    Out grain: team_id, month, role. Columns: capacity_minutes, used_minutes, unused_minutes,
    capacity_cost_usd, used_cost_usd, unused_cost_usd.
    """
    used = activity_cost.loc[activity_cost["team_id"].notna() & activity_cost["month"].isin(list(months))]
    used = used.groupby(["team_id", "month", "role"], as_index=False)["minutes"].sum().rename(columns={"minutes": "used_minutes"})
    return capacity_use(staff, used, months, settings)


def capacity_use(staff: pd.DataFrame, used: pd.DataFrame, months: Sequence[date], settings: CostSettings) -> pd.DataFrame:
    """:func:`unused_capacity` from minutes used already summed (team_id, month, role, used_minutes),
    e.g. by :func:`used_minutes_by_team_month` in SQL. Same grain and columns."""
    rates = capacity_cost_rates(staff, settings)
    team_rates = rates.loc[rates["team_id"] != NETWORK]
    month_frame = pd.DataFrame({"month": list(months)}, dtype=object)
    supplied = team_rates.merge(month_frame, how="cross")
    supplied["capacity_minutes"] = supplied["practical_minutes_per_year"] / 12.0
    supplied["capacity_cost_usd"] = supplied["capacity_cost_usd_per_year"] / 12.0
    supplied = supplied[["team_id", "month", "role", "capacity_minutes", "capacity_cost_usd"]]
    used = used.loc[isin(used["month"], list(months))] if len(used) else used
    out = supplied.merge(used, on=["team_id", "month", "role"], how="outer")
    out[["capacity_minutes", "capacity_cost_usd", "used_minutes"]] = out[["capacity_minutes", "capacity_cost_usd", "used_minutes"]].fillna(0.0)
    rate = out.merge(team_rates[["team_id", "role", "rate_usd_per_minute"]], on=["team_id", "role"], how="left")["rate_usd_per_minute"]
    net = rates.loc[rates["team_id"] == NETWORK].set_index("role")["rate_usd_per_minute"]
    rate = rate.fillna(out["role"].map(net)).fillna(0.0)
    out["used_cost_usd"] = out["used_minutes"].to_numpy() * rate.to_numpy()
    out["unused_minutes"] = out["capacity_minutes"] - out["used_minutes"]
    out["unused_cost_usd"] = out["capacity_cost_usd"] - out["used_cost_usd"]
    cols = ["team_id", "month", "role", "capacity_minutes", "used_minutes", "unused_minutes", "capacity_cost_usd", "used_cost_usd", "unused_cost_usd"]
    return out[cols].sort_values(["team_id", "month", "role"]).reset_index(drop=True)


def used_minutes_by_team_month(engine: Engine, months: Sequence[date], process_maps: dict[str, dict[str, float]],
                               teams: Sequence[str] | None = None) -> pd.DataFrame:  # fmt: skip
    """Minutes used per team, month and role (the same minutes as :func:`resolve_minutes` gives
    :func:`unused_capacity`: recorded minutes of internal encounters with a team, and the process
    map's standard minutes of those with none recorded), of the teams ``teams`` (None: every
    team): from the derive's ``team_month_minutes`` (``core.derive.page_aggregates``), else summed
    in SQL from the encounters and their staff minutes.

    Out grain: team_id, month, role. Column: used_minutes.
    """
    from sqlalchemy import exists, func

    from core.derive.page_aggregates import built_in
    from core.store.models import TeamMonthMinutes
    from core.store.months import month_start_sql

    months = sorted({as_month(m) for m in months})
    cols = {"team_id": pd.Series([], dtype=object), "month": pd.Series([], dtype=object), "role": pd.Series([], dtype=object),
            "used_minutes": pd.Series([], dtype="float64")}  # fmt: skip
    if not months:
        return pd.DataFrame(cols)
    start, end = month_span(months)
    if built_in(engine):  # the derive's team_month_minutes: a few hundred rows a month
        t = TeamMonthMinutes
        stmt = select(t.team_id, t.month, t.kind, t.role, t.minutes, t.encounters).where(t.month >= start, t.month < end)
        rows = _read(engine, stmt if teams is None else stmt.where(t.team_id.in_(list(teams))))
        given = rows["role"] != ""
        recorded = (rows.loc[given].groupby(["team_id", "month", "role"], as_index=False)["minutes"].sum()
                    .rename(columns={"minutes": "used_minutes"}))  # fmt: skip
        unrecorded = rows.loc[~given & (rows["encounters"] > 0), ["team_id", "month", "kind", "encounters"]]
    else:
        month = month_start_sql(engine.dialect.name, Encounter.start_date).label("month")
        window = (Encounter.is_internal.is_(True), Encounter.team_id.is_not(None), Encounter.start_date >= start, Encounter.start_date < end)
        if teams is not None:
            window = (*window, Encounter.team_id.in_(list(teams)))
        recorded = _read(engine, select(Encounter.team_id, month, StaffMinutes.role, func.sum(StaffMinutes.minutes).label("used_minutes"))
                         .join(StaffMinutes, StaffMinutes.encounter_id == Encounter.encounter_id).where(*window)
                         .group_by(Encounter.team_id, month, StaffMinutes.role))  # fmt: skip
        has_minutes = exists().where(StaffMinutes.encounter_id == Encounter.encounter_id)
        unrecorded = _read(engine, select(Encounter.team_id, month, Encounter.kind, func.count().label("encounters"))
                           .where(*window, ~has_minutes).group_by(Encounter.team_id, month, Encounter.kind))  # fmt: skip
    maps = pd.DataFrame([(k, r, float(m)) for k, roles in process_maps.items() for r, m in roles.items()], columns=["kind", "role", "minutes"])
    standard = unrecorded.merge(maps, on="kind", how="inner")
    standard = standard.assign(used_minutes=standard["encounters"].astype(float) * standard["minutes"])[["team_id", "month", "role", "used_minutes"]]
    frames = [f for f in (recorded, standard) if len(f)]
    if not frames:
        return pd.DataFrame(cols)
    out = pd.concat(frames, ignore_index=True)
    out["month"] = [as_month(m) for m in out["month"]]
    out = out.loc[isin(out["month"], months)]
    return out.groupby(["team_id", "month", "role"], as_index=False)["used_minutes"].sum()


# --- costing status -----------------------------------------------------------------------

COSTED, PARTLY_COSTED, NOT_COSTED = "costed", "partly costed", "not costed"


@dataclass(frozen=True)
class CostingStatus:
    """Whether internal (TDABC) cost can be priced at all.

    ``not costed``: the store has no staff roster, so no minute has a capacity cost rate and
    internal cost is unknown (not $0); margins against it and unused capacity are unknown too.
    ``partly costed``: roles the process maps use have no staff anywhere in the network; their
    minutes are priced at $0, so internal cost is understated.
    """

    status: str
    roles_without_staff: tuple[str, ...] = ()

    @property
    def costed(self) -> bool:
        """False when internal cost is unknown (no staff roster)."""
        return self.status != NOT_COSTED

    def note(self) -> str:
        """One line for pages and the CLI ('' when fully costed)."""
        if self.status == NOT_COSTED:
            return "internal cost not costed: no staff roster (roles, annual cost, paid hours) in the data"
        if self.status == PARTLY_COSTED:
            roles = ", ".join(map(load_catalog().role_label, self.roles_without_staff))  # the reader's words, not the data's codes
            return f"internal cost partly costed: no staff with the role {roles} (their minutes cost $0)"
        return ""


def costing_status_of(staff_roles: Iterable[str], settings: CostSettings) -> CostingStatus:
    """The :class:`CostingStatus` of a network whose staff have ``staff_roles``."""
    present = set(staff_roles)
    if not present:
        return CostingStatus(NOT_COSTED)
    needed = {role for roles in settings.process_maps.values() for role, minutes in roles.items() if minutes > 0}
    missing = tuple(sorted(needed - present))
    return CostingStatus(PARTLY_COSTED, missing) if missing else CostingStatus(COSTED)


def costing_status(engine: Engine, settings: CostSettings | None = None) -> CostingStatus:
    """The :class:`CostingStatus` of the store (reads the staff roles only)."""
    settings = settings or load_cost_settings()
    with engine.connect() as conn:
        roles = conn.execute(select(Staff.role).distinct()).scalars().all()
    return costing_status_of(roles, settings)


def show_not_costed(frame: pd.DataFrame, columns: Sequence[str], status: CostingStatus) -> pd.DataFrame:
    """A copy for display in which ``columns`` read ``not costed`` when internal cost is unknown."""
    if status.costed or frame.empty:
        return frame
    out = frame.copy()
    for column in columns:
        if column in out:
            out[column] = NOT_COSTED
    return out


# --- claims -----------------------------------------------------------------------------


def external_costs(encounters: pd.DataFrame, catalog: Catalog | None = None) -> pd.DataFrame:
    """Paid amounts of claims (non-internal encounters) by category and network status.

    Out grain: encounter_id. Columns: patient_id, team_id, kind, month, cost_category (blank in
    the data: the kind's default), in_network, cost_usd.
    """
    catalog = catalog or load_catalog()
    ext = encounters.loc[~encounters["is_internal"].astype(bool)].copy()
    default = ext["kind"].map({k: v.category for k, v in catalog.activity_kinds.items()})
    category = ext["cost_category"].fillna("").astype(str)
    ext["cost_category"] = category.where(category != "", default).fillna("other")
    ext["month"] = month_of(ext["start_date"]) if len(ext) else pd.Series([], dtype=object)
    ext["in_network"] = ext["in_network"].astype(bool)
    ext["cost_usd"] = ext["paid_usd"].fillna(0.0).astype(float)
    return ext[["encounter_id", "patient_id", "team_id", "kind", "month", "cost_category", "in_network", "cost_usd"]].reset_index(drop=True)


# --- patient-months -----------------------------------------------------------------------


@dataclass(frozen=True)
class CostInputs:
    """Rows the cost model needs for a set of months (from :func:`load_cost_inputs`).

    attribution: patient_id, month, practice_id, team_id, subgroup (``unassigned`` when the
    patient-month has no subgroup assignment). encounters: every encounter starting in the
    months. staff_minutes: minutes of those encounters. staff: every staff member.
    """

    months: tuple[date, ...]
    staff: pd.DataFrame
    encounters: pd.DataFrame
    staff_minutes: pd.DataFrame
    attribution: pd.DataFrame


def _read(engine: Engine, stmt) -> pd.DataFrame:
    return read_sql_frame(engine, stmt)


def encounter_columns() -> list:
    """The encounter columns the cost model reads."""
    return [Encounter.encounter_id, Encounter.patient_id, Encounter.team_id, Encounter.kind, Encounter.start_date,
            Encounter.is_internal, Encounter.in_network, Encounter.cost_category, Encounter.paid_usd]  # fmt: skip


def _read_staff(engine: Engine) -> pd.DataFrame:
    return _read(engine, select(Staff.staff_id, Staff.team_id, Staff.role, Staff.annual_cost_usd, Staff.paid_hours_per_year))


def load_cost_inputs(engine: Engine, months: Sequence[date] | None = None,
                     patients: tuple[str, str] | list[str] | Select | None = None, dated: bool = False,
                     attribution: pd.DataFrame | None = None, encounters: pd.DataFrame | None = None) -> CostInputs:  # fmt: skip
    """Read staff, encounters, staff minutes and attribution for ``months`` (all months if None)
    of the patients ``patients``: all (None), those whose id is in an inclusive range (a pair of
    ids), those of a list of ids, or those a select of patient ids returns. ``dated``: the months'
    dates go into the encounter reads of an id range too (the derive of a few late months).
    ``attribution``: the same patients' attributed patient-months of ``months``, when the caller
    has read them already (:class:`CostInputs`' columns, months as first-of-month dates); not
    read again then (the cells' blocks: 535,852 rows a block of 25,000 patients). ``encounters``:
    likewise every encounter of the patients (at least those of ``months``, with at least the
    columns of :func:`encounter_columns`; start dates as dates or datetimes), the cells' blocks'
    read of the measures (990,553 rows)."""
    enc_cols = encounter_columns()
    att_stmt = (
        select(Attribution.patient_id, Attribution.month, Attribution.practice_id, Attribution.team_id, SubgroupAssignment.subgroup)
        .outerjoin(SubgroupAssignment, and_(SubgroupAssignment.patient_id == Attribution.patient_id, SubgroupAssignment.month == Attribution.month))
    )
    enc_stmt = select(*enc_cols)
    min_stmt = select(StaffMinutes.encounter_id, StaffMinutes.role, StaffMinutes.minutes).join(Encounter, Encounter.encounter_id == StaffMinutes.encounter_id)
    if months is not None:
        months = sorted({as_month(m) for m in months})
        if not months:
            raise ValueError("months is empty")
        start, end = month_span(months)
        att_stmt = att_stmt.where(Attribution.month.in_(months))
        if dated or not isinstance(patients, tuple):
            # (For a block of patient ids the dates stay out of the SQL unless ``dated``: SQLite would
            # otherwise scan the date index over the whole network's window for every block; the
            # months are kept below. A few late months are a small part of the date index.)
            enc_stmt = enc_stmt.where(Encounter.start_date >= start, Encounter.start_date < end)
            min_stmt = min_stmt.where(Encounter.start_date >= start, Encounter.start_date < end)
    if patients is not None:
        def of(column):
            return column.between(*patients) if isinstance(patients, tuple) else column.in_(patients)

        att_stmt = att_stmt.where(of(Attribution.patient_id))
        enc_stmt = enc_stmt.where(of(Encounter.patient_id))
        min_stmt = min_stmt.where(of(Encounter.patient_id))
    staff = _read_staff(engine)
    # in key order, whatever order the query returned them in: sums then come out the same to the bit
    encounters = _read(engine, enc_stmt) if encounters is None else encounters[[c.name for c in enc_cols]]
    encounters = encounters.sort_values("encounter_id", kind="stable", ignore_index=True)
    staff_minutes = _read(engine, min_stmt).sort_values(["encounter_id", "role"], kind="stable", ignore_index=True)
    if attribution is None:
        attribution = _read(engine, att_stmt)
        attribution["month"] = month_of(attribution["month"]) if len(attribution) else pd.Series([], dtype=object)
        attribution["subgroup"] = attribution["subgroup"].fillna(UNASSIGNED_SUBGROUP)
    if months is not None and len(encounters):
        encounters = encounters.loc[isin(month_of(encounters["start_date"]), months)].reset_index(drop=True)
        staff_minutes = staff_minutes.loc[isin(staff_minutes["encounter_id"], encounters["encounter_id"])].reset_index(drop=True)
    if months is None:
        found = set(attribution["month"]) | (set(month_of(encounters["start_date"])) if len(encounters) else set())
        months = sorted(found)
    return CostInputs(tuple(months), staff, encounters, staff_minutes, attribution)


def encounter_costs(inputs: CostInputs, settings: CostSettings, catalog: Catalog | None = None) -> pd.DataFrame:
    """Cost of every encounter of the inputs, internal (TDABC) and external (claims).

    Out grain: encounter_id. Columns: patient_id, month, cost_category, is_internal,
    in_network, cost_usd, standard_minutes_cost_usd, minutes.
    """
    catalog = catalog or load_catalog()
    rates = capacity_cost_rates(inputs.staff, settings)
    act = activity_costs(inputs.encounters, inputs.staff_minutes, rates, settings.process_maps, settings.rate_scope)
    act = act.assign(standard_minutes_cost_usd=np.where(act["minutes_source"] == "standard", act["cost_usd"], 0.0))
    internal = act.groupby(["encounter_id", "patient_id", "kind", "month"], as_index=False)[["cost_usd", "standard_minutes_cost_usd", "minutes"]].sum()
    internal["cost_category"] = internal["kind"].map({k: v.category for k, v in catalog.activity_kinds.items()}).fillna("primary_care")
    internal["is_internal"] = True
    internal["in_network"] = True
    ext = external_costs(inputs.encounters, catalog).assign(is_internal=False, standard_minutes_cost_usd=0.0, minutes=0.0)
    cols = ["encounter_id", "patient_id", "month", "cost_category", "is_internal", "in_network", "cost_usd", "standard_minutes_cost_usd", "minutes"]
    frames = [f[cols] for f in (internal, ext) if len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    return pd.concat(frames, ignore_index=True)


def _patient_month_sums(enc: pd.DataFrame, catalog: Catalog) -> pd.DataFrame:
    """Wide cost metrics per patient_id, month from :func:`encounter_costs`."""
    cost = enc["cost_usd"].astype(float)
    internal = enc["is_internal"].astype(bool)
    wide = pd.DataFrame({
        "patient_id": enc["patient_id"],
        "month": enc["month"],
        COST_TOTAL: cost,
        COST_INTERNAL: cost.where(internal, 0.0),
        COST_EXTERNAL: cost.where(~internal, 0.0),
        COST_OUT_OF_NETWORK: cost.where(~enc["in_network"].astype(bool), 0.0),
        COST_INTERNAL_STANDARD: enc["standard_minutes_cost_usd"].astype(float),
        INTERNAL_MINUTES: enc["minutes"].astype(float),
    })
    for category in catalog.cost_categories:
        wide[category_metric(category)] = cost.where(enc["cost_category"] == category, 0.0)
    metrics = cost_metrics(catalog)
    if not len(wide):
        return wide[["patient_id", "month", *metrics]]
    return wide.groupby(["patient_id", "month"], as_index=False)[metrics].sum()


def build_patient_month_costs(inputs: CostInputs, settings: CostSettings, catalog: Catalog | None = None,
                              sums: pd.DataFrame | None = None) -> pd.DataFrame:  # fmt: skip
    """Cost metrics of every attributed patient-month (zeros where nothing happened).

    Out grain: patient_id, month. Columns: practice_id, team_id, subgroup, member_months (1),
    and every metric of :func:`cost_metrics` (USD, ``internal_minutes`` in minutes).
    ``sums``: the inputs' :func:`patient_month_sums` when already computed.
    """
    catalog = catalog or load_catalog()
    sums = patient_month_sums(inputs, settings, catalog) if sums is None else sums
    att = inputs.attribution[["patient_id", "month", "practice_id", "team_id", "subgroup"]]
    out = att.merge(sums, on=["patient_id", "month"], how="left")
    metrics = cost_metrics(catalog)
    out[metrics] = out[metrics].astype(float).fillna(0.0)
    out.insert(5, "member_months", 1.0)
    return out.sort_values(["patient_id", "month"]).reset_index(drop=True)


def patient_month_sums(inputs: CostInputs, settings: CostSettings, catalog: Catalog | None = None) -> pd.DataFrame:
    """Every encounter's cost (:func:`encounter_costs`) summed per patient and month of start,
    attributed or not: what :func:`build_patient_month_costs` and :func:`unattributed_costs` share."""
    catalog = catalog or load_catalog()
    return _patient_month_sums(encounter_costs(inputs, settings, catalog), catalog)


def unattributed_costs(inputs: CostInputs, settings: CostSettings, catalog: Catalog | None = None,
                       sums: pd.DataFrame | None = None) -> pd.DataFrame:  # fmt: skip
    """Costs of encounters in months where their patient is not attributed, per month.

    Out grain: month. Columns: patients, and every metric of :func:`cost_metrics`.
    ``sums``: the inputs' :func:`patient_month_sums` when already computed.
    """
    catalog = catalog or load_catalog()
    sums = patient_month_sums(inputs, settings, catalog) if sums is None else sums
    keys = inputs.attribution[["patient_id", "month"]].assign(_attributed=True)
    sums = sums.merge(keys, on=["patient_id", "month"], how="left")
    outside = sums.loc[sums["_attributed"].isna()].drop(columns="_attributed")
    metrics = cost_metrics(catalog)
    out = outside.groupby("month", as_index=False).agg(patients=("patient_id", "nunique"), **{m: (m, "sum") for m in metrics})
    return out.sort_values("month").reset_index(drop=True)


def load_unattributed_inputs(engine: Engine, months: Sequence[date], staff: pd.DataFrame | None = None) -> CostInputs:
    """The :class:`CostInputs` of ``months`` restricted to the encounters that start in a month in
    which their patient is not attributed (an anti-join against attribution in SQL, the whole
    network), with their staff minutes; attribution is empty. ``staff``: the staff frame when
    already read. What :func:`unattributed_costs` needs without reading every encounter."""
    from sqlalchemy import exists

    from core.store.months import month_start_sql

    months = sorted({as_month(m) for m in months})
    if not months:
        raise ValueError("months is empty")
    start, end = month_span(months)
    month = month_start_sql(engine.dialect.name, Encounter.start_date)
    attributed = exists().where(Attribution.patient_id == Encounter.patient_id, Attribution.month == month)
    # (Every encounter's patient is in patient. Saying so makes SQLite walk the (patient_id, start_date)
    # index patient by patient, probing attribution in its key order: ~5x less CPU than the date index
    # over the window. PostgreSQL hashes it.)
    outside = (Encounter.patient_id.in_(select(Patient.patient_id)), Encounter.start_date >= start, Encounter.start_date < end,
               ~attributed)  # fmt: skip
    enc_stmt = select(*encounter_columns()).where(*outside)
    min_stmt = (select(StaffMinutes.encounter_id, StaffMinutes.role, StaffMinutes.minutes)
                .join(Encounter, Encounter.encounter_id == StaffMinutes.encounter_id).where(*outside))  # fmt: skip
    staff = _read_staff(engine) if staff is None else staff
    # in key order, as load_cost_inputs: the sums come out the same to the bit
    encounters = _read(engine, enc_stmt).sort_values("encounter_id", kind="stable", ignore_index=True)
    if len(encounters):  # (the minutes only when there is anything outside: usually nothing or little)
        staff_minutes = _read(engine, min_stmt).sort_values(["encounter_id", "role"], kind="stable", ignore_index=True)
        encounters = encounters.loc[isin(month_of(encounters["start_date"]), months)].reset_index(drop=True)
        staff_minutes = staff_minutes.loc[isin(staff_minutes["encounter_id"], encounters["encounter_id"])].reset_index(drop=True)
    else:
        staff_minutes = pd.DataFrame({"encounter_id": pd.Series([], dtype=object), "role": pd.Series([], dtype=object),
                                      "minutes": pd.Series([], dtype="float64")})  # fmt: skip
    attribution = pd.DataFrame({c: pd.Series([], dtype=object) for c in ("patient_id", "month", "practice_id", "team_id", "subgroup")})  # fmt: skip
    return CostInputs(tuple(months), staff, encounters, staff_minutes, attribution)


def unattributed_costs_in_store(engine: Engine, months: Sequence[date], settings: CostSettings, catalog: Catalog | None = None,
                                staff: pd.DataFrame | None = None) -> pd.DataFrame:  # fmt: skip
    """:func:`unattributed_costs` of the whole network over ``months``, reading only the encounters
    outside attributed months (:func:`load_unattributed_inputs`) instead of all of them. Same
    grain, columns and values (to the bit: the same rows are costed and summed in the same order)."""
    catalog = catalog or load_catalog()
    return unattributed_costs(load_unattributed_inputs(engine, months, staff), settings, catalog)


def patient_month_cost_wide(engine: Engine, months: list[date] | None = None,
                            patients: tuple[str, str] | list[str] | None = None, dated: bool = False,
                            attribution: pd.DataFrame | None = None, encounters: pd.DataFrame | None = None) -> pd.DataFrame:  # fmt: skip
    """The cost provider's rows before melting: one row per attributed patient-month.

    Grain: patient_id, month. Columns: patient_id, month, and every metric of
    :func:`cost_metrics` (the numerators; each row is one member-month: denominator 1, sum_sq
    the numerator squared). core.derive.cells adds these up into cells wide and melts only the sums.
    Costs outside attributed months are in :func:`unattributed_costs`. ``dated``: as
    :func:`load_cost_inputs`, as are ``attribution`` and ``encounters``.
    """
    catalog = load_catalog()
    settings = load_cost_settings(catalog=catalog)
    wide = build_patient_month_costs(load_cost_inputs(engine, months, patients, dated, attribution, encounters), settings, catalog)
    return wide[["patient_id", "month", *cost_metrics(catalog)]]


# --- PMPM -----------------------------------------------------------------------------


def pmpm_name(metric: str) -> str:
    """``cost_total_usd`` -> ``cost_total_pmpm_usd``; ``internal_minutes`` -> ``internal_minutes_pmpm``."""
    return metric[: -len("_usd")] + "_pmpm_usd" if metric.endswith("_usd") else metric + "_pmpm"


def cost_pmpm(patient_month_costs: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Cost per member per month by any of practice_id, team_id, subgroup, month ([] = network).

    In: the frame of :func:`build_patient_month_costs` (any subset of rows).
    Out grain: ``by``. Columns: member_months, each metric's sum (USD) and its PMPM
    (``*_pmpm_usd`` = sum / member_months), standard_minutes_share (of internal cost).
    """
    metrics = [c for c in patient_month_costs.columns if c.startswith("cost_") or c == INTERNAL_MINUTES]
    cols = ["member_months", *metrics]
    if by:
        out = patient_month_costs.groupby(list(by), as_index=False)[cols].sum()
    else:
        out = patient_month_costs[cols].sum().to_frame().T
    return add_pmpm(out, metrics)


def add_pmpm(sums: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Add ``*_pmpm_usd`` columns (sum / member_months, NaN at zero member-months) and the standard share
    (same grain as ``sums``)."""
    out = sums.copy()
    mm = out["member_months"].astype(float).replace(0.0, np.nan)
    for m in metrics:
        out[pmpm_name(m)] = out[m].astype(float) / mm
    if COST_INTERNAL in out and COST_INTERNAL_STANDARD in out:
        internal = out[COST_INTERNAL].astype(float).replace(0.0, np.nan)
        out["standard_minutes_share"] = out[COST_INTERNAL_STANDARD].astype(float) / internal
    return out
