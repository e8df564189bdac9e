"""Intervals and the significance rule against published reference values."""

import math

import numpy as np
import pytest

from core.metrics.stats import (
    intervals_differ,
    poisson_exact_interval,
    t_interval,
    two_proportion_z,
    value_outside,
    wilson_interval,
)


def test_wilson_8_of_10():
    # Reference: Newcombe (1998) method 3; 8/10 -> 0.4902 to 0.9433.
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)


@pytest.mark.parametrize("x,n,low,high", [(0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (81, 263, 0.2553, 0.3662)])
def test_wilson_reference_values(x, n, low, high):
    got = wilson_interval(x, n)
    assert got == pytest.approx((low, high), abs=1e-4)


def test_wilson_no_denominator_is_nan():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_poisson_exact_3_events():
    # Garwood exact limits for 3 events: 0.6187 to 8.7673 (e.g. Ulm 1990 table).
    assert poisson_exact_interval(3) == pytest.approx((0.6187, 8.7673), abs=1e-4)


def test_poisson_exact_rate_and_zero_events():
    low, high = poisson_exact_interval(3, exposure=0.5)  # 3 events in half a member-year
    assert (low, high) == pytest.approx((1.2374, 17.5346), abs=1e-3)
    assert poisson_exact_interval(0) == pytest.approx((0.0, 3.6889), abs=1e-4)
    assert math.isnan(poisson_exact_interval(2, exposure=0.0)[0])


def test_t_interval_from_sums():
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])  # mean 3, sd 1.5811, t(0.975, 4) = 2.7764
    mean, low, high = t_interval(values.sum(), len(values), (values ** 2).sum())
    assert (mean, low, high) == pytest.approx((3.0, 1.0368, 4.9632), abs=1e-4)


def test_t_interval_needs_two_values():
    mean, low, high = t_interval(7.0, 1, 49.0)
    assert mean == 7.0 and math.isnan(low) and math.isnan(high)


def test_vectorised():
    low, high = wilson_interval(np.array([8, 0]), np.array([10, 0]))
    assert round(low[0], 4) == 0.4902 and math.isnan(low[1])


@pytest.mark.parametrize("a,b,expected", [
    ((0.1, 0.3), (0.25, 0.5), False),  # overlap
    ((0.1, 0.2), (0.25, 0.5), True),
    ((0.6, 0.9), (0.25, 0.5), True),
    ((float("nan"), 0.2), (0.25, 0.5), False),
])
def test_intervals_differ(a, b, expected):
    assert bool(intervals_differ(*a, *b)) is expected


def test_value_outside():
    assert bool(value_outside(0.2, 0.4, 0.5)) and not bool(value_outside(0.2, 0.4, 0.3))


def test_two_proportion_z():
    z, p = two_proportion_z(45, 100, 30, 100)  # pooled p = 0.375, se = 0.06847, z = 2.1909
    assert z == pytest.approx(2.1909, abs=1e-4) and p == pytest.approx(0.02846, abs=1e-4)


def test_the_quantiles_equal_scipy_stats():
    """The intervals call scipy.special directly (a quarter of scipy.stats' import time on the first
    page that shows one): the same quantiles as scipy.stats over counts from 0 to a million,
    confidence levels of funnels and scorecards, and NaN where undefined."""
    from scipy import stats

    from core.metrics.stats import _chi2_ppf, _sc, funnel_limits

    counts = np.array([0, 1e-300, 0.5, 1, 2, 3, 7, 10, 11, 40, 99, 1_000, 25_000, 1_000_000], dtype=float)
    for confidence in (0.8, 0.95, 0.998):
        alpha = 1 - confidence
        for q in (alpha / 2, 1 - alpha / 2):
            np.testing.assert_allclose(_chi2_ppf(q, 2 * counts + 2), stats.chi2.ppf(q, 2 * counts + 2), rtol=1e-12)
            np.testing.assert_allclose(_sc().stdtrit(counts + 1, q), stats.t.ppf(q, counts + 1), rtol=1e-12)
            assert _sc().ndtri(q) == pytest.approx(stats.norm.ppf(q), rel=1e-14)
    z = np.array([-4.0, -1.96, 0.0, 0.5, 3.09, 8.0])
    np.testing.assert_allclose(_sc().ndtr(-np.abs(z)), stats.norm.sf(np.abs(z)), rtol=1e-14)
    low, high = poisson_exact_interval(np.array([0, 3, 50]), 1.0)
    np.testing.assert_allclose(low, [0.0, stats.chi2.ppf(0.025, 6) / 2, stats.chi2.ppf(0.025, 100) / 2], rtol=1e-12)
    np.testing.assert_allclose(high, stats.chi2.ppf(0.975, 2 * np.array([0, 3, 50]) + 2) / 2, rtol=1e-12)
    assert np.isnan(poisson_exact_interval(np.nan, 1.0)[1]) and np.isnan(wilson_interval(1, 0)[0])
    exposure = np.array([10.0, 1000.0])
    low, high = funnel_limits("rate", 0.2, exposure)  # the exact Poisson band around 0.2 per unit
    np.testing.assert_allclose(low, stats.chi2.ppf(0.025, 2 * 0.2 * exposure) / 2 / exposure, rtol=1e-12)
    np.testing.assert_allclose(high, stats.chi2.ppf(0.975, 2 * 0.2 * exposure + 2) / 2 / exposure, rtol=1e-12)
