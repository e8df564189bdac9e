"""The attack harness: collect every number a page publishes and look for small counts (1-10) that
subtraction recovers.

What is collected (:func:`collect`): every dataframe, every metric (value, delta and its
sparkline), every plotly chart's traces (x, y, hover text and custom data) and the bytes of every
download (CSV and XLSX, parsed back into tables). Each becomes a table of facts: dimension columns
(month, subgroup, team, ...) and count columns (numerator, patients, members, e-consults, ...),
each count published, hidden (NaN, "suppressed", "<11") or absent.

What is searched:

- :func:`total_leaks`: within a table and across the tables of one page (facts with the same
  dimensions and count are pooled, so a figure hidden in one table and shown in another, a chart
  or a download, is shown), a total or "All" row minus the published parts gives the sum of the
  hidden parts; a leak when that sum is 1-10 (one hidden part, or a small sum of several).
- :func:`moves_leaks`: the members headline and its change against the rows of patients entering
  and leaving (members now - members before = entered - left).
- :func:`window_leaks`: neighbouring windows: a window ending in P minus the window ending in
  P - 1 plus the month leaving the window gives the month P, checked against the true count
  (team comparison, e-consults by team and specialty, payment models by subgroup; for the last
  two the attacker is assumed to know every month leaving a window).
- :func:`rate_window_leaks`: the same with the counts rebuilt from published rates: value (as
  shown, to 0.1) x member-years / 1,000 (member-years follow from the published monthly members:
  the harness gives the attacker the true ones), every count consistent with the value under the
  published rounding method (:func:`counts_behind_rate`); a leak when neighbouring windows and
  the month leaving them pin a month's small count to one value.

A finding is a string naming where the count came from; a page with no leak returns [].
"""

from __future__ import annotations

import base64
import io
import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

import numpy as np
import pandas as pd

SMALLEST, LARGEST = 1, 10
HIDDEN_TEXT = {"suppressed", "<11"}
TOTAL_LABELS = {"all", "all subgroups", "all teams", "all groups", "total", "whole network"}
COUNT = re.compile(r"^(numerator|denominator|patients|patients_current|patients_draft|members|member_months|econsults|e-consults|responded|resolved"
                   r"|not_resolved|count|n)$", re.I)  # fmt: skip
SYNONYMS = {"member_months": "members", "member-months": "members", "e-consults": "econsults"}
DIMENSIONS = {"month", "subgroup", "team", "team_id", "specialty", "group", "stratum_value", "metric", "metric_label",
              "measure", "measure_id", "direction", "other_subgroup", "model", "series", "rule_id", "rule"}  # fmt: skip
# Counts written in text ("7 patients", "E-consults: 4") and metrics that are counts.
COUNT_TEXT = re.compile(r"(?<![\d.,$-])(?:[1-9]|10)\s+(?:patients?|members?|member-months|e-consults?|people)\b"
                        r"|(?:patients?|members?|e-consults?|override\w*)\W{1,3}(?:[1-9]|10)(?![\d.,%])", re.I)  # fmt: skip
COUNT_METRIC = re.compile(r"^(members|e-consults|patients)\b", re.I)
SERIES_AS = {"subgroup_label": "subgroup", "subgroup": "subgroup", "model": "model"}


@dataclass
class Published:
    """Everything one page shows: tables (name -> frame) and metrics (label -> (value, delta, sparkline))."""

    page: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    metrics: dict[str, tuple[str, str, list]] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)


def is_small(x) -> bool:
    return x is not None and not pd.isna(x) and SMALLEST - 1e-9 <= float(x) <= LARGEST + 1e-9


