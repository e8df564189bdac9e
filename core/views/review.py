"""The team leader's monthly value review: headline, scorecard by tier, what moved,
value map (the review pack is core.views.review_pack, the review log core.views.review_log). No Streamlit here; the
page renders these.

Rules in one place:

- Every aggregate figure comes from cells (core.metrics.scorecard / core.derive.costs) and goes through the
  CMS cell-size rule: a member count of 1-10 blanks the month's member and cost figures; measure
  values use the scorecard's own rule (:func:`core.metrics.scorecard.small_figure`); counts of
  patients moving in or out of the subgroup are suppressed like any other count.
- Significance marks are the scorecard's flags (non-overlapping 95 % intervals), nothing else.
- Patient rows (moves, ED visits and admissions, costliest patients) come only from the
  ``team_ids`` in the caller's scope, filtered in SQL, and only when ``patient_level``.
- Payment, cost and margin use the bundled payment of the subgroup (core/config/payments.toml)
  against the cost basis of the bundle (``internal``: TDABC cost; ``total``: with claims).
- Settings (key outcomes per subgroup, list sizes, trend length) are data: core/config/review.toml.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine, func, select

from core.access.suppression import load_suppression_rules
from core.config import config_path, load_toml
from core.config.catalog import load_catalog
from core.derive import costs
from core.derive.measures import MeasureCatalogue, load_measures
from core.derive.page_aggregates import costliest_patients, stored_subgroup_transitions
from core.derive.subgroups.rules import active_rules_path, load_rules
from core.metrics import runout
from core.metrics.cost_reports import cost_pmpm_from_cells
from core.metrics.payments import PaymentSettings, load_payment_settings
from core.metrics.scorecard import (
    SMALL_CELL_MAX,
    Selection,
    build_scorecard,
    complementary_suppression,
    figure,
    is_small,
    small_figure,
    window_counts_published,
)
from core.metrics.value import VALUE_INDEX_TARGET, value_index, value_map
from core.store.models import Cell, Encounter, Patient, SubgroupAssignment, Team
from core.store.months import WINDOWS, add_months, as_date, months_back
from core.views.executive_settings import load_executive_settings
from core.views.format import SUPPRESSED, format_figure, usd

REVIEW_PATH = config_path("review.toml")
TIER_LABELS = {1: "1 · Health status achieved", 2: "2 · Process of care and recovery", 3: "3 · Sustainability"}
WINDOW_NOUNS = {"month": "month", "quarter": "quarter", "12m": "12 months"}
FLAG_COLUMNS = {"change_vs_previous": "last month", "change_vs_last_year": "last year", "gap_vs_network": "network"}


@dataclass(frozen=True)
class ReviewSettings:
    """core/config/review.toml."""

    key_outcomes: dict[str, tuple[str, ...]]
    acute_kinds: tuple[str, ...]
    top_patients: int
    trend_months: int
    headline: tuple[HeadlineMetric, ...] = ()
    summary: SummarySettings | None = None


@dataclass(frozen=True)
class SummarySettings:
    """The "what moved" summary (review.toml [summary]): the rate measures whose monthly event
    counts are set against their usual range (``usual_months`` months before the month, from the
    ``usual_low`` to the ``usual_high`` quantile), and the cost PMPM it reports."""

    counts: tuple[str, ...] = ("admissions", "ed_visits")
    usual_months: int = 12
    usual_low: float = 0.1
    usual_high: float = 0.9
    cost_column: str = "cost_total_pmpm_usd"
    cost_label: str = "Total cost PMPM"


@dataclass(frozen=True)
class HeadlineMetric:
    """One headline figure of the review (review.toml [[headline]]): a column of
    :func:`headline_series`, shown in dollars or as a number with ``digits`` decimals."""

    column: str
    label: str
    usd: bool
    digits: int
    lower_is_better: bool

    def format(self, value) -> str:
        return usd(value, self.digits) if self.usd else format_figure(value, digits=self.digits)


def load_review_settings(path: Path = REVIEW_PATH, catalogue: MeasureCatalogue | None = None) -> ReviewSettings:
    """Load and check the review settings; raises ValueError naming the file and key."""
    raw = load_toml(path)
    known = set((catalogue or load_measures()).by_id())
    try:
        keys = {str(s): tuple(str(m) for m in ids) for s, ids in raw["key_outcomes"].items()}
        headline = tuple(HeadlineMetric(str(h["column"]), str(h["label"]), bool(h["usd"]), int(h["digits"]),
                                        bool(h["lower_is_better"])) for h in raw.get("headline", []))  # fmt: skip
        summary = SummarySettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.get("summary", {}).items()})
        settings = ReviewSettings(keys, tuple(raw["what_moved"]["acute_kinds"]), int(raw["what_moved"]["top_patients"]),
                                  int(raw["trend"]["months"]), headline, summary)  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{Path(path).name}: missing or malformed setting ({exc!r})") from exc
    for subgroup, ids in keys.items():
        unknown = [m for m in ids if m not in known]
        if unknown:
            raise ValueError(f"{Path(path).name}: key_outcomes.{subgroup} names unknown measures {unknown}")
    unknown = [m for m in summary.counts if m not in known]
    if unknown:
        raise ValueError(f"{Path(path).name}: summary.counts names unknown measures {unknown}")
    if summary.cost_column not in ("cost_internal_pmpm_usd", "cost_external_pmpm_usd", "cost_total_pmpm_usd"):
        raise ValueError(f"{Path(path).name}: summary.cost_column must be a cost PMPM column of the headline series")
    if not (1 <= summary.usual_months <= 36 and 0 <= summary.usual_low <= summary.usual_high <= 1):
        raise ValueError(f"{Path(path).name}: summary.usual_months must be in 1..36 and 0 <= usual_low <= usual_high <= 1")
    if settings.top_patients < 1 or not 2 <= settings.trend_months <= 36:
        raise ValueError(f"{Path(path).name}: top_patients must be >= 1 and trend.months in 2..36")
    return settings


# --- small helpers ------------------------------------------------------------------------


def check_scope(team_id: str, team_ids: tuple[str, ...] | None) -> None:
    """Raise PermissionError when ``team_id`` is outside the caller's scope (None = whole network)."""
    if team_ids is not None and team_id not in team_ids:
        raise PermissionError(f"team {team_id!r} is outside your scope")


