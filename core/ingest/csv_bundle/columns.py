"""The checks of one batch: each column parsed to its type with every bad value reported, the
order of dates in a row, measurement ranges, claim credits; and the typed frame for the loader."""

from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.config.catalog import Catalog
from core.ingest.bundle_schema import EARLIEST_DATE, ICD10_PATTERN, LATEST_DATE, Column
from core.ingest.claims import load_claim_rules
from core.ingest.csv_bundle.batch import Batch, Issues, as_mask, index_in, isin
from core.ingest.report import ImportReport
from core.store.months import as_month

BOOL_TRUE = ("true", "1", "yes", "y", "t")
BOOL_FALSE = ("false", "0", "no", "n", "f")
# Date columns that may lie in the future: a medication's planned stop date.
FUTURE_ALLOWED = {("medications.csv", "end_date")}
PATTERN_NAMES = {ICD10_PATTERN: "an ICD-10-CM code such as E11.9 or E119"}

# (file, later column, earlier column, level, message): the later date must not precede the earlier.
DATE_ORDER_RULES = (
    ("patients.csv", "death_date", "birth_date", "error", "death_date is before birth_date"),
    ("conditions.csv", "resolved_date", "onset_date", "error", "resolved_date is before onset_date"),
    ("encounters.csv", "end_date", "start_date", "error", "end_date is before start_date"),
    ("medications.csv", "end_date", "start_date", "error", "end_date is before start_date"),
    ("encounters.csv", "responded_date", "start_date", "warning", "responded_date is before start_date"),
    ("encounters.csv", "start_date", "requested_date", "warning", "care started before it was requested (start_date < requested_date)"),
)


def _vocabulary(catalog: Catalog, name: str) -> list[str]:
    return list(getattr(catalog, name))


DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
# "%Y-%m-%d" / "%Y-%m": the width of a value, where its digits are, where its dashes are
DATE_SHAPES = {"%Y-%m-%d": (10, [0, 1, 2, 3, 5, 6, 8, 9], [4, 7]), "%Y-%m": (7, [0, 1, 2, 3, 5, 6], [4])}


def _parse_dates(s: pa.ChunkedArray, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """Strictly parsed dates (datetime64[s], NaT if invalid) and the validity mask: exactly
    ``YYYY-MM-DD`` (or ``YYYY-MM``), a real month and a day the month has.

    A column whose values are all of the format's width or empty (every clean file) is read from
    its Arrow buffer as a table of digits: a few numpy operations, no parsing per value.
    Otherwise :func:`_parse_dates_by_arrow`."""
    arr = s.combine_chunks() if isinstance(s, pa.ChunkedArray) else s
    width, digit_at, dash_at = DATE_SHAPES[fmt]
    if not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
        return _parse_dates_by_arrow(s, fmt)
    n = len(arr)
    _, offsets_buffer, data_buffer = arr.buffers()
    offset_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type, count=n + 1, offset=arr.offset * np.dtype(offset_type).itemsize)
    lengths = np.diff(offsets)
    full = lengths == width
    if not (full | (lengths == 0)).all():
        return _parse_dates_by_arrow(s, fmt)
    values = np.full(n, np.datetime64("NaT"), dtype="datetime64[s]")
    valid = np.zeros(n, dtype=bool)
    if not full.any():
        return values, valid
    # the values of full width lie end to end in the data buffer (empty ones take no bytes)
    text = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]].reshape(-1, width)
    digits = text[:, digit_at] - np.uint8(ord("0"))  # a byte below "0" wraps round to a large number
    ok = (digits < 10).all(axis=1) & (text[:, dash_at] == ord("-")).all(axis=1)
    d = digits.astype(np.int64)
    year = d[:, 0] * 1000 + d[:, 1] * 100 + d[:, 2] * 10 + d[:, 3]
    month = d[:, 4] * 10 + d[:, 5]
    ok &= (month >= 1) & (month <= 12)
    months = (year - 1970) * 12 + np.clip(month, 1, 12) - 1
    parsed = months.astype("datetime64[M]").astype("datetime64[D]")
    if fmt == "%Y-%m-%d":
        day = d[:, 6] * 10 + d[:, 7]
        leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
        ok &= (day >= 1) & (day <= DAYS_IN_MONTH[np.clip(month, 1, 12) - 1] + ((month == 2) & leap))
        parsed = parsed + (day - 1).astype("timedelta64[D]")
    if arr.null_count:
        ok &= as_mask(pc.is_valid(arr))[full]
    valid[full] = ok
    values[full] = np.where(ok, parsed.astype("datetime64[s]"), np.datetime64("NaT"))
    return values, valid


