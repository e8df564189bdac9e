"""Read and validate a canonical CSV bundle (``core/ingest/bundle_schema.py``) into typed frames.

``read_bundle(path, engine)`` checks everything before anything is written and returns
``(frames, report)``: frames keyed by table name, typed as the models, for
:func:`core.ingest.loader.load_tables`; when ``report.errors`` is not empty the frames are empty.

Every problem is reported with the file, the row as a spreadsheet shows it (header = row 1,
first data row = row 2) and the column. Checks are vectorised (pandas / pyarrow), never a
Python loop over cells, so a 100,000-patient bundle validates in seconds.

What is an error (the import is rejected) and what is a warning:

- Errors: a required file, column or value missing; a file that is not UTF-8, is empty or is not
  well-formed CSV (wrong number of fields, an unterminated quote: typically a truncated file);
  a value that does not parse as its type, is out of its min/max, too long, not in the
  catalogue, or not an ICD-10-CM code; a date outside 1900-01-01..2100-12-31 or (for clinical
  dates) after today; a duplicate key; a reference to a row that is neither in the bundle nor
  in the database; an end before its start (death before birth, resolved before onset, encounter
  or medication end before start).
- Warnings, rows kept: events after the patient's death or before birth (claims run-out and
  data-entry slips happen; the event is still a real cost), an e-consult answered before it
  was sent, care before it was requested, attribution months in the future (prospective
  attribution), unknown columns (ignored) and unknown files (ignored).
- Warnings, rows skipped (counted in ``report.skipped``): a measurement value outside the
  catalogue code's plausible range (e.g. an HbA1c of 45 %: almost surely a unit or keying
  error that would distort means), and attribution months after the month of death or before
  the month of birth (a member-month needs a living member; the month of death still counts).

Derived on the way: ``encounter.is_internal`` from the catalogue activity kind, a blank
``cost_category`` becomes the kind's default, a ``month`` becomes the first day of the month,
blank optional values become the model defaults.
"""

import csv
import io
import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import Engine, select

from core.catalog import Catalog, load_catalog
from core.ingest.bundle_schema import (
    BUNDLE,
    BY_FILE,
    EARLIEST_DATE,
    ICD10_PATTERN,
    LATEST_DATE,
    MANIFEST_FILE,
    SAMPLE_GENERATOR_NAME,
    Column,
    TableSpec,
)
from core.ingest.report import ImportReport

FIRST_DATA_ROW = 2  # header is spreadsheet row 1
BOOL_TRUE = ("true", "1", "yes", "y", "t")
BOOL_FALSE = ("false", "0", "no", "n", "f")
# Date columns that may lie in the future: a medication's planned stop date.
FUTURE_ALLOWED = {("medications.csv", "end_date")}
PATTERN_NAMES = {ICD10_PATTERN: "an ICD-10-CM code such as E11.9 or E119"}
MAX_BAD_BYTES_PER_FILE = 20
DB_LOOKUP_CHUNK = 1000

# (file, later column, earlier column, level, message): the later date must not precede the earlier.
DATE_ORDER_RULES = (
    ("patients.csv", "death_date", "birth_date", "error", "death_date is before birth_date"),
    ("conditions.csv", "resolved_date", "onset_date", "error", "resolved_date is before onset_date"),
    ("encounters.csv", "end_date", "start_date", "error", "end_date is before start_date"),
    ("medications.csv", "end_date", "start_date", "error", "end_date is before start_date"),
    ("encounters.csv", "responded_date", "start_date", "warning", "responded_date is before start_date"),
    ("encounters.csv", "start_date", "requested_date", "warning", "care started before it was requested (start_date < requested_date)"),
)
# (file, date column) of events checked against the patient's birth and death.
EVENT_DATES = (
    ("conditions.csv", "onset_date"),
    ("encounters.csv", "start_date"),
    ("measurements.csv", "measured_date"),
    ("medications.csv", "start_date"),
)


