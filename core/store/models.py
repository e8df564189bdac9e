"""SQLModel tables: the canonical store every importer writes and every page reads.

Conventions
- Natural string keys (``P000123``, ``T01``) come from the source data, so re-importing the
  same rows updates them in place instead of duplicating them.
- Clinical and claims facts are date-grained (``date``): claims and EHR extracts are, and
  every figure in the product is monthly. Months are stored as the first day of the month.
- Timestamps of things the product itself does (imports, overrides, audit) are
  timezone-aware UTC ``datetime`` (SQLModel >= 0.0.45 rejects naive ones on write).
- Money is in US dollars (``*_usd``), time in minutes or hours as the name says.
- Each table's grain is in its docstring; ``tests/unit/test_models.py`` checks the keys.
"""

from datetime import UTC, date, datetime

from sqlalchemy import BigInteger, Index, text
from sqlmodel import Field, SQLModel


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- organisation -----------------------------------------------------------------------


class Practice(SQLModel, table=True):
    """One primary-care practice. Grain: practice_id."""

    practice_id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    network: str = Field(default="", max_length=200)


class Team(SQLModel, table=True):
    """A care team at one practice, serving one subgroup or several (subgroup NULL). Grain: team_id."""

    team_id: str = Field(primary_key=True, max_length=64)
    practice_id: str = Field(foreign_key="practice.practice_id", index=True, max_length=64)
    name: str = Field(max_length=200)
    subgroup: str | None = Field(default=None, max_length=64)


class Staff(SQLModel, table=True):
    """A staff member: role, fully loaded annual cost and paid hours. Grain: staff_id."""

    staff_id: str = Field(primary_key=True, max_length=64)
    team_id: str = Field(foreign_key="team.team_id", index=True, max_length=64)
    name: str = Field(max_length=200)
    role: str = Field(max_length=64)
    annual_cost_usd: float
    paid_hours_per_year: float


# --- patients ---------------------------------------------------------------------------


class Patient(SQLModel, table=True):
    """A patient with the demographics used for equity strata. Grain: patient_id."""

    patient_id: str = Field(primary_key=True, max_length=64)
    given_name: str = Field(default="", max_length=100)
    family_name: str = Field(default="", max_length=100)
    birth_date: date
    sex: str = Field(max_length=16)
    race: str = Field(default="unknown", max_length=64)
    ethnicity: str = Field(default="unknown", max_length=64)
    language: str = Field(default="unknown", max_length=64)
    dual_status: bool = False
    zip: str = Field(default="", max_length=10)
    deprivation_decile: int | None = None
    death_date: date | None = None


class Attribution(SQLModel, table=True):
    """Monthly attribution (enrolment) of a patient. Grain: patient_id, month.

    A row means the patient counts as one member-month for that practice and team.
    """

    patient_id: str = Field(foreign_key="patient.patient_id", primary_key=True, max_length=64)
    month: date = Field(primary_key=True)
    practice_id: str = Field(foreign_key="practice.practice_id", max_length=64)
    team_id: str = Field(foreign_key="team.team_id", max_length=64)
    pcp_id: str | None = Field(default=None, foreign_key="staff.staff_id", max_length=64)

    __table_args__ = (Index("ix_attribution_team_month", "team_id", "month"),)


class Condition(SQLModel, table=True):
    """A diagnosis on the problem list or a claim. Grain: condition_id."""

    condition_id: str = Field(primary_key=True, max_length=64)
    patient_id: str = Field(foreign_key="patient.patient_id", index=True, max_length=64)
    code: str = Field(max_length=16, index=True)
    code_system: str = Field(default="ICD-10-CM", max_length=32)
    description: str = Field(default="", max_length=300)
    onset_date: date
    resolved_date: date | None = None