def _measure_series(engine: Engine, ms: list, team_id: str, subgroup: str, months: list[date],
                    group_by_team: bool = False, team_ids: tuple[str, ...] | None = None,
                    suppress: bool = True) -> pd.DataFrame:
    """Monthly measure values (one-month windows, as the scorecard's ``month`` window) from cells.
    ``suppress`` False: exact figures (no cell-size rule).

    Columns: [team_id,] month, measure_id, numerator, denominator, patients, value, ci_low, ci_high
    (95 %), suppressed.
    """
    C = Cell
    keys = [C.team_id] if group_by_team else []
    stmt = (
        select(*keys, C.month, C.metric, func.sum(C.numerator), func.sum(C.denominator), func.sum(C.sum_sq), func.sum(C.patients))
        .where(C.stratum == "all", C.subgroup == subgroup, C.month.in_(months), C.metric.in_([m.id for m in ms]))
        .group_by(*keys, C.month, C.metric)
    )
    if not group_by_team:
        stmt = stmt.where(C.team_id == team_id)
    elif team_ids is not None:
        stmt = stmt.where(C.team_id.in_(list(team_ids)))
    cols = [*(["team_id"] if group_by_team else []), "month", "measure_id", "numerator", "denominator", "sum_sq", "patients"]
    with engine.connect() as conn:
        frame = pd.DataFrame([tuple(r) for r in conn.execute(stmt).all()], columns=cols)
    frame["month"] = [as_date(m) for m in frame["month"]]
    for c in ("numerator", "denominator", "sum_sq", "patients"):
        frame[c] = frame[c].astype("float64")
    frame[["value", "ci_low", "ci_high"]] = np.nan
    frame["suppressed"] = False
    by_id = {m.id: m for m in ms}
    for kind in {m.kind for m in ms}:
        mask = frame["measure_id"].map(lambda i, k=kind: by_id[i].kind == k).to_numpy(dtype=bool)
        if mask.any():
            part = frame.loc[mask]
            value, low, high = figure(kind, part["numerator"], part["denominator"], part["sum_sq"])
            frame.loc[mask, "value"], frame.loc[mask, "ci_low"], frame.loc[mask, "ci_high"] = value, low, high
            if suppress:
                frame.loc[mask, "suppressed"] = small_figure(kind, part["numerator"], part["denominator"], part["patients"])
    frame.loc[frame["suppressed"], ["numerator", "denominator", "value", "ci_low", "ci_high"]] = np.nan
    return frame.drop(columns="sum_sq")


# --- headline -----------------------------------------------------------------------------


def headline_series(engine: Engine, team_id: str, subgroup: str, month: date, team_ids: tuple[str, ...] | None,
                    settings: ReviewSettings | None = None, payments: PaymentSettings | None = None,
                    catalogue: MeasureCatalogue | None = None, internal_costed: bool = True,
                    suppress: bool = True) -> pd.DataFrame:
    """One row per month of the trend window (oldest first) for the team and subgroup.

    Columns: month, members, cost_internal_pmpm_usd, cost_external_pmpm_usd, cost_total_pmpm_usd,
    payment_usd (bundled rate x members), cost_usd (the bundle's cost basis), margin_usd,
    margin_pmpm_usd, suppressed (members 1-10: every figure of the month blanked), then one
    column per key outcome of the subgroup (value in the measure's unit; NaN when suppressed
    or no data) and ``<measure>_suppressed``. ``internal_costed`` False (no staff roster): the
    internal and total cost PMPM, the bundle's cost and the margin are NaN. ``suppress`` False:
    exact figures.
    """
    check_scope(team_id, team_ids)
    settings = settings or load_review_settings()
    payments = payments or load_payment_settings()
    catalogue = catalogue or load_measures()
    months = months_back(month, settings.trend_months)
    out = pd.DataFrame({"month": months})
    pmpm = cost_pmpm_from_cells(engine, ("month",), months, team_id=team_id, subgroup=subgroup)
    cols = ["member_months", "cost_internal_pmpm_usd", "cost_external_pmpm_usd", "cost_total_pmpm_usd"]
    if pmpm.empty:
        pmpm = pd.DataFrame(columns=["month", *cols])
    pmpm["month"] = [as_date(m) for m in pmpm["month"]]
    out = out.merge(pmpm[["month", *cols]], on="month", how="left").rename(columns={"member_months": "members"})
    out["members"] = out["members"].astype("float64").fillna(0.0)
    if not internal_costed:
        out[["cost_internal_pmpm_usd", "cost_total_pmpm_usd"]] = np.nan
    rate = payments.bundled_pmpm_usd.get(subgroup, 0.0)
    basis = "cost_internal_pmpm_usd" if payments.bundled_cost_basis == "internal" else "cost_total_pmpm_usd"
    out["payment_usd"] = rate * out["members"]
    out["cost_usd"] = out[basis].astype("float64") * out["members"]
    out["margin_usd"] = out["payment_usd"] - out["cost_usd"]
    out["margin_pmpm_usd"] = out["margin_usd"] / out["members"].replace(0.0, np.nan)
    out["suppressed"] = is_small(out["members"]) & suppress
    money = [*cols[1:], "payment_usd", "cost_usd", "margin_usd", "margin_pmpm_usd"]
    out.loc[out["suppressed"], ["members", *money]] = np.nan
    by_id = catalogue.by_id()
    ms = [by_id[m] for m in settings.key_outcomes.get(subgroup, ()) if m in by_id]
    series = _measure_series(engine, ms, team_id, subgroup, months, suppress=suppress) if ms else pd.DataFrame()
    for m in ms:
        part = series.loc[series["measure_id"] == m.id, ["month", "value", "suppressed"]]
        part = part.rename(columns={"value": m.id, "suppressed": f"{m.id}_suppressed"})
        out = out.merge(part, on="month", how="left")
        out[f"{m.id}_suppressed"] = out[f"{m.id}_suppressed"].astype("boolean").fillna(False).astype(bool)
    return out


# --- scorecard ----------------------------------------------------------------------------


def significance_text(row, window: str = "month") -> str:
    """The significance marks from the scorecard flags: "↑ worse vs last month; ↑ worse vs network"
    ("vs the previous quarter" for longer windows), "" when nothing is significant."""
    parts = []
    labels = FLAG_COLUMNS if window == "month" else {**FLAG_COLUMNS, "change_vs_previous": f"the previous {WINDOW_NOUNS[window]}"}
    for col, label in labels.items():
        flag = row.get(col, "") if hasattr(row, "get") else row[col]
        if flag:
            other = {"change_vs_previous": "previous_value", "change_vs_last_year": "last_year_value",
                     "gap_vs_network": "network_value"}[col]  # fmt: skip
            arrow = "↑" if row["value"] > row[other] else "↓"
            parts.append(f"{arrow} {flag} vs {label}")
    return "; ".join(parts)


