"""Empty CSV templates of the bundle and a README table of every column, written from ``BUNDLE``.

``python -m core templates --out docs/templates`` calls :func:`write_templates`.
"""

import csv
from pathlib import Path

from core.config.catalog import load_catalog
from core.ingest.bundle_schema import BUNDLE, EARLIEST_DATE, ICD10_PATTERN, LATEST_DATE, Column, TableSpec
from core.ingest.csv_bundle.columns import FUTURE_ALLOWED

TYPE_TEXT = {
    "str": "text",
    "date": "date YYYY-MM-DD",
    "month": "month YYYY-MM",
    "int": "whole number",
    "float": "number",
    "bool": "true/false (1/0, yes/no)",
}


def _rules(spec: TableSpec, column: Column) -> str:
    catalog = load_catalog()
    rules = []
    if column.name in spec.key:
        rules.append("key" if len(spec.key) == 1 else f"key (together with {', '.join(k for k in spec.key if k != column.name)})")
    if column.max_len:
        rules.append(f"at most {column.max_len} characters")
    if column.min is not None:
        rules.append(f">= {column.min:,.10g}")
    if column.max is not None:
        rules.append(f"<= {column.max:,.10g}")
    if column.choices:
        values = list(getattr(catalog, column.choices))
        rules.append(f"one of: {', '.join(f'`{v}`' for v in values)}")
    if column.pattern:
        rules.append("ICD-10-CM code (E11.9 or E119)" if column.pattern == ICD10_PATTERN else f"matches `{column.pattern}`")
    if column.ref:
        rules.append(f"must exist in {column.ref} (this bundle or the database)")
    if column.type in ("date", "month"):
        rules.append(f"{EARLIEST_DATE} .. {LATEST_DATE}")
    if column.type == "date":
        rules.append("may be in the future" if (spec.file, column.name) in FUTURE_ALLOWED else "not after today")
    if spec.table == "measurement" and column.name == "value":
        rules.append("within the code's plausible min..max in core/config/catalog.toml, else the row is skipped")
    return "; ".join(rules).replace("|", "\\|")


def write_templates(out: Path) -> list[Path]:
    """Write one header-only CSV per bundle file and ``README.md`` describing every column; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for spec in BUNDLE:
        path = out / spec.file
        with path.open("w", encoding="utf-8", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerow(spec.column_names)
        paths.append(path)
    lines = [
        "# CSV bundle templates",
        "",
        "A bundle is a folder with one UTF-8 CSV file per table, a header row with the column names below",
        "(any order; unknown columns are ignored with a warning) and one row per record. Import it with",
        "`python -m core import FOLDER`: the whole bundle is validated first and loaded in one transaction,",
        "or nothing is written. Rows are keyed, so importing the same rows again updates them in place.",
        "Generated from `core/ingest/bundle_schema.py` by `python -m core templates`; do not edit by hand.",
        "",
    ]
    for spec in BUNDLE:
        needed = "required" if spec.required_file else "optional"
        lines += [f"## {spec.file} ({needed} file)", "", spec.description, "",
                  "| column | type | required | rules | description |", "|---|---|---|---|---|"]
        for column in spec.columns:
            lines.append(
                f"| `{column.name}` | {TYPE_TEXT.get(column.type, column.type)} | {'yes' if column.required else 'no'} "
                f"| {_rules(spec, column)} | {column.description.replace('|', '/')} |"
            )
        lines.append("")
    lines += [
        "## Checks beyond single values",
        "",
        "- Errors (nothing is imported): duplicate keys; references to missing rows; clinical dates after today",
        "  (a medication's end_date may be in the future); death_date before birth_date; resolved_date before",
        "  onset_date; end_date before start_date; files that are not UTF-8, empty, or malformed CSV.",
        "- Rows skipped with a warning: measurement values outside the plausible range of their code;",
        "  attribution months after the month of death or before the month of birth.",
        "- Warnings only: events after death or before birth, future attribution months, unknown columns and files.",
        "- Derived: `is_internal` from the activity kind; a blank `cost_category` is the kind's default category.",
        "",
    ]
    readme = out / "README.md"
    readme.write_text("\n".join(lines), encoding="utf-8")
    paths.append(readme)
    return paths
