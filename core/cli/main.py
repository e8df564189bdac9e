"""Command line: ``python -m core COMMAND ...``. Tests and operators use it; pages never do.

Each command is a function ``cmd_<name>(args) -> int`` registered in :data:`COMMANDS` with a
function that adds its arguments. New features add one entry.
"""

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, date
from pathlib import Path

from core.access.policy import Scope
from core.store.db import create_schema, database_url, make_engine


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", default=None, help="SQLAlchemy URL (default: $DATABASE_URL or the SQLite file under data/)")


def _month_arg(text: str) -> date:
    """An argparse type: ``YYYY-MM`` -> the first day of that month (a clear usage error otherwise)."""
    try:
        if len(text) == 7:
            return date.fromisoformat(text + "-01")
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r} is not a month; use YYYY-MM, e.g. 2026-10")


def _day_arg(text: str) -> date:
    """An argparse type: ``YYYY-MM-DD`` (a clear usage error otherwise)."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; use YYYY-MM-DD, e.g. 2026-01-31") from None


def _engine(args):
    engine = make_engine(args.database_url)
    create_schema(engine)
    return engine


# --- generate -----------------------------------------------------------------------------


def _args_generate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--patients", type=int, default=5000)
    p.add_argument("--months", type=int, default=24)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--end-month", type=_month_arg, default=None, help="YYYY-MM of the last month (default: last complete month)")
    p.add_argument("--out", type=Path, required=True, help="folder to write the CSV bundle to")


def cmd_generate(args) -> int:
    from sample_data.generator import NetworkSpec, write_bundle

    spec = NetworkSpec(patients=args.patients, months=args.months, seed=args.seed, end_month=args.end_month)
    summary = write_bundle(spec, args.out)
    print(json.dumps(summary, indent=2, default=str))
    return 0


# --- import -------------------------------------------------------------------------------


def _args_import(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", type=Path, help="bundle folder (csv, tuva) or file/folder (fhir)")
    p.add_argument("--format", choices=["csv", "fhir", "tuva"], default="csv")
    p.add_argument("--no-derive", action="store_true", help="skip subgroup assignment and cell building after the import")
    _add_db(p)


def cmd_import(args) -> int:
    """Import, then derive what it touched (everything when that cannot be exact): also when an
    earlier import's derive did not finish (the store marks it pending), so a rejected import
    still brings the derived tables up to date."""
    from core.derive.incremental import derive_touched
    from core.derive.pipeline import derive_text
    from core.ingest import import_path
    from core.store.queries import derive_pending

    engine = _engine(args)
    report = import_path(engine, args.path, fmt=args.format)
    _say(report.to_text())
    pending = derive_pending(engine)
    if pending is not None and args.no_derive:
        _say("derived tables are behind the data (derive pending); run `python -m core assign` to rebuild them")
    elif pending is not None:
        if not report.ok:
            _say(f"finishing the derive left pending by import #{pending}" if pending.isdigit() else "finishing a pending derive")
        summary = derive_touched(engine, progress=lambda _f, text: _say(text))
        _say(derive_text(summary))
        _say(json.dumps(summary, indent=2, default=str))
    return 0 if report.ok else 1


def _say(text: str) -> None:
    """Print a line; when the reader went away (``| head``), keep working silently: an import's
    derive must not stop half-way because nobody reads its progress."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


# --- info ---------------------------------------------------------------------------------


