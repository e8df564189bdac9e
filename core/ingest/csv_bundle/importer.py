"""``import_bundle``: the files in dependency order, each batch checked and written into one open
transaction; references, duplicate keys and patients' life spans checked across batches and files."""

import io
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Engine, select

from core.config.catalog import Catalog, load_catalog
from core.ingest.bundle_schema import BUNDLE, BY_FILE, MANIFEST_FILE, TableSpec
from core.ingest.checks import check_csv_file, diagnose_csv_structure
from core.ingest.csv_bundle.batch import FIRST_DATA_ROW, Batch, Issues, as_mask, index_in, isin
from core.ingest.csv_bundle.columns import (
    check_column,
    check_date_order,
    check_measurement_range,
    count_claim_credits,
    typed_frame,
)
from core.ingest.csv_bundle.keys import Keys, has_duplicate_key, key_hash
from core.ingest.csv_bundle.stream import Broken, Source, Span, check_utf8, read_header, text_span
from core.ingest.loader import Load, LoadFailed, open_load
from core.ingest.report import ImportReport

BATCH_BYTES = 16 << 20  # CSV bytes read, checked and written at a time: what bounds an import's memory
# Files other files refer to keep their key values (for exact lookups) up to this many rows;
# bigger ones keep only the 64-bit hashes.
EXACT_KEYS_MAX_ROWS = 5_000_000
DB_LOOKUP_CHUNK = 1000

# (file, date column) of events checked against the patient's birth and death.
EVENT_DATES = (
    ("conditions.csv", "onset_date"),
    ("encounters.csv", "start_date"),
    ("measurements.csv", "measured_date"),
    ("medications.csv", "start_date"),
)
# Files whose keys other files refer to ("patients.csv"), from the declared references.
REFERENCED = {c.ref.rsplit(".", 1)[0] + ".csv" for spec in BUNDLE for c in spec.columns if c.ref}


def _table_column(table_name: str, column: str):
    from sqlmodel import SQLModel

    return SQLModel.metadata.tables[table_name].c[column]


class _BundleImport:
    """One streaming import: reads the files in order, checks each batch and writes it while the
    report has no error; holds what the checks carry from batch to batch and file to file."""

    def __init__(self, folder: Path, load: Load, catalog: Catalog, today: date, batch_bytes: int):
        self.folder, self.load, self.report = folder, load, load.report
        self.catalog, self.today, self.batch_bytes = catalog, today, batch_bytes
        self.keys: dict[str, Keys] = {}  # referenced file -> its keys
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
            start, end = text_span(path)
            names = read_header(path, spec, start, end, report)
            if names is None:
                self.unusable.add(spec.file)
                return
            self._read_rows(Source(path, spec, start, end, names))
        except Broken:
            # What the file's first batches reported gives way to why the file cannot be read.
            report.restore(checkpoint)
            self._diagnose(path, spec)
            self.unusable.add(spec.file)

    def _diagnose(self, path: Path, spec: TableSpec) -> None:
        report = self.report
        if not check_utf8(path, spec.file, report):
            return
        start, end = text_span(path)
        errors_before = report.error_count
        names = read_header(path, spec, start, end, report)
        if names is not None:
            with io.TextIOWrapper(io.BufferedReader(Span(path, start, end)), encoding="utf-8", newline="") as text:
                diagnose_csv_structure(text, len(names), spec.file, report)
        if report.error_count == errors_before:
            report.add_error(spec.file, None, None, "malformed CSV (could not be parsed)")

    def _read_rows(self, source: Source) -> None:
        """Check and write the file batch by batch, then check its keys for duplicates."""
        spec = source.spec
        issues = Issues(self.report, spec.file)
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
            typed = {c.name: check_column(raw, c, self.catalog, self.today, issues) for c in spec.columns}
            batch = Batch(spec, raw, typed, np.ones(n, dtype=bool))
            hashes.append(key_hash(raw, spec.key))
            ordered = np.sort(hashes[-1])  # (np.unique is far slower on 64-bit hashes)
            if (ordered[1:] == ordered[:-1]).any() and has_duplicate_key(raw, spec.key):
                self.duplicate_seen = True
            if key_values is not None:
                key_values.append(raw[spec.key[0]])
                if rows + n > EXACT_KEYS_MAX_ROWS:
                    key_values = None
            if patients:
                births.append(typed["birth_date"].to_numpy(dtype="datetime64[s]"))
                deaths.append(typed["death_date"].to_numpy(dtype="datetime64[s]"))
            self._references(batch, issues)
            check_date_order(batch, issues)
            self._life_span(batch, issues)
            check_measurement_range(batch, self.catalog, issues)
            count_claim_credits(batch, self.catalog, self.report)
            if self.writing:
                self.load.write(typed_frame(batch, self.catalog))
            rows += n
        all_hashes = np.concatenate(hashes) if hashes else np.empty(0, dtype=np.uint64)
        del hashes
        keys = None
        if referenced:
            values = pa.chunked_array(key_values, type=pa.large_string()).combine_chunks() if key_values is not None else None
            keys = Keys(all_hashes, values, positions=patients)
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

    def _duplicates(self, source: Source, sorted_hashes: np.ndarray) -> None:
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
            hit = np.flatnonzero(np.isin(key_hash(raw, source.spec.key), suspects))
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

    def _references(self, batch: Batch, issues: Issues) -> None:
        for column in batch.spec.columns:
            if not column.ref:
                continue
            target_file, target_column = column.ref.rsplit(".", 1)
            target_file += "" if target_file.endswith(".csv") else ".csv"  # ref is "patients.patient_id"
            if target_file in self.unusable:
                continue  # already reported; do not bury the cause under dangling references
            values = batch.raw[column.name]
            present = ~as_mask(pc.equal(values, ""))
            keys = self.keys.get(target_file)  # every reference names its target's key
            known = keys.positions(values) >= 0 if keys is not None else np.zeros(len(values), dtype=bool)
            missing = present & ~known
            if missing.any():
                candidates = pc.unique(values.filter(pa.array(missing))).to_pylist()
                in_db = self._existing_in_db(BY_FILE[target_file].table, target_column, candidates)
                if in_db:
                    missing &= ~isin(values, list(in_db))
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
                at = index_in(ids, list(stored))
                take = outside & (at >= 0)
                births[take] = np.array([b or "NaT" for b, _ in stored.values()], dtype="datetime64[s]")[at[take]]
                deaths[take] = np.array([d or "NaT" for _, d in stored.values()], dtype="datetime64[s]")[at[take]]
        return births, deaths

    def _life_span(self, batch: Batch, issues: Issues) -> None:
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


