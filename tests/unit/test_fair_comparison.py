"""Indirect standardisation and funnel-plot control limits (core.metrics.stats), worked by hand."""

import numpy as np
import pandas as pd
import pytest

from core.metrics.stats import funnel_limits, indirect_standardisation, z_of


def test_z_of_funnel_levels():
    assert z_of(0.95) == pytest.approx(1.95996, abs=1e-5)
    assert z_of(0.998) == pytest.approx(3.09023, abs=1e-5)


def test_proportion_limits_normal_approximation():
    # p0 = 0.2, n = 100: sd = sqrt(0.2 x 0.8 / 100) = 0.04; 95 %: 0.2 +/- 1.96 x 0.04; 99.8 %: 0.2 +/- 3.09 x 0.04
    low, high = funnel_limits("proportion", 0.2, 100.0, 0.95)
    assert (low, high) == pytest.approx((0.2 - 1.959964 * 0.04, 0.2 + 1.959964 * 0.04))
    low, high = funnel_limits("proportion", 0.2, 100.0, 0.998)
    assert (low, high) == pytest.approx((0.2 - 3.090232 * 0.04, 0.2 + 3.090232 * 0.04))
    # limits narrow with volume and are clipped to [0, 1]
    lows, _ = funnel_limits("proportion", 0.05, np.array([4.0, 400.0]), 0.998)
    assert lows[0] == 0.0 and lows[1] > 0.0


def test_oe_limits_exact_poisson():
    # expected 10 events: the exact Poisson limits of a count of 10 are 4.795 and 18.390 (Garwood 1936 tables)
    low, high = funnel_limits("oe", 1.0, 10.0, 0.95)
    assert (low, high) == pytest.approx((0.47954, 1.83904), abs=1e-4)
    # a rate of 0.5 per member-year over 20 member-years: the same count (10), limits per member-year
    low, high = funnel_limits("rate", 0.5, 20.0, 0.95)
    assert (low, high) == pytest.approx((4.79539 / 20, 18.39036 / 20), abs=1e-4)
    # wider at 99.8 %
    low998, high998 = funnel_limits("oe", 1.0, 10.0, 0.998)
    assert low998 < 0.4795 and high998 > 1.839


def test_mean_and_cost_oe_limits_normal():
    low, high = funnel_limits("mean", 50.0, 25.0, 0.95, sd=10.0)  # 50 +/- 1.96 x 10 / 5
    assert (low, high) == pytest.approx((50 - 3.919928, 50 + 3.919928))
    low, high = funnel_limits("oe", 1.0, 200.0, 0.95, sd=20.0)  # 1 +/- 1.96 x 20 / 200
    assert (low, high) == pytest.approx((1 - 0.195996, 1 + 0.195996))
    assert np.isnan(funnel_limits("mean", 50.0, 0.0, 0.95, sd=10.0)[0])


def test_indirect_standardisation_hand_worked():
    # Two strata (healthy young, frail old). Network rates: healthy 10 / 1,000 = 0.01, frail 60 / 300 = 0.2.
    rows = pd.DataFrame(
        {
            "team": ["A", "A", "B", "B"],
            "subgroup": ["healthy", "frail", "healthy", "frail"],
            "age_band": ["18-44", "75+", "18-44", "75+"],
            "numerator": [9.0, 10.0, 1.0, 50.0],
            "denominator": [900.0, 50.0, 100.0, 250.0],
        }
    )
    out = indirect_standardisation(rows, "team", ["subgroup", "age_band"]).set_index("team")
    # A expected = 900 x 0.01 + 50 x 0.2 = 9 + 10 = 19; observed 19 -> O/E 1
    # B expected = 100 x 0.01 + 250 x 0.2 = 1 + 50 = 51; observed 51 -> O/E 1 (crude rates 1.9 % vs 14.6 %)
    assert out.loc["A", "expected"] == pytest.approx(19.0)
    assert out.loc["B", "expected"] == pytest.approx(51.0)
    assert out["oe"].to_numpy() == pytest.approx([1.0, 1.0])
    # exact Poisson interval of 19 observed, over 19 expected
    assert out.loc["A", "oe_low"] == pytest.approx(11.4389 / 19, abs=1e-3)
    assert out.loc["A", "oe_high"] == pytest.approx(29.6701 / 19, abs=1e-3)


def test_indirect_standardisation_with_risk_score_ratio():
    # One stratum, network rate 20 / 200 = 0.1; network mean risk (2 x 100 + 1 x 100) / 200 = 1.5.
    rows = pd.DataFrame({"team": ["A", "B"], "subgroup": ["chronic"] * 2, "numerator": [15.0, 5.0], "denominator": [100.0, 100.0],
                         "risk_sum": [200.0, 100.0], "risk_n": [100.0, 100.0]})  # fmt: skip
    out = indirect_standardisation(rows, "team", ["subgroup"], risk=True).set_index("team")
    # A: 100 x 0.1 x (2 / 1.5) = 13.33 ; B: 100 x 0.1 x (1 / 1.5) = 6.67
    assert out.loc["A", "expected"] == pytest.approx(40 / 3)
    assert out.loc["B", "expected"] == pytest.approx(20 / 3)
    assert out.loc["A", "oe"] == pytest.approx(15 / (40 / 3))


def test_indirect_standardisation_of_a_mean():
    # network mean of the stratum = (500 + 700) / 20 = 60; variance from sum_sq
    rows = pd.DataFrame({"team": ["A", "B"], "s": ["x", "x"], "numerator": [500.0, 700.0], "denominator": [10.0, 10.0],
                         "sum_sq": [25_500.0, 49_500.0]})  # fmt: skip
    out = indirect_standardisation(rows, "team", ["s"], count=False).set_index("team")
    assert out.loc["A", "expected"] == pytest.approx(600.0)
    assert out.loc["A", "oe"] == pytest.approx(500 / 600)
    # network variance: (75,000 / 20 - 60^2) x 20 / 19 = 150 x 20 / 19; expected sd = sqrt(10 x that)
    sd = np.sqrt(10 * 150 * 20 / 19)
    assert out.loc["A", "expected_sd"] == pytest.approx(sd)
    assert out.loc["A", "oe_low"] == pytest.approx(500 / 600 - 1.959964 * sd / 600)