def parse_number(value):
    """A published cell as a number, ``"hidden"`` or None (no data / not a number)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "hidden"
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    text = str(value).strip()
    if text.lower() in HIDDEN_TEXT or text.lower() == "none" or text == "":
        return "hidden"
    text = text.replace(",", "").replace("$", "")
    try:
        return float(text)
    except ValueError:
        return None


def _frame_of_csv(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)


def _frames_of_xlsx(data: bytes) -> dict[str, pd.DataFrame]:
    return pd.read_excel(io.BytesIO(data), sheet_name=None, dtype=str, keep_default_na=False)


def record_media(monkeypatch) -> list:
    """Keep the in-memory file stores and file managers AppTest creates (one per run), so a test
    reads what a download button serves: a published file, or one made on click."""
    from streamlit.runtime.media_file_manager import MediaFileManager
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
    from streamlit.testing.v1 import app_test

    kept: list = []

    class RecordingStore(MemoryMediaFileStorage):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            kept.append(self)

    class RecordingManager(MediaFileManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            kept.append(self)

    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", RecordingStore)
    monkeypatch.setattr(app_test, "MediaFileManager", RecordingManager)
    return kept


def download_bytes(stores, button) -> bytes | None:
    """The bytes a download button serves. A button whose data is made on click (a callable,
    ``deferred_file_id``) is clicked: its callable runs (and writes its audit event) as in the
    browser; ``stores`` must come from :func:`record_media` for that."""
    from streamlit.runtime.media_file_storage import MediaFileStorageError

    url = button.proto.url
    if not url and button.proto.deferred_file_id:
        for manager in reversed([m for m in stores if hasattr(m, "execute_deferred")]):
            try:
                url = manager.execute_deferred(button.proto.deferred_file_id)
                break
            except MediaFileStorageError:
                continue
    file_id = url.rsplit("/", 1)[-1].split(".")[0]
    for store in reversed([s for s in stores if hasattr(s, "_files_by_id")]):
        if file_id and file_id in store._files_by_id:
            return store._files_by_id[file_id].content
    return None


def _array(value):
    """A plotly array as a list: plain JSON lists, or typed arrays ({"dtype", "bdata"}: base64 of the values)."""
    if isinstance(value, dict) and "bdata" in value:
        data = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        return data.reshape(value["shape"]).tolist() if "shape" in value else data.tolist()
    return value


def _chart_tables(spec: dict, name: str) -> dict[str, pd.DataFrame]:
    """Plotly traces as tables: x, the trace name as ``series`` (or the column its hover label
    names), y named after its hover label; hover text and custom data as extra columns."""
    out = {}
    for i, trace in enumerate(spec.get("data", [])):
        x, y = _array(trace.get("x")), _array(trace.get("y"))
        if not isinstance(x, list) or not isinstance(y, list) or len(x) != len(y):
            continue
        template = trace.get("hovertemplate") or ""
        y_name = _normalise(next(iter(re.findall(r"(?:^|>)([^=<>]+)=%\{y", template)), "y"))
        series_col = _normalise(next(iter(re.findall(r"(?:^|>)([^=<>]+)=" + re.escape(str(trace.get("name"))), template)), "series"))
        frame = pd.DataFrame({"x": x, y_name: y})
        if all(isinstance(v, str) and re.match(r"^\d{4}-\d{2}", v) for v in x):
            frame = frame.rename(columns={"x": "month"})
            frame["month"] = [v[:7] for v in frame["month"]]
        frame[SERIES_AS.get(series_col, "series")] = trace.get("name")
        for extra in ("customdata", "text", "hovertext"):
            values = _array(trace.get(extra))
            if isinstance(values, list) and len(values) == len(x):
                frame[extra] = [json.dumps(v) if isinstance(v, list) else v for v in values]
        out[f"{name} trace {i}"] = frame
    return out


def collect(at, stores, page: str) -> Published:
    """Every number the AppTest ``at`` shows, and every download's bytes parsed back."""
    pub = Published(page)
    for i, df in enumerate(at.dataframe):
        pub.tables[f"dataframe {i}"] = df.value
    for m in at.metric:
        chart = list(m.proto.chart_data) if hasattr(m.proto, "chart_data") else []
        pub.metrics[m.label] = (m.value, m.delta or "", chart)
    for kind in ("markdown", "caption", "info", "warning", "success", "error", "text"):
        pub.texts.extend(str(e.value) for e in at.get(kind))
    for i, chart in enumerate(at.get("plotly_chart")):
        pub.tables |= _chart_tables(json.loads(chart.proto.spec), f"chart {i}")
    for button in at.get("download_button"):
        if "PDF" in button.label:
            continue  # PDFs carry the tables of the pack's XLSX and CSVs (read back in tests/unit/test_packs.py)
        data = download_bytes(stores, button)
        if data is None:
            continue
        name = f"download {button.label}"
        if data[:2] == b"PK":
            pub.tables |= {f"{name} sheet {sheet}": frame for sheet, frame in _frames_of_xlsx(data).items()}
        elif data.lstrip()[:1] == b"<":
            pub.tables |= {f"{name} html {i}": f for i, f in enumerate(_html_tables(data))}
        else:
            pub.tables[name] = _frame_of_csv(data)
    return pub


