"""Checks every importer shares: values that cannot be real, and CSV files that cannot be read whole.

What counts as an error (the import is rejected, nothing is written):

- an amount that is not a finite number (``inf``, ``NaN``, ``1e999``) or whose size is beyond
  any single claim (:data:`MAX_AMOUNT_USD`, the bundle's ``encounters.csv`` ``paid_usd`` limit;
  ``1e308`` would make every total it enters infinite). Negative amounts are not errors here:
  reversals and adjustments are normal in claims feeds;
- a date after the extract date (:func:`extract_date`: the day of the import; no service,
  birth or death in the data can lie after the day the data were exported);
- an end before its start;
- a CSV file that is a folder, whose header line is longer than :data:`MAX_HEADER_BYTES`
  (a binary or one-line file, not a table), or whose rows do not all have the header's number of
  fields (a short last row or an unterminated quote: a truncated file).
"""

import csv
import io
import math
from collections.abc import Iterable
from datetime import date
from pathlib import Path

from core.ingest.bundle_schema import BY_FILE
from core.ingest.report import ImportReport

MAX_AMOUNT_USD = float(next(c.max for c in BY_FILE["encounters.csv"].columns if c.name == "paid_usd"))
MAX_HEADER_BYTES = 1 << 20  # a CSV header line longer than this is not a table's header
MAX_STRUCTURE_ERRORS = 20  # rows with a wrong number of fields listed per file


def extract_date() -> date:
    """The latest date imported data may hold: the day of the import."""
    return date.today()


def amount_problem(value: float) -> str | None:
    """Why ``value`` cannot be a paid amount in USD, or None when it can."""
    if not math.isfinite(value):
        return f"not a finite amount ({value})"
    if abs(value) > MAX_AMOUNT_USD:
        return f"amount {value:,.10g} is beyond any claim (more than {MAX_AMOUNT_USD:,.0f} USD)"
    return None


def header_line(path: Path, start: int = 0, max_bytes: int = MAX_HEADER_BYTES) -> bytes | None:
    """The first line of ``path`` from byte ``start`` (without its line break), read in linear
    time; None when it is longer than ``max_bytes``."""
    with path.open("rb") as handle:
        handle.seek(start)
        line = handle.readline(max_bytes + 1)
    if len(line) > max_bytes and not line.endswith(b"\n"):
        return None
    return line.rstrip(b"\r\n")


def check_csv_file(path: Path, file: str, report: ImportReport) -> bool:
    """Report a CSV "file" that is a folder or whose header line is over-long; True when readable."""
    if path.is_dir():
        report.add_error(file, None, None, "is a folder, not a CSV file")
        return False
    if header_line(path) is None:
        report.add_error(file, 1, None, f"the header line is longer than {MAX_HEADER_BYTES:,} bytes; not a CSV table")
        return False
    return True


def diagnose_csv_structure(lines: Iterable[str], width: int, file: str, report: ImportReport) -> int:
    """Report every row whose number of fields differs from ``width`` (the header's) and an
    unterminated quote at the end (a truncated file); returns the number of errors found."""
    reader = csv.reader(lines, strict=True)
    row, found = 0, 0
    try:
        for row, record in enumerate(reader, start=1):
            if row > 1 and len(record) != width:
                found += 1
                if found > MAX_STRUCTURE_ERRORS:
                    continue
                if not record:
                    report.add_error(file, row, None, "blank line")
                else:
                    report.add_error(file, row, None, f"{len(record)} field(s), expected {width} like the header"
                                     " (a value with a comma must be quoted; a short last row means a truncated file)")
    except csv.Error as exc:
        found += 1
        if "unexpected end of data" in str(exc):
            report.add_error(file, row + 1, None, "unterminated quote: the file ends inside a quoted value (truncated file?)")
        else:
            report.add_error(file, row + 1, None, f"malformed CSV: {exc}")
    if found > MAX_STRUCTURE_ERRORS:
        report.add_error(file, None, None, f"... and {found - MAX_STRUCTURE_ERRORS} more rows with a wrong number of fields")
    return found


def check_csv_structure(path: Path, file: str, report: ImportReport) -> bool:
    """Every row of the CSV file has the header's number of fields and no quote is left open
    (reported with its row); True when the file is whole. Call after :func:`check_csv_file`."""
    header = next(csv.reader([(header_line(path) or b"").decode("utf-8-sig", errors="replace")]), [])
    with path.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="") as text:
        return diagnose_csv_structure(text, len(header), file, report) == 0