def _args_info(p: argparse.ArgumentParser) -> None:
    _add_db(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--quality", action="store_true", help="the data quality checks (the Admin data quality page) instead")


def cmd_info(args) -> int:
    from core.store.queries import data_status

    engine = _engine(args)
    if args.quality:
        from core.views.data_quality import data_quality, quality_text

        quality = data_quality(engine)
        if args.json:
            print(json.dumps({k: v.to_dict("records") for k, v in quality.items()}, indent=2, default=str))
        else:
            print(quality_text(quality))
        return 0
    status = data_status(engine)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    print(f"database: {database_url(args.database_url).split('@')[-1]}")
    print(f"data version: {status['data_version']}")
    if status["derive_pending"]:
        print("derive pending: subgroups and cells are behind the data; `python -m core assign` rebuilds them")
    print(f"months covered: {status['first_month']} .. {status['last_month']}")
    print("rows per table:")
    for table, n in status["counts"].items():
        print(f"  {table:22s} {n:>12,}")
    return 0


# --- templates ----------------------------------------------------------------------------


def _args_templates(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("docs/templates"))


def cmd_templates(args) -> int:
    from core.ingest.templates import write_templates

    for path in write_templates(args.out):
        print(path)
    return 0


# --- users and audit ----------------------------------------------------------------------

# Who the audit log names for changes made on the command line (the operator of the server).
CLI_SCOPE = Scope(user_key="cli", name="command line", role="admin", team_ids=(), practice_ids=(), patient_level=False,
                  network=True)  # fmt: skip


def _args_users(p: argparse.ArgumentParser) -> None:
    _add_db(p)
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="list users")
    add = sub.add_parser("add", help="add or update a user")
    add.add_argument("user_key", help="email (lower-cased) or sub:<subject>")
    add.add_argument("--role", required=True, choices=["clinician", "team_leader", "executive", "admin"])
    add.add_argument("--name", default="")
    add.add_argument("--practices", default="", help="comma-separated practice ids in scope")
    add.add_argument("--teams", default="", help="comma-separated team ids in scope")
    add.add_argument("--patient-level", action="store_true", help="grant patient rows to an executive or admin")
    remove = sub.add_parser("deactivate", help="deactivate a user (rows are kept for the audit trail)")
    remove.add_argument("user_key")


def cmd_users(args) -> int:
    from core.access.policy import load_access_rules
    from core.access.users import deactivate_user, list_users, save_user

    engine = _engine(args)
    if args.action == "list":
        print(list_users(engine).to_string(index=False))
    elif args.action == "add":
        patient_level = args.patient_level or load_access_rules().patient_level_default[args.role]
        user = save_user(engine, args.user_key, args.role, name=args.name, practice_ids=args.practices,
                         team_ids=args.teams, patient_level=patient_level, by=CLI_SCOPE)  # fmt: skip
        print(f"saved {user.user_key} ({user.role})")
    elif not deactivate_user(engine, args.user_key, by=CLI_SCOPE):
        print(f"no user {args.user_key}", file=sys.stderr)
        return 1
    return 0


def _args_audit(p: argparse.ArgumentParser) -> None:
    _add_db(p)
    p.add_argument("--user", default=None)
    p.add_argument("--action", default=None)
    p.add_argument("--target", default=None)
    p.add_argument("--since", type=_day_arg, default=None, help="YYYY-MM-DD (UTC)")
    p.add_argument("--out", type=Path, default=None, help="CSV file (default: standard output)")
    p.add_argument("--verify", action="store_true", help="check the hash chain instead (exit 1 and name the first bad row)")
    p.add_argument("--expect", action="append", default=[], metavar="FILE|ID:HASH",
                   help="with --verify: checkpoint file(s) or AUDIT_ID:HASH anchors; a row they name must still be there")
    p.add_argument("--checkpoint", type=Path, default=None, metavar="FILE",
                   help="verify the chain, then append its head (AUDIT_ID:HASH) to FILE, kept where the database user cannot write")