class _Tables(HTMLParser):
    """The <table>s of an HTML page as rows of cell texts (the first row: the header)."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None
        self._depth = 0

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._depth += 1
            self.tables.append([])
        elif tag == "tr" and self._depth:
            self.tables[-1].append([])
        elif tag in ("td", "th") and self._depth and self.tables[-1]:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table" and self._depth:
            self._depth -= 1

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _html_tables(data: bytes) -> list[pd.DataFrame]:
    """Every table of an HTML download, header row as columns (the standard library's parser:
    pandas.read_html would need lxml)."""
    parser = _Tables()
    parser.feed(data.decode("utf-8", errors="replace"))
    frames = []
    for rows in parser.tables:
        if len(rows) < 2:
            continue
        width = len(rows[0])
        frames.append(pd.DataFrame([r[:width] + [""] * (width - len(r)) for r in rows[1:]], columns=rows[0]))
    return frames


# --- facts ------------------------------------------------------------------------------------


def _normalise(col: str) -> str:
    key = str(col).strip().lower().replace(" ", "_")
    return SYNONYMS.get(key, key)


def facts(pub: Published) -> pd.DataFrame:
    """Long table of every published count: dims (a tuple of (dimension, value)), count, value, hidden, source."""
    rows = []
    for name, frame in pub.tables.items():
        cols = {c: _normalise(c) for c in frame.columns}
        dims = [c for c, n in cols.items() if n in DIMENSIONS]
        counts = [c for c, n in cols.items() if COUNT.match(n)]
        for record in frame.to_dict("records"):
            key = tuple(sorted((cols[d], _label(record[d])) for d in dims))
            for c in counts:
                value = parse_number(record[c])
                if value is None:
                    continue
                rows.append((key, cols[c], np.nan if value == "hidden" else value, value == "hidden", name))
    return pd.DataFrame(rows, columns=["dims", "count", "value", "hidden", "source"])


def _label(value) -> str:
    if isinstance(value, (pd.Timestamp,)) or hasattr(value, "strftime"):
        return value.strftime("%Y-%m")
    text = str(value)
    return text[:7] if re.match(r"^\d{4}-\d{2}-\d{2}", text) else text


def pooled(fs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One row per (dims, count): the published value if any source shows it. Also the leaks of a
    count hidden in one source and shown (1-10) in another."""
    leaks = []
    out = []
    for (dims, count), part in fs.groupby(["dims", "count"], sort=False):
        shown = part.loc[~part["hidden"]]
        if len(shown) and part["hidden"].any() and is_small(shown["value"].iloc[0]):
            leaks.append(f"{count} {dict(dims)} = {shown['value'].iloc[0]:g}: hidden in "
                         f"{sorted(set(part.loc[part['hidden'], 'source']))}, shown in {sorted(set(shown['source']))}")
        value = shown["value"].iloc[0] if len(shown) else np.nan
        out.append((dims, count, value, not len(shown), "; ".join(sorted(set(part["source"])))))
    return pd.DataFrame(out, columns=["dims", "count", "value", "hidden", "source"]), leaks


