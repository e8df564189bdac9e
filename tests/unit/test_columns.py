"""The column catalogue: labels with units, kinds, and codes shown by their labels."""

import numpy as np
import pandas as pd
import pytest

from core.views.columns import KINDS, column_spec, kind_from, label_from_name, load_columns, readable, vocabulary


@pytest.mark.parametrize("name,label", [("cost_pmpm_usd", "Cost PMPM, $"), ("resolved_pct", "Resolved, %"),
                                        ("ed_visits_12m", "ED visits 12 mo"), ("new_thing", "New thing")])  # fmt: skip
def test_a_column_the_catalogue_does_not_list_is_labelled_from_its_name(name, label):
    assert label_from_name(name) == label


@pytest.mark.parametrize("name,values,kind", [("spend_usd", [1.5], "money"), ("fee_pmpm_usd", [1.5], "money_cents"),
                                              ("share_pct", [1.5], "percent"), ("visits", [1], "count"), ("ratio", [0.5], "rate"),
                                              ("ok", [True], "flag"), ("seen_date", ["x"], "date"), ("label", ["x"], "text")])  # fmt: skip
def test_a_column_the_catalogue_does_not_list_gets_a_kind_from_its_name_and_type(name, values, kind):
    assert kind_from(name, pd.Series(values).dtype) == kind


def test_every_catalogue_entry_has_a_known_kind_and_vocabulary():
    catalogue = load_columns()
    assert {c.kind for c in catalogue.columns.values()} <= set(KINDS)
    for name, column in catalogue.columns.items():
        if column.vocabulary and column.vocabulary != "subgroups":
            assert column.vocabulary in catalogue.vocabularies or vocabulary(column.vocabulary), name
    assert column_spec("cost_pmpm_usd").label == "Cost PMPM, $"


def test_codes_are_shown_by_their_labels_and_none_text_is_emptied():
    frame = pd.DataFrame({"stratum_value": ["not_dual", "White"], "suppressed": [True, False], "role": ["behavioral_health", "team_leader"],
                          "model": ["fee_for_service", "pcmh"], "subgroup": ["complex", "odd_code"], "note": ["None", "kept"],
                          "value": [1.25, np.nan]})  # fmt: skip
    shown = readable(frame, {"subgroups": {"complex": "Complex needs"}})
    assert list(shown["stratum_value"]) == ["Not dual", "White"]
    assert list(shown["suppressed"]) == ["suppressed (1-10)", ""]
    assert list(shown["role"]) == ["Behavioral health clinician", "Team leader"]
    assert list(shown["model"]) == ["Fee-for-service", "PCMH blocks"]
    assert list(shown["subgroup"]) == ["Complex needs", "Odd code"]  # an unknown code still reads as words
    assert pd.isna(shown["note"].iloc[0]) and shown["note"].iloc[1] == "kept"
    assert list(frame.columns) == list(shown.columns) and np.isnan(shown["value"].iloc[1])  # names and numbers kept


def test_a_bad_kind_is_an_error_of_the_file(tmp_path):
    path = tmp_path / "columns.toml"
    path.write_text('[columns]\nx = { label = "X", kind = "fancy" }\n', encoding="utf-8")
    with pytest.raises(ValueError, match="unknown kind"):
        load_columns(path)


def test_text_columns_read_the_same_whatever_their_dtype():
    """A text column is looked up once per distinct value, an object column cell by cell: both
    give each cell its label, empty "None" and "nan" text, and keep missing cells missing."""
    values = ["complex", None, "nan", " None ", "odd_code", "suppressed", "complex"] * 3
    extra = {"subgroups": {"complex": "Complex needs"}}
    words = ["Complex needs", None, None, None, "Odd code", "suppressed", "Complex needs"] * 3
    for dtype in ("str", object):
        shown = readable(pd.DataFrame({"subgroup": pd.Series(values, dtype=dtype), "note": pd.Series(values, dtype=dtype)}), extra)
        assert [None if pd.isna(v) else v for v in shown["subgroup"]] == words, dtype
        assert [None if pd.isna(v) else v for v in shown["note"]] == [None if v in (None, "nan", " None ") else v for v in values]
    plain = pd.DataFrame({"note": pd.Series(["kept", None] * 5, dtype="str")})
    pd.testing.assert_frame_equal(readable(plain), plain)  # a text column without them is left as it is
