"""Every table and chart speaks the reader's language: every page, opened by every role that may
open it on the sample network, shows no raw column name (``patient_id``, ``cost_pmpm_usd``), no
float without a number format, no "None" or "nan", and charts with titled axes and readable names.

The checkers below read what Streamlit sends to the browser: a dataframe's Arrow data with its
column configuration (labels, formats, order, placeholder) and a Plotly chart's JSON figure."""

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.access.policy import load_access_rules
from core.store.queries import months_available, organisation, team_patients

RAW_NAME = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$|^[a-z]+$")  # patient_id, cost_pmpm_usd, team
SNAKE = re.compile(r"\b[a-z][a-z0-9]*(_[a-z0-9]+)+\b")  # a code inside a text: hispanic_or_latino
NONE_TEXT = {"none", "nan", "<na>", "nat", "null"}
HOVER_NAME = re.compile(r"(^|<br>)[a-z][a-z0-9_]*=")  # plotly express's "column=value" hover line


def _displayed(proto, frame: pd.DataFrame) -> tuple[list[str], dict]:
    config = json.loads(proto.columns or "{}")
    order = list(proto.column_order) or [str(c) for c in frame.columns]
    shown = [c for c in order if c in frame.columns and not config.get(c, {}).get("hidden")]
    return shown, config


def _decimals(value: float) -> int:
    text = f"{value:.10f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


def table_problems(frame: pd.DataFrame, config: dict, shown: list[str], placeholder: str = "", where: str = "") -> list[str]:
    """What a reader would trip over in one displayed table."""
    problems = []
    for col in shown:
        spec = config.get(col, {})
        label = spec.get("label") or str(col)
        series = frame[col]
        if RAW_NAME.match(label):
            problems.append(f"{where}: column label {label!r} is a raw name")
        type_config = spec.get("type_config") or {}
        if pd.api.types.is_float_dtype(series):
            values = series.dropna().to_numpy(dtype=float)
            if not type_config.get("format") and len(values) and any(_decimals(v) > 0 for v in values[:200]):
                problems.append(f"{where}: float column {label!r} has no number format (e.g. {values[0]!r})")
        if series.isna().any() and not placeholder:
            problems.append(f"{where}: column {label!r} has empty cells shown as None (no placeholder)")
        if series.dtype == object or pd.api.types.is_string_dtype(series):
            text = series.dropna().astype(str)
            if text.str.strip().str.lower().isin(NONE_TEXT).any():
                problems.append(f"{where}: column {label!r} shows 'None' or 'nan'")
            codes = text[text.str.fullmatch(RAW_NAME.pattern.split("|")[0])]
            if len(codes) and col not in ALLOWED_CODES:
                problems.append(f"{where}: column {label!r} shows codes such as {codes.iloc[0]!r}")
    return problems


# Columns whose codes are the thing looked up: audit actions are searched by their code, and a
# data quality check quotes the values it found in the data as they are
ALLOWED_CODES = {"action", "rule_id", "user_key", "target", "subgroup_id", "measure_id", "id", "examples"}


