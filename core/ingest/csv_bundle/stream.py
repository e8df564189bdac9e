"""Reading a bundle file: its text span (BOM and trailing blank lines left out), its header, its
UTF-8 check, and :class:`Source`, which yields batches of rows through pyarrow's CSV reader."""

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from core.ingest.bundle_schema import TableSpec
from core.ingest.checks import MAX_HEADER_BYTES, header_line
from core.ingest.report import ImportReport

MAX_BAD_BYTES_PER_FILE = 20
UTF8_CHUNK_BYTES = 16 << 20


class Broken(Exception):
    """The file cannot be read as UTF-8 CSV past some row; it is diagnosed by a slower reader."""


class Span(io.RawIOBase):
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
class Source:
    """One bundle file as CSV text: ``start`` after a byte-order mark, ``end`` before trailing blank
    lines (they are not rows), and the header's column names (trimmed)."""

    path: Path
    spec: TableSpec
    start: int
    end: int
    names: tuple[str, ...]

    def batches(self, batch_bytes: int, columns: Iterable[str] | None = None) -> Iterator[dict[str, pa.ChunkedArray]]:
        """The rows, about ``batch_bytes`` of CSV at a time, as trimmed text per bundle column (a
        column the header lacks is blank); ``columns``: only these. Raises :class:`Broken`."""
        wanted = list(self.spec.column_names if columns is None else columns)
        positional = [f"c{i}" for i in range(len(self.names))]  # header names may be blank or odd
        by_name = {name: f"c{i}" for i, name in enumerate(self.names) if name in wanted}
        invalid: list[int] = []

        def on_invalid(row) -> str:
            invalid.append(row.actual_columns)
            return "skip"

        try:
            reader = pacsv.open_csv(
                Span(self.path, self.start, self.end),
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
                    raise Broken
                n = batch.num_rows
                out = {}
                for name in wanted:
                    if name in by_name:
                        out[name] = pc.ascii_trim_whitespace(pa.chunked_array([batch.column(by_name[name])]))
                    else:
                        out[name] = pa.chunked_array([pa.array([""] * n, type=pa.large_string())])
                yield out
            if invalid:
                raise Broken
        except (pa.ArrowInvalid, ValueError) as exc:
            raise Broken from exc


def text_span(path: Path) -> tuple[int, int]:
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


def read_header(path: Path, spec: TableSpec, start: int, end: int, report: ImportReport) -> tuple[str, ...] | None:
    """The header's column names (trimmed), after checking them; None (with errors) if unusable.

    Raises :class:`Broken` when the header is not UTF-8.
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
        raise Broken from exc
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


def check_utf8(path: Path, file: str, report: ImportReport) -> bool:
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


