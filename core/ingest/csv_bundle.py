"""Read, validate and load a canonical CSV bundle (``core/ingest/bundle_schema.py``), streaming.

``import_bundle(engine, path)`` reads each file in batches of rows (:data:`BATCH_BYTES` of CSV at
a time), checks each batch and upserts it into ONE open transaction
(:func:`core.ingest.loader.open_load`), so the memory an import needs is bounded by the batch,
not by the bundle. Files go in dependency order (practices, teams, staff, patients, then the
rest). Any error in any batch of any file stops the writing; the remaining files are still
checked so the report lists every problem, and the transaction is rolled back: an import lands
whole or not at all.

Every problem is reported with the file, the row as a spreadsheet shows it (header = row 1,
first data row = row 2) and the column. Checks are vectorised (pandas / pyarrow / numpy), never a
Python loop over cells. What the checks carry from batch to batch is compact: the 64-bit hashes
of each file's keys (duplicates are confirmed on the key values by reading the file's key columns
again), the key values of the files other files refer to when they are small, and the patients'
birth and death dates. A reference to a row of a big file (``staff_minutes.encounter_id``) is
checked on the hashes only: a dangling reference whose hash equals that of another key (about
one chance in 10^11 per row at 40 million encounters) is left to the database's foreign key.

What is an error (the import is rejected) and what is a warning:

- Errors: a required file, column or value missing; a file that is not UTF-8, is empty, is a
  folder, has a header line over 1 MB or is not well-formed CSV (wrong number of fields, an
  unterminated quote: typically a truncated file); a value that does not parse as its type
  (``inf`` and ``NaN`` do not), is out of its min/max, too long, not in the
  catalogue, or not an ICD-10-CM code; a date outside 1900-01-01..2100-12-31 or (for clinical
  dates) after today; a duplicate key; a reference to a row that is neither in the bundle nor
  in the database; an end before its start (death before birth, resolved before onset, encounter
  or medication end before start).
- Warnings, rows kept: events after the patient's death or before birth (claims run-out and
  data-entry slips happen; the event is still a real cost), an e-consult answered before it
  was sent, care before it was requested, attribution months in the future (prospective
  attribution), unknown columns (ignored) and unknown files (ignored). A warning is reported
  once per file and check, with its row count and first rows.
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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import Engine, select

from core.config.catalog import Catalog, load_catalog
from core.ingest.bundle_schema import (
    BUNDLE,
    BY_FILE,
    EARLIEST_DATE,
    ICD10_PATTERN,
    LATEST_DATE,
    MANIFEST_FILE,
    Column,
    TableSpec,
)
from core.ingest.checks import MAX_HEADER_BYTES, check_csv_file, diagnose_csv_structure, header_line
from core.ingest.claims import load_claim_rules
from core.ingest.loader import Load, LoadFailed, open_load
from core.ingest.report import ImportReport
from core.store.months import as_month

FIRST_DATA_ROW = 2  # header is spreadsheet row 1
BATCH_BYTES = 16 << 20  # CSV bytes read, checked and written at a time: what bounds an import's memory
# Files other files refer to keep their key values (for exact lookups) up to this many rows;
# bigger ones keep only the 64-bit hashes.
EXACT_KEYS_MAX_ROWS = 5_000_000
BOOL_TRUE = ("true", "1", "yes", "y", "t")
BOOL_FALSE = ("false", "0", "no", "n", "f")
# Date columns that may lie in the future: a medication's planned stop date.
FUTURE_ALLOWED = {("medications.csv", "end_date")}
PATTERN_NAMES = {ICD10_PATTERN: "an ICD-10-CM code such as E11.9 or E119"}
MAX_BAD_BYTES_PER_FILE = 20
MAX_WARNING_ROWS = 5  # a warning lists this many of its rows
DB_LOOKUP_CHUNK = 1000
UTF8_CHUNK_BYTES = 16 << 20

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
# Files whose keys other files refer to ("patients.csv"), from the declared references.
REFERENCED = {c.ref.rsplit(".", 1)[0] + ".csv" for spec in BUNDLE for c in spec.columns if c.ref}


@dataclass
class _Batch:
    """Some consecutive rows of one bundle file: trimmed text per column (Arrow) and the typed values (pandas)."""

    spec: TableSpec
    raw: dict[str, pa.ChunkedArray]
    typed: dict[str, pd.Series]
    keep: np.ndarray  # rows to load (False: skipped with a reason)

    @property
    def name(self) -> str:
        return self.spec.file


class _Broken(Exception):
    """The file cannot be read as UTF-8 CSV past some row; it is diagnosed by a slower reader."""


# --- reporting helpers ---------------------------------------------------------------------


def _np(mask) -> np.ndarray:
    """An Arrow boolean result as a numpy bool array (nulls -> False)."""
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False).astype(bool)


def _shown(values: pa.ChunkedArray, i: int) -> str:
    text = str(values[int(i)].as_py())
    return repr(text if len(text) <= 40 else text[:37] + "...")


class _Issues:
    """Where the problems found in one file go: errors straight to the report at their file row
    (``first``: the file row index of the current batch's first row), warnings tallied over the
    whole file and reported once per check by :meth:`flush` (row count and first rows)."""

    def __init__(self, report: ImportReport, file: str):
        self.report, self.file = report, file
        self.first = 0
        self._warnings: dict[tuple[str | None, str], tuple[int, list[int]]] = {}

    def flag(self, mask: np.ndarray, column: str | None, message: str, values: pa.ChunkedArray | None = None,
             level: str = "error") -> int:
        """Report every row of the batch where ``mask`` is true (errors one per row up to the cap)."""
        rows = np.flatnonzero(mask)
        if not len(rows):
            return 0
        if level == "error":
            shown = rows[: self.report.errors_left()]
            for i in shown:
                detail = f": {_shown(values, i)}" if values is not None else ""
                self.report.add_error(self.file, int(i) + self.first + FIRST_DATA_ROW, column, message + detail)
            self.report.errors_not_shown += len(rows) - len(shown)
        else:
            count, first = self._warnings.get((column, message), (0, []))
            first += [int(i) + self.first + FIRST_DATA_ROW for i in rows[: MAX_WARNING_ROWS - len(first)]]
            self._warnings[(column, message)] = (count + len(rows), first)
        return len(rows)

    def flush(self) -> None:
        for (column, message), (count, first) in self._warnings.items():
            more = f" and {count - MAX_WARNING_ROWS:,} more" if count > MAX_WARNING_ROWS else ""
            where = f" ({count:,} rows: {', '.join(map(str, first))}{more})" if count > 1 else ""
            self.report.add_warning(self.file, first[0], column, message + where)
        self._warnings.clear()


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


# --- key hashes ------------------------------------------------------------------------------

_MIX1, _MIX2, _SEED = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53), np.uint64(0x9E3779B97F4A7C15)


def _mix(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (a bijection that spreads every input bit), in place."""
    h ^= h >> np.uint64(33)
    h *= _MIX1
    h ^= h >> np.uint64(33)
    h *= _MIX2
    h ^= h >> np.uint64(33)
    return h


def _hash(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A 64-bit hash of each string, computed on the Arrow buffers (no Python object per value):
    the UTF-8 bytes, zero-padded to 8-byte words, are folded word by word with :func:`_mix`."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    arr = arr.cast(pa.large_string())
    n = len(arr)
    if not n:
        return np.empty(0, dtype=np.uint64)
    _, offsets_buffer, data_buffer = arr.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64, count=n + 1, offset=arr.offset * 8)
    lengths = np.diff(offsets)
    width = max(8, -(-int(lengths.max()) // 8) * 8)
    padded = np.zeros((n, width), dtype=np.uint8)
    if data_buffer is not None and offsets[-1] > offsets[0]:
        text = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]]
        if (lengths == lengths[0]).all():
            padded[:, : lengths[0]] = text.reshape(n, int(lengths[0]))
        else:
            rows = np.repeat(np.arange(n), lengths)
            padded[rows, np.arange(len(text)) - np.repeat(offsets[:-1] - offsets[0], lengths)] = text
    words = padded.view(np.uint64)
    h = _mix(lengths.astype(np.uint64) + _SEED)
    for k in range(words.shape[1]):
        h = _mix(h ^ words[:, k])
    return h


def _key_hash(raw: dict[str, pa.ChunkedArray], key: tuple[str, ...]) -> np.ndarray:
    """The hash of each row's key (one or more columns)."""
    h = _hash(raw[key[0]])
    for column in key[1:]:
        h = _mix(h * _SEED ^ _hash(raw[column]))
    return h


class _Keys:
    """The key values of one file other files refer to: the hashes sorted once, so each batch is
    looked up by binary search; a hit is confirmed on the values themselves when they are kept."""

    def __init__(self, hashes: np.ndarray, values: pa.Array | None, positions: bool):
        """``hashes``: of each row's key, in file order (sorted in place when neither ``values`` nor
        ``positions`` are asked for: then only membership is known)."""
        if positions or values is not None:
            self.order = np.argsort(hashes, kind="stable")
            self.sorted = hashes[self.order]
        else:
            hashes.sort()
            self.order, self.sorted = None, hashes
        self.values = values
        # Two rows with one hash (a duplicate key, or a collision): look up the values instead.
        self.by_value = values is not None and bool((self.sorted[1:] == self.sorted[:-1]).any())

    def positions(self, values: pa.ChunkedArray) -> np.ndarray:
        """Row (0-based, in file order) of each value; -1 when absent."""
        if self.by_value:
            return _index_in(values, self.values)
        if not len(self.sorted):
            return np.full(len(values), -1, dtype=np.int64)
        h = _hash(values)
        at = np.minimum(np.searchsorted(self.sorted, h), len(self.sorted) - 1)
        hit = self.sorted[at] == h
        if self.order is None:
            return np.where(hit, 0, -1)  # membership only
        rows = np.where(hit, self.order[at], -1)
        if self.values is not None:
            same = _np(pc.equal(values, self.values.take(pa.array(np.maximum(rows, 0)))))
            rows = np.where(same, rows, -1)
        return rows


# --- reading -------------------------------------------------------------------------------


class _Span(io.RawIOBase):
    """Bytes ``start`` .. ``end`` of a file, as a readable stream."""

    def __init__(self, path: Path, start: int, end: int):
        self._handle = path.open("rb")
        self._handle.seek(start)
        self._left = end - start

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer)[: self._left]
        n = self._handle.readinto(view) or 0
        self._left -= n
        return n

    def close(self) -> None:
        self._handle.close()
        super().close()