class Encounter(SQLModel, table=True):
    """Anything the care system did for a patient. Grain: encounter_id.

    Internal activities (``is_internal``) are costed from staff minutes; external ones carry the
    paid amount of the claim. E-consults carry ``responded_date`` and
    ``resolved_without_visit``. ``requested_date`` is when the patient asked for care.
    ``paid_date`` (claims, where the source has it) is when the claim was paid. ``facility``
    (claims): the hospital, centre or group that billed, by name or NPI.
    """

    encounter_id: str = Field(primary_key=True, max_length=64)
    patient_id: str = Field(foreign_key="patient.patient_id", max_length=64)
    team_id: str | None = Field(default=None, foreign_key="team.team_id", max_length=64)
    kind: str = Field(max_length=32)
    start_date: date
    end_date: date | None = None
    requested_date: date | None = None
    responded_date: date | None = None
    is_internal: bool
    in_network: bool = True
    is_urgent: bool = False
    resolved_without_visit: bool | None = None
    primary_dx: str = Field(default="", max_length=16)
    specialty: str = Field(default="", max_length=64)
    cost_category: str = Field(default="", max_length=32)
    paid_usd: float = 0.0
    paid_date: date | None = None  # claims: when the payer paid (the run-out of core.metrics.runout)
    # Stays: where the patient went at discharge (catalogue vocabulary ``dispositions``; blank unknown).
    discharge_disposition: str = Field(default="", max_length=32)
    # Claims: the facility or group that billed (name or NPI; blank unknown), for leakage by facility.
    facility: str = Field(default="", max_length=200)

    __table_args__ = (
        Index("ix_encounter_patient_date", "patient_id", "start_date"),
        Index("ix_encounter_date_kind", "start_date", "kind"),
    )


class StaffMinutes(SQLModel, table=True):
    """Staff minutes spent on an internal activity, by role. Grain: encounter_id, role."""

    __tablename__ = "staff_minutes"

    encounter_id: str = Field(foreign_key="encounter.encounter_id", primary_key=True, max_length=64)
    role: str = Field(primary_key=True, max_length=64)
    minutes: float


class Measurement(SQLModel, table=True):
    """A dated value for a patient (lab, vital, questionnaire score). Grain: measurement_id.

    ``code`` is the LOINC code where one exists, else a local code (the ``[codes]`` table of core/config/catalog.toml).
    """

    measurement_id: str = Field(primary_key=True, max_length=64)
    patient_id: str = Field(foreign_key="patient.patient_id", max_length=64)
    measured_date: date
    code: str = Field(max_length=32)
    value: float | None = None
    value_text: str = Field(default="", max_length=100)
    unit: str = Field(default="", max_length=32)

    __table_args__ = (Index("ix_measurement_patient_code_date", "patient_id", "code", "measured_date"),)


class Medication(SQLModel, table=True):
    """An active medication order or fill span (RxNorm where known). Grain: medication_id."""

    medication_id: str = Field(primary_key=True, max_length=64)
    patient_id: str = Field(foreign_key="patient.patient_id", index=True, max_length=64)
    code: str = Field(default="", max_length=32)
    description: str = Field(default="", max_length=300)
    start_date: date
    end_date: date | None = None


class Procedure(SQLModel, table=True):
    """A service done for a patient that outcome measures and care gaps look for: a screening,
    an immunization, a care plan, advance care planning, counselling. Grain: procedure_id.

    ``code_system`` names the vocabulary of ``code`` (CPT, HCPCS, CVX, SNOMED CT, LOINC, ICD-10-PCS);
    the code lists of ``core/config/measures.toml`` say which codes count for what.
    """

    procedure_id: str = Field(primary_key=True, max_length=64)
    patient_id: str = Field(foreign_key="patient.patient_id", max_length=64)
    performed_date: date
    code: str = Field(max_length=32)
    code_system: str = Field(default="", max_length=32)
    description: str = Field(default="", max_length=300)

    __table_args__ = (Index("ix_procedure_patient_date", "patient_id", "performed_date"),)


# --- subgroups --------------------------------------------------------------------------


