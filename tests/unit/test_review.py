"""core.views.review: formatting, significance marks, settings, the data behind the page and the
review pack read back against the core scorecard."""

import io
import re
from datetime import date
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from core.metrics.scorecard import Selection, build_scorecard
from core.store.months import months_back
from core.store.queries import months_available
from core.views import review
from core.views.format import format_figure, usd
from core.views.review_log import LOG_COLUMNS


@pytest.mark.parametrize(
    "value,suppressed,digits,expected",
    [(1234.567, False, 1, "1,234.6"), (0.0, False, 1, "0.0"), (np.nan, False, 1, "–"), (None, False, 1, "–"),
     (5.0, True, 1, "suppressed"), (12.0, False, 0, "12")],
)  # fmt: skip
def test_format_figure(value, suppressed, digits, expected):
    assert format_figure(value, suppressed, digits) == expected


@pytest.mark.parametrize("value,expected", [(-824.4, "-$824"), (1700.0, "$1,700"), (None, "suppressed"), (0.0, "$0")])
def test_format_usd(value, expected):
    assert usd(value) == expected


@pytest.mark.parametrize(
    "month,n,expected",
    [(date(2026, 3, 1), 3, [date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)]),
     (date(2026, 1, 1), 2, [date(2025, 12, 1), date(2026, 1, 1)])],
)  # fmt: skip
def test_months_back(month, n, expected):
    assert months_back(month, n) == expected


def _card(**overrides):
    row = {"measure_id": "admissions", "name": "Admissions", "tier": 3, "unit": "per 1,000", "value": 1400.0,
           "ci_low": 1100.0, "ci_high": 1800.0, "target": 200.0, "previous_value": 400.0, "last_year_value": np.nan,
           "network_value": 800.0, "change_vs_previous": "worse", "change_vs_last_year": "", "gap_vs_network": "",
           "suppressed": False}  # fmt: skip
    return pd.DataFrame([{**row, **overrides}])


@pytest.mark.parametrize(
    "overrides,expected",
    [({}, "↑ worse vs last month"),
     ({"gap_vs_network": "worse"}, "↑ worse vs last month; ↑ worse vs network"),
     ({"change_vs_previous": "", "value": 300.0, "gap_vs_network": "better"}, "↓ better vs network"),
     ({"change_vs_previous": ""}, "")],
)  # fmt: skip
def test_significance_marks_only_flagged_comparisons(overrides, expected):
    assert review.scorecard_table(_card(**overrides))["Significant"].iloc[0] == expected


def test_suppressed_rows_show_suppressed_and_no_mark():
    table = review.scorecard_table(_card(suppressed=True, value=np.nan, ci_low=np.nan, ci_high=np.nan))
    row = table.iloc[0]
    assert (row["Value"], row["95% interval"], row["Significant"]) == ("suppressed", "suppressed", "")
    assert review.significant_rows(_card(suppressed=True)).empty
    assert len(review.significant_rows(_card())) == 1


def test_shipped_settings_name_known_measures():
    settings = review.load_review_settings()
    assert set(settings.key_outcomes) == {"healthy", "at_risk", "chronic", "complex", "frail"}
    assert "admissions" in settings.key_outcomes["complex"]


def test_settings_with_an_unknown_measure_are_refused(tmp_path):
    path = tmp_path / "review.toml"
    path.write_text('[key_outcomes]\ncomplex = ["nope"]\n[what_moved]\nacute_kinds = ["admission"]\ntop_patients = 5\n'
                    "[trend]\nmonths = 12\n")  # fmt: skip
    with pytest.raises(ValueError, match="unknown measures"):
        review.load_review_settings(path)


def test_scope_is_checked_before_anything_is_read(sample_engine):
    month = months_available(sample_engine)[-1]
    with pytest.raises(PermissionError):
        review.review_data(sample_engine, "TM04", "complex", month, ("TM01",), True)