@dataclass
class _File:
    """One parsed bundle file: trimmed text per column (Arrow) and the typed values (pandas)."""

    spec: TableSpec
    raw: dict[str, pa.ChunkedArray]
    typed: dict[str, pd.Series]
    keep: np.ndarray  # rows to load (False: skipped with a reason)

    @property
    def name(self) -> str:
        return self.spec.file

    @property
    def rows(self) -> int:
        return len(self.keep)


# --- reporting helpers ---------------------------------------------------------------------


def _np(mask) -> np.ndarray:
    """An Arrow boolean result as a numpy bool array (nulls -> False)."""
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False).astype(bool)


def _shown(values: pa.ChunkedArray, i: int) -> str:
    text = str(values[int(i)].as_py())
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _flag_rows(report: ImportReport, file: str, mask: np.ndarray, column: str | None, message: str,
               values: pa.ChunkedArray | None = None, level: str = "error") -> int:
    """Report every row where ``mask`` is true (errors one per row up to the cap; warnings summarised)."""
    rows = np.flatnonzero(mask)
    if not len(rows):
        return 0
    if level == "error":
        shown = rows[: report.errors_left()]
        for i in shown:
            detail = f": {_shown(values, i)}" if values is not None else ""
            report.add_error(file, int(i) + FIRST_DATA_ROW, column, message + detail)
        report.errors_not_shown += len(rows) - len(shown)
    else:
        first = ", ".join(str(int(i) + FIRST_DATA_ROW) for i in rows[:5])
        more = f" and {len(rows) - 5:,} more" if len(rows) > 5 else ""
        where = f" ({len(rows):,} rows: {first}{more})" if len(rows) > 1 else ""
        report.add_warning(file, int(rows[0]) + FIRST_DATA_ROW, column, message + where)
    return len(rows)


def _isin(values: pa.ChunkedArray, allowed) -> np.ndarray:
    """Vectorised membership with Arrow (pandas' ``isin`` on Arrow strings is slow for big sets)."""
    if not isinstance(allowed, pa.ChunkedArray | pa.Array):
        allowed = pa.array([str(a) for a in allowed], type=pa.large_string())
    value_set = pc.unique(allowed.cast(values.type))
    if isinstance(value_set, pa.ChunkedArray):
        value_set = value_set.combine_chunks()
    return _np(pc.is_in(values, value_set=value_set))


def _index_in(values: pa.ChunkedArray, keys) -> np.ndarray:
    """Position of each value in ``keys`` (-1 when absent)."""
    if not isinstance(keys, pa.ChunkedArray | pa.Array):
        keys = pa.array([str(k) for k in keys], type=pa.large_string())
    keys = keys.cast(values.type)
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    return pc.fill_null(pc.index_in(values, value_set=keys), -1).to_numpy(zero_copy_only=False)


# --- reading -------------------------------------------------------------------------------


def _check_utf8(data: bytes, file: str, report: ImportReport) -> bool:
    """Report each line holding bytes that are not UTF-8 (file, line, column name); True if clean."""
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        pass
    header_end = data.find(b"\n")
    header_line = data[: header_end if header_end >= 0 else len(data)].decode("utf-8", errors="replace")
    header = next(csv.reader([header_line]), [])
    pos, found = 0, 0
    while pos < len(data) and found < MAX_BAD_BYTES_PER_FILE:
        try:
            data[pos:].decode("utf-8")
            break
        except UnicodeDecodeError as exc:
            bad = pos + exc.start
        line_start = data.rfind(b"\n", 0, bad) + 1
        line = data.count(b"\n", 0, bad) + 1
        prefix = data[line_start:bad].decode("utf-8", errors="replace")
        index = max(len(next(csv.reader([prefix]), [""])) - 1, 0) if prefix else 0
        column = header[index].strip() if index < len(header) else None
        report.add_error(file, line, column, f"not valid UTF-8 (byte 0x{data[bad]:02x}); save the file as UTF-8")
        found += 1
        line_end = data.find(b"\n", bad)
        pos = len(data) if line_end < 0 else line_end + 1
    return False


