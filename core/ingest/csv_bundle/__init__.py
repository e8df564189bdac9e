"""Read, validate and load a canonical CSV bundle (``core/ingest/bundle_schema.py``), streaming.

Modules: ``stream`` (the text span of a file, its header, UTF-8 check, batches of rows through
pyarrow), ``batch`` (a batch of rows and the issues found in it), ``columns`` (per-column and
per-row checks, the typed frame for the loader), ``keys`` (64-bit key hashes and lookups) and
``importer`` (files in order, references, duplicates, life spans, the one transaction).

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

from core.ingest.csv_bundle.importer import import_bundle

__all__ = ["import_bundle"]