def small_counts(pub: Published) -> list[str]:
    """Counts of 1-10 published as such: in a count column, a count metric (and its sparkline) or text."""
    fs = facts(pub)
    found = [f"{pub.page}: {r.count} {dict(r.dims)} = {r.value:g} in {r.source}"
             for r in fs.itertuples() if not r.hidden and is_small(r.value)] if len(fs) else []
    for label, (value, _, chart) in pub.metrics.items():
        if COUNT_METRIC.match(label):
            found += [f"{pub.page}: metric {label} = {v:g}" for v in [parse_number(value), *chart]
                      if isinstance(v, float) and is_small(v)]  # fmt: skip
    found += [f"{pub.page}: text {m!r}" for t in pub.texts for m in COUNT_TEXT.findall(t)]
    return found


def unmarked_blanks(at, page: str) -> list[str]:
    """Dataframes whose numeric columns hold blanks (NaN) shown without a "suppressed" placeholder:
    Streamlit would show them as "None", which must never stand for a suppressed figure."""
    found = []
    for i, df in enumerate(at.dataframe):
        numeric = df.value.select_dtypes("number")
        if numeric.isna().any().any() and df.proto.placeholder.lower() not in HIDDEN_TEXT:
            found.append(f"{page}: dataframe {i} ({', '.join(numeric.columns[numeric.isna().any()])}) has blanks shown as None")
    return found


def total_leaks(pub: Published) -> list[str]:
    """Totals and "All" rows against their parts, within a table and across the page's tables."""
    fs = facts(pub)
    if fs.empty:
        return []
    pool, leaks = pooled(fs)
    for count, part in pool.groupby("count", sort=False):
        for dim in {d for dims in part["dims"] for d, _ in dims}:
            # the rows that vary in ``dim`` only: group by the other dimensions
            keyed = part.assign(rest=[tuple(x for x in dims if x[0] != dim) for dims in part["dims"]],
                                value_of=[dict(dims).get(dim) for dims in part["dims"]])  # fmt: skip
            keyed = keyed.loc[keyed["value_of"].notna()]
            for rest, group in keyed.groupby("rest", sort=False):
                is_total = group["value_of"].str.lower().isin(TOTAL_LABELS)
                totals, parts = group.loc[is_total & ~group["hidden"]], group.loc[~is_total]
                if totals.empty or not parts["hidden"].any():
                    continue
                recovered = float(totals["value"].iloc[0]) - float(parts.loc[~parts["hidden"], "value"].sum())
                if is_small(round(recovered, 6)):
                    hidden = list(parts.loc[parts["hidden"], "value_of"])
                    leaks.append(f"{pub.page}: {count} of {hidden} ({dim}; {dict(rest)}) = total "
                                 f"{totals['value'].iloc[0]:g} - published parts = {recovered:g} [{totals['source'].iloc[0]}]")
    return leaks


def moves_leaks(pub: Published, members_label: str = "Members", moves_table: str | None = None) -> list[str]:
    """Members now - members before = entered - left: hidden moves recovered from the headline."""
    if members_label not in pub.metrics:
        return []
    value, delta, _ = pub.metrics[members_label]
    now, change = parse_number(value), parse_number(delta.replace("+", "")) if delta else None
    if not isinstance(now, float) or not isinstance(change, float):
        return []
    leaks = []
    for name, frame in pub.tables.items():
        if moves_table and name != moves_table or not {"direction", "patients"} <= set(frame.columns):
            continue
        direction = [str(d).strip().lower() for d in frame["direction"]]  # the code, or its label on the page
        if not set(direction) <= {"entered", "left"}:
            continue  # a row whose direction is not told: the change does not single out a direction
        values = [parse_number(v) for v in frame["patients"]]
        hidden = [v == "hidden" for v in values]
        if not any(hidden):
            continue
        signed = [(1 if d == "entered" else -1) * (0.0 if h else v) for d, v, h in zip(direction, values, hidden, strict=True)]
        directions = {d for d, h in zip(direction, hidden, strict=True) if h}
        if len(directions) == 1:
            rest = change - sum(signed)  # = entered_hidden - left_hidden
            recovered = abs(rest)
            if is_small(round(recovered, 6)):
                leaks.append(f"{pub.page}: {directions.pop()} patients hidden in {name} = |members change {change:g} - "
                             f"published moves| = {recovered:g}")
    return leaks


