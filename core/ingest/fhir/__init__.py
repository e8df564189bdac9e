"""FHIR R4 importer: transaction/collection bundles (``.json``) and Bulk Data NDJSON -> canonical frames.

``read_fhir(path, engine)`` reads a file or a folder and returns ``(frames, report)``: frames
keyed by table name (``practice``, ``team``, ``patient``, ``attribution``, ``condition``,
``encounter``, ``measurement``, ``medication``, ``procedure``) with model field names and typed values, for
``core.ingest.loader.load_tables``. It writes nothing; when ``report.errors`` is not empty the
caller must not load the frames (all or nothing).

Modules: ``resources`` (files, NDJSON streams, field shapes, datatype parsers), ``maps``
(fhir_maps.toml), ``state`` (the import's state and shared field readers), ``reader`` (the
passes and their order), ``patients`` (patients, practices, member-months), ``encounters``,
``eobs`` (paid amounts) and ``clinical`` (conditions, observations, medications).

Mapping decisions (codes and vocabularies are data: ``core/config/fhir_maps.toml``):

- **Input**: ``*.json`` (a Bundle of any type, or one resource) is parsed whole up to
  ``[limits] max_bundle_bytes``; ``*.ndjson`` / ``*.jsonl`` (Bulk Data, one resource per line,
  any file name) are streamed line by line and a line longer than ``max_line_bytes`` is an error
  (it is skipped unread, never parsed). Resources of the bulky types (Observation, Condition,
  MedicationRequest, Procedure, Claim, ExplanationOfBenefit) are read in a second pass, one
  resource at a time, after patients and encounters; only their output rows are kept. In an
  NDJSON file that mixes types, the first pass only notes where those lines are (line number
  and byte offset) and the second reads them again, so memory does not grow with the file.
  Errors carry the file, the line (NDJSON) or entry number (bundle), the resource id and field.
- **Values that cannot be read are errors** (``core/ingest/checks.py``): JSON that does not parse
  or nests too deep to read; a field the readers use whose JSON type is not its FHIR type
  (:data:`core.ingest.fhir.resources.SHAPES`: a ``name`` or ``address`` given as a string, ``valueQuantity.value`` ``"7.5"``);
  a date after the extract date (except the planned end of a Coverage); an end before its start
  (Encounter.period, Condition abatement, EOB billablePeriod); a paid amount that is not finite
  or beyond any claim.
- **Resource types** not listed above are counted (``skipped``); types neither used nor in
  ``[resources] ignored`` also raise a warning, so a misspelt type does not pass unnoticed.
- **Ids**: ``fhir:<resource id>`` (see ``idmap``); patients linked to Tuva by a configured
  identifier system are ``person:<value>``. References may be ``urn:uuid:<id>``, ``Type/<id>``
  or absolute URLs ending in ``Type/<id>``. A reference to a Patient or Encounter that is not in
  the import is an error (dangling); a missing serviceProvider Organization is a warning.
- **Patient**: name, birthDate (required), gender, deceasedDateTime (deceasedBoolean without a
  date: the last encounter date, with a warning), US Core race/ethnicity OMB categories,
  communication language (preferred, else first), first address postalCode.
- **Practice/team**: Patient.managingOrganization, else the Organization that is the
  serviceProvider of most of the patient's internal-kind encounters (ties: smallest id), else
  the default "Imported practice". Each such Organization becomes a practice with one team.
- **Member-months**: Coverage.period months when the patient has Coverage; else the 24-month
  encounter lookback of ``[member_months]`` (capped at death and the import's last encounter
  month, within the last ``window_months``).
- **Encounter**: kind from Encounter.type (``[encounter_types]``) else class
  (``[encounter_classes]``); unknown classes become ``other_claim`` and are counted as unmapped.
  ``team_id`` is the patient's team when the serviceProvider is the patient's practice.
  ``primary_dx`` is the first reasonCode with an ICD-10-CM code or a mapped SNOMED code.
- **Costs**: ExplanationOfBenefit ``payment.amount`` (else ``total`` of category ``benefit``)
  is the paid amount, netted per claim (the EOBs that share ``EOB.claim``: an original and its
  adjustments or reversal); a claim netting to zero or below is a credit (``core.ingest.claims``),
  never an error; cancelled and entered-in-error EOBs are skipped with a count. The amount goes
  to the encounter the EOB items reference, or, when they reference none, the EOB is a claim
  grouped like Tuva claims into acute stays and ED visits (kind from the type of bill, revenue
  centres or place of service for institutional/professional EOBs, else ``[eob_types]``). Claim
  resources carry charges, not payments, and Synthea writes one Claim and one EOB per encounter,
  so Claims are counted and never costed (no double counting). Paid amounts on *internal*
  encounters are the practice's own fee-for-service revenue, not an external cost: they are
  left out (paid_usd 0) and their total is reported as a warning.
  An external encounter's ``facility`` is the EOB's ``facility`` (else its billing ``provider``):
  display, else identifier value (NPI), else the name of the referenced Organization when it is in
  the import (blank otherwise: Synthea's provider is a Practitioner); its ``specialty`` (when the
  Encounter has none) the first ``careTeam.qualification`` (text, else display, else code:
  CARIN Blue Button's NUCC taxonomy), so leakage can be cut by facility and specialty.
- **Condition**: ICD-10-CM coding, else SNOMED CT through ``[snomed_to_icd10]``; unmapped codes
  are counted in ``unmapped_codes``. entered-in-error / refuted conditions are skipped.
- **Observation**: catalogue LOINC codes only; blood pressure panels 85354-9 / 55284-4 split
  into 8480-6 / 8462-4 rows (``fhir:<id>:<component>``); tobacco 72166-2 coded answers -> 1/0.
  Values outside the catalogue's plausible range are skipped with a warning count.
- **MedicationRequest** -> medication (RxNorm code, authoredOn; end = validity period end, else
  authoredOn + expected supply duration, else authoredOn for stopped/completed/cancelled orders).
- **Procedure, Immunization, CarePlan** -> procedure rows (screenings, vaccines, care planning:
  what the outcome measures and care gaps look for). The code of the first coding in a system of
  ``[procedures] systems`` (CPT before SNOMED), stored with the system's short name; not-done and
  entered-in-error ones are skipped with a count; a CarePlan is one row coded ``LOCAL:care-plan``.
  Observations whose LOINC code is in a service code list of measures.toml (FIT, cervical
  cytology, HPV) are screenings done: procedure rows, not measurements. Costs stay on the EOBs.
- **Encounter.hospitalization.dischargeDisposition** -> ``discharge_disposition``
  (``[discharge_dispositions]``; unknown codes become ``other`` and are counted as unmapped).
"""

from core.ingest.fhir.reader import read_fhir

__all__ = ["read_fhir"]