def cmd_audit(args) -> int:
    from datetime import datetime

    from core.access.audit import append_checkpoint, read_anchors, search_events, verify_chain

    if args.verify or args.checkpoint:
        try:
            anchors = read_anchors(args.expect)
        except (OSError, ValueError) as exc:
            print(f"audit --expect: {exc}", file=sys.stderr)
            return 2
        check = verify_chain(_engine(args), anchors=anchors)
        if not check.ok:
            print(f"audit chain broken at audit_id {check.first_bad}: {check.reason} ({check.rows:,} rows before it are intact)",
                  file=sys.stderr)  # fmt: skip
            return 1
        against = f", {check.anchors:,} checkpoint anchors found" if check.anchors else ""
        print(f"audit chain intact: {check.rows:,} rows{against}, head {check.last_id}:{check.last_hash}")
        if args.checkpoint and check.last_id:
            append_checkpoint(args.checkpoint, check.last_id, check.last_hash)
            print(f"head appended to {args.checkpoint}")
        return 0
    since = datetime.combine(args.since, datetime.min.time(), tzinfo=UTC) if args.since else None
    events = search_events(_engine(args), user_key=args.user, action=args.action, target=args.target, since=since)
    from core.access.exports import export_csv  # pandas: only the commands that need it import it

    export_csv(events, args.out or sys.stdout)
    return 0


# --- scorecard ----------------------------------------------------------------------------


def _args_scorecard(p: argparse.ArgumentParser) -> None:
    p.add_argument("--practice", default=None, help="practice id (default: the whole network)")
    p.add_argument("--team", default=None, help="team id (default: all teams)")
    p.add_argument("--subgroup", default=None, help="subgroup id (default: all subgroups)")
    p.add_argument("--period", type=_month_arg, required=True, help="YYYY-MM, the last month of the window")
    p.add_argument("--window", choices=["month", "quarter", "12m"], default="month")
    p.add_argument("--stratum", default="all", help="equity stratum (age_band, sex, race_ethnicity, ...)")
    p.add_argument("--format", choices=["csv", "json", "text"], default="text")
    _add_db(p)


def cmd_scorecard(args) -> int:
    from core.metrics.runout import claims_completeness, incomplete_note
    from core.metrics.scorecard import Selection, build_scorecard, format_scorecard
    from core.store.months import window_months

    engine = _engine(args)
    selection = Selection(practice_id=args.practice, team_id=args.team, subgroup=args.subgroup,
                          period=args.period, window=args.window, stratum=args.stratum)
    card = build_scorecard(engine, selection)
    if args.format == "csv":  # rounded as the pages show it (core.views.format.csv_export), blanks stay blank
        from core.views.format import csv_export

        print(csv_export(card, na_rep=""), end="")
    else:
        print(format_scorecard(card, args.format))
    note = incomplete_note(claims_completeness(engine, window_months(selection.period, args.window)))
    if note:  # on standard error, so csv and json output stay machine-readable
        print(f"note: {note}", file=sys.stderr)
    return 0


# --- assign -------------------------------------------------------------------------------


def _args_assign(p: argparse.ArgumentParser) -> None:
    _add_db(p)
    p.add_argument("--rules", type=Path, default=None, help="subgroup rules TOML (default: the saved or shipped rules)")


def cmd_assign(args) -> int:
    """Reassign subgroups, then rebuild the cells so every page shows the new assignment."""
    from core.derive.pipeline import derive_all
    from core.derive.subgroups.rules import RulesError, active_rules_path, load_rules

    try:
        rules = load_rules(args.rules or active_rules_path())
    except RulesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from core.metrics.cost_reports import last_attributed_month

    engine = _engine(args)
    if last_attributed_month(engine) is None:
        print("nothing to assign: the database holds no attributed patients (load data with `python -m core import PATH`)",
              file=sys.stderr)  # fmt: skip
        return 1
    summary = derive_all(engine, rules=rules)["subgroups"]
    total = summary["rows"] or 1
    print(f"assigned {summary['rows']:,} patient-months over {summary['months']} months in {summary['seconds']} s "
          f"({summary['overridden']:,} overridden, {summary.get('thin_history', 0):,} with thin history)")
    for subgroup, n in summary["mix"].items():
        print(f"  {rules.subgroup_names[subgroup]:28s} {n:>12,} {100 * n / total:6.1f} %")
    return 0


# --- costs and payments --------------------------------------------------------------------


