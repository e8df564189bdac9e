"""The import report: what an import loaded, skipped and why, and every error it found.

Every importer (CSV bundle, FHIR, Tuva) fills one :class:`ImportReport`; the loader adds the
row counts and stores it as JSON on the ``import_run`` row. Errors reject the whole import.
"""

from dataclasses import asdict, dataclass, field

from core.ingest.claims import ClaimsReport

# Errors beyond this many are counted, not listed ("... and N more").
MAX_ERRORS = 100
# Warnings are listed up to this many; the rest are counted.
MAX_WARNINGS = 100
# Unmapped codes listed per code system in the text report; the rest are counted.
MAX_UNMAPPED_SHOWN = 20
# Readable names of the code systems of unmapped-code keys ("<field>:<system>|<code>").
SYSTEM_NAMES = {
    "http://snomed.info/sct": "SNOMED CT",
    "http://loinc.org": "LOINC",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://hl7.org/fhir/sid/icd-9-cm": "ICD-9-CM",
    "icd-9-cm": "ICD-9-CM",
}


def unmapped_by_system(unmapped: dict[str, int]) -> dict[str, dict[str, int]]:
    """Unmapped-code counts (keys ``"<field>:<system>|<code>"`` or ``"<field>:<code>"``) grouped by
    where they came from and their code system (``"Condition.code SNOMED CT"`` -> {code: rows}),
    most frequent first."""
    out: dict[str, dict[str, int]] = {}
    for key, n in sorted(unmapped.items(), key=lambda item: -int(item[1])):
        where, _, code = str(key).partition(":")
        system, bar, value = code.rpartition("|")
        label = f"{where} {SYSTEM_NAMES.get(system, system or 'no system')}" if bar else where
        out.setdefault(label, {})[value if bar else code] = int(n)
    return out


@dataclass
class ImportIssue:
    """One problem in the input: where it is (file, 1-based spreadsheet row, column) and what is wrong."""

    file: str
    row: int | None = None
    column: str | None = None
    message: str = ""

    def __str__(self) -> str:
        where = ":".join(str(part) for part in (self.file, self.row, self.column) if part not in (None, ""))
        return f"{where}: {self.message}" if where else self.message