@dataclass(frozen=True)
class _Source:
    """One bundle file as CSV text: ``start`` after a byte-order mark, ``end`` before trailing blank
    lines (they are not rows), and the header's column names (trimmed)."""

    path: Path
    spec: TableSpec
    start: int
    end: int
    names: tuple[str, ...]

    def batches(self, batch_bytes: int, columns: Iterable[str] | None = None) -> Iterator[dict[str, pa.ChunkedArray]]:
        """The rows, about ``batch_bytes`` of CSV at a time, as trimmed text per bundle column (a
        column the header lacks is blank); ``columns``: only these. Raises :class:`_Broken`."""
        wanted = list(self.spec.column_names if columns is None else columns)
        positional = [f"c{i}" for i in range(len(self.names))]  # header names may be blank or odd
        by_name = {name: f"c{i}" for i, name in enumerate(self.names) if name in wanted}
        invalid: list[int] = []

        def on_invalid(row) -> str:
            invalid.append(row.actual_columns)
            return "skip"

        try:
            reader = pacsv.open_csv(
                _Span(self.path, self.start, self.end),
                read_options=pacsv.ReadOptions(column_names=positional, skip_rows=1, block_size=batch_bytes),
                parse_options=pacsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False, invalid_row_handler=on_invalid),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.large_string() for c in positional},
                    # Every column of the file is converted (so checked as UTF-8) unless only some are asked for.
                    include_columns=None if columns is None else list(by_name.values()),
                    strings_can_be_null=False, quoted_strings_can_be_null=False,
                ),
            )
            for batch in reader:
                if invalid:
                    raise _Broken
                n = batch.num_rows
                out = {}
                for name in wanted:
                    if name in by_name:
                        out[name] = pc.ascii_trim_whitespace(pa.chunked_array([batch.column(by_name[name])]))
                    else:
                        out[name] = pa.chunked_array([pa.array([""] * n, type=pa.large_string())])
                yield out
            if invalid:
                raise _Broken
        except (pa.ArrowInvalid, ValueError) as exc:
            raise _Broken from exc


