"""Confidence intervals and the significance rule of the scorecards.

All functions are vectorised: they take scalars or numpy arrays and return the same shape.
Undefined results (no denominator, n < 2 for a t interval) are NaN.

Significance rule: a difference between two published figures is flagged only when their
95 % intervals do not overlap (:func:`intervals_differ`). This is conservative (for two
independent estimates with equal standard errors it corresponds to p < 0.006), uses the
interval each figure is published with (Wilson, exact Poisson or t), and reads the same for
every kind of measure. :func:`two_proportion_z` is provided for analysts who prefer a test.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as _st


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype="float64")


def _out(x):
    return x.item() if np.ndim(x) == 0 else x


def wilson_interval(successes, n, confidence: float = 0.95):
    """Wilson score interval of a proportion (Wilson 1927; Brown, Cai & DasGupta 2001).

    Returns (low, high) as fractions; NaN where n == 0.
    """
    x, n = _arr(successes), _arr(n)
    z = _st.norm.ppf(0.5 + confidence / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = x / n
        denom = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
        low = np.where(n > 0, np.clip(centre - half, 0, 1), np.nan)
        high = np.where(n > 0, np.clip(centre + half, 0, 1), np.nan)
    return _out(low), _out(high)


def poisson_exact_interval(events, exposure=1.0, confidence: float = 0.95):
    """Exact (Garwood 1936) interval of a Poisson rate: events / exposure.

    low = chi2(alpha/2, 2k) / 2 / exposure (0 when k = 0), high = chi2(1 - alpha/2, 2k + 2) / 2 / exposure.
    NaN where exposure <= 0.
    """
    k, t = _arr(events), _arr(exposure)
    alpha = 1 - confidence
    with np.errstate(divide="ignore", invalid="ignore"):
        low = np.where(k > 0, _st.chi2.ppf(alpha / 2, 2 * np.maximum(k, 1e-300)) / 2, 0.0) / t
        high = _st.chi2.ppf(1 - alpha / 2, 2 * k + 2) / 2 / t
        low = np.where(t > 0, low, np.nan)
        high = np.where(t > 0, high, np.nan)
    return _out(low), _out(high)


def t_interval(total, n, sum_sq, confidence: float = 0.95):
    """Student t interval of a mean from additive sums: total = sum(x), sum_sq = sum(x^2).

    Returns (mean, low, high); mean is NaN where n == 0, the interval NaN where n < 2.
    """
    s, n, q = _arr(total), _arr(n), _arr(sum_sq)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(n > 0, s / n, np.nan)
        var = np.maximum(q - s * s / n, 0.0) / (n - 1)
        half = _st.t.ppf(0.5 + confidence / 2, np.maximum(n - 1, 1)) * np.sqrt(var / n)
        low = np.where(n > 1, mean - half, np.nan)
        high = np.where(n > 1, mean + half, np.nan)
    return _out(mean), _out(low), _out(high)


def intervals_differ(low_a, high_a, low_b, high_b):
    """True where the two intervals do not overlap (the scorecard's significance rule); False if any is NaN."""
    la, ha, lb, hb = _arr(low_a), _arr(high_a), _arr(low_b), _arr(high_b)
    with np.errstate(invalid="ignore"):
        differ = (ha < lb) | (hb < la)
    return _out(np.where(np.isnan(la) | np.isnan(ha) | np.isnan(lb) | np.isnan(hb), False, differ))


def value_outside(low, high, value):
    """True where ``value`` lies outside [low, high]; False if any is NaN."""
    lo, hi, v = _arr(low), _arr(high), _arr(value)
    with np.errstate(invalid="ignore"):
        out = (v < lo) | (v > hi)
    return _out(np.where(np.isnan(lo) | np.isnan(hi) | np.isnan(v), False, out))


def two_proportion_z(x1, n1, x2, n2):
    """Pooled two-proportion z test. Returns (z, two-sided p); NaN where undefined."""
    x1, n1, x2, n2 = _arr(x1), _arr(n1), _arr(x2), _arr(n2)
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (x1 + x2) / (n1 + n2)
        se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        z = (x1 / n1 - x2 / n2) / se
        p = 2 * _st.norm.sf(np.abs(z))
    return _out(z), _out(p)