@dataclass
class ImportReport:
    """Outcome of one import.

    ``loaded``: rows per table loaded (inserted or updated); ``new_rows``: rows per table that did
    not exist before; ``skipped``: table -> reason -> rows left out; ``unmapped_codes``: source
    codes an importer could not map -> count; ``seconds``: wall time of read + validate + load;
    ``claims``: what the claims rules corrected (netting, credits, repeated header amounts, ED
    visits and stays; keys on :class:`~core.ingest.claims.ClaimsReport`), ``{}`` in the JSON form
    when the import held no claims.
    """

    source: str
    format: str
    origin: str = "real"
    errors: list[ImportIssue] = field(default_factory=list)
    warnings: list[ImportIssue] = field(default_factory=list)
    loaded: dict[str, int] = field(default_factory=dict)
    new_rows: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)
    unmapped_codes: dict[str, int] = field(default_factory=dict)
    claims: ClaimsReport = field(default_factory=ClaimsReport)
    seconds: float = 0.0
    import_id: int | None = None
    errors_not_shown: int = 0
    warnings_not_shown: int = 0
    derive: dict | None = None  # the derive that followed (core.derive.pipeline.import_files), if any

    @property
    def ok(self) -> bool:
        return not self.errors and not self.errors_not_shown

    @property
    def error_count(self) -> int:
        return len(self.errors) + self.errors_not_shown

    def add_error(self, file: str, row: int | None = None, column: str | None = None, message: str = "") -> None:
        """Record an error; past :data:`MAX_ERRORS` it is only counted."""
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(ImportIssue(file, row, column, message))
        else:
            self.errors_not_shown += 1

    def add_warning(self, file: str, row: int | None = None, column: str | None = None, message: str = "") -> None:
        """Record a warning; past :data:`MAX_WARNINGS` it is only counted."""
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(ImportIssue(file, row, column, message))
        else:
            self.warnings_not_shown += 1

    def errors_left(self) -> int:
        """How many more errors will be listed before the cap."""
        return max(0, MAX_ERRORS - len(self.errors))

    def checkpoint(self) -> tuple:
        """The issues so far, for :meth:`restore` (a streaming reader that finds a file unreadable
        half-way replaces what it reported on the file's first rows with the reason)."""
        skipped = {table: dict(reasons) for table, reasons in self.skipped.items()}
        return len(self.errors), self.errors_not_shown, len(self.warnings), self.warnings_not_shown, skipped

    def restore(self, checkpoint: tuple) -> None:
        """Drop every error, warning and skipped count added since ``checkpoint``."""
        errors, errors_not_shown, warnings, warnings_not_shown, skipped = checkpoint
        del self.errors[errors:], self.warnings[warnings:]
        self.errors_not_shown, self.warnings_not_shown = errors_not_shown, warnings_not_shown
        self.skipped = {table: dict(reasons) for table, reasons in skipped.items()}

    def add_skipped(self, table: str, reason: str, rows: int) -> None:
        if rows:
            by_reason = self.skipped.setdefault(table, {})
            by_reason[reason] = by_reason.get(reason, 0) + int(rows)

    def unmapped_by_system(self) -> dict[str, dict[str, int]]:
        """:func:`unmapped_by_system` of this report's unmapped codes."""
        return unmapped_by_system(self.unmapped_codes)

    def to_text(self) -> str:
        """A human summary: all errors when rejected, else rows loaded, new, skipped and warnings."""
        lines: list[str] = []
        if not self.ok:
            lines.append(f"Import of {self.source} ({self.format}) rejected: {self.error_count} error(s); nothing was written.")
            lines += [f"  {issue}" for issue in self.errors]
            if self.errors_not_shown:
                lines.append(f"  ... and {self.errors_not_shown} more")
        else:
            run = f" as import #{self.import_id}" if self.import_id is not None else ""
            lines.append(f"Imported {self.source} ({self.format}, {self.origin} data){run} in {self.seconds:.1f} s.")
            lines.append(f"  {'table':16s} {'loaded':>12s} {'new':>12s} {'skipped':>10s}")
            for table in dict.fromkeys([*self.loaded, *self.skipped]):
                skipped = sum(self.skipped.get(table, {}).values())
                lines.append(
                    f"  {table:16s} {self.loaded.get(table, 0):>12,} {self.new_rows.get(table, 0):>12,} {skipped:>10,}"
                )
            for table, reasons in self.skipped.items():
                for reason, n in reasons.items():
                    lines.append(f"  skipped {n:,} {table} row(s): {reason}")
            for label, codes in self.unmapped_by_system().items():
                shown = ", ".join(f"{c} ({n})" for c, n in list(codes.items())[:MAX_UNMAPPED_SHOWN])
                more = f", ... and {len(codes) - MAX_UNMAPPED_SHOWN} more" if len(codes) > MAX_UNMAPPED_SHOWN else ""
                lines.append(f"  unmapped {label}: {sum(codes.values()):,} row(s) of {len(codes)} code(s): {shown}{more}")
            corrected = self.claims.to_text()
            if corrected:
                lines.append(f"  claims: {self.claims.claims:,} claim(s) of {self.claims.lines:,} line(s); corrected as analysts count them:")
                lines += [f"    {line}" for line in corrected]
        if self.warnings:
            lines.append(f"{len(self.warnings) + self.warnings_not_shown} warning(s):")
            lines += [f"  {issue}" for issue in self.warnings]
            if self.warnings_not_shown:
                lines.append(f"  ... and {self.warnings_not_shown} more")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready form (stored on ``import_run.report``)."""
        out = asdict(self)
        out["claims"] = self.claims.to_dict() if self.claims.claims else {}
        out["ok"] = self.ok
        out["error_count"] = self.error_count
        return out