def _args_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--practice", default=None, help="practice id (default: the whole network)")
    p.add_argument("--team", default=None, help="team id (default: all teams)")
    p.add_argument("--subgroup", default=None, help="subgroup id (default: all subgroups)")
    p.add_argument("--period", type=_month_arg, default=None, help="YYYY-MM, the last month of the window (default: latest month)")
    p.add_argument("--window", choices=["month", "quarter", "12m"], default="month")
    _add_db(p)


def _selection_months(engine, args) -> list[date] | None:
    from core.metrics.cost_reports import last_attributed_month
    from core.store.months import window_months

    period = args.period or last_attributed_month(engine)
    return window_months(period, args.window) if period else None


NOT_COSTED_COLUMNS = ("cost_usd", "margin_usd", "cost_pmpm_usd", "margin_pmpm_usd", "cost_total_pmpm_usd", "cost_internal_pmpm_usd",
                      "standard_minutes_share", "unused_minutes", "capacity_cost_usd", "unused_cost_usd", "idle_capacity_usd",
                      "fully_loaded_cost_usd", "fully_loaded_margin_usd")  # fmt: skip


def _print_tables(tables: dict) -> None:
    """Print each table; figures that are unknown for want of a staff roster read ``not costed``."""
    import pandas as pd

    from core.derive.costs import NOT_COSTED

    if tables.get("costing"):
        print(f"({tables['costing']})")
    unknown = f" {NOT_COSTED}:" in str(tables.get("costing", ""))
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:,.2f}".format):
        for name, table in tables.items():
            if isinstance(table, pd.DataFrame):
                print(f"\n== {name} ==")
                if unknown or "capacity" in table:
                    table = _not_costed(table, unknown)
                print(table.to_string(index=False) if len(table) else "(none)")


def _not_costed(table, unknown: bool):
    """``not costed`` in place of NaN in cost columns (every row when the store has no staff roster,
    else the rows of teams without staff)."""
    rows = (table["capacity"] == "no staff") if "capacity" in table and not unknown else None
    out = table.copy()
    for column in NOT_COSTED_COLUMNS:
        if column in out:
            mask = out[column].isna() if rows is None else rows & out[column].isna()
            out[column] = out[column].astype(object).where(~mask, "not costed")
    return out


def _args_costs(p: argparse.ArgumentParser) -> None:
    _args_selection(p)


def cmd_costs(args) -> int:
    from core.metrics.cost_reports import cost_report

    engine = _engine(args)
    months = _selection_months(engine, args)
    if not months:
        print("no attributed months in the database", file=sys.stderr)
        return 1
    tables = cost_report(engine, months, args.practice, args.team, args.subgroup)
    print(f"costs {months[0]:%Y-%m}..{months[-1]:%Y-%m} (PMPM from {tables['source']})")
    _print_tables(tables)
    _print_tables(_true_cost_tables(engine, months, args.practice, args.team))
    return 0


def _true_cost_tables(engine, months, practice_id, team_id) -> dict:
    """Capacity cost rates with their parts and leakage (out-of-network spend by category,
    specialty, facility, team and month; rows with 1-10 out-of-network claims suppressed) of a selection."""
    from core.store.models import Team
    from core.store.queries import read_frame
    from core.views.true_costs import leakage_note, leakage_report, rate_table

    teams = None
    if team_id is not None:
        teams = (team_id,)
    elif practice_id is not None:
        from sqlalchemy import select

        teams = tuple(read_frame(engine, select(Team.team_id).where(Team.practice_id == practice_id))["team_id"])
    report = leakage_report(engine, months, teams)
    note = leakage_note(report)
    if note:
        return {"capacity_cost_rates": rate_table(engine), "costing": f"leakage: {note}"}
    return {"capacity_cost_rates": rate_table(engine), **{f"leakage_{name}": table for name, table in report.items()}}