class SubgroupAssignment(SQLModel, table=True):
    """The subgroup of a patient in a month, with the rule that matched and why.

    Grain: patient_id, month. ``overridden`` marks rows set by a SubgroupOverride. ``team_id`` is
    the patient's team of that month (a copy of ``attribution.team_id``), so a team's members of
    one subgroup are one range of an index, whatever the size of the team. ``thin_history``: the
    month has less history than the rules' ``[history]`` asks for; ``history_note`` says how much
    (``Not enough history: 2 of 6 months of data``), the subgroup is still the rules' on what there is.
    """

    __tablename__ = "subgroup_assignment"

    patient_id: str = Field(foreign_key="patient.patient_id", primary_key=True, max_length=64)
    month: date = Field(primary_key=True)
    subgroup: str = Field(max_length=64)
    team_id: str | None = Field(default=None, max_length=64)
    rule_id: str = Field(default="", max_length=64)
    reason: str = Field(default="", max_length=500)
    risk_score: float | None = None
    overridden: bool = False
    thin_history: bool = Field(default=False, sa_column_kwargs={"server_default": text("false")})
    history_note: str = Field(default="", max_length=200, sa_column_kwargs={"server_default": ""})

    __table_args__ = (
        Index("ix_subgroup_assignment_month_subgroup_rule", "month", "subgroup", "rule_id"),  # the mix: index only
        Index("ix_subgroup_assignment_month_team_subgroup", "month", "team_id", "subgroup"),
        # the thin-history rows only (a partial index): the Data quality count and examples
        Index("ix_subgroup_assignment_thin", "month", "patient_id", sqlite_where=text("thin_history = 1"),
              postgresql_where=text("thin_history")),  # fmt: skip
    )


class SubgroupOverride(SQLModel, table=True):
    """A team leader's pin of a patient to a subgroup from a month on. Grain: override_id.

    Lifted overrides are kept (``lifted_at``) so the history stays visible.
    """

    __tablename__ = "subgroup_override"

    override_id: int | None = Field(default=None, primary_key=True)
    patient_id: str = Field(foreign_key="patient.patient_id", index=True, max_length=64)
    subgroup: str = Field(max_length=64)
    start_month: date
    note: str = Field(max_length=1000)
    created_by: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utc_now)
    lifted_by: str | None = Field(default=None, max_length=200)
    lifted_at: datetime | None = None


class DeriveTouched(SQLModel, table=True):
    """A patient whose data or override changed since the derived tables were built. Grain: patient_id.

    Written in the same transaction as the change (an import, an override) with the
    ``derive_pending`` mark; the incremental derive (``core.derive.incremental``) re-derives
    these patients only and removes the rows it caught up with. ``*`` stands for "everything"
    (network-wide data changed): the next derive is a full one. No foreign key (``*``).
    """

    __tablename__ = "derive_touched"

    patient_id: str = Field(primary_key=True, max_length=64)


class RiskScore(SQLModel, table=True):
    """CMS-HCC risk score of a patient for a payment year. Grain: patient_id, year."""

    __tablename__ = "risk_score"

    patient_id: str = Field(foreign_key="patient.patient_id", primary_key=True, max_length=64)
    year: int = Field(primary_key=True)
    model: str = Field(max_length=64)
    score: float
    chronic_score: float
    hccs: str = Field(default="", max_length=500)


# --- access and audit -------------------------------------------------------------------


class User(SQLModel, table=True):
    """A person allowed in, keyed by the identity provider's email (lower case) or ``sub:<subject>``.

    Grain: user_key. ``subject`` is the provider's ``sub`` claim the row is bound to (set by an
    admin as ``sub:<subject>``, or on the first sign-in with a verified email; see
    ``core.access.users.find_user``). ``practice_ids`` and ``team_ids`` are comma-separated scope
    lists; ``patient_level`` grants patient rows to roles that otherwise see aggregates only.
    """

    __tablename__ = "app_user"

    user_key: str = Field(primary_key=True, max_length=200)
    subject: str | None = Field(default=None, max_length=255, unique=True, index=True)
    name: str = Field(default="", max_length=200)
    role: str = Field(max_length=32)
    practice_ids: str = Field(default="", max_length=2000)
    team_ids: str = Field(default="", max_length=2000)
    patient_level: bool = False
    active: bool = True
    created_at: datetime = Field(default_factory=utc_now)


