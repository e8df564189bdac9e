"""How every table column reads: its label with the unit, its kind of format, and the labels of
its codes (no Streamlit; ui/tables.py turns this into column configuration).

The catalogue is data, core/config/columns.toml. A column it does not list still gets a human
label made from its name (``cost_pmpm_usd`` -> "Cost PMPM, $") and a kind from its name and type,
so a column added to a view is never shown raw.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pandas as pd

CONFIG = Path(__file__).resolve().parents[1] / "config" / "columns.toml"
KINDS = (
    "money",
    "money_cents",
    "rate",
    "percent",
    "share",
    "count",
    "score",
    "change",
    "date",
    "month",
    "datetime",
    "text",
    "long_text",
    "flag",
)


@dataclass(frozen=True)
class Column:
    """How one column reads: label (with unit), kind (see columns.toml [kinds]), help, vocabulary,
    width (small, medium or large: room for text that must not be cut short)."""

    label: str
    kind: str
    help: str | None = None
    vocabulary: str | None = None
    width: str | None = None


@dataclass(frozen=True)
class ColumnCatalogue:
    columns: Mapping[str, Column]
    vocabularies: Mapping[str, Mapping[str, str]]
    words: Mapping[str, str]


@cache
def load_columns(path: Path = CONFIG) -> ColumnCatalogue:
    """The column catalogue of ``path``; a kind outside :data:`KINDS` is an error of the file."""
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    columns = {}
    for name, spec in raw.get("columns", {}).items():
        if spec.get("kind", "text") not in KINDS:
            raise ValueError(f"{path}: column {name!r} has unknown kind {spec.get('kind')!r}")
        if spec.get("width") not in (None, "small", "medium", "large"):
            raise ValueError(f"{path}: column {name!r} has unknown width {spec.get('width')!r}")
        columns[name] = Column(
            spec["label"], spec.get("kind", "text"), spec.get("help"), spec.get("vocabulary"), spec.get("width")
        )
    vocabularies = {
        name: {str(k).lower(): str(v) for k, v in codes.items()} for name, codes in raw.get("vocabularies", {}).items()
    }
    return ColumnCatalogue(columns, vocabularies, dict(raw.get("words", {})))


def label_from_name(name: str, words: Mapping[str, str] | None = None) -> str:
    """A label made from a column name: words of [words] replaced, a unit word moved to the end
    (``cost_pmpm_usd`` -> "Cost PMPM, $", ``resolved_pct`` -> "Resolved, %")."""
    words = load_columns().words if words is None else words
    parts = [p for p in str(name).split("_") if p]
    unit = None
    if parts and parts[-1] in ("usd", "pct"):
        unit = words.get(parts.pop(), "")
    text = " ".join(words.get(p, p) for p in parts) or str(name)
    text = text[0].upper() + text[1:]
    return f"{text}, {unit}" if unit else text


def kind_from(name: str, dtype) -> str:
    """The kind of a column the catalogue does not list, from its name and type."""
    name = str(name)
    if pd.api.types.is_bool_dtype(dtype):
        return "flag"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime" if name.endswith("_at") else "date"
    if pd.api.types.is_numeric_dtype(dtype):
        if name.endswith("_usd"):
            return "money_cents" if "pmpm" in name else "money"
        if name.endswith("_pct"):
            return "percent"
        return "count" if pd.api.types.is_integer_dtype(dtype) else "rate"
    if name.endswith("_date"):
        return "date"
    if name == "month" or name.endswith("_month"):
        return "month"
    return "text"


def column_spec(name: str, dtype=object, catalogue: ColumnCatalogue | None = None) -> Column:
    """How the column ``name`` reads: the catalogue's entry, else one made from its name and type."""
    catalogue = catalogue or load_columns()
    known = catalogue.columns.get(str(name))
    if known is not None:
        return known
    return Column(label_from_name(name, catalogue.words), kind_from(name, dtype))


def vocabulary(name: str, extra: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, str]:
    """Code -> label of the vocabulary ``name``: from ``extra`` (labels a page has at hand, such as
    the subgroup names of the rules file), the reference vocabularies of catalog.toml and
    access.toml, the payment models and cost metrics, and the [vocabularies] of columns.toml."""
    if extra and name in extra:
        return dict(extra[name])
    return _shared_vocabularies().get(name, {})


@cache
def _shared_vocabularies() -> dict[str, dict[str, str]]:
    from core.access.policy import load_access_rules
    from core.config.catalog import load_catalog
    from core.views.cells_read import COST_LABELS
    from core.views.charts import MODEL_LABELS

    catalog = load_catalog()
    words = {name: dict(codes) for name, codes in load_columns().vocabularies.items()}
    words["roles"] = {**catalog.roles, **load_access_rules().role_labels}
    words["cost_categories"] = dict(catalog.cost_categories)
    words["activity_kinds"] = {k: v.label for k, v in catalog.activity_kinds.items()}
    words["kinds"] = {**words["activity_kinds"], **words.get("kinds", {})}
    words["payment_models"] = dict(MODEL_LABELS)
    words["cost_metrics"] = dict(COST_LABELS)
    return words


_CODE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


def readable_codes(series: pd.Series, codes: Mapping[str, str]) -> pd.Series:
    """``series`` with every code of ``codes`` shown by its label; a code the vocabulary does not
    know (``some_code``, ``cardiology``) reads as words ("Some code", "Cardiology"), except
    ``suppressed``; other text, missing values and numbers stay as they are. Booleans read
    through "true"/"false"."""
    if pd.api.types.is_bool_dtype(series):
        return series.map(lambda v: codes.get(str(v).lower(), "Yes" if v else "No"))

    def one(value):
        if not isinstance(value, str):
            return value
        if value in codes:
            return codes[value]
        if value.lower() in codes:
            return codes[value.lower()]
        if _CODE.match(value) and value != "suppressed":
            return label_from_name(value, {})
        return value

    if series.dtype == object:
        return series.map(one)
    if pd.api.types.is_string_dtype(series):  # text and missing only: each distinct text looked up once
        return series.map({text: one(text) for text in series.dropna().unique()})
    return series


def _is_blank_word(value) -> bool:
    return isinstance(value, str) and value.strip().lower() in ("none", "nan")


def readable(frame: pd.DataFrame, extra: Mapping[str, Mapping[str, str]] | None = None) -> pd.DataFrame:
    """``frame`` for reading: the codes of every column with a vocabulary shown by their labels,
    text cells that read "None" or "nan" emptied. Column names, numbers and dates are kept (the
    column configuration labels and formats them)."""
    catalogue = load_columns()
    out = frame.copy()
    for col in out.columns:
        spec = column_spec(col, out[col].dtype, catalogue)
        if spec.vocabulary:
            out[col] = readable_codes(out[col], vocabulary(spec.vocabulary, extra))
        # an object column cell by cell; a text column only when a distinct text of it is a blank word
        values = out[col]
        if values.dtype == object or (pd.api.types.is_string_dtype(values) and any(map(_is_blank_word, values.dropna().unique()))):
            out[col] = values.map(lambda v: None if _is_blank_word(v) else v)
    return out


def label_of(code, vocabulary_name: str, extra: Mapping[str, Mapping[str, str]] | None = None):
    """One code of a vocabulary by its label (as :func:`readable_codes` shows it in a table)."""
    return readable_codes(pd.Series([code], dtype=object), vocabulary(vocabulary_name, extra)).iloc[0]