def _args_payments(p: argparse.ArgumentParser) -> None:
    _args_selection(p)
    p.add_argument("--targets-met", type=int, default=0, help="measure targets met (PCMH pay-for-performance)")
    p.add_argument("--aco-preset", default=None, help="ACO track in core/config/payments.toml (default: its default_preset)")
    p.add_argument("--benchmark-pmpy", type=float, default=None, help="ACO baseline benchmark, USD per member-year")
    p.add_argument("--quality-score", type=float, default=100.0,
                   help="ACO quality score (0-100) of the 12-month reconciliation (the year projection computes it from the scorecard)")  # fmt: skip


def cmd_payments(args) -> int:
    from core.metrics.payments import (
        aco_inputs_from_store,
        aco_reconciliation,
        aco_result_table,
        load_payment_settings,
        payment_report,
    )

    engine = _engine(args)
    months = _selection_months(engine, args)
    if not months:
        print("no attributed months in the database", file=sys.stderr)
        return 1
    settings = load_payment_settings()
    tables = payment_report(engine, months, args.practice, args.team, args.subgroup, settings, args.targets_met)
    print(f"payments {months[0]:%Y-%m}..{months[-1]:%Y-%m}")
    _print_tables(tables)
    if args.practice is None and args.team is None and args.subgroup is None:
        _print_tables({"costing": tables.get("costing", ""),
                       "fully_loaded_margin": _fully_loaded_total(engine, months, settings, args.targets_met)})  # fmt: skip
    preset = args.aco_preset or settings.aco_default_preset
    if preset not in settings.aco_presets:
        print(f"unknown ACO preset {preset!r}; choose from {sorted(settings.aco_presets)}", file=sys.stderr)
        return 2
    inputs, note = aco_inputs_from_store(engine, months, args.practice, args.team, args.subgroup, args.benchmark_pmpy, args.quality_score)
    print(f"\n== ACO reconciliation: {settings.aco_presets[preset].label} ==")
    if inputs is None:
        print(f"(not computed: {note})")
        return 0
    if note:
        print(f"({note})")
    _print_tables({"aco": aco_result_table(aco_reconciliation(inputs, settings.aco_presets[preset]))})
    return _print_aco_year(engine, months[-1], args, settings, preset)


def _fully_loaded_total(engine, months, settings, targets_met):
    """The network's margin per model, activity-based and fully loaded (adding unused capacity)."""
    from core.derive.costs import costing_status
    from core.views.payment_models import payment_comparison, payment_inputs
    from core.views.true_costs import capacity_use, idle_capacity_by_team

    months = tuple(months)
    idle = idle_capacity_by_team(capacity_use(engine, months))
    # the operator's command line reads the store whole, as the other payment tables it prints
    total = payment_comparison(payment_inputs(engine, months), settings, targets_met, costing_status(engine).costed, idle,
                               suppress=False)["total"]
    return total[["model", "revenue_usd", "cost_usd", "margin_usd", "idle_capacity_usd", "fully_loaded_cost_usd", "fully_loaded_margin_usd"]]


def _print_aco_year(engine, month, args, settings, preset) -> int:
    """The projected settlement of the performance year that contains ``month``, with its range."""
    from core.views.payment_models import aco_year_projection, aco_year_table, settle_year

    year, note = aco_year_projection(engine, month, args.practice, args.team, args.benchmark_pmpy, None, settings)
    print("\n== ACO projection of the performance year ==")
    if year is None:
        print(f"(not computed: {note})")
        return 0
    print(f"({note}; quality score {year['quality_score']:.1f} from the scorecard)")
    _print_tables({"aco_year": aco_year_table(settle_year(year, settings.aco_presets[preset], settings.aco_projection))})
    return 0


# --- bench --------------------------------------------------------------------------------


