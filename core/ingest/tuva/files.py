"""The Tuva input-layer files (``tuva_maps.toml``, finding ``name.csv`` / ``name_*.csv``) and
:class:`TuvaReader`: one import's state and its file-level readers (a CSV with its person key,
dates, amounts; bad values listed with their row)."""

from collections import defaultdict
from datetime import date
from functools import cache
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine

from core.config import config_path, load_toml
from core.config.catalog import load_catalog
from core.ingest.checks import MAX_AMOUNT_USD, amount_problem, check_csv_file, check_csv_structure, extract_date
from core.ingest.claims import load_claim_rules
from core.ingest.fhir.maps import load_fhir_maps
from core.ingest.report import ImportReport

MAPS_PATH = config_path("tuva_maps.toml")
FILES = ("eligibility", "medical_claim", "pharmacy_claim", "lab_result", "observation", "provider_attribution", "procedure",
         "immunization")
MAX_LISTED = 20  # bad values listed per file and column; the rest are counted in one message


@cache
def load_tuva_maps(path: Path = MAPS_PATH) -> dict:
    """The Tuva mapping tables (claims rules are in claims.toml: :func:`core.ingest.claims.load_claim_rules`)."""
    return load_toml(path)


def find_tuva_files(folder: Path) -> dict[str, Path]:
    """``{name: path}`` for the input-layer files in ``folder`` (``name.csv`` or ``name_*.csv``)."""
    found: dict[str, Path] = {}
    for p in sorted(folder.glob("*.csv")):
        stem = p.stem.lower()
        for name in FILES:
            if stem == name or (stem.startswith(name + "_") and name not in found):
                found[name] = p
    return found


def parse_dates(values: pd.Series) -> pd.Series:
    """``YYYY-MM-DD`` (time part ignored) -> ``date`` objects; blanks and bad values -> None."""
    text = values.str.strip().str[:10]
    parsed = pd.to_datetime(text, format="%Y-%m-%d", errors="coerce")
    out = parsed.dt.date.astype(object)
    out[parsed.isna()] = None
    return out


class TuvaReader:
    """One Tuva import: the mapping tables, the report, the output rows, who has eligibility, and
    the file-level readers (a CSV with its person key, dates, amounts, bad values listed)."""

    def __init__(self, folder: Path, engine: Engine | None):
        self.folder = folder
        self.engine = engine
        self.maps = load_tuva_maps()
        self.claim_rules = load_claim_rules()
        self.tobacco_text = load_fhir_maps()["tobacco_text"]
        self.catalog = load_catalog()
        self.report = ImportReport(source=str(folder), format="tuva")
        self.rows: dict[str, list[dict]] = defaultdict(list)
        self.persons: set[str] = set()  # person_id values with eligibility
        self.deaths: dict[str, date | None] = {}
        self.pcp_npi: dict[str, set[str]] = defaultdict(set)

    def read(self, name: str, path: Path) -> pd.DataFrame | None:
        """The CSV as strings with a ``_row`` (spreadsheet row) and ``_person`` column, or None on errors."""
        if not check_csv_file(path, path.name, self.report) or not check_csv_structure(path, path.name, self.report):
            return None
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8")
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            self.report.add_error(path.name, None, None, f"not a readable CSV file: {exc}")
            return None
        frame.columns = [c.strip().lower() for c in frame.columns]
        key = "person_id" if "person_id" in frame.columns else "patient_id" if "patient_id" in frame.columns else None
        missing = [c for c in self.maps["files"][name] if c not in frame.columns]
        if key is None:
            missing.insert(0, "person_id (or patient_id)")
        if missing:
            self.report.add_error(path.name, 1, missing[0], f"missing column(s): {', '.join(missing)}")
            return None
        frame["_row"] = range(2, len(frame) + 2)
        frame["_person"] = frame[key].str.strip()
        blank = frame[frame["_person"] == ""]
        self.list_bad(path.name, key, blank, "blank person key")
        return frame if blank.empty else None

    def list_bad(self, file: str, column: str, bad: pd.DataFrame, what: str, values: pd.Series | None = None) -> None:
        for i, (_, row) in enumerate(bad.iterrows()):
            if i == MAX_LISTED:
                self.report.add_error(file, None, column, f"... and {len(bad) - MAX_LISTED} more rows: {what}")
                break
            shown = f" {values.loc[row.name]!r}" if values is not None else ""
            self.report.add_error(file, int(row["_row"]), column, f"{what}{shown}")

    def dates(self, file: str, frame: pd.DataFrame, column: str, required: bool, label: str = "",
              future: bool = False) -> pd.Series:
        """Parsed dates of a column; bad values (and blanks when required) become errors, and so do
        dates after the extract date unless ``future`` (an enrolment's planned end)."""
        parsed = parse_dates(frame[column])
        blank = frame[column].str.strip() == ""
        bad = parsed.isna() & ~blank
        self.list_bad(file, label or column, frame[bad], "bad date (expected YYYY-MM-DD)", frame[column])
        if required:
            self.list_bad(file, label or column, frame[blank], "missing date")
        if not future:
            latest = extract_date()
            late = parsed.map(lambda d: d is not None and d > latest).astype(bool)
            self.list_bad(file, label or column, frame[late], f"date is after the extract date {latest.isoformat()}",
                          frame[column])
        return parsed

    def end_before_start(self, file: str, frame: pd.DataFrame, start: pd.Series, end: pd.Series, column: str) -> None:
        """An error for each row whose ``end`` date is before its ``start``."""
        both = start.notna() & end.notna()
        backwards = both & (end.where(both, date.min) < start.where(both, date.min))
        self.list_bad(file, column, frame[backwards.astype(bool)], f"{column} is before the start date", frame[column])

    def amounts(self, file: str, frame: pd.DataFrame, column: str) -> pd.Series:
        """Numeric amounts; blank -> 0 (counted), non-numeric -> error."""
        text = frame[column].str.strip()
        values = pd.to_numeric(text.where(text != "", None), errors="coerce")
        bad = values.isna() & (text != "")
        self.list_bad(file, column, frame[bad], "not a number", frame[column])
        absurd = values.map(lambda v: v == v and amount_problem(v) is not None).astype(bool)
        self.list_bad(file, column, frame[absurd], "not a finite amount or beyond any claim "
                      f"(more than {MAX_AMOUNT_USD:,.0f} USD)", frame[column])
        blank = int((text == "").sum())
        if blank:
            self.report.add_warning(file, None, column, f"{blank} blank {column} value(s) counted as 0")
        return values.fillna(0.0).astype(float)

    def known_persons(self, file: str, frame: pd.DataFrame) -> pd.DataFrame:
        unknown = ~frame["_person"].isin(self.persons)
        if unknown.any():
            n_people = frame.loc[unknown, "_person"].nunique()
            self.report.add_warning(
                file, None, "person_id", f"{int(unknown.sum())} row(s) of {n_people} person(s) without eligibility skipped"
            )
        return frame[~unknown]