class AuditEvent(SQLModel, table=True):
    """One audited action: a patient record or list of patients viewed, an export, a refused
    lookup, a change of users, rules or overrides, an upload. Grain: audit_id.

    Append-only from the app: nothing in the product updates or deletes these rows.
    ``chain_hash`` is the SHA-256 of the previous row's ``chain_hash`` and this row's fields
    (``core.access.audit.event_hash``), so a changed, inserted or deleted row breaks the chain
    from there on (``python -m core audit --verify``).
    """

    __tablename__ = "audit_event"

    audit_id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utc_now, index=True)
    user_key: str = Field(max_length=200, index=True)
    role: str = Field(max_length=32)
    action: str = Field(max_length=32)
    target: str = Field(default="", max_length=200)
    scope: str = Field(default="", max_length=2000)
    detail: str = Field(default="", max_length=1000)
    chain_hash: str | None = Field(default=None, max_length=64)


# --- bookkeeping ------------------------------------------------------------------------


class AppSetting(SQLModel, table=True):
    """Small key/value settings kept in the store (e.g. ``data_version``). Grain: key."""

    __tablename__ = "app_setting"

    key: str = Field(primary_key=True, max_length=64)
    value: str = ""
    updated_at: datetime = Field(default_factory=utc_now)


class ImportRun(SQLModel, table=True):
    """One import (committed or rejected). Grain: import_id.

    ``origin`` is ``sample`` for the dashboard's first-run load of the sample network it generated
    (``core.access.demo.mark_sample_store``), else ``real``, whatever the files declare.
    ``report`` is the JSON import report.
    """

    __tablename__ = "import_run"

    import_id: int | None = Field(default=None, primary_key=True)
    started_at: datetime = Field(default_factory=utc_now)
    finished_at: datetime | None = None
    source: str = Field(max_length=500)
    format: str = Field(max_length=16)
    origin: str = Field(default="real", max_length=16)
    status: str = Field(default="running", max_length=16)
    report: str = ""


class ImportPatient(SQLModel, table=True):
    """The patients of an import whose derive has not run yet, as 64-bit hashes of their ids
    (``core.store.queries.patient_hashes``, stored signed). Grain: import_id, patient_hash.

    Written with the import (every table's ``patient_id``), read and deleted by the derive that
    follows it, which records in :class:`ImportEffect` how many patients outside the import
    changed subgroup.
    """

    __tablename__ = "import_patient"

    import_id: int = Field(foreign_key="import_run.import_id", primary_key=True)
    patient_hash: int = Field(primary_key=True, sa_type=BigInteger)


class ImportEffect(SQLModel, table=True):
    """How much the derive after an import moved patients that were not in it. Grain: import_id.

    ``patients_compared``: patients outside the import (and the imports before it whose derive had
    not run) with a subgroup before; ``patients_moved``: those of them whose subgroup changed in
    a month (the network-wide cut-off of a top-fraction rule moves with the patients a dataset
    adds); ``examples``: some of their ids.
    """

    __tablename__ = "import_effect"

    import_id: int = Field(foreign_key="import_run.import_id", primary_key=True)
    derived_at: datetime = Field(default_factory=utc_now)
    patients_compared: int = 0
    patients_moved: int = 0
    examples: str = Field(default="", max_length=500)


# --- additive cells (outcome scorecards, costs) -----------------------------------------