def test_headline_matches_the_scorecard_and_cells(sample_engine):
    month = months_available(sample_engine)[-1]
    data = review.review_data(sample_engine, "TM04", "complex", month, ("TM04",), True)
    card = data.card.set_index("measure_id")
    last = data.headline.iloc[-1]
    assert data.headline["month"].iloc[-1] == month and len(data.headline) == 12
    for measure in ("admissions", "promis_physical_mean"):
        if card.loc[measure, "suppressed"]:
            assert bool(last[f"{measure}_suppressed"])
        else:
            assert last[measure] == pytest.approx(card.loc[measure, "value"])
    assert last["payment_usd"] == pytest.approx(100.0 * last["members"])  # $100 PMPM for complex
    assert last["margin_usd"] == pytest.approx(last["payment_usd"] - last["cost_internal_pmpm_usd"] * last["members"])
    # the latest month's claims have not run out (no paid dates: the 3-month run-out setting)
    assert f"{month:%Y-%m}" in data.claims_note and data.internal_costed  # the sample has staff
    older = review.review_data(sample_engine, "TM04", "complex", months_available(sample_engine)[-5], ("TM04",), True)
    assert older.claims_note == ""


def test_patient_rows_only_with_patient_level_access(sample_engine):
    month = months_available(sample_engine)[-1]
    aggregate = review.review_data(sample_engine, "TM04", "complex", month, None, False)
    assert aggregate.acute.empty and aggregate.moves["patients"].empty and aggregate.drivers["by_patient"].empty
    full = review.review_data(sample_engine, "TM04", "complex", month, None, True)
    assert len(full.drivers["by_patient"]) > 0
    # every listed ED visit or admission belongs to a TM04 complex patient of the month
    members = review.acute_events(sample_engine, "TM04", "complex", month, ("TM04",))
    assert set(members["kind"]) <= {"ed_visit", "admission"}


def test_value_map_has_the_team_and_its_peers(sample_engine):
    month = months_available(sample_engine)[-1]
    vm = review.value_map_frame(sample_engine, "complex", month)
    now = vm[vm["month"] == month]
    assert "TM04" in set(now["team_id"]) and len(now) >= 2
    assert not now["member_months"].between(1, 10).any()


class _Tables(HTMLParser):
    """Tables (by id) and headline tiles of the review pack, as lists of rows."""

    def __init__(self):
        super().__init__()
        self.tables, self.current, self.row, self.cell = {}, None, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.current = self.tables.setdefault(attrs.get("id"), [])
        elif tag == "tr" and self.current is not None:
            self.row = []
        elif tag in ("td", "th") and self.row is not None:
            self.cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.row.append(self.cell)
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.current.append(self.row)
            self.row = None
        elif tag == "table":
            self.current = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def test_review_pack_holds_the_same_figures_as_the_page(sample_engine):
    month = months_available(sample_engine)[-1]
    data = review.review_data(sample_engine, "TM04", "complex", month, ("TM04",), True)
    log = pd.DataFrame(columns=LOG_COLUMNS)
    pack = review.review_pack(data, log, {"complex": "Complex"}, "Riverside · Complex Care")

    parser = _Tables()
    parser.feed(pack["html"])
    head, *rows = parser.tables["scorecard"]
    shown = pd.DataFrame(rows, columns=head).set_index("Measure")
    card = build_scorecard(sample_engine, Selection(team_id="TM04", subgroup="complex", period=month))
    for r in card.to_dict("records"):
        assert shown.loc[r["name"], "Value"] == format_figure(r["value"], r["suppressed"])
        assert shown.loc[r["name"], "Network"] == format_figure(r["network_value"])
    tiles = re.findall(r'<div class="l">(.*?)</div><div class="v">(.*?)</div>', pack["html"])
    for metric in review.headline_metrics(data):
        assert (metric["label"], metric["value"]) in tiles
    # self-contained: plotly.js inlined once, three charts, no external scripts or styles
    assert pack["html"].count("plotly-graph-div") >= 3
    assert not re.search(r'<script[^>]+src="http', pack["html"]) and "<link" not in pack["html"]
    assert not re.search(r"P\d{7}", pack["html"])  # aggregates only: no patient ids

    sheets = pd.read_excel(io.BytesIO(pack["xlsx"]), sheet_name=None, dtype=str, keep_default_na=False)
    assert set(sheets) == {"headline", "scorecard", "subgroup_moves", "cost_categories", "value_map", "review_log"}
    assert sheets["scorecard"]["Value"].tolist() == shown["Value"].tolist()
    assert pd.read_csv(io.StringIO(pack["csv"]["scorecard"]), dtype=str, keep_default_na=False)["Value"].tolist() == shown["Value"].tolist()
