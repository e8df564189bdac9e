"""Data of the Data quality page and of ``python -m core info --quality``: each check with its
count, the dollars at stake and example ids, per import and for the store as it is now.

Per import (from the JSON report stored on each ``import_run``):
- claims corrections (the ``claims`` section of the report: claims netted per claim id, credits,
  claims paid $0, header amounts repeated on every line, ED claims grouped into visits, facility
  claims grouped into stays); an import whose report has no such section reads ``not reported``;
- unmapped codes, by code system (field and system of the source);
- rows skipped, by table and reason;
- patients not in the import who changed subgroup in the derive after it (``import_effect``:
  moved by the network-wide cut-off of a top-fraction rule, which every patient of the month
  sets), with example ids; ``not reported`` for an import derived before this was measured.

For the store now:
- months whose claims are incomplete (core.metrics.runout), with the dollars not paid yet where
  completion factors estimate them;
- patient-months with thin history: assignments marked ``thin_history`` by the subgroup rules
  (fewer months attributed and with records in the lookback than ``[history]`` asks for), whose
  subgroup rests on little;
- missing staff: internal activity that cannot be costed (core.derive.costs.costing_status).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from sqlalchemy import Engine, func, select, true

from core.derive.costs import NOT_COSTED, PARTLY_COSTED, costing_status
from core.derive.subgroups.rules import active_rules_path, load_rules
from core.ingest.report import unmapped_by_system
from core.metrics import runout
from core.store.models import Encounter, ImportEffect, ImportRun, SubgroupAssignment
from core.store.months import as_month
from core.store.queries import months_available, read_frame

COLUMNS = ["import_id", "imported_at", "source", "format", "check", "count", "usd_at_stake", "examples", "status"]
REPORTED, NOT_REPORTED, CLEAN = "reported", "not reported", "nothing found"

# (check, count key, dollars key, examples key) of the report's claims section
CLAIMS_CHECKS = (
    ("claims netted (reversal or adjustment lines)", "netted", None, "netted"),
    ("credits (claims netting to $0 or below, kept in their month)", "credits", "credits_usd", "credits"),
    ("claims paid $0 (denied or paid by another payer)", "unpaid", None, "unpaid"),
    ("repeated header amounts (counted once; $ not counted)", "repeated_header", "repeated_header_usd", "repeated_header"),
    ("ED claims merged into ED visits", "ed_claims", None, "ed_visits"),
    ("facility claims merged into stays", "stay_claims", None, "stays"),
)
EXAMPLES = 5


def _row(check: str, count: float, usd: float = np.nan, examples=(), status: str = REPORTED, **run) -> dict:
    return {"import_id": run.get("import_id"), "imported_at": run.get("imported_at"), "source": run.get("source", "store now"),
            "format": run.get("format", ""), "check": check, "count": float(count), "usd_at_stake": float(usd),
            "examples": ", ".join(str(e) for e in list(examples)[:EXAMPLES]), "status": status}  # fmt: skip


def import_checks(report: dict, **run) -> list[dict]:
    """The checks of one stored import report (a dict of core.ingest.report.ImportReport.to_dict)."""
    rows = []
    claims = report.get("claims") or {}
    for check, count_key, usd_key, example_key in CLAIMS_CHECKS:
        if not claims:
            rows.append(_row(check, np.nan, status=NOT_REPORTED, **run))
            continue
        count = claims.get(count_key, 0) or 0
        if count_key == "ed_claims":
            check = f"{check} ({count:,} claims into {claims.get('ed_visits', 0):,} visits)"
        elif count_key == "stay_claims":
            check = f"{check} ({count:,} claims into {claims.get('stays', 0):,} stays)"
        usd = claims.get(usd_key, np.nan) if usd_key else np.nan
        rows.append(_row(check, count, abs(usd) if usd_key else np.nan, (claims.get("examples") or {}).get(example_key, ()),
                         REPORTED if count else CLEAN, **run))  # fmt: skip
    for system, codes in sorted(unmapped_by_system(report.get("unmapped_codes") or {}).items()):
        rows.append(_row(f"unmapped codes: {system}", sum(codes.values()), examples=[f"{c} ({n})" for c, n in codes.items()], **run))
    for table, reasons in (report.get("skipped") or {}).items():
        for reason, n in reasons.items():
            rows.append(_row(f"skipped {table} rows: {reason}", n, **run))
    return rows


MOVED_CHECK = "patients not in this import who changed subgroup"


def import_effect_check(effect, **run) -> dict:
    """The row of an import's ``import_effect`` (None: not measured, e.g. derived before it was)."""
    if effect is None or pd.isna(effect.patients_compared):
        return _row(MOVED_CHECK, np.nan, status=NOT_REPORTED, **run)
    moved, compared = int(effect.patients_moved), int(effect.patients_compared)
    check = f"{MOVED_CHECK}, of {compared:,} assigned before (moved by network-wide cut-offs)"
    examples = [e for e in str(effect.examples or "").split(", ") if e]
    return _row(check, moved, examples=examples, status=REPORTED if moved else CLEAN, **run)


