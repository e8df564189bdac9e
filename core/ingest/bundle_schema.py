"""The canonical CSV bundle: one CSV per table, declared as data.

This declaration is the contract between the sample generator (which writes bundles),
the CSV importer (which validates and loads them), the README and the template folder
(``docs/templates/``, written from it by ``python -m core templates``).

Column types
- ``str``: text; ``max_len`` applies.
- ``date``: ``YYYY-MM-DD``; ``month``: ``YYYY-MM`` (stored as the first day of the month).
- ``int``, ``float``: numbers; ``min``/``max`` apply.
- ``bool``: ``true``/``false`` (also ``1``/``0``, ``yes``/``no``).
- ``choices`` names a catalogue vocabulary (core/config/catalog.toml) the value must be in.
- ``ref`` is ``file.column`` of a row that must exist in the bundle or already in the database.
"""

from dataclasses import dataclass, field

EARLIEST_DATE = "1900-01-01"
LATEST_DATE = "2100-12-31"


@dataclass(frozen=True)
class Column:
    name: str
    type: str = "str"
    required: bool = True
    max_len: int | None = None
    min: float | None = None
    max: float | None = None
    choices: str | None = None
    pattern: str | None = None
    ref: str | None = None
    description: str = ""


@dataclass(frozen=True)
class TableSpec:
    file: str
    table: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    description: str = ""
    required_file: bool = True
    load_order: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


ID = dict(max_len=64)
ICD10_PATTERN = r"^[A-TV-Z][0-9][0-9A-Z](\.?[0-9A-Z]{1,4})?$"