def _diagnose_structure(text: str, width: int, file: str, report: ImportReport) -> None:
    """Slow path, only for a malformed file: find every row with the wrong number of fields."""
    reader = csv.reader(io.StringIO(text), strict=True)
    row = 0
    try:
        for row, record in enumerate(reader, start=1):
            if row > 1 and len(record) != width:
                if not record:
                    report.add_error(file, row, None, "blank line")
                else:
                    report.add_error(file, row, None, f"{len(record)} field(s), expected {width} like the header"
                                     " (a value with a comma must be quoted; a short last row means a truncated file)")
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            report.add_error(file, row + 1, None, "unterminated quote: the file ends inside a quoted value (truncated file?)")
        else:
            report.add_error(file, row + 1, None, f"malformed CSV: {exc}")


def _read_csv(path: Path, spec: TableSpec, report: ImportReport) -> dict[str, pa.ChunkedArray] | None:
    """The file's columns as trimmed Arrow strings (bundle columns only); None (with errors) if unusable."""
    file = spec.file
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):  # a byte-order mark, as Excel writes
        data = data[3:]
    if not _check_utf8(data, file, report):
        return None
    if data.endswith(b"\n\n") or data.endswith(b"\r\n\r\n"):
        data = data.rstrip(b"\r\n") + b"\n"  # trailing blank lines are not rows
    if not data.strip():
        report.add_error(file, 1, None, "file is empty (no header row)")
        return None
    newline = data.find(b"\n")
    header = next(csv.reader([data[: newline if newline >= 0 else len(data)].decode("utf-8").rstrip("\r")]), [])
    names = [h.strip() for h in header]
    problems = False
    seen: set[str] = set()
    for name in names:
        if name in seen:
            report.add_error(file, 1, name, "column appears twice in the header")
            problems = True
        seen.add(name)
    for column in spec.columns:
        if column.name not in seen and column.required:
            report.add_error(file, 1, column.name, "required column is missing from the header")
            problems = True
    for name in names:
        if name not in spec.column_names:
            report.add_warning(file, 1, name or None, "column is not part of the bundle; ignored")
    if problems:
        return None
    invalid_rows: list[int] = []

    def on_invalid(row) -> str:
        invalid_rows.append(row.actual_columns)
        return "skip"

    columns = [f"c{i}" for i in range(len(header))]  # positional names: header names may be blank or odd
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=columns, skip_rows=1, block_size=16 << 20),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.large_string() for c in columns}, strings_can_be_null=False, quoted_strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, ValueError):
        invalid_rows.append(-1)
        table = None
    if invalid_rows or table is None:
        errors_before = report.error_count
        _diagnose_structure(data.decode("utf-8"), len(header), file, report)
        if report.error_count == errors_before:
            report.add_error(file, None, None, "malformed CSV (could not be parsed)")
        return None
    by_name = {name: pc.ascii_trim_whitespace(table.column(i)) for i, name in enumerate(names) if name in spec.column_names}
    empty = pa.chunked_array([pa.array([""] * table.num_rows, type=pa.large_string())])
    return {name: by_name.get(name, empty) for name in spec.column_names}


# --- per-column checks ---------------------------------------------------------------------


def _vocabulary(catalog: Catalog, name: str) -> list[str]:
    return list(getattr(catalog, name))