class Cell(SQLModel, table=True):
    """Additive sums behind every aggregate figure.

    Grain: practice_id, team_id, subgroup, month, stratum, stratum_value, metric.
    ``stratum`` is ``all`` (``stratum_value`` ``all``) or an equity dimension (``age_band``,
    ``sex``, ``race_ethnicity``, ``language``, ``dual_status``, ``deprivation_decile``).
    For a proportion ``numerator``/``denominator`` are patient counts; for a rate, events and
    member-years; for a mean, the sum of values and their count (``sum_sq`` for the t interval);
    for a cost, dollars and member-months. ``patients`` counts distinct contributing patients.
    """

    practice_id: str = Field(primary_key=True, max_length=64)
    team_id: str = Field(primary_key=True, max_length=64)
    subgroup: str = Field(primary_key=True, max_length=64)
    month: date = Field(primary_key=True)
    stratum: str = Field(primary_key=True, max_length=32)
    stratum_value: str = Field(primary_key=True, max_length=64)
    metric: str = Field(primary_key=True, max_length=64)
    numerator: float = 0.0
    denominator: float = 0.0
    sum_sq: float = 0.0
    patients: int = 0

    __table_args__ = (
        Index("ix_cell_metric_month", "metric", "month", "stratum"),
        # Scorecards (core.metrics.scorecard) read stratum = ?, metric IN (...), month range or list, and
        # group by metric, month, stratum_value. Both indexes carry every column the query reads,
        # so SQLite answers from the index alone, in GROUP BY order (no temporary B-tree): 5-7x
        # faster than one row lookup per cell. Network-wide and practice selections:
        Index("ix_cell_stratum_metric_month", "stratum", "metric", "month", "stratum_value", "practice_id", "team_id",
              "subgroup", "numerator", "denominator", "sum_sq", "patients"),
        # Team selections (a team's cells only, whatever the size of the network):
        Index("ix_cell_team_stratum_metric_month", "team_id", "stratum", "metric", "month", "stratum_value", "subgroup",
              "practice_id", "numerator", "denominator", "sum_sq", "patients"),
    )


# --- monthly review log -----------------------------------------------------------------


class ReviewEntry(SQLModel, table=True):
    """A note, decision or action item of a team's monthly value review. Grain: entry_id.

    Recorded per team, subgroup and review ``month`` (first day). Action items carry an owner,
    a due date and a status (``open`` / ``done``); open ones are carried into later months'
    reviews until closed (``closed_at``, ``closed_by``). Notes and decisions have status ``""``.
    """

    __tablename__ = "review_entry"

    entry_id: int | None = Field(default=None, primary_key=True)
    team_id: str = Field(foreign_key="team.team_id", max_length=64)
    subgroup: str = Field(max_length=64)
    month: date
    kind: str = Field(max_length=16)
    text: str = Field(max_length=2000)
    owner: str = Field(default="", max_length=200)
    due_date: date | None = None
    status: str = Field(default="", max_length=16)
    created_by: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utc_now)
    closed_by: str | None = Field(default=None, max_length=200)
    closed_at: datetime | None = None

    __table_args__ = (Index("ix_review_entry_team_subgroup_month", "team_id", "subgroup", "month"),)


# --- derived activity (worklist) --------------------------------------------------------


class TeamMonthActivity(SQLModel, table=True):
    """Internal activities per team, subgroup, month and kind. Grain: month, team_id, subgroup, kind.

    Derived with ``patient_month_activity`` (``core.derive.activity``): internal encounters of attributed
    patient-months, by the month of their start, the team of that month's attribution and that
    month's subgroup (``unassigned`` without one). The payment models' fee-for-service volumes
    read it, so a page never scans the encounters.
    """

    __tablename__ = "team_month_activity"

    month: date = Field(primary_key=True)
    team_id: str = Field(primary_key=True, max_length=64)
    subgroup: str = Field(primary_key=True, max_length=64)
    kind: str = Field(primary_key=True, max_length=32)
    activities: int = 0


class PatientMonthActivity(SQLModel, table=True):
    """What was done for a patient in a calendar month, and what it cost. Grain: patient_id, month.

    Derived by ``core.derive.activity.build_patient_month_activity`` from every encounter (and its
    staff minutes) by the month of its ``start_date``, whether or not the patient was
    attributed that month; rebuilt after every import. Internal cost is TDABC (recorded
    minutes x the team's role rate, else the process map of the kind), external cost the paid
    amounts of claims. ``last_acute_date`` and ``last_visit_date`` are the last start dates of
    the worklist rules' acute and visit kinds (``core/config/worklist.toml``), so editing those
    kinds needs a rebuild. A patient-month without any encounter has no row. No foreign key:
    every row comes from ``encounter``, whose patient_id is checked on import.
    """

    __tablename__ = "patient_month_activity"

    patient_id: str = Field(primary_key=True, max_length=64)
    month: date = Field(primary_key=True)
    cost_internal_usd: float = 0.0
    cost_external_usd: float = 0.0
    ed_visits: int = 0
    admissions: int = 0
    last_acute_date: date | None = None
    last_visit_date: date | None = None

    # SQLite: stored in key order (no rowid), so a patient's months are one contiguous read.
    __table_args__ = {"sqlite_with_rowid": False}