def import_quality(engine: Engine, limit: int = 20) -> pd.DataFrame:
    """The checks of the latest ``limit`` committed imports, newest first. Grain: import_id, check."""
    effect = ImportEffect
    stmt = (select(ImportRun.import_id, ImportRun.started_at, ImportRun.source, ImportRun.format, ImportRun.report,
                   effect.patients_compared, effect.patients_moved, effect.examples)
            .outerjoin(effect, effect.import_id == ImportRun.import_id)
            .where(ImportRun.status == "committed").order_by(ImportRun.import_id.desc()).limit(limit))  # fmt: skip
    rows = []
    runs = read_frame(engine, stmt)
    runs["started_at"] = pd.to_datetime(runs["started_at"], utc=True)
    for run in runs.itertuples():
        try:
            report = json.loads(run.report or "{}")
        except json.JSONDecodeError:
            report = {}
        about = dict(import_id=int(run.import_id), imported_at=run.started_at, source=run.source, format=run.format)
        rows += import_checks(report, **about)
        rows.append(import_effect_check(run, **about))
    return pd.DataFrame(rows, columns=COLUMNS)


def incomplete_months(engine: Engine) -> dict:
    """Months whose claims have not run out (core.metrics.runout), with the dollars not yet paid
    where completion factors estimate them (NaN on the run-out-setting basis)."""
    months = months_available(engine)
    completeness = runout.claims_completeness(engine, months) if months else pd.DataFrame(columns=["month", "complete", "completion"])
    part = completeness.loc[~completeness["complete"].astype(bool)]
    usd = np.nan
    if len(part) and (part["completion"] > 0).all():
        lags = runout.claims_lags(engine)
        paid = lags.groupby("service_month")["paid_usd"].sum()
        paid_now = paid.reindex([as_month(m) for m in part["month"]]).fillna(0.0).to_numpy()
        usd = float((paid_now / part["completion"].to_numpy() - paid_now).sum())
    basis = part["basis"].iloc[0] if len(part) else ""
    return _row(f"months with incomplete claims ({basis or 'all complete'})", len(part), usd, [f"{m:%Y-%m}" for m in part["month"]],
                REPORTED if len(part) else CLEAN)  # fmt: skip


def thin_history(engine: Engine) -> dict:
    """Assigned patient-months marked thin history (fewer months of data in the lookback than the
    subgroup rules' ``[history]`` asks for; core.derive.subgroups.rules.History), read from the
    partial index of those rows, with example patient ids of the latest month that has some."""
    sa = SubgroupAssignment
    thin = sa.thin_history == true()  # as the partial index's condition reads, so the planners use it
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(sa).where(thin)).scalar_one()
        latest = conn.execute(select(func.max(sa.month)).where(thin)).scalar()
        examples = [] if latest is None else conn.execute(
            select(sa.patient_id).where(thin, sa.month == latest).order_by(sa.patient_id).limit(EXAMPLES)).scalars().all()  # fmt: skip
        in_latest = 0 if latest is None else conn.execute(select(func.count()).select_from(sa).where(thin, sa.month == latest)).scalar_one()
    history = load_rules(active_rules_path()).history
    check = f"patient-months with thin history (fewer than {history.min_months} of {history.lookback_months} months of data)"
    if latest is not None:
        check += f"; {in_latest:,} in {as_month(latest):%Y-%m}"
    return _row(check, count, examples=examples, status=REPORTED if count else CLEAN)


def missing_staff(engine: Engine) -> dict:
    """Internal activity that cannot be costed: every internal encounter when there is no staff
    roster, else the roles without staff (their minutes cost $0)."""
    status = costing_status(engine)
    if status.status == NOT_COSTED:
        with engine.connect() as conn:
            internal = conn.execute(select(func.count()).where(Encounter.is_internal.is_(True))).scalar_one()
            examples = conn.execute(select(Encounter.encounter_id).where(Encounter.is_internal.is_(True))
                                    .order_by(Encounter.encounter_id).limit(EXAMPLES)).scalars().all()  # fmt: skip
        return _row("missing staff: no staff roster, internal encounters not costed", internal, examples=examples)
    if status.status == PARTLY_COSTED:
        return _row("missing staff: roles without staff (their minutes cost $0)", len(status.roles_without_staff),
                    examples=status.roles_without_staff)  # fmt: skip
    return _row("missing staff", 0, status=CLEAN)


def store_quality(engine: Engine) -> pd.DataFrame:
    """The checks of the store as it is now. Grain: check."""
    return pd.DataFrame([incomplete_months(engine), thin_history(engine), missing_staff(engine)], columns=COLUMNS)


def data_quality(engine: Engine, limit: int = 20) -> dict[str, pd.DataFrame]:
    """Everything the Data quality page shows: ``store`` (checks now) and ``imports`` (per import)."""
    return {"store": store_quality(engine), "imports": import_quality(engine, limit)}


def quality_text(quality: dict[str, pd.DataFrame]) -> str:
    """The checks as text (``python -m core info --quality``)."""
    lines = ["data quality of the store now:"]

    def line(r) -> str:
        count = r.status if r.status == NOT_REPORTED else f"{r.count:,.0f}"
        usd = "" if pd.isna(r.usd_at_stake) else f"  ${r.usd_at_stake:,.2f}"
        examples = f"  e.g. {r.examples}" if r.examples else ""
        return f"  {r.check}: {count}{usd}{examples}"

    lines += [line(r) for r in quality["store"].itertuples()]
    for import_id, part in quality["imports"].groupby("import_id", sort=False):
        first = part.iloc[0]
        when = first["imported_at"].date() if hasattr(first["imported_at"], "date") else first["imported_at"]
        lines.append(f"import #{import_id} ({first['format']}, {when}): {first['source']}")
        lines += [line(r) for r in part.itertuples()]
    if quality["imports"].empty:
        lines.append("no committed imports")
    return "\n".join(lines)