def window_leaks(windows: dict, leaving: dict, truth: dict, length: int = 12) -> list[str]:
    """Neighbouring windows: W(P) - W(P-1) + m(P-L) = m(P), for windows of ``length`` (L) months.

    ``windows``: {(unit, window end index): published count of the window}; ``leaving``: {(unit,
    month index): the monthly count as the attacker knows it (published on a month view, or the
    true count for a worst case) or "hidden"}; ``truth``: {(unit, month index): the true monthly
    count}. A leak is a month whose true count is 1-10 (so hidden on any month view) and follows
    exactly.
    """
    leaks = []
    for (unit, p), w in windows.items():
        before, out = windows.get((unit, p - 1)), leaving.get((unit, p - length))
        if not isinstance(w, float) or not isinstance(before, float) or not isinstance(out, float):
            continue
        true = truth.get((unit, p), 0.0)
        recovered = w - before + out
        if is_small(true) and abs(recovered - true) < 1e-6:
            leaks.append(f"{unit} month {p}: {length} months to P ({w:g}) - {length} months to P-1 ({before:g}) + month "
                         f"P-{length} ({out:g}) = {recovered:g}")
    return leaks


def counts_behind_rate(value: float, member_years: float, base: int = 1, scale: float = 1000.0, digits: int = 1) -> list[int]:
    """The whole counts an attacker finds consistent with a published rate ``value`` (shown to
    ``digits`` decimals) over ``member_years``, knowing the numerators were rounded to ``base``
    (core/config/suppression.toml, window_rounding_base) before the value was computed."""
    if not member_years > 0:
        return []
    centre = value * member_years / scale
    lo, hi = int(np.floor(centre - base - 2)), int(np.ceil(centre + base + 2))
    out = []
    for c in range(max(lo, 0), hi + 1):
        shown = np.floor(c / base + 0.5) * base if base > 1 else c
        if abs(round(shown * scale / member_years, digits) - value) < 10 ** -(digits + 3):
            out.append(c)
    return out


def rate_window_leaks(values: dict, member_years: dict, leaving: dict, truth: dict, base: int = 1, length: int = 12,
                      scale: float = 1000.0) -> list[str]:  # fmt: skip
    """Neighbouring windows of a rate: the counts behind the values of the windows ending in P and
    P - 1 (:func:`counts_behind_rate`), minus each other, plus the month P - L leaving them.

    ``values``: {(unit, window end index): published value as shown, or "hidden"};
    ``member_years``: {(unit, window end index): the window's member-years}; ``leaving`` and
    ``truth`` as in :func:`window_leaks`. A leak is a month whose true count is 1-10 and the only
    value the published figures allow.
    """
    leaks = []
    for (unit, p), v in values.items():
        before, out = values.get((unit, p - 1)), leaving.get((unit, p - length))
        if not isinstance(v, float) or not isinstance(before, float) or not isinstance(out, float):
            continue
        now_counts = counts_behind_rate(v, member_years.get((unit, p), 0.0), base, scale)
        before_counts = counts_behind_rate(before, member_years.get((unit, p - 1), 0.0), base, scale)
        possible = {a - b + out for a in now_counts for b in before_counts}
        true = truth.get((unit, p), 0.0)
        if is_small(true) and possible == {true}:
            leaks.append(f"{unit} month {p}: rate {v:g} and {before:g} x member-years give {now_counts} and {before_counts} "
                         f"events in {length} months; + month P-{length} ({out:g}) = {true:g}")
    return leaks


def worst_case_leaving(truth: dict, first: int, last: int) -> dict:
    """The attacker knows every month's true count (a worst case), and that months before the first
    month of data (``first``) hold none."""
    units = {u for u, _ in truth}
    return {(u, i): float(truth.get((u, i), 0.0)) for u in units for i in range(first - 12, last + 1)}