SCORECARD_COLUMNS = ["measure_id", "Tier", "Measure", "Unit", "Value", "95% interval", "Numerator", "Denominator", "Expected",
                     "O/E", "O/E 95% interval", "Target", "Previous", "Last year", "Network", "Significant"]  # fmt: skip


def _count_text(value, kind: str, which: str, hidden: bool, suppress: bool) -> str:
    """The numerator or denominator of a scorecard row as shown: a whole count (member-years of
    a rate's denominator to one decimal), ``–`` where the part is no count (the numerator of a
    mean is a sum of scores), ``suppressed`` where hidden, or 1-10 under the cell-size rule."""
    if which == "numerator" and kind == "mean":
        return "–"
    if hidden or (suppress and bool(is_small(0.0 if _blank(value) else value))):
        return SUPPRESSED
    digits = 1 if which == "denominator" and kind == "rate_per_1000_member_years" else 0
    return format_figure(value, digits=digits)


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def observed_expected_interval(ci_low, ci_high, expected) -> tuple[float, float]:
    """The 95 % interval of observed / expected: the rate's interval over the expected rate (the
    expected rate, from the network, taken as fixed, as for a standardised ratio)."""
    if _blank(expected) or not expected or _blank(ci_low) or _blank(ci_high):
        return np.nan, np.nan
    return float(ci_low) / float(expected), float(ci_high) / float(expected)