class EconsultMonth(SQLModel, table=True):
    """E-consults per month of start, team and specialty (the e-consults page's volume, response
    and resolution). Grain: month, team_id, specialty. Derived by ``core.derive.page_aggregates``.

    ``team_id`` is the encounter's team (``unknown`` without one); ``days_sum`` / ``days_sq`` are
    the sums of responded - start days and their squares over the answered e-consults.
    """

    __tablename__ = "econsult_month"

    month: date = Field(primary_key=True)
    team_id: str = Field(primary_key=True, max_length=64)
    specialty: str = Field(primary_key=True, max_length=64)
    econsults: int = 0
    responded: int = 0
    days_sum: float = 0.0
    days_sq: float = 0.0
    resolved: int = 0


class SpecialistSpendMonth(SQLModel, table=True):
    """Attributed member-months and their specialist spend per team and month, split by how far
    (in months) the patient's e-consults and attributed months lie from that month, so that a page
    can tell, for any window of up to 12 months, which member-months belong to patients with an
    e-consult in the window and which are a patient's first of the window (``core.derive.page_aggregates``).

    Grain: month, team_id, since_econsult, until_econsult, gap_any, gap_team. ``since_econsult``:
    months since the patient's last e-consult in or before this month (0-11; 12: none in 12 months);
    ``until_econsult``: months to the next one after it (1-11; 12: none); ``gap_any`` / ``gap_team``:
    months since the patient's previous attributed month (any team / this team; 1-11; 12: none).
    """

    __tablename__ = "specialist_spend_month"

    month: date = Field(primary_key=True)
    team_id: str = Field(primary_key=True, max_length=64)
    since_econsult: int = Field(primary_key=True)
    until_econsult: int = Field(primary_key=True)
    gap_any: int = Field(primary_key=True)
    gap_team: int = Field(primary_key=True)
    member_months: int = 0
    specialist_spend_usd: float = 0.0


class SpecialistSpendPatientMonth(SQLModel, table=True):
    """The row each attributed patient-month adds to ``specialist_spend_month``: its team, the four
    distances and the month's specialist spend. Kept so that the incremental derive can take a
    patient's old contribution away and add the new one (``core.derive.page_aggregates``); no page
    reads it. Grain: patient_id, month.
    """

    __tablename__ = "specialist_spend_patient_month"

    patient_id: str = Field(primary_key=True, max_length=64)
    month: date = Field(primary_key=True)
    team_id: str = Field(max_length=64)
    since_econsult: int
    until_econsult: int
    gap_any: int
    gap_team: int
    specialist_spend_usd: float = 0.0


class SubgroupMove(SQLModel, table=True):
    """A patient whose subgroup differs from the month before (or who has an assignment in only one
    of the two months). Grain: patient_id, month. ``team_id`` / ``subgroup``: this month's (None:
    no assignment); ``prev_team_id`` / ``prev_subgroup``: last month's (None: none). Derived from
    ``subgroup_assignment`` by ``core.derive.page_aggregates``; the review reads one month's moves
    of a team's subgroup from its indexes instead of comparing every member with the month before.
    """

    __tablename__ = "subgroup_move"

    patient_id: str = Field(primary_key=True, max_length=64)
    month: date = Field(primary_key=True)
    team_id: str | None = Field(default=None, max_length=64)
    subgroup: str | None = Field(default=None, max_length=64)
    prev_team_id: str | None = Field(default=None, max_length=64)
    prev_subgroup: str | None = Field(default=None, max_length=64)

    __table_args__ = (
        Index("ix_subgroup_move_to", "month", "team_id", "subgroup"),
        Index("ix_subgroup_move_from", "month", "prev_team_id", "prev_subgroup"),
    )