BUNDLE: tuple[TableSpec, ...] = (
    TableSpec(
        "practices.csv", "practice", ("practice_id",),
        (
            Column("practice_id", **ID, description="Your identifier of the practice"),
            Column("name", max_len=200),
            Column("network", required=False, max_len=200, description="Network or ACO the practice belongs to"),
        ),
        "One row per practice.",
    ),
    TableSpec(
        "teams.csv", "team", ("team_id",),
        (
            Column("team_id", **ID),
            Column("practice_id", **ID, ref="practices.practice_id"),
            Column("name", max_len=200),
            Column("subgroup", required=False, max_len=64, description="Subgroup the team serves; blank for a mixed team"),
        ),
        "One row per care team.",
    ),
    TableSpec(
        "staff.csv", "staff", ("staff_id",),
        (
            Column("staff_id", **ID),
            Column("team_id", **ID, ref="teams.team_id"),
            Column("name", max_len=200),
            Column("role", choices="roles"),
            Column("annual_cost_usd", "float", min=0, max=5_000_000, description="Salary and benefits per year, USD"),
            Column("paid_hours_per_year", "float", min=1, max=4000),
        ),
        "One row per staff member.",
    ),
    TableSpec(
        "patients.csv", "patient", ("patient_id",),
        (
            Column("patient_id", **ID),
            Column("given_name", required=False, max_len=100),
            Column("family_name", required=False, max_len=100),
            Column("birth_date", "date"),
            Column("sex", choices="sexes"),
            Column("race", required=False, max_len=64),
            Column("ethnicity", required=False, max_len=64),
            Column("language", required=False, max_len=64, description="Preferred language"),
            Column("dual_status", "bool", required=False, description="Dual Medicare-Medicaid eligible"),
            Column("zip", required=False, max_len=10),
            Column("deprivation_decile", "int", required=False, min=1, max=10, description="Area deprivation decile, 10 = most deprived"),
            Column("death_date", "date", required=False),
        ),
        "One row per patient.",
    ),
    TableSpec(
        "attribution.csv", "attribution", ("patient_id", "month"),
        (
            Column("patient_id", **ID, ref="patients.patient_id"),
            Column("month", "month"),
            Column("practice_id", **ID, ref="practices.practice_id"),
            Column("team_id", **ID, ref="teams.team_id"),
            Column("pcp_id", required=False, **ID, ref="staff.staff_id"),
        ),
        "One row per patient and month of attribution (a member-month).",
    ),
    TableSpec(
        "conditions.csv", "condition", ("condition_id",),
        (
            Column("condition_id", **ID),
            Column("patient_id", **ID, ref="patients.patient_id"),
            Column("code", max_len=16, pattern=ICD10_PATTERN, description="ICD-10-CM, with or without the dot"),
            Column("code_system", required=False, max_len=32),
            Column("description", required=False, max_len=300),
            Column("onset_date", "date"),
            Column("resolved_date", "date", required=False),
        ),
        "One row per diagnosis.",
    ),
    TableSpec(
        "encounters.csv", "encounter", ("encounter_id",),
        (
            Column("encounter_id", **ID),
            Column("patient_id", **ID, ref="patients.patient_id"),
            Column("team_id", required=False, **ID, ref="teams.team_id"),
            Column("kind", choices="activity_kinds"),
            Column("start_date", "date"),
            Column("end_date", "date", required=False),
            Column("requested_date", "date", required=False, description="When the patient asked for care"),
            Column("responded_date", "date", required=False, description="E-consults: when the specialist answered"),
            Column("in_network", "bool", required=False),
            Column("is_urgent", "bool", required=False),
            Column("resolved_without_visit", "bool", required=False, description="E-consults: no face-to-face visit needed"),
            Column("primary_dx", required=False, max_len=16, pattern=ICD10_PATTERN),
            Column("specialty", required=False, max_len=64),
            Column("cost_category", required=False, choices="cost_categories", description="Blank: the kind's default"),
            Column("paid_usd", "float", required=False, min=-10_000_000, max=10_000_000,
                   description="Paid amount of the claim (net of reversals and adjustments), USD; below 0: a credit"),
            Column("paid_date", "date", required=False, description="Claims: when the claim was paid (measures the run-out)"),
            Column("discharge_disposition", required=False, choices="dispositions",
                   description="Stays: where the patient went at discharge (home, snf, hospice, died, ...)"),
            Column("facility", required=False, max_len=200,
                   description="Claims: the hospital, centre or group that billed (name or NPI); leakage by facility"),
        ),
        "One row per encounter, activity or claim.",
    ),
    TableSpec(
        "staff_minutes.csv", "staff_minutes", ("encounter_id", "role"),
        (
            Column("encounter_id", **ID, ref="encounters.encounter_id"),
            Column("role", choices="roles"),
            Column("minutes", "float", min=0, max=24 * 60),
        ),
        "Recorded staff minutes by role on internal activities.",
        required_file=False,
    ),
    TableSpec(
        "measurements.csv", "measurement", ("measurement_id",),
        (
            Column("measurement_id", **ID),
            Column("patient_id", **ID, ref="patients.patient_id"),
            Column("measured_date", "date"),
            Column("code", choices="codes", description="LOINC code, or a local code from the catalogue"),
            Column("value", "float", required=False),
            Column("value_text", required=False, max_len=100),
            Column("unit", required=False, max_len=32),
        ),
        "One row per measurement (labs, vitals, questionnaire scores).",
    ),
    TableSpec(
        "medications.csv", "medication", ("medication_id",),
        (
            Column("medication_id", **ID),
            Column("patient_id", **ID, ref="patients.patient_id"),
            Column("code", required=False, max_len=32, description="RxNorm"),
            Column("description", required=False, max_len=300),
            Column("start_date", "date"),
            Column("end_date", "date", required=False),
        ),
        "Medication orders or fill spans.",
        required_file=False,
    ),
    TableSpec(
        "procedures.csv", "procedure", ("procedure_id",),
        (
            Column("procedure_id", **ID),
            Column("patient_id", **ID, ref="patients.patient_id"),
            Column("performed_date", "date"),
            Column("code", max_len=32, description="CPT, HCPCS, CVX, SNOMED CT, LOINC or ICD-10-PCS code"),
            Column("code_system", required=False, max_len=32, description="CPT, HCPCS, CVX, SNOMED, LOINC or ICD-10-PCS"),
            Column("description", required=False, max_len=300),
        ),
        "Services done that outcome measures and care gaps look for: screenings, immunizations, "
        "care plans, advance care planning, counselling.",
        required_file=False,
    ),
)

BY_FILE = {spec.file: spec for spec in BUNDLE}

# Written by the sample generator next to the CSVs; marks a bundle as synthetic sample data.
MANIFEST_FILE = "manifest.json"
SAMPLE_GENERATOR_NAME = "care-value-scorecards sample generator"
