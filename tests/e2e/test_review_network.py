"""core.views.review on the 600-patient sample network: the data behind the page and the review
pack, read back against the core scorecard."""

import io
import re
from html.parser import HTMLParser

import pandas as pd
import pytest

from core.metrics.scorecard import Selection, build_scorecard
from core.store.queries import months_available
from core.views import review, review_pack
from core.views.format import format_figure
from core.views.review_log import LOG_COLUMNS


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
    # the latest month's claims have not run out (completion factors from the sample's paid dates)
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
    data = review.value_map_data(sample_engine, "complex", month)
    vm = data["points"]
    now = vm[vm["month"] == month]
    assert "TM04" in set(now["team_id"]) and len(now) >= 2
    assert not now["member_months"].between(1, 10).any()
    # the value index of the team comparison: targets, 100 = on target, an interval around it
    assert now["value_index"].between(0, 200).all()
    assert (now["index_low"] <= now["value_index"]).all() and (now["value_index"] <= now["index_high"]).all()
    # the same measure set for every team shown in a month, and the index is the weighted mean of its parts
    parts = data["parts"]
    for _, month_parts in parts.groupby("month"):
        sets = month_parts.groupby("team_id")["measure_id"].apply(frozenset)
        assert sets.nunique() == 1
    own = parts[(parts["month"] == month) & (parts["team_id"] == "TM04")]
    weighted = (own["score"] * own["weight"]).sum() / own["weight"].sum()
    assert now.set_index("team_id").loc["TM04", "value_index"] == pytest.approx(weighted)
    assert now.set_index("team_id").loc["TM04", "measures_in_index"] == len(own) > 0
    # a measure a team cannot publish is left out for every team, and reported
    excluded = data["excluded"]
    assert not set(excluded.loc[excluded["month"] == month, "measure_id"]) & set(own["measure_id"])


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
    pack = review_pack.review_pack(data, log, {"complex": "Complex"}, "Riverside · Complex Care")

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
    # self-contained and slim: the charts as SVG images, no scripts, no external files
    assert pack["html"].count('src="data:image/svg+xml;base64,') == 3
    assert "<script" not in pack["html"] and "<link" not in pack["html"] and len(pack["html"]) < 400_000
    assert not re.search(r"P\d{7}", pack["html"])  # aggregates only: no patient ids

    sheets = pd.read_excel(io.BytesIO(pack["xlsx"]), sheet_name=None, keep_default_na=False)
    assert set(sheets) == {"Headline", "Scorecard", "Patients in and out", "Cost by category (PMPM)", "Value map", "Review log"}
    values = [format_figure(v) if isinstance(v, float | int) else v or "–" for v in sheets["Scorecard"]["Value"]]
    assert values == shown["Value"].tolist()
    csv_values = pd.read_csv(io.StringIO(pack["csv"]["scorecard"]), dtype=str, keep_default_na=False)["Value"]
    assert [format_figure(float(v)) if v[:1].isdigit() else v or "–" for v in csv_values] == shown["Value"].tolist()