class ClaimsLagMonth(SQLModel, table=True):
    """Claims (non-internal encounters) per service month and paid month: count and paid amount.
    Grain: service_month, paid_month. ``paid_month`` 1900-01-01: no paid date. Derived by
    ``core.derive.page_aggregates``; the claims run-out (``core.metrics.runout.claims_lags``) reads it
    instead of grouping every claim of the network on each page."""

    __tablename__ = "claims_lag_month"

    service_month: date = Field(primary_key=True)
    paid_month: date = Field(primary_key=True)
    claims: int = 0
    paid_usd: float = 0.0


class ClaimsNetworkMonth(SQLModel, table=True):
    """Claims (non-internal encounters) per service month, the team the patient was attributed to
    that month ('' when not attributed), kind, category, specialty, facility (as imported, '' when
    blank) and network status: count and paid amount. Grain: month, team_id, kind, cost_category,
    specialty, facility, in_network. Derived by ``core.derive.page_aggregates``;
    the true costs page's leakage (``core.views.true_costs.claims_by_network``) reads it instead of
    joining every claim of its months to its attribution on each render."""

    __tablename__ = "claims_network_month"

    month: date = Field(primary_key=True)
    team_id: str = Field(primary_key=True, max_length=64)
    kind: str = Field(primary_key=True, max_length=32)
    cost_category: str = Field(primary_key=True, max_length=32)
    specialty: str = Field(primary_key=True, max_length=64)
    facility: str = Field(primary_key=True, max_length=200)
    in_network: bool = Field(primary_key=True)
    claims: int = 0
    paid_usd: float = 0.0


class TeamMonthMinutes(SQLModel, table=True):
    """Staff minutes of internal encounters per month of start, the encounter's team, kind and
    role: the recorded minutes, and (``role`` '') the encounters of the kind with none recorded,
    which the true costs page prices by the process map of the moment (core/config/costing.toml).
    Grain: month, team_id, kind, role. Derived by ``core.derive.page_aggregates``; the capacity
    used (``core.derive.costs.used_minutes_by_team_month``) reads it instead of joining every
    internal encounter of the months to its staff minutes on each render."""

    __tablename__ = "team_month_minutes"

    month: date = Field(primary_key=True)
    team_id: str = Field(primary_key=True, max_length=64)
    kind: str = Field(primary_key=True, max_length=32)
    role: str = Field(primary_key=True, max_length=64)
    minutes: float = 0.0
    encounters: int = 0


class PatientMonthCost(SQLModel, table=True):
    """The cost of an assigned patient-month with its team and subgroup (``patient_month_activity``
    joined to ``subgroup_assignment``). Grain: patient_id, month. Its index gives the costliest
    patients of a team's subgroup in a month by reading the first rows of one index range."""

    __tablename__ = "patient_month_cost"

    patient_id: str = Field(primary_key=True, max_length=64)
    month: date = Field(primary_key=True)
    team_id: str | None = Field(default=None, max_length=64)
    subgroup: str = Field(max_length=64)
    cost_total_usd: float = 0.0
    cost_internal_usd: float = 0.0
    cost_external_usd: float = 0.0

    __table_args__ = (
        Index("ix_patient_month_cost_top", "month", "team_id", "subgroup", text("cost_total_usd DESC"), "patient_id"),
    )


class Outreach(SQLModel, table=True):
    """A contact attempt or its outcome recorded by a clinician on the worklist (call, message,
    letter, visit booked, declined). Grain: outreach_id. Made in the product, not imported."""

    outreach_id: int | None = Field(default=None, primary_key=True)
    patient_id: str = Field(foreign_key="patient.patient_id", max_length=64)
    at: datetime = Field(default_factory=utc_now)
    user_key: str = Field(max_length=200)
    channel: str = Field(max_length=32)
    outcome: str = Field(max_length=32)
    note: str = Field(default="", max_length=1000)

    __table_args__ = (Index("ix_outreach_patient_at", "patient_id", "at"),)