def _args_bench(p: argparse.ArgumentParser) -> None:
    from core.cli.bench import BASELINE_REPS, MONTH_REPS, REPS

    p.add_argument("--patients", type=int, default=None, help="default 100,000; 5,000 (the sample network) with --pages")
    p.add_argument("--pages", action="store_true",
                   help="click speed only: every page's first render and every widget change, server-side, on the network "
                        "of --database-url (generated and imported first when it is empty)")
    p.add_argument("--months", type=int, default=24)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--end-month", default=None, help="YYYY-MM of the last month (default: last complete month)")
    p.add_argument("--out", type=Path, default=Path("data/bench"), help="folder for the bundle (DIR/bundle)")
    p.add_argument("--reuse", action="store_true", help="keep an existing bundle and an already imported database")
    p.add_argument("--reps", type=int, default=REPS, help="repetitions per query latency (default %(default)s)")
    p.add_argument("--baseline-reps", type=int, default=BASELINE_REPS, help="repetitions of the naive baseline (default %(default)s)")
    p.add_argument("--month-reps", type=int, default=MONTH_REPS,
                   help="runs of the new month (new_month), each on the store as the full pipeline left it; the median counts "
                        "(default %(default)s)")
    p.add_argument("--steps", default=None, help="comma-separated subset of generate,import,assign,activity,cells,queries,baseline,pages,new_month "
                        "(default: all of them), or override (a subgroup override set and lifted for one patient of every team)")
    p.add_argument("--engines", default=None,
                   help="comma-separated derive engines to compare on the derive steps of --steps, with a checksum of what "
                        "each stored: dask (the product's), ray (pip install ray), processes (the pool before Dask), inprocess")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    _add_db(p)


def cmd_bench(args) -> int:
    import os

    from core.cli.bench import STEPS, format_report, run_bench

    # default: a SQLite file next to the bundle, never the dashboard's own database
    url = args.database_url or os.environ.get("DATABASE_URL") or "sqlite:///" + str(args.out.resolve() / "bench.db")
    steps = tuple(args.steps.split(",")) if args.steps else STEPS
    patients = args.patients or (5_000 if args.pages else 100_000)
    if args.pages:  # an imported network is measured as it is; an empty store gets the sample network first
        from core.cli.bench import _has_patients

        steps = ("clicks",) if _has_patients(url) else ("generate", "import", "assign", "activity", "cells", "clicks")
    report = run_bench(patients, args.months, url, args.out, reuse=args.reuse, seed=args.seed, end_month=args.end_month,
                       reps=args.reps, baseline_reps=args.baseline_reps, steps=steps, progress=lambda text: print(f"... {text}", file=sys.stderr, flush=True),
                       engines=tuple(args.engines.split(",")) if args.engines else (), month_reps=args.month_reps)
    print(json.dumps(report, indent=2, default=str) if args.json else format_report(report))
    return 0


COMMANDS: dict[str, tuple[Callable, Callable, str]] = {
    "generate": (_args_generate, cmd_generate, "write a synthetic sample network as a CSV bundle"),
    "import": (_args_import, cmd_import, "validate and load a data bundle (all or nothing)"),
    "info": (_args_info, cmd_info, "counts per table, months covered, data version"),
    "templates": (_args_templates, cmd_templates, "write empty CSV templates of the bundle"),
    "scorecard": (_args_scorecard, cmd_scorecard, "print the outcome scorecard of a selection (from cells)"),
    "assign": (_args_assign, cmd_assign, "assign every attributed patient-month to a subgroup (rules, risk scores, overrides)"),
    "costs": (_args_costs, cmd_costs, "print cost PMPM, composition, recorded vs standard minutes and unused capacity of a selection"),
    "bench": (_args_bench, cmd_bench, "benchmark: generate, import and derive N patients, time queries and pages"),
    "payments": (_args_payments, cmd_payments, "print payment models side by side, mix sensitivity and the ACO reconciliation of a selection"),
    "users": (_args_users, cmd_users, "manage who may sign in, their role and scope"),
    "audit": (_args_audit, cmd_audit, "export the audit log as CSV"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Care-team value scorecards")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, _, help_text) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except BrokenPipeError:
        # The reader of our output went away (``... | head``): stop quietly, as other command-line
        # tools do, and send what is still buffered nowhere (docs.python.org/3/library/signal.html#note-on-sigpipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool stopped by a closed pipe


if __name__ == "__main__":
    sys.exit(main())
