"""A batch of rows of one bundle file (:class:`Batch`), where its problems go (:class:`Issues`: errors
at their spreadsheet row, warnings tallied per file), and the Arrow helpers the checks share."""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.ingest.bundle_schema import TableSpec
from core.ingest.report import ImportReport

FIRST_DATA_ROW = 2  # header is spreadsheet row 1
MAX_WARNING_ROWS = 5  # a warning lists this many of its rows


@dataclass
class Batch:
    """Some consecutive rows of one bundle file: trimmed text per column (Arrow) and the typed values (pandas)."""

    spec: TableSpec
    raw: dict[str, pa.ChunkedArray]
    typed: dict[str, pd.Series]
    keep: np.ndarray  # rows to load (False: skipped with a reason)

    @property
    def name(self) -> str:
        return self.spec.file


def as_mask(mask) -> np.ndarray:
    """An Arrow boolean result as a numpy bool array (nulls -> False)."""
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False).astype(bool)


def _shown(values: pa.ChunkedArray, i: int) -> str:
    text = str(values[int(i)].as_py())
    return repr(text if len(text) <= 40 else text[:37] + "...")


class Issues:
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


def isin(values: pa.ChunkedArray, allowed) -> np.ndarray:
    """Vectorised membership with Arrow (pandas' ``isin`` on Arrow strings is slow for big sets)."""
    if not isinstance(allowed, pa.ChunkedArray | pa.Array):
        allowed = pa.array([str(a) for a in allowed], type=pa.large_string())
    value_set = pc.unique(allowed.cast(values.type))
    if isinstance(value_set, pa.ChunkedArray):
        value_set = value_set.combine_chunks()
    return as_mask(pc.is_in(values, value_set=value_set))


def index_in(values: pa.ChunkedArray, keys) -> np.ndarray:
    """Position of each value in ``keys`` (-1 when absent)."""
    if not isinstance(keys, pa.ChunkedArray | pa.Array):
        keys = pa.array([str(k) for k in keys], type=pa.large_string())
    keys = keys.cast(values.type)
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    return pc.fill_null(pc.index_in(values, value_set=keys), -1).to_numpy(zero_copy_only=False)