def scorecard_table(card: pd.DataFrame, counts_shown: bool = True, suppress: bool = False,
                    adjusted_ids: tuple[str, ...] = (), window: str = "month") -> pd.DataFrame:  # fmt: skip
    """The scorecard for display: one row per measure with formatted figures (``suppressed`` where
    the cell-size rule applies) and a mark only where a change or gap is significant.

    Numerator and denominator of every figure (the numerator of a mean reads ``–``; a rate's
    denominator is member-years); ``counts_shown`` False (a window longer than a month under
    suppression, :func:`core.metrics.scorecard.window_counts_published`) reads ``suppressed``
    there, and so does any count of 1-10 when ``suppress``. Expected, O/E and its 95 % interval
    for the risk-adjusted rates (``adjusted_ids``, or any row with an expected value; ``–`` for
    the other measures).

    Columns: :data:`SCORECARD_COLUMNS`.
    """
    rows = []
    for r in card.to_dict("records"):
        sup = bool(r["suppressed"])
        kind = r.get("kind", "")
        interval = SUPPRESSED if sup else (
            "–" if np.isnan(r["ci_low"]) else f"{format_figure(r['ci_low'])} – {format_figure(r['ci_high'])}")  # fmt: skip
        expected, oe = r.get("expected_value", np.nan), r.get("observed_expected", np.nan)
        adjusted = not (_blank(expected) and _blank(oe)) or r["measure_id"] in adjusted_ids
        oe_low, oe_high = observed_expected_interval(r["ci_low"], r["ci_high"], expected)
        oe_interval = "–" if np.isnan(oe_low) else f"{format_figure(oe_low, digits=2)} – {format_figure(oe_high, digits=2)}"
        rows.append({
            "measure_id": r["measure_id"], "Tier": TIER_LABELS.get(int(r["tier"]), str(r["tier"])), "Measure": r["name"],
            "Unit": r["unit"], "Value": format_figure(r["value"], sup), "95% interval": interval,
            "Numerator": _count_text(r.get("numerator"), kind, "numerator", sup or not counts_shown, suppress),
            "Denominator": _count_text(r.get("denominator"), kind, "denominator", sup or not counts_shown, suppress),
            "Expected": format_figure(expected, sup) if adjusted else "–",
            "O/E": format_figure(oe, sup, digits=2) if adjusted else "–",
            "O/E 95% interval": (SUPPRESSED if sup else oe_interval) if adjusted else "–",
            "Target": format_figure(r["target"]), "Previous": format_figure(r["previous_value"]),
            "Last year": format_figure(r["last_year_value"]), "Network": format_figure(r["network_value"]),
            "Significant": "" if sup else significance_text(r, window),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=SCORECARD_COLUMNS)


def significant_rows(card: pd.DataFrame) -> pd.DataFrame:
    """Scorecard rows (grain: measure) with a significant change vs last month or last year, or a gap to the network."""
    flagged = np.zeros(len(card), dtype=bool)
    for col in FLAG_COLUMNS:
        flagged |= card[col].fillna("").astype(str).ne("").to_numpy()
    return card.loc[flagged & ~card["suppressed"].astype(bool)]


def flags_across_teams(engine: Engine, subgroup: str, month: date, team_ids: tuple[str, ...] | None,
                       suppress: bool = True, window: str = "month") -> pd.DataFrame:  # fmt: skip
    """Significant changes and gaps of every team in scope for the subgroup and month.

    So a reviewer can find the team whose figures moved: changes vs last month or last year
    first, then gaps to the network. Grain: team and measure. Columns: team_id, team, measure_id, Measure, Value,
    Significant. Aggregates only (scorecard values, suppressed as there).
    """
    teams = pd.read_sql(select(Team.team_id, Team.name).order_by(Team.team_id), engine.connect())
    if team_ids is not None:
        teams = teams.loc[teams["team_id"].isin(team_ids)]
    rows = []
    for t in teams.itertuples():
        card = build_scorecard(engine, Selection(team_id=t.team_id, subgroup=subgroup, period=month, window=window),
                               suppress=suppress)  # fmt: skip
        for r in significant_rows(card).to_dict("records"):
            rows.append({"team_id": t.team_id, "team": t.name, "measure_id": r["measure_id"], "Measure": r["name"],
                         "Value": format_figure(r["value"]), "Significant": significance_text(r, window)})  # fmt: skip
    out = pd.DataFrame(rows, columns=["team_id", "team", "measure_id", "Measure", "Value", "Significant"])
    changed = out["Significant"].str.contains("last month|last year|previous", regex=True)  # changes first, then gaps
    return out.assign(_order=~changed).sort_values(["_order", "team_id"], kind="stable").drop(columns="_order").reset_index(drop=True)


# --- what moved ---------------------------------------------------------------------------


def subgroup_moves(engine: Engine, team_id: str, subgroup: str, month: date, team_ids: tuple[str, ...] | None,
                   patient_level: bool, suppress: bool = True) -> dict[str, pd.DataFrame]:
    """Patients who entered or left the subgroup at the team this month, with reasons.

    ``summary`` (grain: direction, other subgroup): direction (entered / left), other_subgroup,
    patients; with ``suppress``, counts of 1-10 are hidden (NaN) so that the members headline does
    not give them back either (:func:`hide_moves`). ``patients`` (grain: patient): patient_id,
    direction, from_subgroup, to_subgroup, reason (with the thin-history note of the month, as
    "... · Not enough history: 2 of 6 months of data"), overridden; empty unless ``patient_level``.
    """
    check_scope(team_id, team_ids)
    moved = stored_subgroup_transitions(engine, month, team_id, subgroup)  # from subgroup_move, not every member
    moved["direction"] = np.where(moved["to_subgroup"] == subgroup, "entered", "left")
    moved["other_subgroup"] = np.where(moved["direction"] == "entered", moved["from_subgroup"].fillna("new"),
                                       moved["to_subgroup"].fillna("none"))  # fmt: skip
    summary = moved.groupby(["direction", "other_subgroup"], as_index=False).agg(patients=("patient_id", "count"))
    summary["patients"] = summary["patients"].astype("float64")
    if suppress:
        summary = hide_moves(summary)
    patients = moved[["patient_id", "direction", "from_subgroup", "to_subgroup", "reason", "overridden"]]
    if not patient_level:
        patients = patients.iloc[0:0]
    elif len(patients):  # a move that rests on little data says so
        sa = SubgroupAssignment
        ids = patients["patient_id"].tolist()
        with engine.connect() as conn:
            thin = pd.read_sql(select(sa.patient_id, sa.history_note)
                               .where(sa.month == month, sa.patient_id.in_(ids), sa.thin_history.is_(True)), conn)  # fmt: skip
        notes = dict(zip(thin["patient_id"], thin["history_note"], strict=True))
        patients = patients.assign(reason=[f"{r} · {notes[p]}" if p in notes else r
                                           for p, r in zip(patients["patient_id"], patients["reason"], strict=True)])  # fmt: skip
    return {"summary": summary, "patients": patients.reset_index(drop=True)}


def hide_moves(summary: pd.DataFrame) -> pd.DataFrame:
    """Suppress the move counts so that neither a count of 1-10 nor a small sum follows from them.

    The members headline publishes members now and last month, and their difference is
    entered - left. So the moves are parts of a signed total: complementary suppression with the
    signed counts, until the hidden rows' signed sum is not 1-10 in either sign (hidden rows of
    both directions then give away only a difference of counts). When even every row hidden
    leaves a small signed sum, the rows are replaced by one row whose direction is not told.
    Columns: direction, other_subgroup, patients (NaN = suppressed).
    """
    counts = summary["patients"].to_numpy(dtype="float64")
    signed = np.where(summary["direction"] == "entered", 1.0, -1.0) * counts
    hidden = complementary_suppression(np.stack([counts, signed, -signed], axis=1), np.zeros(len(summary), dtype=int),
                                       is_small(counts))  # fmt: skip
    rest = signed[hidden].sum()
    if hidden.any() and is_small(abs(rest)) and load_suppression_rules().complementary:
        return pd.DataFrame({"direction": [SUPPRESSED], "other_subgroup": [SUPPRESSED], "patients": [np.nan]})
    return summary.assign(patients=np.where(hidden, np.nan, counts))


def _scoped_month_patients(team_id: str, subgroup: str, month: date, team_ids: tuple[str, ...] | None):
    """A select of the patients attributed to the team (in scope) with the subgroup in ``month``:
    one range of the assignments' (month, team_id, subgroup) index."""
    sa = SubgroupAssignment
    stmt = select(sa.patient_id).where(sa.month == month, sa.team_id == team_id, sa.subgroup == subgroup)
    if team_ids is not None:
        stmt = stmt.where(sa.team_id.in_(list(team_ids)))
    return stmt


def acute_events(engine: Engine, team_id: str, subgroup: str, month: date, team_ids: tuple[str, ...] | None,
                 kinds: tuple[str, ...] = ("ed_visit", "admission")) -> pd.DataFrame:
    """ED visits and admissions starting in ``month`` of the team's patients in the subgroup (patient rows).

    Grain: encounter. Columns: patient_id, name, kind, start_date, end_date, primary_dx, in_network, paid_usd.
    Filtered in SQL to ``team_ids``.
    """
    check_scope(team_id, team_ids)
    end = add_months(month, 1)
    members = _scoped_month_patients(team_id, subgroup, month, team_ids).subquery()
    stmt = (
        select(Encounter.patient_id, (Patient.family_name + ", " + Patient.given_name).label("name"), Encounter.kind,
               Encounter.start_date, Encounter.end_date, Encounter.primary_dx, Encounter.in_network, Encounter.paid_usd)
        .join(Patient, Patient.patient_id == Encounter.patient_id)
        .where(Encounter.patient_id.in_(select(members.c.patient_id)), Encounter.kind.in_(list(kinds)),
               Encounter.start_date >= month, Encounter.start_date < end)
        .order_by(Encounter.start_date, Encounter.patient_id)
    )  # fmt: skip
    with engine.connect() as conn:
        return pd.read_sql(stmt, conn)


def cost_drivers(engine: Engine, team_id: str, subgroup: str, month: date, team_ids: tuple[str, ...] | None,
                 top: int = 10, patient_level: bool = True, suppress: bool = True) -> dict[str, pd.DataFrame]:
    """Largest cost drivers of the team and subgroup this month.

    ``by_category`` (grain: cost category): category, pmpm_usd, previous_pmpm_usd, change_pmpm_usd (from cells; blank
    when either month has 1-10 members), sorted by this month's PMPM.
    ``by_patient`` (grain: patient): the ``top`` costliest patients (patient_id, name, cost_total_usd,
    cost_internal_usd, cost_external_usd) from the patient-month activity (core.derive.activity: the
    same TDABC and claims costs as the cells), read from ``patient_month_cost`` (its index gives the
    top rows of the team's subgroup without sorting every member); empty unless ``patient_level``.
    """
    check_scope(team_id, team_ids)
    catalog = load_catalog()
    prev = add_months(month, -1)
    cells = cost_pmpm_from_cells(engine, ("month",), [prev, month], team_id=team_id, subgroup=subgroup)
    rows = []
    for cat, label in catalog.cost_categories.items():
        col = costs.pmpm_name(costs.category_metric(cat))
        cur = pre = np.nan
        if not cells.empty and col in cells:
            cells["month"] = [as_date(m) for m in cells["month"]]
            for m, mm, v in zip(cells["month"], cells["member_months"], cells[col], strict=True):
                if suppress and is_small(mm):
                    v = np.nan
                if m == month:
                    cur = v
                elif m == prev:
                    pre = v
        rows.append({"category": label, "pmpm_usd": cur, "previous_pmpm_usd": pre, "change_pmpm_usd": cur - pre})
    by_category = pd.DataFrame(rows).sort_values("pmpm_usd", ascending=False, na_position="last").reset_index(drop=True)
    by_patient = pd.DataFrame(columns=["patient_id", "name", "cost_total_usd", "cost_internal_usd", "cost_external_usd"])
    if patient_level:
        by_patient = costliest_patients(engine, month, team_id, subgroup, top)[list(by_patient.columns)]
    return {"by_category": by_category, "by_patient": by_patient}


# --- what moved, in words ------------------------------------------------------------------


def _count(value: float) -> str:
    return f"{value:,.0f}"


def usual_range(history, low: float = 0.1, high: float = 0.9) -> tuple[float, float] | None:
    """The usual range of monthly counts: the ``low`` and ``high`` quantiles of ``history``
    (counts that occurred, not interpolated); None without history."""
    values = np.asarray([v for v in history if not _blank(v)], dtype="float64")
    if not len(values):
        return None
    return (float(np.quantile(values, low, method="inverted_cdf")), float(np.quantile(values, high, method="inverted_cdf")))


def _usual_text(lo: float, hi: float, suppress: bool) -> str:
    """The usual range as text, "3-8"; where the cell-size rule applies no count of 1-10 ("up to 14", "10 or fewer")."""
    if suppress and bool(is_small(hi)):
        return f"{SMALL_CELL_MAX} or fewer"
    if suppress and bool(is_small(lo)):
        return f"up to {_count(hi)}"
    return _count(lo) if lo == hi else f"{_count(lo)}-{_count(hi)}"


def acute_line(counts: pd.DataFrame, month: date, suppress: bool, settings: SummarySettings | None = None,
               incomplete: bool = False) -> str:  # fmt: skip
    """Line 1: each measure's event count in ``month`` against its usual monthly range.

    ``counts`` (grain: measure and month): label, month, count (events), members (member-months;
    a month without members is left out). Where the cell-size rule applies (``suppress``), a
    count of 1-10, or any count of a month with 1-10 members, reads "suppressed", and the usual
    range names no count of 1-10.
    """
    settings = settings or SummarySettings()
    parts = []
    for label, part in counts.groupby("label", sort=False):
        part = part.loc[part["members"].fillna(0) > 0]
        now = part.loc[part["month"] == month]
        history = part.loc[part["month"] < month].sort_values("month").tail(settings.usual_months)
        if now.empty:
            continue
        n, members = float(now["count"].fillna(0).iloc[0]), float(now["members"].iloc[0])
        if suppress and (bool(is_small(n)) or bool(is_small(members))):
            parts.append(f"{label} {SUPPRESSED} (small numbers)")
            continue
        usual = usual_range(history["count"].fillna(0), settings.usual_low, settings.usual_high)
        if usual is None:
            parts.append(f"{label} {_count(n)}, no earlier month to compare")
            continue
        where = "above" if n > usual[1] else "below" if n < usual[0] else "within"
        parts.append(f"{label} {_count(n)}, {where} the usual {_usual_text(*usual, suppress)} a month")
    if not parts:
        return f"No members in {month:%b %Y}."
    end = " (claims incomplete: these counts will still rise)." if incomplete else "."
    return f"In {month:%b %Y}: " + "; ".join(parts) + end


def moves_line(moves: pd.DataFrame, subgroup_label: str, month: date, names: dict[str, str] | None = None) -> str:
    """Line 2: patients who moved into and out of the subgroup in ``month``, from the moves
    summary (:func:`subgroup_moves`, already suppressed: a hidden row hides every total too,
    since the hidden rows' sum within one direction may be 1-10)."""
    names = {"new": "new to the team", "none": "no longer assigned", **(names or {})}
    when = f"{month:%b %Y}"
    if moves.empty:
        return f"No patient moved into or out of {subgroup_label} in {when}."
    if moves["patients"].isna().any():
        return f"Patients moving into or out of {subgroup_label} in {when}: small numbers, {SUPPRESSED}."
    text = []
    for direction, verb in (("entered", "moved into"), ("left", "left")):
        part = moves.loc[moves["direction"] == direction].sort_values("patients", ascending=False)
        total = float(part["patients"].sum())
        detail = ", ".join(f"{_count(p)} {'from' if direction == 'entered' else 'to'} {names.get(o, o)}"
                           for o, p in zip(part["other_subgroup"], part["patients"], strict=True))  # fmt: skip
        text.append(f"{_count(total)} {'patient' if total == 1 else 'patients'} {verb} {subgroup_label}"
                    + (f" ({detail})" if detail else ""))  # fmt: skip
    return "; ".join(text) + f" in {when}."


def cost_line(now: float, before: float, label: str, month: date, window: str, hidden: bool = False,
              costed: bool = True, incomplete_months: tuple[date, ...] = ()) -> str:  # fmt: skip
    """Line 3: cost PMPM of the window against the window before (same length), with the
    run-out mark when claims of the window's months are incomplete."""
    noun = WINDOW_NOUNS[window]
    span = f"{month:%b %Y}" if window == "month" else f"the {noun} to {month:%b %Y}"
    if not costed:
        text = f"{label} in {span}: not costed (no staff roster)."
    elif hidden:
        text = f"{label} in {span}: {SUPPRESSED} (small numbers)."
    elif _blank(now):
        text = f"{label} in {span}: no cost data."
    elif _blank(before) or not before:
        text = f"{label} {usd(now)} in {span}; no figure for the previous {noun}."
    else:
        change = (now - before) / before * 100.0
        trend = "unchanged" if round(change, 1) == 0 else f"{'up' if change > 0 else 'down'} {abs(change):,.1f} %"
        text = f"{label} {usd(now)} in {span}, {trend} on the previous {noun} ({usd(before)})."
    if incomplete_months and costed:
        text += " Claims of " + ", ".join(f"{m:%b %Y}" for m in incomplete_months) + " are incomplete: cost will still rise."
    return text


def what_moved_summary(engine: Engine, team_id: str, subgroup: str, month: date, window: str, moves: pd.DataFrame,
                       suppress: bool, internal_costed: bool, completeness: pd.DataFrame,
                       settings: ReviewSettings | None = None, catalogue: MeasureCatalogue | None = None,
                       names: dict[str, str] | None = None) -> tuple[str, str, str]:  # fmt: skip
    """The three lines at the top of the review: acute events against their usual range (the
    month), patients moving into and out of the subgroup (the month), cost PMPM against the
    previous window (the chosen window). Read from cells; suppressed as the page is."""
    settings = settings or load_review_settings()
    summary = settings.summary or SummarySettings()
    catalogue = catalogue or load_measures()
    names = names or {}
    by_id = catalogue.by_id()
    ms = [by_id[m] for m in summary.counts if m in by_id]
    months = months_back(month, summary.usual_months + 1)
    members = cost_pmpm_from_cells(engine, ("month",), months, team_id=team_id, subgroup=subgroup)
    mm = {as_date(m): float(v) for m, v in zip(members.get("month", []), members.get("member_months", []), strict=True)}
    series = _measure_series(engine, ms, team_id, subgroup, months, suppress=False) if ms else pd.DataFrame()
    rows = []
    for m in ms:
        part = series.loc[series["measure_id"] == m.id] if len(series) else series
        got = dict(zip(part.get("month", []), part.get("numerator", []), strict=True))
        rows += [{"label": m.name, "month": mo, "count": got.get(mo, 0.0), "members": mm.get(mo, 0.0)} for mo in months]
    counts = pd.DataFrame(rows, columns=["label", "month", "count", "members"])
    incomplete = {as_date(m) for m, ok in zip(completeness["month"], completeness["complete"], strict=True) if not ok}
    n = WINDOWS[window]
    column, label = summary.cost_column, summary.cost_label
    if not internal_costed and column in ("cost_internal_pmpm_usd", "cost_total_pmpm_usd"):
        column, label = "cost_external_pmpm_usd", "Claims cost PMPM"
    figures = []
    for months_of in (months_back(month, n), months_back(add_months(month, -n), n)):
        cost = cost_pmpm_from_cells(engine, (), months_of, team_id=team_id, subgroup=subgroup)
        total_mm = float(cost["member_months"].iloc[0]) if len(cost) else 0.0
        value = float(cost[column].iloc[0]) if len(cost) and column in cost and total_mm > 0 else np.nan
        figures.append((value, total_mm))
    (now, now_mm), (before, before_mm) = figures
    hidden = suppress and bool(is_small(now_mm))
    if suppress and bool(is_small(before_mm)):
        before = np.nan
    window_incomplete = tuple(m for m in months_back(month, n) if m in incomplete)
    return (
        acute_line(counts, month, suppress, summary, incomplete=month in incomplete),
        moves_line(moves, names.get(subgroup, subgroup), month, names),
        cost_line(now, before, label, month, window, hidden, True, window_incomplete),
    )


# --- value map ----------------------------------------------------------------------------


def value_map_data(engine: Engine, subgroup: str, month: date, n_months: int = 6,
                   catalogue: MeasureCatalogue | None = None) -> dict[str, pd.DataFrame]:  # fmt: skip
    """This subgroup's teams: value index (core.metrics.value.value_index, as the team comparison's
    value map: each measure scored against its target, on the same measures for every team shown)
    against total cost PMPM, per month of the ``n_months`` ending with ``month``.

    Returns ``points`` (grain team_id, month. Columns: team, value_index, index_low, index_high
    (95 %), measures_in_index, cost_pmpm_usd, member_months, cost_ratio_to_peers, quadrant,
    suppressed), ``parts`` (grain team_id, month, measure_id: value, target, score, score_low,
    score_high, weight, weight_share) and ``excluded`` (grain month, measure_id: teams_with_value,
    teams: measures left out of the month's index for every team because one team has no
    published value with at least executive.toml [value_map] ``min_denominator`` patients).
    Teams with member-months 1-10 in a month are not shown that month (they are other teams'
    counts); measure values follow the scorecard's suppression (a suppressed value leaves the
    measure out for every team).
    """
    settings = load_executive_settings()
    catalogue = catalogue or load_measures()
    months = months_back(month, n_months)
    ms = [m for m in catalogue.measures if m.applies_to(subgroup) and m.target is not None]
    cols = ["team_id", "team", "month", "value_index", "index_low", "index_high", "measures_in_index", "cost_pmpm_usd",
            "member_months", "cost_ratio_to_peers", "quadrant", "suppressed"]  # fmt: skip
    part_cols = ["team_id", "team", "month", "measure_id", "measure", "value", "target", "score", "score_low", "score_high",
                 "weight", "weight_share"]  # fmt: skip
    empty = {"points": pd.DataFrame(columns=cols), "parts": pd.DataFrame(columns=part_cols),
             "excluded": pd.DataFrame(columns=["month", "measure_id", "measure", "teams_with_value", "teams"])}  # fmt: skip
    values = _measure_series(engine, ms, "", subgroup, months, group_by_team=True) if ms else pd.DataFrame()
    cost = cost_pmpm_from_cells(engine, ("team_id", "subgroup", "month"), months, subgroup=subgroup)
    if cost.empty or values.empty:
        return empty
    cost["month"] = [as_date(m) for m in cost["month"]]
    cost = cost.loc[~is_small(cost["member_months"]) & (cost["member_months"] > 0)]
    compared = cost[["team_id", "subgroup", "month"]]
    by_id = {m.id: m for m in ms}
    few = values["patients"].isna() | (values["patients"] < settings.min_denominator)
    values[["value", "ci_low", "ci_high"]] = values[["value", "ci_low", "ci_high"]].where(~few)
    values = values.assign(subgroup=subgroup).merge(compared, on=["team_id", "subgroup", "month"])
    found = values["measure_id"].map(by_id)
    values = values.assign(target=[m.target for m in found], higher_is_better=[m.direction == "higher" for m in found],
                           weight=[settings.tier_weights.get(m.tier, 1.0) for m in found])  # fmt: skip
    result = value_index(values, by=("subgroup", "month"), cap=settings.score_cap, teams=compared)
    out = value_map(result["index"], cost, by=("subgroup", "month"), centre=VALUE_INDEX_TARGET, index_column="value_index")
    out["suppressed"] = is_small(out["member_months"].fillna(0.0))
    out = out.loc[out["member_months"].fillna(0) > 0].rename(columns={"measures": "measures_in_index"})
    teams = pd.read_sql(select(Team.team_id, Team.name.label("team")), engine.connect())
    out = out.merge(teams, on="team_id", how="left")
    names = {m.id: m.name for m in ms}
    parts = result["parts"].merge(teams, on="team_id", how="left").assign(measure=lambda f: f["measure_id"].map(names))
    excluded = result["excluded"].assign(measure=lambda f: f["measure_id"].map(names))
    return {"points": out[cols].sort_values(["month", "team_id"]).reset_index(drop=True),
            "parts": parts[part_cols].reset_index(drop=True),
            "excluded": excluded[["month", "measure_id", "measure", "teams_with_value", "teams"]]}  # fmt: skip


def value_map_frame(engine: Engine, subgroup: str, month: date, n_months: int = 6,
                    catalogue: MeasureCatalogue | None = None) -> pd.DataFrame:  # fmt: skip
    """The points of :func:`value_map_data`."""
    return value_map_data(engine, subgroup, month, n_months, catalogue)["points"]


# --- everything the page shows ------------------------------------------------------------


@dataclass(frozen=True)
class ReviewData:
    """Everything the review page shows for one team, subgroup and month (frames are new copies)."""

    team_id: str
    subgroup: str
    month: date
    card: pd.DataFrame
    scorecard: pd.DataFrame
    headline: pd.DataFrame
    key_outcomes: tuple[tuple[str, str, str, str], ...]  # (measure_id, name, unit, direction)
    moves: dict
    acute: pd.DataFrame
    drivers: dict
    value_map: pd.DataFrame
    across_teams: pd.DataFrame
    bundled_rate_usd: float
    cost_basis: str
    costing_note: str = ""  # core.derive.costs.CostingStatus.note ('' = fully costed)
    internal_costed: bool = True
    claims_note: str = ""  # core.metrics.runout.incomplete_note of the window's months and the month before ('' = complete)
    window: str = "month"  # the scorecard's window ending with ``month`` (core.store.months.WINDOWS)
    summary: tuple[str, ...] = ()  # the three "what moved" lines (:func:`what_moved_summary`)
    counts_shown: bool = True  # False: numerators and denominators of the window are not published
    value_parts: pd.DataFrame | None = None  # :func:`value_map_data` parts (the value index's measure scores)
    value_excluded: pd.DataFrame | None = None  # :func:`value_map_data` measures left out of the index
    fully_loaded: bool = False  # the headline carries the fully loaded cost and margin (:func:`with_fully_loaded`)


def review_data(engine: Engine, team_id: str, subgroup: str, month: date, team_ids: tuple[str, ...] | None,
                patient_level: bool, suppress: bool = True, window: str = "month") -> ReviewData:  # fmt: skip
    """Build every section of the review (one call for the page; cached there).

    ``suppress``: the policy of core.access.suppression for this team (False = exact counts, for a
    user with patient-level access to it). The value map compares every team serving the
    subgroup, other teams included, so it is always suppressed. ``window``: the scorecard's
    window ending with ``month`` (month, quarter, 12 months); with ``suppress`` the numerators
    and denominators of windows longer than a month are not published (neighbouring windows
    would give a month back, :func:`core.metrics.scorecard.window_counts_published`). Headline,
    moves, acute events and cost drivers stay monthly.
    """
    check_scope(team_id, team_ids)
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {tuple(WINDOWS)}, got {window!r}")
    settings, payments, catalogue = load_review_settings(), load_payment_settings(), load_measures()
    costing = costs.costing_status(engine)
    card = build_scorecard(engine, Selection(team_id=team_id, subgroup=subgroup, period=month, window=window),
                           team_ids=team_ids, suppress=suppress)  # fmt: skip
    keys = tuple((m.id, m.name, m.unit, m.direction) for m in catalogue.measures
                 if m.id in settings.key_outcomes.get(subgroup, ()))  # fmt: skip
    order = settings.key_outcomes.get(subgroup, ())
    keys = tuple(sorted(keys, key=lambda k: order.index(k[0])))
    acute = acute_events(engine, team_id, subgroup, month, team_ids, settings.acute_kinds) if patient_level else pd.DataFrame()
    moves = subgroup_moves(engine, team_id, subgroup, month, team_ids, patient_level, suppress)
    completeness = runout.claims_completeness(engine, months_back(month, max(2, WINDOWS[window])))
    counts_shown = not suppress or window_counts_published(window)
    adjusted = tuple(m.id for m in catalogue.measures if m.risk_adjust and m.kind == "rate_per_1000_member_years")
    names = dict(load_rules(active_rules_path()).subgroup_names)
    value = value_map_data(engine, subgroup, month, catalogue=catalogue)
    return ReviewData(
        team_id=team_id, subgroup=subgroup, month=month, card=card,
        scorecard=scorecard_table(card, counts_shown, suppress, adjusted, window),
        headline=headline_series(engine, team_id, subgroup, month, team_ids, settings, payments, catalogue, costing.costed,
                                 suppress),
        key_outcomes=keys, moves=moves,
        acute=acute, drivers=cost_drivers(engine, team_id, subgroup, month, team_ids, settings.top_patients, patient_level,
                                          suppress),
        value_map=value["points"], value_parts=value["parts"], value_excluded=value["excluded"],
        across_teams=flags_across_teams(engine, subgroup, month, team_ids, suppress, window),
        bundled_rate_usd=payments.bundled_pmpm_usd.get(subgroup, 0.0), cost_basis=payments.bundled_cost_basis,
        costing_note=costing.note(), internal_costed=costing.costed,
        claims_note=runout.incomplete_note(completeness), window=window,
        summary=what_moved_summary(engine, team_id, subgroup, month, window, moves["summary"], suppress, costing.costed,
                                   completeness, settings, catalogue, names),
        counts_shown=counts_shown,
    )  # fmt: skip


# --- fully loaded margin ------------------------------------------------------------------

# Headline columns replaced by their fully loaded counterpart when the option is on.
FULLY_LOADED_COLUMNS = {"cost_usd": "fully_loaded_cost_usd", "margin_usd": "fully_loaded_margin_usd",
                        "margin_pmpm_usd": "fully_loaded_margin_pmpm_usd"}  # fmt: skip


def idle_capacity_of_subgroup(engine: Engine, team_id: str, subgroup: str, months: Sequence[date]) -> pd.DataFrame:
    """The subgroup's share of its team's unused capacity cost per month, USD (the fully loaded
    margin's addition, as on the payments and true costs pages: core.views.true_costs.capacity_use,
    spread over the team's subgroups by member-months by core.metrics.payments.add_idle_capacity).
    Grain: month. Column: idle_capacity_usd (0 where the team supplied no capacity or has no members)."""
    from core.metrics.payments import add_idle_capacity
    from core.views.true_costs import capacity_use

    months = list(months)
    use = capacity_use(engine, months, (team_id,))
    idle = use.assign(month=[as_date(m) for m in use["month"]]).groupby("month")["unused_cost_usd"].sum()
    mm = cost_pmpm_from_cells(engine, ("subgroup", "month"), months, team_id=team_id)
    mm = mm.assign(month=[as_date(m) for m in mm["month"]]) if len(mm) else pd.DataFrame(columns=["subgroup", "month", "member_months"])  # fmt: skip
    rows = []
    for m in months:
        frame = mm.loc[mm["month"] == m, ["subgroup", "member_months"]].assign(team_id=team_id, model="bundled", cost_usd=0.0)
        loaded = add_idle_capacity(frame, pd.DataFrame({"team_id": [team_id], "idle_capacity_usd": [float(idle.get(m, 0.0))]}))
        rows.append({"month": m, "idle_capacity_usd": float(loaded.loc[loaded["subgroup"] == subgroup, "idle_capacity_usd"].sum())})  # fmt: skip
    return pd.DataFrame(rows, columns=["month", "idle_capacity_usd"])


def with_fully_loaded(data: ReviewData, idle: pd.DataFrame) -> ReviewData:
    """The review with the fully loaded cost and margin: the bundle's cost plus the subgroup's
    share of the team's unused capacity (the practice pays for every staff minute it supplies,
    used or not; Kaplan & Anderson 2004). ``idle``: :func:`idle_capacity_of_subgroup` of the
    headline's months. Adds idle_capacity_usd, fully_loaded_cost_usd,
    fully_loaded_margin_usd and fully_loaded_margin_pmpm_usd to the headline (NaN where the month
    is suppressed or internal cost is not costed); :func:`headline_metrics` and
    :func:`payment_summary` then show the fully loaded figures."""
    h = data.headline.copy()
    h = h.merge(idle, on="month", how="left")
    blank = h["suppressed"].astype(bool) | (not data.internal_costed)
    h["idle_capacity_usd"] = h["idle_capacity_usd"].astype("float64").where(~blank)
    h["fully_loaded_cost_usd"] = h["cost_usd"] + h["idle_capacity_usd"]
    h["fully_loaded_margin_usd"] = h["payment_usd"] - h["fully_loaded_cost_usd"]
    h["fully_loaded_margin_pmpm_usd"] = h["fully_loaded_margin_usd"] / h["members"].replace(0.0, np.nan)
    return replace(data, headline=h, fully_loaded=True)


def headline_metrics(data: ReviewData) -> list[dict]:
    """Headline metrics (review.toml [[headline]], then the subgroup's key outcomes): label, value
    (text), delta (text or None), inverse (lower is better), chart (list of the trend values,
    suppressed months left out)."""
    h = data.headline
    cur, prev = h.iloc[-1], h.iloc[-2]
    out = []
    specs = [*load_review_settings().headline,
             *(HeadlineMetric(m, name, False, 1, direction == "lower") for m, name, _, direction in data.key_outcomes)]  # fmt: skip
    for spec in specs:
        col, label = spec.column, spec.label
        if data.fully_loaded and col in FULLY_LOADED_COLUMNS:
            col, label = FULLY_LOADED_COLUMNS[col], f"{spec.label} (fully loaded)"
        sup = bool(cur[f"{col}_suppressed"] if f"{col}_suppressed" in h else cur["suppressed"])
        value = cur[col]
        uncosted = not data.internal_costed and col in ("cost_internal_pmpm_usd", "cost_total_pmpm_usd")
        text = SUPPRESSED if sup else (costs.NOT_COSTED if uncosted else "–" if pd.isna(value) else spec.format(value))
        delta = None
        if not sup and not pd.isna(value) and not pd.isna(prev[col]):
            delta = spec.format(value - prev[col])
            delta = delta if delta.startswith("-") else "+" + delta
        out.append({"column": col, "label": label, "value": text, "delta": delta, "inverse": spec.lower_is_better,
                    "chart": [float(v) for v in h[col].dropna()]})  # fmt: skip
    return out


def scorecard_note(data: ReviewData) -> str:
    """The caption under the scorecard: what the numerator, denominator and O/E columns are, and
    why counts of a longer window are not shown where small counts are suppressed."""
    text = ("Numerator and denominator: the counts behind each figure (a rate's denominator is member-years; a mean's "
            "is the number of patients). O/E: observed / expected for the risk-adjusted rates, expected = network rate x "
            "this team's mean risk score / the network's; its 95 % interval is the rate's over the expected rate. "
            "Previous: the window before, same length.")  # fmt: skip
    if not data.counts_shown:
        text += (" Counts of quarter and 12-month windows are not shown where small counts are suppressed: "
                 "two neighbouring windows would give a month's count back.")  # fmt: skip
    return text


def payment_summary(data: ReviewData) -> dict:
    """Bundled payment, cost (the bundle's basis) and margin of the month, USD (None when
    suppressed), and ``costed`` (False: cost and margin are unknown, shown as not costed). With
    :func:`with_fully_loaded` also idle_capacity_usd, fully_loaded_cost_usd and fully_loaded_margin_usd."""
    cur = data.headline.iloc[-1]
    keys = ["payment_usd", "cost_usd", "margin_usd"]
    if data.fully_loaded:
        keys += ["idle_capacity_usd", "fully_loaded_cost_usd", "fully_loaded_margin_usd"]
    hidden = bool(cur["suppressed"])
    out = {k: None if hidden else float(cur[k]) for k in keys}
    return {**out, "rate_usd": data.bundled_rate_usd, "cost_basis": data.cost_basis, "costed": data.internal_costed,
            "fully_loaded": data.fully_loaded}  # fmt: skip
