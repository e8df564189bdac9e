"""Deterministic ids and the identifier map shared by the FHIR and Tuva importers.

Rules (re-importing the same files must produce the same ids, so the loader's upsert changes
nothing):

- Every id is ``<source>:<source id>`` (``fhir:<Encounter.id>``, ``tuva:claim:<claim_id>``).
  Ids longer than the 64 characters the tables allow keep their prefix and replace the rest with
  a SHA-1 digest of the full id (``tuva:lab:h:<24 hex>``), still deterministic.
- **Patients of both formats link through one person key**: a Tuva person is
  ``person:<person_id>``; a FHIR Patient with an identifier whose system is listed in
  ``core/config/fhir_maps.toml [identity] person_id_systems`` is ``person:<that value>``, so
  importing FHIR and Tuva data for the same people writes one patient row and merges their
  encounters, conditions and measurements. Other FHIR patients are ``fhir:<Patient.id>``.
  Demographics of the later import overwrite those of the earlier one (blank values do not).
- Imported people without our org structure go to the practice and team of their source
  (``fhir:org:<Organization.id>`` / ``tuva:practice:<practice>``, team ``<practice_id>:team``)
  or, when the source names none, to ``imported`` / ``imported:team`` ("Imported practice").
"""

import hashlib
import re

import pandas as pd
from sqlalchemy import Engine
from sqlmodel import Session, select

from core.ingest.report import ImportReport
from core.store.models import Patient

MAX_ID = 64
DEFAULT_PRACTICE_ID = "imported"
DEFAULT_PRACTICE_NAME = "Imported practice"
# ICD-10-CM shape, as core/ingest/bundle_schema.py ICD10_PATTERN (dot optional).
ICD10_RE = re.compile(r"^[A-TV-Z][0-9][0-9A-Z](\.?[0-9A-Z]{1,4})?$")


def make_id(prefix: str, *parts: object) -> str:
    """``prefix:part1:part2``; hashed (prefix kept) when longer than :data:`MAX_ID`."""
    raw = ":".join([prefix, *(str(p) for p in parts)])
    if len(raw) <= MAX_ID:
        return raw
    return f"{prefix}:h:{hashlib.sha1(raw.encode('utf-8')).hexdigest()[:24]}"


def person_id(value: str) -> str:
    """The shared patient id of a person key (Tuva person_id or a linking FHIR identifier)."""
    return make_id("person", value.strip())


def team_id_of(practice_id: str) -> str:
    """The single imported team of an imported practice."""
    return make_id(practice_id, "team") if len(practice_id) + 5 <= MAX_ID else make_id("team", practice_id)


def practice_rows(practices: dict[str, str]) -> tuple[list[dict], list[dict]]:
    """Practice and team rows for ``{practice_id: name}``: one mixed team per practice."""
    prac = [dict(practice_id=p, name=n[:200], network="") for p, n in sorted(practices.items())]
    team = [
        dict(team_id=team_id_of(p), practice_id=p, name=f"{n} (imported team)"[:200], subgroup=None)
        for p, n in sorted(practices.items())
    ]
    return prac, team


# --- shared by the readers ----------------------------------------------------------------

BLANK_VALUES = (None, "", "unknown")
MERGED_FIELDS = ("given_name", "family_name", "race", "ethnicity", "language", "zip", "deprivation_decile", "death_date")


def count_unmapped(report: ImportReport, key: str, n: int = 1) -> None:
    """Count a source code no mapping table knows (``report.unmapped_codes``)."""
    report.unmapped_codes[key] = report.unmapped_codes.get(key, 0) + n


def frames_from_rows(rows: dict[str, list[dict]]) -> dict[str, pd.DataFrame]:
    """One frame per non-empty table; helper keys starting with ``_`` are dropped."""
    frames = {}
    for table, table_rows in rows.items():
        if table_rows:
            frame = pd.DataFrame(table_rows)
            frames[table] = frame[[c for c in frame.columns if not c.startswith("_")]]
    return frames


def merge_existing_patients(engine: Engine, rows: list[dict]) -> list[dict]:
    """Fill blank demographics of incoming patient rows from rows already in the store.

    A person imported from FHIR (names, language) and then from Tuva (dual status, no names)
    keeps what each source knew; non-blank incoming values win.
    """
    ids = [r["patient_id"] for r in rows]
    existing: dict[str, Patient] = {}
    with Session(engine) as session:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            existing.update({p.patient_id: p for p in session.exec(select(Patient).where(Patient.patient_id.in_(chunk)))})
    out = []
    for r in rows:
        old = existing.get(r["patient_id"])
        if old is None:
            out.append(r)
            continue
        merged = dict(r)
        for name in MERGED_FIELDS:
            if merged.get(name) in BLANK_VALUES and getattr(old, name) not in BLANK_VALUES:
                merged[name] = getattr(old, name)
        merged["dual_status"] = bool(merged.get("dual_status")) or bool(old.dual_status)
        out.append(merged)
    return out


def normalize_icd10(code: str) -> str | None:
    """``E119`` / ``e11.9`` -> ``E11.9``; None when it is not shaped like an ICD-10-CM code."""
    raw = code.strip().upper().replace(".", "")
    if not ICD10_RE.match(raw):
        return None
    return raw if len(raw) <= 3 else f"{raw[:3]}.{raw[3:]}"
