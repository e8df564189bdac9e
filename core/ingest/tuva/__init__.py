"""The Tuva Project input layer importer: eligibility, claims, labs, observations, attribution -> canonical frames.

``read_tuva(path, engine)`` reads a folder of Tuva input-layer CSVs (``eligibility.csv``,
``medical_claim.csv``, ``pharmacy_claim.csv``, ``lab_result.csv``, ``observation.csv``,
``provider_attribution.csv``; a ``_seed`` or other ``_suffix`` after the name is accepted) and
returns ``(frames, report)`` for ``core.ingest.loader.load_tables``. It writes nothing. Spec:
https://thetuvaproject.com/data-models/input-layer. Mappings are data: ``core/config/tuva_maps.toml``.

Modules: ``files`` (finding the files, :class:`~core.ingest.tuva.files.TuvaReader` and its
file-level readers), ``eligibility`` (patients, member-months and attribution), ``claims``
(medical and pharmacy claims, diagnoses), ``clinical`` (lab results and observations) and
``reader`` (``read_tuva``: the files in order).

Mapping decisions:

- **Person key**: ``person_id`` (current releases), else ``patient_id`` (earlier releases);
  a file with neither is an error, a blank key an error with its row. Patients are
  ``person:<person_id>`` (shared with FHIR patients that carry the same key; see ``idmap``).
  Rows of people not in ``eligibility`` are skipped with a warning.
- **Patient** from the person's latest eligibility span: gender, race, ethnicity, birth and
  death date, zip, names, dual status (CMS dual status codes 01-06, 08).
- **Member-months**: every month of every eligibility span (overlaps counted once), up to the
  death month. Practice, team and PCP per month from ``provider_attribution`` (custom
  attribution, else payer attribution): the attribution of that month, else the latest earlier
  one, else the earliest later one, else the default "Imported practice". ``pcp_id`` is the
  attributed NPI when a staff row with that id already exists (we never invent staff costs).
- **Medical claims** -> external encounters as analysts count them (``core.ingest.claims``,
  settings in ``claims.toml``): the lines of each ``claim_id`` are netted into one paid amount
  (blank = 0 with a count; reversal and adjustment lines included; an institutional header
  amount repeated on every line counted once); a claim netting to zero or below is kept as a
  credit in its month. Kind and cost category from bill type / revenue centre (institutional)
  or place of service (professional). Overlapping or adjacent acute inpatient claims are one
  stay (with the professional claims during it); the facility and professional claims of one ED
  episode are one ED visit; every other claim is one encounter. The encounter id is that of its
  first facility claim (else its first claim). ``primary_dx`` is diagnosis_code_1 of that claim.
  ``facility``: the facility_npi (else billing_npi) of its first institutional claim that has
  one, else of its first claim that has one (leakage by facility).
- **Diagnoses** (diagnosis_code_1..25, ICD-10-CM shape; icd-9-cm counted as unmapped) ->
  one condition per person and code, onset = the earliest claim date. The diagnosis_code_type
  label itself is not trusted (the Tuva seed data labels ICD-10-CM codes ``icd-10-pcs``).
- **Pharmacy claims** -> one ``pharmacy_fill`` encounter per claim (lines netted; a claim that
  nets to zero or below through a reversal is a credit, kind other_claim) and one medication
  row per dispensed line (NDC code; end = dispensing date + days_supply - 1).
- **lab_result / observation** -> measurements for catalogue LOINC codes; tobacco answers via
  fhir_maps.toml [tobacco_text]; out-of-range values skipped with a count.
- **Errors** (``core/ingest/checks.py``), each with its file, row and column: a file that is a
  folder, has an over-long header line, or is truncated (a row with fewer fields than the header,
  an unterminated quote); a bad date, or a date after the extract date; a claim ending before it
  starts; an amount that is not a number, not finite or beyond any claim. An enrolment that ends
  after the extract date (or is open, ``9999-12-31``) is counted up to the extract's month, with
  a warning.
"""

from core.ingest.tuva.reader import read_tuva

__all__ = ["read_tuva"]