def _parse_dates(s: pa.ChunkedArray, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """Strictly parsed dates (datetime64[s], NaT if invalid) and the validity mask.

    Arrow's strptime accepts 2024-1-5 and rolls 2024-02-30 over to March 1, so a value must also
    have the exact shape and (for dates) keep its day of month.
    """
    shape = _np(pc.match_substring_regex(s, r"^\d{4}-\d{2}-\d{2}$" if fmt == "%Y-%m-%d" else r"^\d{4}-\d{2}$"))
    parsed = pc.strptime(s, format=fmt, unit="s", error_is_null=True)
    valid = shape & _np(pc.is_valid(parsed))
    if fmt == "%Y-%m-%d":
        day_text = pc.if_else(pa.array(valid), pc.utf8_slice_codeunits(s.combine_chunks(), 8, 10), pa.scalar("0", type=s.type))
        valid &= _np(pc.equal(pc.day(parsed), pc.cast(day_text, pa.int64())))
    values = parsed.to_numpy(zero_copy_only=False).astype("datetime64[s]")
    values[~valid] = np.datetime64("NaT")
    return values, valid


def _parse_numbers(s: pa.ChunkedArray, blank: np.ndarray) -> np.ndarray:
    """Float values (NaN where blank or not a number)."""
    nulled = pc.if_else(pa.array(blank), pa.scalar(None, type=s.type), s.combine_chunks())
    try:
        return pc.cast(nulled, pa.float64()).to_numpy(zero_copy_only=False).astype("float64")
    except pa.ArrowInvalid:  # at least one bad value: let pandas mark which
        return pd.to_numeric(pd.Series(nulled.to_pandas()), errors="coerce").astype("float64").to_numpy()


def _check_column(raw: dict[str, pa.ChunkedArray], column: Column, file: str, catalog: Catalog, today: date,
                  report: ImportReport) -> pd.Series:
    """Parse one column to its type, reporting every bad value; returns the typed series."""
    s = raw[column.name]
    blank = _np(pc.equal(s, ""))
    if column.required:
        _flag_rows(report, file, blank, column.name, "required value is missing")
    if column.type in ("date", "month"):
        fmt, what = ("%Y-%m-%d", "not a date (expected YYYY-MM-DD)") if column.type == "date" else ("%Y-%m", "not a month (expected YYYY-MM)")
        values, valid = _parse_dates(s, fmt)
        _flag_rows(report, file, ~blank & ~valid, column.name, what, s)
        out_of_range = valid & ((values < np.datetime64(EARLIEST_DATE)) | (values > np.datetime64(LATEST_DATE)))
        _flag_rows(report, file, out_of_range, column.name, f"date outside {EARLIEST_DATE} .. {LATEST_DATE}", s)
        if column.type == "date" and (file, column.name) not in FUTURE_ALLOWED:
            future = valid & ~out_of_range & (values > np.datetime64(today))
            _flag_rows(report, file, future, column.name, f"date is in the future (after {today.isoformat()})", s)
        elif column.type == "month":
            future = valid & ~out_of_range & (values > np.datetime64(today.replace(day=1)))
            _flag_rows(report, file, future, column.name, "month is in the future", s, level="warning")
        values[out_of_range] = np.datetime64("NaT")
        return pd.Series(values)
    if column.type in ("int", "float"):
        values = _parse_numbers(s, blank)
        valid = np.isfinite(values)
        if column.type == "int":
            valid &= np.mod(np.nan_to_num(values), 1) == 0
        _flag_rows(report, file, ~blank & ~valid, column.name, "not a whole number" if column.type == "int" else "not a number", s)
        if column.min is not None:
            _flag_rows(report, file, valid & (values < column.min), column.name, f"must be at least {column.min:,.10g}", s)
        if column.max is not None:
            _flag_rows(report, file, valid & (values > column.max), column.name, f"must be at most {column.max:,.10g}", s)
        typed = pd.Series(np.where(valid, values, np.nan))
        return typed.astype("Int64") if column.type == "int" else typed
    if column.type == "bool":
        lower = pc.utf8_lower(s)
        true, false = _isin(lower, BOOL_TRUE), _isin(lower, BOOL_FALSE)
        _flag_rows(report, file, ~blank & ~true & ~false, column.name, "not true/false (also 1/0, yes/no)", s)
        values = np.full(len(s), None, dtype=object)
        values[true] = True
        values[false] = False
        return pd.Series(values, dtype=object)
    # text
    if column.max_len is not None:
        too_long = _np(pc.greater(pc.utf8_length(s), column.max_len))
        _flag_rows(report, file, too_long, column.name, f"longer than {column.max_len} characters", s)
    if column.choices:
        allowed = _vocabulary(catalog, column.choices)
        unknown = ~blank & ~_isin(s, allowed)
        listed = ", ".join(allowed[:12]) + (", ..." if len(allowed) > 12 else "")
        _flag_rows(report, file, unknown, column.name, f"not a known {column.choices} value (allowed: {listed})", s)
    if column.pattern:
        matches = _np(pc.match_substring_regex(s, f"^(?:{column.pattern})$"))
        _flag_rows(report, file, ~blank & ~matches, column.name, f"not {PATTERN_NAMES.get(column.pattern, 'in the expected format')}", s)
    return pc.if_else(pa.array(blank), pa.scalar(None, type=s.type), s.combine_chunks()).to_pandas()


def _check_duplicates(parsed: _File, report: ImportReport) -> None:
    key = list(parsed.spec.key)
    table = pa.table({k: parsed.raw[k] for k in key})
    joined = table.column(0)
    for k in key[1:]:
        joined = pc.binary_join_element_wise(joined, table.column(k), pa.scalar("\x1f", type=joined.type))
    if pc.count_distinct(joined).as_py() == table.num_rows:
        return  # fast path: every key unique
    raw = table.to_pandas()
    dup = raw.duplicated(keep="first").to_numpy()
    first_rows = raw[~dup].copy()
    first_rows["_first_row"] = np.flatnonzero(~dup) + FIRST_DATA_ROW
    shown = raw[dup].iloc[: max(report.errors_left(), 1)]
    firsts = shown.merge(first_rows, on=key, how="left")["_first_row"].to_numpy()
    for (i, values), first in zip(shown.iterrows(), firsts, strict=True):
        what = ", ".join(f"{k}={v!r}" for k, v in values.items())
        report.add_error(parsed.name, int(i) + FIRST_DATA_ROW, key[-1] if len(key) == 1 else ",".join(key),
                         f"duplicate key {what} (first on row {int(first)})")
    report.errors_not_shown += int(dup.sum()) - len(shown)


# --- references and cross-file checks ------------------------------------------------------


def _table_column(table_name: str, column: str):
    from sqlmodel import SQLModel

    return SQLModel.metadata.tables[table_name].c[column]


def _existing_in_db(engine: Engine | None, table_name: str, column: str, values: list[str]) -> set[str]:
    """Which of ``values`` exist in ``table.column`` of the store (chunked ``IN`` with bound parameters)."""
    if engine is None or not values:
        return set()
    col = _table_column(table_name, column)
    found: set[str] = set()
    with engine.connect() as conn:
        for start in range(0, len(values), DB_LOOKUP_CHUNK):
            chunk = values[start : start + DB_LOOKUP_CHUNK]
            found.update(conn.execute(select(col).where(col.in_(chunk))).scalars())
    return found


def _check_references(files: dict[str, _File], unusable: set[str], engine: Engine | None, report: ImportReport) -> None:
    for parsed in files.values():
        for column in parsed.spec.columns:
            if not column.ref:
                continue
            target_file, target_column = column.ref.rsplit(".", 1)
            target_file += "" if target_file.endswith(".csv") else ".csv"  # ref is "patients.patient_id"
            if target_file in unusable:
                continue  # already reported; do not bury the cause under dangling references
            values = parsed.raw[column.name]
            present = ~_np(pc.equal(values, ""))
            known = np.zeros(len(values), dtype=bool)
            if target_file in files:
                known = _isin(values, files[target_file].raw[target_column])
            missing = present & ~known
            if missing.any():
                candidates = pc.unique(values.filter(pa.array(missing))).to_pylist()
                in_db = _existing_in_db(engine, BY_FILE[target_file].table, target_column, candidates)
                if in_db:
                    missing &= ~_isin(values, list(in_db))
                _flag_rows(report, parsed.name, missing, column.name,
                           f"no {target_file} row (and no row in the database) with this {target_column}", values)


def _check_date_order(files: dict[str, _File], report: ImportReport) -> None:
    for file, later, earlier, level, message in DATE_ORDER_RULES:
        parsed = files.get(file)
        if parsed is None:
            continue
        bad = (parsed.typed[later] < parsed.typed[earlier]).to_numpy(dtype=bool)
        _flag_rows(report, file, bad, later, message, parsed.raw[later], level=level)


def _patient_dates(files: dict[str, _File], ids: list[pa.ChunkedArray], engine: Engine | None) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """patient_id, birth_date and death_date (datetime64[s]) of every patient: the bundle's, else the store's."""
    keys: list[str] = []
    births, deaths = [np.array([], dtype="datetime64[s]")], [np.array([], dtype="datetime64[s]")]
    bundle_ids = pa.chunked_array([], type=pa.large_string())
    if "patients.csv" in files:
        p = files["patients.csv"]
        bundle_ids = p.raw["patient_id"]
        births.append(p.typed["birth_date"].to_numpy(dtype="datetime64[s]"))
        deaths.append(p.typed["death_date"].to_numpy(dtype="datetime64[s]"))
    others: set[str] = set()
    for values in ids:
        outside = ~_isin(values, bundle_ids) if len(bundle_ids) else np.ones(len(values), dtype=bool)
        if outside.any():
            others.update(pc.unique(values.filter(pa.array(outside))).to_pylist())
    others.discard("")
    if others and engine is not None:
        t = _table_column("patient", "patient_id").table
        chunk_ids = sorted(others)
        with engine.connect() as conn:
            for start in range(0, len(chunk_ids), DB_LOOKUP_CHUNK):
                chunk = chunk_ids[start : start + DB_LOOKUP_CHUNK]
                for pid, birth, death in conn.execute(
                    select(t.c.patient_id, t.c.birth_date, t.c.death_date).where(t.c.patient_id.in_(chunk))
                ):
                    keys.append(pid)
                    births.append(np.array([birth or "NaT"], dtype="datetime64[s]"))
                    deaths.append(np.array([death or "NaT"], dtype="datetime64[s]"))
    all_ids = pa.concat_arrays([bundle_ids.combine_chunks().cast(pa.large_string()), pa.array(keys, type=pa.large_string())])
    return all_ids, np.concatenate(births), np.concatenate(deaths)


def _check_life_span(files: dict[str, _File], engine: Engine | None, report: ImportReport) -> None:
    """Events after death or before birth (warnings); attribution outside the life span (skipped)."""
    event_files = [f for f, _ in EVENT_DATES if f in files] + (["attribution.csv"] if "attribution.csv" in files else [])
    if not event_files:
        return
    ids, births, deaths = _patient_dates(files, [files[f].raw["patient_id"] for f in event_files], engine)
    nat = np.datetime64("NaT")
    births, deaths = np.append(births, nat), np.append(deaths, nat)  # position -1: unknown patient

    def lookup(parsed: _File) -> tuple[np.ndarray, np.ndarray]:
        pos = _index_in(parsed.raw["patient_id"], ids)
        return births[pos], deaths[pos]

    for file, column in EVENT_DATES:
        if file not in files:
            continue
        parsed = files[file]
        when = parsed.typed[column].to_numpy(dtype="datetime64[s]")
        birth, death = lookup(parsed)
        _flag_rows(report, file, when > death, column, "date is after the patient's death_date", level="warning")
        _flag_rows(report, file, when < birth, column, "date is before the patient's birth_date", level="warning")
    if "attribution.csv" in files:
        parsed = files["attribution.csv"]
        month = parsed.typed["month"].to_numpy(dtype="datetime64[s]")
        birth, death = lookup(parsed)
        after = month > death.astype("datetime64[M]").astype("datetime64[s]")
        before = month < birth.astype("datetime64[M]").astype("datetime64[s]")
        for mask, reason in ((after, "month after the month of the patient's death"),
                             (before, "month before the month of the patient's birth")):
            n = _flag_rows(report, parsed.name, mask & parsed.keep, "month", f"attribution {reason}; row skipped", level="warning")
            report.add_skipped(parsed.spec.table, reason, n)
            parsed.keep &= ~mask


def _check_measurement_range(files: dict[str, _File], catalog: Catalog, report: ImportReport) -> None:
    parsed = files.get("measurements.csv")
    if parsed is None:
        return
    codes = list(catalog.codes)
    pos = _index_in(parsed.raw["code"], codes)
    low = np.append([catalog.codes[c].min for c in codes], np.nan)[pos]
    high = np.append([catalog.codes[c].max for c in codes], np.nan)[pos]
    value = parsed.typed["value"].to_numpy(dtype="float64", na_value=np.nan)
    outside = (value < low) | (value > high)
    reason = "value outside the plausible range of its code (catalogue min..max)"
    n = _flag_rows(report, parsed.name, outside, "value", f"{reason}; row skipped", level="warning")
    report.add_skipped(parsed.spec.table, reason, n)
    parsed.keep &= ~outside


# --- frames ----------------------------------------------------------------------------------


def _frame(parsed: _File, catalog: Catalog) -> pd.DataFrame:
    """The typed frame for the loader (model field names), skipped rows removed."""
    out = pd.DataFrame(parsed.typed)
    if parsed.spec.table == "encounter":
        kinds = list(catalog.activity_kinds.values())
        pos = _index_in(parsed.raw["kind"], [k.kind for k in kinds])
        out["is_internal"] = np.array([k.internal for k in kinds], dtype=bool)[pos]
        default = pd.Series(np.array([k.category for k in kinds], dtype=object)[pos])
        out["cost_category"] = out["cost_category"].astype(object).where(out["cost_category"].notna(), default)
    if not parsed.keep.all():
        out = out[parsed.keep].reset_index(drop=True)
    return out


def _origin(path: Path, report: ImportReport) -> str:
    manifest = path / MANIFEST_FILE
    if not manifest.exists():
        return "real"
    try:
        content = json.loads(manifest.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        report.add_warning(MANIFEST_FILE, None, None, f"not readable JSON, ignored: {exc}")
        return "real"
    generator = content.get("generator") if isinstance(content, dict) else None
    if isinstance(generator, dict):
        generator = generator.get("name")
    return "sample" if generator == SAMPLE_GENERATOR_NAME else "real"


def read_bundle(path: Path, engine: Engine | None, today: date | None = None) -> tuple[dict[str, pd.DataFrame], ImportReport]:
    """Validate the bundle folder ``path``; return typed frames by table (empty if any error) and the report.

    ``engine`` resolves references to rows already in the store (None: bundle only);
    ``today`` bounds clinical dates (default: today's date).
    """
    path = Path(path)
    today = today or date.today()
    report = ImportReport(source=str(path), format="csv")
    if not path.is_dir():
        report.add_error(str(path), None, None, "not a folder (a CSV bundle is a folder of CSV files)")
        return {}, report
    report.origin = _origin(path, report)
    catalog = load_catalog()
    known_files = {spec.file for spec in BUNDLE} | {MANIFEST_FILE}
    for extra in sorted(p.name for p in path.iterdir() if p.suffix.lower() == ".csv" and p.name not in known_files):
        report.add_warning(extra, None, None, "file is not part of the bundle; ignored")
    files: dict[str, _File] = {}
    unusable: set[str] = set()
    for spec in BUNDLE:
        file_path = path / spec.file
        if not file_path.exists():
            if spec.required_file:
                report.add_error(spec.file, None, None, "required file is missing")
                unusable.add(spec.file)
            continue
        raw = _read_csv(file_path, spec, report)
        if raw is None:
            unusable.add(spec.file)
            continue
        typed = {c.name: _check_column(raw, c, spec.file, catalog, today, report) for c in spec.columns}
        n = len(raw[spec.columns[0].name])
        files[spec.file] = _File(spec, raw, typed, np.ones(n, dtype=bool))
    for parsed in files.values():
        _check_duplicates(parsed, report)
    _check_references(files, unusable, engine, report)
    _check_date_order(files, report)
    _check_life_span(files, engine, report)
    _check_measurement_range(files, catalog, report)
    if not report.ok:
        return {}, report
    return {parsed.spec.table: _frame(parsed, catalog) for parsed in files.values()}, report