def _values(value) -> list:
    """A trace's data array as a list: plotly writes numpy arrays as typed base64 ("bdata")."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).tolist()
    return list(value) if isinstance(value, list | tuple) else []


def _texts(value) -> list[str]:
    if isinstance(value, dict):
        return [str(value.get("text", ""))]
    return [str(value)] if value is not None else []


def chart_problems(spec: dict, where: str = "") -> list[str]:
    """What a reader would trip over in one Plotly figure: no title, an axis without a title,
    a raw name in a trace, a tick or a hover label, "None" or "nan" shown."""
    problems = []
    layout = spec.get("layout", {})
    title = layout.get("title", {})
    title = title.get("text") if isinstance(title, dict) else title
    if not title:
        problems.append(f"{where}: chart has no title")
    used = set()
    for trace in spec.get("data", []):
        if trace.get("type", "scatter") in ("pie", "table"):
            continue
        used.add("xaxis" + (trace.get("xaxis", "x")[1:]))
        used.add("yaxis" + (trace.get("yaxis", "y")[1:]))
        name = trace.get("name")
        if (
            name is not None
            and trace.get("showlegend", True) is not False
            and (RAW_NAME.match(str(name)) or str(name).lower() in NONE_TEXT)
        ):
            problems.append(f"{where}: trace name {name!r}")
        for key in ("x", "y", "text", "customdata"):
            values = trace.get(key)
            if isinstance(values, list):
                flat = [v for row in values for v in (row if isinstance(row, list) else [row])]
                texts = [v for v in flat if isinstance(v, str)]
                if any(t.strip().lower() in NONE_TEXT for t in texts):
                    problems.append(f"{where}: trace {name!r} {key} shows 'None' or 'nan'")
                raw = [t for t in texts if RAW_NAME.match(t) and "_" in t]
                if raw:
                    problems.append(f"{where}: trace {name!r} {key} shows codes such as {raw[0]!r}")
        for key in ("hovertemplate", "texttemplate"):
            template = re.sub(r"%\{[^}]*\}", "", str(trace.get(key) or ""))
            if SNAKE.search(template) or HOVER_NAME.search(template):
                problems.append(f"{where}: trace {name!r} {key} shows a raw name: {template!r}")
    for trace in spec.get("data", []):  # a hovered number shows as formatted as the table's
        template = str(trace.get("hovertemplate") or "")
        for letter in ("x", "y"):
            axis = layout.get(letter + "axis" + trace.get(letter + "axis", letter)[1:], {})
            values = [v for v in _values(trace.get(letter)) if isinstance(v, float) and not np.isnan(v)]
            if f"%{{{letter}}}" in template and not axis.get("hoverformat") and any(_decimals(v) > 2 for v in values):
                problems.append(f"{where}: trace {trace.get('name')!r} hovers {letter} unformatted (e.g. {values[0]!r})")
    for axis in sorted(used):
        spec_axis = layout.get(axis, {})
        if spec_axis.get("visible") is False or spec_axis.get("showticklabels") is False:
            continue
        texts = [t for t in _texts(spec_axis.get("title")) if t]
        if not texts:
            problems.append(f"{where}: {axis} has no title")
        elif RAW_NAME.match(texts[0]):
            problems.append(f"{where}: {axis} title {texts[0]!r} is a raw name")
    for annotation in layout.get("annotations", []):
        if str(annotation.get("text", "")).strip().lower() in NONE_TEXT:
            problems.append(f"{where}: annotation shows {annotation.get('text')!r}")
    return problems


def page_problems(at: AppTest, where: str) -> list[str]:
    problems = []
    for i, df in enumerate(at.dataframe):
        frame = df.value
        shown, config = _displayed(df.proto, frame)
        problems += table_problems(frame, config, shown, df.proto.placeholder, f"{where} table {df.key or i}")
    for i, chart in enumerate(at.get("plotly_chart")):
        problems += chart_problems(json.loads(chart.proto.spec), f"{where} chart {i}")
    return problems


# --- the checkers can fail ------------------------------------------------------------------


def test_the_table_checker_finds_raw_names_unformatted_floats_and_none():
    frame = pd.DataFrame({"cost_pmpm_usd": [10079.7827, np.nan], "team": ["A", "None"], "race": ["white", "hispanic_or_latino"]})
    problems = table_problems(frame, {}, list(frame.columns))
    assert any("'cost_pmpm_usd' is a raw name" in p for p in problems)
    assert any("has no number format" in p for p in problems)
    assert any("shown as None" in p for p in problems)
    assert any("shows 'None'" in p for p in problems)
    assert any("codes such as 'hispanic_or_latino'" in p for p in problems)
    config = {"cost_pmpm_usd": {"label": "Cost per member per month, $", "type_config": {"format": "dollar"}},
              "team": {"label": "Team"}, "race": {"label": "Race"}}  # fmt: skip
    fixed = frame.assign(team=["A", "B"], race=["White", "Hispanic or Latino"])
    assert table_problems(fixed, config, list(frame.columns), placeholder="–") == []


def test_the_chart_checker_finds_untitled_axes_and_raw_names():
    spec = {"data": [{"type": "scatter", "name": "cost_pmpm_usd", "x": ["not_dual", "None"], "y": [1.5, 2.5],
                      "hovertemplate": "figure=%{x}<br>Cost=%{y}"}], "layout": {}}  # fmt: skip
    problems = chart_problems(spec)
    assert any("no title" in p for p in problems) and any("xaxis has no title" in p for p in problems)
    assert any("trace name 'cost_pmpm_usd'" in p for p in problems)
    assert any("shows codes such as 'not_dual'" in p for p in problems) and any("'None'" in p for p in problems)
    assert any("hovertemplate shows a raw name" in p for p in problems)
    unformatted = {"data": [{"y": [18.1740123], "hovertemplate": "%{y}"}], "layout": {}}
    assert any("hovers y unformatted" in p for p in chart_problems(unformatted))
    good = {"data": [{"type": "scatter", "name": "Cost", "x": ["Not dual"], "y": [1.5]}],
            "layout": {"title": {"text": "Cost"}, "xaxis": {"title": {"text": "Dual status"}}, "yaxis": {"title": {"text": "USD"}}}}  # fmt: skip
    assert chart_problems(good) == []


# --- every page, every role -----------------------------------------------------------------


def _role_pages() -> list[tuple[str, str]]:
    """Every page with every role that may open it (patient rows only for roles that see them)."""
    rules = load_access_rules()
    return [(role, page.file) for page in rules.pages.values() for role in page.roles
            if not page.patient_level or rules.patient_level_default[role]]  # fmt: skip


def _open(at: AppTest, role: str, page: str) -> AppTest:
    at.session_state["demo_role"] = role
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("role,page", _role_pages())
def test_every_table_and_chart_is_labelled_and_formatted(app, sample_engine, role, page):
    if page == "pages/patient.py":  # a patient of the demo clinician's team (the first team)
        team = organisation(sample_engine)["team_id"].iloc[0]
        month = months_available(sample_engine)[-1]
        app.query_params["patient"] = team_patients(sample_engine, month, (team,))["patient_id"].iloc[0]
    _open(app, role, page)
    problems = page_problems(app, f"{role} {page}")
    assert not problems, "\n".join(problems)