def _text_span(path: Path) -> tuple[int, int]:
    """(start, end) of the CSV text: after a byte-order mark (as Excel writes), before trailing blank lines."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        start = 3 if handle.read(3) == b"\xef\xbb\xbf" else 0
        handle.seek(max(start, size - 4))
        tail = handle.read()
        if not (tail.endswith(b"\n\n") or tail.endswith(b"\r\n\r\n")):
            return start, size
        end = size
        while end > start:  # walk back over the newlines
            step = min(end - start, 1 << 16)
            handle.seek(end - step)
            kept = len(handle.read(step).rstrip(b"\r\n"))
            end -= step - kept
            if kept:
                break
    return start, end


def _read_header(path: Path, spec: TableSpec, start: int, end: int, report: ImportReport) -> tuple[str, ...] | None:
    """The header's column names (trimmed), after checking them; None (with errors) if unusable.

    Raises :class:`_Broken` when the header is not UTF-8.
    """
    file = spec.file
    line = header_line(path, start)
    if line is None:
        report.add_error(file, 1, None, f"the header line is longer than {MAX_HEADER_BYTES:,} bytes; not a CSV table")
        return None
    if end <= start or not line.strip():
        report.add_error(file, 1, None, "file is empty (no header row)")
        return None
    try:
        header = next(csv.reader([line.decode("utf-8")]), [])
    except UnicodeDecodeError as exc:
        raise _Broken from exc
    names = tuple(h.strip() for h in header)
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
    return None if problems else names


def _check_utf8(path: Path, file: str, report: ImportReport) -> bool:
    """Report each line holding bytes that are not UTF-8 (file, line, column name); True if clean.

    Reads the file in chunks of whole lines, so memory stays bounded.
    """
    header: list[str] | None = None
    found, lines_before, carry = 0, 0, b""
    with path.open("rb") as handle:
        if handle.read(3) != b"\xef\xbb\xbf":
            handle.seek(0)
        while found < MAX_BAD_BYTES_PER_FILE:
            block = handle.read(UTF8_CHUNK_BYTES)
            data, carry = carry + block, b""
            if not data:
                break
            if block:  # keep the last, maybe partial, line for the next chunk
                cut = data.rfind(b"\n") + 1
                if not cut:
                    carry = data
                    continue
                data, carry = data[:cut], data[cut:]
            if header is None:
                header_end = data.find(b"\n")
                header_line = data[: header_end if header_end >= 0 else len(data)].decode("utf-8", errors="replace")
                header = next(csv.reader([header_line]), [])
            found += _bad_utf8_lines(data, lines_before, header, file, report, MAX_BAD_BYTES_PER_FILE - found)
            lines_before += data.count(b"\n")
    return found == 0


def _bad_utf8_lines(data: bytes, lines_before: int, header: list[str], file: str, report: ImportReport, limit: int) -> int:
    """Report up to ``limit`` lines of ``data`` (whole lines, the first being file line
    ``lines_before + 1``) that hold bytes that are not UTF-8; returns how many."""
    pos, found = 0, 0
    while pos < len(data) and found < limit:
        try:
            data[pos:].decode("utf-8")
            break
        except UnicodeDecodeError as exc:
            bad = pos + exc.start
        line_start = data.rfind(b"\n", 0, bad) + 1
        line = lines_before + data.count(b"\n", 0, bad) + 1
        prefix = data[line_start:bad].decode("utf-8", errors="replace")
        index = max(len(next(csv.reader([prefix]), [""])) - 1, 0) if prefix else 0
        column = header[index].strip() if index < len(header) else None
        report.add_error(file, line, column, f"not valid UTF-8 (byte 0x{data[bad]:02x}); save the file as UTF-8")
        found += 1
        line_end = data.find(b"\n", bad)
        pos = len(data) if line_end < 0 else line_end + 1
    return found


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


def _check_column(raw: dict[str, pa.ChunkedArray], column: Column, catalog: Catalog, today: date,
                  issues: "_Issues") -> pd.Series:
    """Parse one column to its type, reporting every bad value; returns the typed series."""
    s = raw[column.name]
    blank = _np(pc.equal(s, ""))
    if column.required:
        issues.flag(blank, column.name, "required value is missing")
    if column.type in ("date", "month"):
        fmt, what = ("%Y-%m-%d", "not a date (expected YYYY-MM-DD)") if column.type == "date" else ("%Y-%m", "not a month (expected YYYY-MM)")
        values, valid = _parse_dates(s, fmt)
        issues.flag(~blank & ~valid, column.name, what, s)
        out_of_range = valid & ((values < np.datetime64(EARLIEST_DATE)) | (values > np.datetime64(LATEST_DATE)))
        issues.flag(out_of_range, column.name, f"date outside {EARLIEST_DATE} .. {LATEST_DATE}", s)
        if column.type == "date" and (issues.file, column.name) not in FUTURE_ALLOWED:
            future = valid & ~out_of_range & (values > np.datetime64(today))
            issues.flag(future, column.name, f"date is in the future (after {today.isoformat()})", s)
        elif column.type == "month":
            future = valid & ~out_of_range & (values > np.datetime64(as_month(today)))
            issues.flag(future, column.name, "month is in the future", s, level="warning")
        values[out_of_range] = np.datetime64("NaT")
        return pd.Series(values)
    if column.type in ("int", "float"):
        values = _parse_numbers(s, blank)
        valid = np.isfinite(values)
        if column.type == "int":
            valid &= np.mod(np.nan_to_num(values), 1) == 0
        issues.flag(~blank & ~valid, column.name, "not a whole number" if column.type == "int" else "not a number", s)
        outside = np.zeros(len(values), dtype=bool)
        if column.min is not None:
            low = valid & (values < column.min)
            issues.flag(low, column.name, f"must be at least {column.min:,.10g}", s)
            outside |= low
        if column.max is not None:
            high = valid & (values > column.max)
            issues.flag(high, column.name, f"must be at most {column.max:,.10g}", s)
            outside |= high
        if column.type == "int":  # the store holds 64-bit integers (1e23 is a whole number, but not one of them)
            huge = valid & (np.abs(np.nan_to_num(values)) >= 2.0**63)
            issues.flag(huge & ~outside, column.name, "too large for a whole number", s)
            valid &= ~huge
        typed = pd.Series(np.where(valid, values, np.nan))
        return typed.astype("Int64") if column.type == "int" else typed
    if column.type == "bool":
        lower = pc.utf8_lower(s)
        true, false = _isin(lower, BOOL_TRUE), _isin(lower, BOOL_FALSE)
        issues.flag(~blank & ~true & ~false, column.name, "not true/false (also 1/0, yes/no)", s)
        values = np.full(len(s), None, dtype=object)
        values[true] = True
        values[false] = False
        return pd.Series(values, dtype=object)
    # text
    if column.max_len is not None:
        too_long = _np(pc.greater(pc.utf8_length(s), column.max_len))
        issues.flag(too_long, column.name, f"longer than {column.max_len} characters", s)
    if column.choices:
        allowed = _vocabulary(catalog, column.choices)
        unknown = ~blank & ~_isin(s, allowed)
        listed = ", ".join(allowed[:12]) + (", ..." if len(allowed) > 12 else "")
        issues.flag(unknown, column.name, f"not a known {column.choices} value (allowed: {listed})", s)
    if column.pattern:
        matches = _np(pc.match_substring_regex(s, f"^(?:{column.pattern})$"))
        issues.flag(~blank & ~matches, column.name, f"not {PATTERN_NAMES.get(column.pattern, 'in the expected format')}", s)
    return pc.if_else(pa.array(blank), pa.scalar(None, type=s.type), s.combine_chunks()).to_pandas()


def _date_order(batch: _Batch, issues: _Issues) -> None:
    for file, later, earlier, level, message in DATE_ORDER_RULES:
        if file == batch.name:
            bad = (batch.typed[later] < batch.typed[earlier]).to_numpy(dtype=bool)
            issues.flag(bad, later, message, batch.raw[later], level=level)


def _measurement_range(batch: _Batch, catalog: Catalog, issues: _Issues) -> None:
    if batch.name != "measurements.csv":
        return
    codes = list(catalog.codes)
    pos = _index_in(batch.raw["code"], codes)
    low = np.append([catalog.codes[c].min for c in codes], np.nan)[pos]
    high = np.append([catalog.codes[c].max for c in codes], np.nan)[pos]
    value = batch.typed["value"].to_numpy(dtype="float64", na_value=np.nan)
    outside = (value < low) | (value > high)
    reason = "value outside the plausible range of its code (catalogue min..max)"
    n = issues.flag(outside, "value", f"{reason}; row skipped", level="warning")
    issues.report.add_skipped(batch.spec.table, reason, n)
    batch.keep &= ~outside


def _claim_credits(batch: _Batch, catalog: Catalog, report: ImportReport) -> None:
    """Count the external encounters (claims, already netted) and the credits among them (paid below 0)."""
    if batch.name != "encounters.csv":
        return
    internal = {k.kind for k in catalog.activity_kinds.values() if k.internal}
    external = ~_isin(batch.raw["kind"], sorted(internal)) & batch.keep
    paid = batch.typed["paid_usd"].to_numpy(dtype="float64", na_value=0.0)
    credit = external & (paid < 0)
    figures = report.claims
    figures.claims += int(external.sum())
    figures.lines += int(external.sum())
    figures.credits += int(credit.sum())
    figures.credits_usd += float(paid[credit].sum())
    limit = load_claim_rules().examples
    for encounter_id in batch.raw["encounter_id"].to_numpy(zero_copy_only=False)[credit][:limit]:
        figures.example("credits", str(encounter_id), limit)


def _has_duplicate_key(raw: dict[str, pa.ChunkedArray], key: tuple[str, ...]) -> bool:
    joined = raw[key[0]]
    for k in key[1:]:
        joined = pc.binary_join_element_wise(joined, raw[k], pa.scalar("\x1f", type=joined.type))
    return pc.count_distinct(joined).as_py() < len(joined)


# --- frames ----------------------------------------------------------------------------------


def _frame(batch: _Batch, catalog: Catalog) -> pd.DataFrame:
    """The typed frame for the loader (model field names), skipped rows removed."""
    out = pd.DataFrame(batch.typed)
    if batch.spec.table == "encounter":
        kinds = list(catalog.activity_kinds.values())
        pos = _index_in(batch.raw["kind"], [k.kind for k in kinds])
        out["is_internal"] = np.array([k.internal for k in kinds], dtype=bool)[pos]
        default = pd.Series(np.array([k.category for k in kinds], dtype=object)[pos])
        out["cost_category"] = out["cost_category"].astype(object).where(out["cost_category"].notna(), default)
    if not batch.keep.all():
        out = out[batch.keep].reset_index(drop=True)
    return out


# --- the import ------------------------------------------------------------------------------


def _table_column(table_name: str, column: str):
    from sqlmodel import SQLModel

    return SQLModel.metadata.tables[table_name].c[column]


class _BundleImport:
    """One streaming import: reads the files in order, checks each batch and writes it while the
    report has no error; holds what the checks carry from batch to batch and file to file."""

    def __init__(self, folder: Path, load: Load, catalog: Catalog, today: date, batch_bytes: int):
        self.folder, self.load, self.report = folder, load, load.report
        self.catalog, self.today, self.batch_bytes = catalog, today, batch_bytes
        self.keys: dict[str, _Keys] = {}  # referenced file -> its keys
        self.unusable: set[str] = set()  # files missing or unreadable: references to them are not checked
        nat = np.array([np.datetime64("NaT")], dtype="datetime64[s]")
        self.births, self.deaths = nat, nat  # of the bundle's patients in file order, then NaT (position -1)
        self.duplicate_seen = False  # a duplicate key found in a batch is reported when its file is done

    @property
    def writing(self) -> bool:
        return self.report.ok and not self.duplicate_seen

    def run(self) -> None:
        for spec in BUNDLE:
            self._read_file(spec)
        self.load.commit()

    def _read_file(self, spec: TableSpec) -> None:
        report = self.report
        path = self.folder / spec.file
        if path.exists() and not check_csv_file(path, spec.file, report):
            self.unusable.add(spec.file)
            return
        if not path.exists():
            if spec.required_file:
                report.add_error(spec.file, None, None, "required file is missing")
                self.unusable.add(spec.file)
            return
        checkpoint = report.checkpoint()
        try:
            start, end = _text_span(path)
            names = _read_header(path, spec, start, end, report)
            if names is None:
                self.unusable.add(spec.file)
                return
            self._read_rows(_Source(path, spec, start, end, names))
        except _Broken:
            # What the file's first batches reported gives way to why the file cannot be read.
            report.restore(checkpoint)
            self._diagnose(path, spec)
            self.unusable.add(spec.file)

    def _diagnose(self, path: Path, spec: TableSpec) -> None:
        report = self.report
        if not _check_utf8(path, spec.file, report):
            return
        start, end = _text_span(path)
        errors_before = report.error_count
        names = _read_header(path, spec, start, end, report)
        if names is not None:
            with io.TextIOWrapper(io.BufferedReader(_Span(path, start, end)), encoding="utf-8", newline="") as text:
                diagnose_csv_structure(text, len(names), spec.file, report)
        if report.error_count == errors_before:
            report.add_error(spec.file, None, None, "malformed CSV (could not be parsed)")

    def _read_rows(self, source: _Source) -> None:
        """Check and write the file batch by batch, then check its keys for duplicates."""
        spec = source.spec
        issues = _Issues(self.report, spec.file)
        if self.writing:
            self.load.start_table(spec.table)
        referenced, patients = spec.file in REFERENCED, spec.file == "patients.csv"
        hashes: list[np.ndarray] = []
        key_values: list[pa.ChunkedArray] | None = [] if referenced else None
        births, deaths = [], []
        rows = 0
        for raw in source.batches(self.batch_bytes):
            n = len(raw[spec.columns[0].name])
            issues.first = rows
            typed = {c.name: _check_column(raw, c, self.catalog, self.today, issues) for c in spec.columns}
            batch = _Batch(spec, raw, typed, np.ones(n, dtype=bool))
            hashes.append(_key_hash(raw, spec.key))
            if len(np.unique(hashes[-1])) < n and _has_duplicate_key(raw, spec.key):
                self.duplicate_seen = True
            if key_values is not None:
                key_values.append(raw[spec.key[0]])
                if rows + n > EXACT_KEYS_MAX_ROWS:
                    key_values = None
            if patients:
                births.append(typed["birth_date"].to_numpy(dtype="datetime64[s]"))
                deaths.append(typed["death_date"].to_numpy(dtype="datetime64[s]"))
            self._references(batch, issues)
            _date_order(batch, issues)
            self._life_span(batch, issues)
            _measurement_range(batch, self.catalog, issues)
            _claim_credits(batch, self.catalog, self.report)
            if self.writing:
                self.load.write(_frame(batch, self.catalog))
            rows += n
        all_hashes = np.concatenate(hashes) if hashes else np.empty(0, dtype=np.uint64)
        del hashes
        keys = None
        if referenced:
            values = pa.chunked_array(key_values, type=pa.large_string()).combine_chunks() if key_values is not None else None
            keys = _Keys(all_hashes, values, positions=patients)
            sorted_hashes = keys.sorted
        else:
            all_hashes.sort()
            sorted_hashes = all_hashes
        self._duplicates(source, sorted_hashes)
        issues.flush()
        if keys is not None:
            self.keys[spec.file] = keys
        if patients:
            nat = np.array([np.datetime64("NaT")], dtype="datetime64[s]")
            self.births, self.deaths = np.concatenate([*births, nat]), np.concatenate([*deaths, nat])

    def _duplicates(self, source: _Source, sorted_hashes: np.ndarray) -> None:
        """Report each row whose key an earlier row of the file already has.

        Rows sharing a hash are read again to compare their key values (a hash can collide).
        """
        same = sorted_hashes[1:] == sorted_hashes[:-1]
        if not same.any():
            return  # fast path: every key unique
        suspects = np.unique(sorted_hashes[1:][same])
        key = list(source.spec.key)
        parts, first = [], 0
        for raw in source.batches(self.batch_bytes, columns=key):
            hit = np.flatnonzero(np.isin(_key_hash(raw, source.spec.key), suspects))
            if len(hit):
                parts.append(pd.DataFrame({k: raw[k].take(pa.array(hit)).to_pylist() for k in key}, index=hit + first))
            first += len(raw[key[0]])
        raw = pd.concat(parts)  # index: row in the file (0-based)
        dup = raw.duplicated(keep="first").to_numpy()
        if not dup.any():
            return  # only hash collisions
        report = self.report
        first_rows = raw[~dup].copy()
        first_rows["_first_row"] = raw.index[~dup] + FIRST_DATA_ROW
        shown = raw[dup].iloc[: max(report.errors_left(), 1)]
        firsts = shown.merge(first_rows, on=key, how="left")["_first_row"].to_numpy()
        for (i, values), first_row in zip(shown.iterrows(), firsts, strict=True):
            what = ", ".join(f"{k}={v!r}" for k, v in values.items())
            report.add_error(source.spec.file, int(i) + FIRST_DATA_ROW, key[-1] if len(key) == 1 else ",".join(key),
                             f"duplicate key {what} (first on row {int(first_row)})")
        report.errors_not_shown += int(dup.sum()) - len(shown)

    def _existing_in_db(self, table_name: str, column: str, values: list[str]) -> set[str]:
        """Which of ``values`` exist in ``table.column`` of the store (chunked ``IN`` with bound parameters)."""
        col = _table_column(table_name, column)
        found: set[str] = set()
        for start in range(0, len(values), DB_LOOKUP_CHUNK):
            chunk = values[start : start + DB_LOOKUP_CHUNK]
            found.update(self.load.conn.execute(select(col).where(col.in_(chunk))).scalars())
        return found

    def _references(self, batch: _Batch, issues: _Issues) -> None:
        for column in batch.spec.columns:
            if not column.ref:
                continue
            target_file, target_column = column.ref.rsplit(".", 1)
            target_file += "" if target_file.endswith(".csv") else ".csv"  # ref is "patients.patient_id"
            if target_file in self.unusable:
                continue  # already reported; do not bury the cause under dangling references
            values = batch.raw[column.name]
            present = ~_np(pc.equal(values, ""))
            keys = self.keys.get(target_file)  # every reference names its target's key
            known = keys.positions(values) >= 0 if keys is not None else np.zeros(len(values), dtype=bool)
            missing = present & ~known
            if missing.any():
                candidates = pc.unique(values.filter(pa.array(missing))).to_pylist()
                in_db = self._existing_in_db(BY_FILE[target_file].table, target_column, candidates)
                if in_db:
                    missing &= ~_isin(values, list(in_db))
                issues.flag(missing, column.name, f"no {target_file} row (and no row in the database) with this {target_column}", values)

    def _patient_dates(self, ids: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """birth_date and death_date (datetime64[s], NaT if unknown) of each patient: the bundle's, else the store's."""
        keys = self.keys.get("patients.csv")
        pos = keys.positions(ids) if keys is not None else np.full(len(ids), -1)
        births, deaths = self.births[pos], self.deaths[pos]
        outside = pos < 0
        if outside.any():
            others = sorted(set(pc.unique(ids.filter(pa.array(outside))).to_pylist()) - {""})
            t = _table_column("patient", "patient_id").table
            stored: dict[str, tuple] = {}
            for start in range(0, len(others), DB_LOOKUP_CHUNK):
                chunk = others[start : start + DB_LOOKUP_CHUNK]
                query = select(t.c.patient_id, t.c.birth_date, t.c.death_date).where(t.c.patient_id.in_(chunk))
                stored.update((pid, (birth, death)) for pid, birth, death in self.load.conn.execute(query))
            if stored:
                at = _index_in(ids, list(stored))
                take = outside & (at >= 0)
                births[take] = np.array([b or "NaT" for b, _ in stored.values()], dtype="datetime64[s]")[at[take]]
                deaths[take] = np.array([d or "NaT" for _, d in stored.values()], dtype="datetime64[s]")[at[take]]
        return births, deaths

    def _life_span(self, batch: _Batch, issues: _Issues) -> None:
        """Events after death or before birth (warnings); attribution outside the life span (skipped)."""
        file = batch.name
        columns = [column for f, column in EVENT_DATES if f == file]
        if not columns and file != "attribution.csv":
            return
        birth, death = self._patient_dates(batch.raw["patient_id"])
        for column in columns:
            when = batch.typed[column].to_numpy(dtype="datetime64[s]")
            issues.flag(when > death, column, "date is after the patient's death_date", level="warning")
            issues.flag(when < birth, column, "date is before the patient's birth_date", level="warning")
        if file == "attribution.csv":
            month = batch.typed["month"].to_numpy(dtype="datetime64[s]")
            after = month > death.astype("datetime64[M]").astype("datetime64[s]")
            before = month < birth.astype("datetime64[M]").astype("datetime64[s]")
            for mask, reason in ((after, "month after the month of the patient's death"),
                                 (before, "month before the month of the patient's birth")):
                n = issues.flag(mask & batch.keep, "month", f"attribution {reason}; row skipped", level="warning")
                issues.report.add_skipped(batch.spec.table, reason, n)
                batch.keep &= ~mask


def import_bundle(engine: Engine, path: Path, today: date | None = None, batch_bytes: int = BATCH_BYTES) -> ImportReport:
    """Validate the bundle folder ``path`` and load it into ``engine`` all or nothing; returns the report.

    References resolve to rows of the bundle or already in the store; ``today`` bounds clinical
    dates (default: today's date); ``batch_bytes``: CSV bytes read, checked and written at a time.
    """
    path = Path(path)
    report = ImportReport(source=str(path), format="csv")
    if not path.is_dir():
        report.add_error(str(path), None, None, "not a folder (a CSV bundle is a folder of CSV files)")
        return report
    known_files = {spec.file for spec in BUNDLE} | {MANIFEST_FILE}
    for extra in sorted(p.name for p in path.iterdir() if p.suffix.lower() == ".csv" and p.name not in known_files):
        report.add_warning(extra, None, None, "file is not part of the bundle; ignored")
    try:
        with open_load(engine, report) as load:
            _BundleImport(path, load, load_catalog(), today or date.today(), batch_bytes).run()
    except LoadFailed:
        pass  # the database refused a write: the error is in the report and nothing was written
    return report