def _parse_dates_by_arrow(s: pa.ChunkedArray, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_parse_dates` for any column, through Arrow's regular expressions and strptime.
    Arrow's strptime accepts 2024-1-5 and rolls 2024-02-30 over to March 1, so a value must also
    have the exact shape and (for dates) keep its day of month.
    """
    shape = as_mask(pc.match_substring_regex(s, r"^\d{4}-\d{2}-\d{2}$" if fmt == "%Y-%m-%d" else r"^\d{4}-\d{2}$"))
    parsed = pc.strptime(s, format=fmt, unit="s", error_is_null=True)
    valid = shape & as_mask(pc.is_valid(parsed))
    if fmt == "%Y-%m-%d":
        day_text = pc.if_else(pa.array(valid), pc.utf8_slice_codeunits(s.combine_chunks(), 8, 10), pa.scalar("0", type=s.type))
        valid &= as_mask(pc.equal(pc.day(parsed), pc.cast(day_text, pa.int64())))
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


def check_column(raw: dict[str, pa.ChunkedArray], column: Column, catalog: Catalog, today: date,
                 issues: Issues) -> pd.Series:
    """Parse one column to its type, reporting every bad value; returns the typed series."""
    s = raw[column.name]
    blank = as_mask(pc.equal(s, ""))
    if column.required:
        issues.flag(blank, column.name, "required value is missing")
    if column.type in ("date", "month"):
        return _check_dates(s, blank, column, today, issues)
    if column.type in ("int", "float"):
        return _check_numbers(s, blank, column, issues)
    if column.type == "bool":
        return _check_bool(s, blank, column, issues)
    return _check_text(s, blank, column, catalog, issues)


def _check_dates(s: pa.ChunkedArray, blank: np.ndarray, column: Column, today: date, issues: Issues) -> pd.Series:
    """A date or month column: format, the 1900..2100 range, and no future clinical dates."""
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


def _check_numbers(s: pa.ChunkedArray, blank: np.ndarray, column: Column, issues: Issues) -> pd.Series:
    """An int or float column: finite, whole for ints (and within 64 bits), within min/max."""
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


def _check_bool(s: pa.ChunkedArray, blank: np.ndarray, column: Column, issues: Issues) -> pd.Series:
    """A true/false column (also 1/0, yes/no)."""
    lower = pc.utf8_lower(s)
    true, false = isin(lower, BOOL_TRUE), isin(lower, BOOL_FALSE)
    issues.flag(~blank & ~true & ~false, column.name, "not true/false (also 1/0, yes/no)", s)
    values = np.full(len(s), None, dtype=object)
    values[true] = True
    values[false] = False
    return pd.Series(values, dtype=object)


def _check_text(s: pa.ChunkedArray, blank: np.ndarray, column: Column, catalog: Catalog, issues: Issues) -> pd.Series:
    """A text column: length, catalogue vocabulary, pattern; blanks become missing values."""
    if column.max_len is not None:
        too_long = as_mask(pc.greater(pc.utf8_length(s), column.max_len))
        issues.flag(too_long, column.name, f"longer than {column.max_len} characters", s)
    if column.choices:
        allowed = _vocabulary(catalog, column.choices)
        unknown = ~blank & ~isin(s, allowed)
        listed = ", ".join(allowed[:12]) + (", ..." if len(allowed) > 12 else "")
        issues.flag(unknown, column.name, f"not a known {column.choices} value (allowed: {listed})", s)
    if column.pattern:
        matches = as_mask(pc.match_substring_regex(s, f"^(?:{column.pattern})$"))
        issues.flag(~blank & ~matches, column.name, f"not {PATTERN_NAMES.get(column.pattern, 'in the expected format')}", s)
    return pc.if_else(pa.array(blank), pa.scalar(None, type=s.type), s.combine_chunks()).to_pandas()


def check_date_order(batch: Batch, issues: Issues) -> None:
    for file, later, earlier, level, message in DATE_ORDER_RULES:
        if file == batch.name:
            bad = (batch.typed[later] < batch.typed[earlier]).to_numpy(dtype=bool)
            issues.flag(bad, later, message, batch.raw[later], level=level)


def check_measurement_range(batch: Batch, catalog: Catalog, issues: Issues) -> None:
    if batch.name != "measurements.csv":
        return
    codes = list(catalog.codes)
    pos = index_in(batch.raw["code"], codes)
    low = np.append([catalog.codes[c].min for c in codes], np.nan)[pos]
    high = np.append([catalog.codes[c].max for c in codes], np.nan)[pos]
    value = batch.typed["value"].to_numpy(dtype="float64", na_value=np.nan)
    outside = (value < low) | (value > high)
    reason = "value outside the plausible range of its code (catalogue min..max)"
    n = issues.flag(outside, "value", f"{reason}; row skipped", level="warning")
    issues.report.add_skipped(batch.spec.table, reason, n)
    batch.keep &= ~outside


def count_claim_credits(batch: Batch, catalog: Catalog, report: ImportReport) -> None:
    """Count the external encounters (claims, already netted) and the credits among them (paid below 0)."""
    if batch.name != "encounters.csv":
        return
    internal = {k.kind for k in catalog.activity_kinds.values() if k.internal}
    external = ~isin(batch.raw["kind"], sorted(internal)) & batch.keep
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


def typed_frame(batch: Batch, catalog: Catalog) -> pd.DataFrame:
    """The typed frame for the loader (model field names), skipped rows removed."""
    out = pd.DataFrame(batch.typed)
    if batch.spec.table == "encounter":
        kinds = list(catalog.activity_kinds.values())
        pos = index_in(batch.raw["kind"], [k.kind for k in kinds])
        out["is_internal"] = np.array([k.internal for k in kinds], dtype=bool)[pos]
        default = pd.Series(np.array([k.category for k in kinds], dtype=object)[pos])
        out["cost_category"] = out["cost_category"].astype(object).where(out["cost_category"].notna(), default)
    if not batch.keep.all():
        out = out[batch.keep].reset_index(drop=True)
    return out


