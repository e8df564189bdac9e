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


def _sc():
    """``scipy.special``, imported on first use (the command-line reports that print no interval,
    such as ``python -m core costs``, do not pay for it). The quantiles are the special functions
    ``scipy.stats`` computes them with (``norm.ppf`` = ``ndtri``, ``norm.sf(x)`` = ``ndtr(-x)``,
    ``chi2.ppf(p, df)`` = ``2 gammaincinv(df / 2, p)``, ``t.ppf(q, df)`` = ``stdtrit(df, q)``),
    called directly: importing ``scipy.stats`` costs the first page that shows an interval about a
    second, ``scipy.special`` a quarter of that. ``tests/unit/test_stats.py`` checks they agree."""
    from scipy import special

    return special


def _chi2_ppf(p, df):
    return 2 * _sc().gammaincinv(np.asarray(df, dtype="float64") / 2, p)


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype="float64")


def _out(x):
    return x.item() if np.ndim(x) == 0 else x


def wilson_interval(successes, n, confidence: float = 0.95):
    """Wilson score interval of a proportion (Wilson 1927; Brown, Cai & DasGupta 2001).

    Returns (low, high) as fractions; NaN where n == 0.
    """
    x, n = _arr(successes), _arr(n)
    z = _sc().ndtri(0.5 + confidence / 2)
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
        low = np.where(k > 0, _chi2_ppf(alpha / 2, 2 * np.maximum(k, 1e-300)) / 2, 0.0) / t
        high = _chi2_ppf(1 - alpha / 2, 2 * k + 2) / 2 / t
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
        half = _sc().stdtrit(np.maximum(n - 1, 1), 0.5 + confidence / 2) * np.sqrt(var / n)
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
        p = 2 * _sc().ndtr(-np.abs(z))
    return _out(z), _out(p)


# --- funnel plots and indirect standardisation -------------------------------------------------
#
# Control limits of a funnel plot (Spiegelhalter, "Funnel plots for comparing institutional
# performance", Stat Med 2005;24:1185-1202): the band a unit of a given volume falls in by chance
# alone when its true value is the network's, at 95 % (z = 1.960) and 99.8 % (z = 3.090).
#   proportion  p0 +/- z * sqrt(p0 (1 - p0) / n)   normal approximation to the binomial, n = denominator,
#                                                  clipped to [0, 1]
#   rate        exact Poisson limits of the expected count: lambda = r0 * exposure,
#               low = chi2(alpha/2; 2 lambda) / 2 / exposure, high = chi2(1 - alpha/2; 2 lambda + 2) / 2 / exposure
#   mean        m0 +/- z * sd0 / sqrt(n)           sd0 = the network's standard deviation per observation
#   O/E ratio   1 with the rate limits of exposure = E (expected count); for an O/E of a mean or a
#               cost, 1 +/- z * sd(E) / E (normal; sd(E) from the network's within-stratum variance)


def z_of(confidence: float) -> float:
    """Two-sided standard normal quantile: 1.960 for 0.95, 3.090 for 0.998."""
    return float(_sc().ndtri(0.5 + confidence / 2))


def funnel_limits(kind: str, centre, volume, confidence: float = 0.95, sd=None):
    """(low, high) control limits around ``centre`` at each ``volume`` (see the comment above).

    ``kind``: ``proportion`` (centre a fraction, volume the denominator), ``rate`` (centre per
    unit of exposure, volume the exposure), ``mean`` (volume the number of observations, ``sd``
    the network's standard deviation per observation) or ``oe`` (centre 1, volume the expected
    count; with ``sd`` given, the normal limits 1 +/- z * sd / volume of an O/E of a mean or cost,
    ``sd`` being the standard deviation of the expected sum). NaN where volume <= 0.
    """
    c, n = _arr(centre), _arr(volume)
    z = z_of(confidence)
    alpha = 1 - confidence
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "proportion":
            half = z * np.sqrt(c * (1 - c) / n)
            low, high = np.clip(c - half, 0, 1), np.clip(c + half, 0, 1)
        elif kind in ("rate", "oe") and sd is None:
            lam = c * n
            low = np.where(lam > 0, _chi2_ppf(alpha / 2, 2 * np.maximum(lam, 1e-300)) / 2, 0.0) / n
            high = _chi2_ppf(1 - alpha / 2, 2 * lam + 2) / 2 / n
        elif kind in ("mean", "oe"):
            s = _arr(sd)
            half = z * s / np.sqrt(n) if kind == "mean" else z * s / n
            low, high = c - half, c + half
        else:
            raise ValueError(f"unknown funnel kind {kind!r}")
        ok = n > 0
        low, high = np.where(ok, low, np.nan), np.where(ok, high, np.nan)
    return _out(low), _out(high)


def indirect_standardisation(rows, unit: str, strata, count: bool = True, risk: bool = False, confidence: float = 0.95):
    """Observed / expected per unit by indirect standardisation.

    ``rows`` (a DataFrame): one row per unit and stratum with ``unit``, the ``strata`` columns,
    ``numerator`` (observed: events, successes, or the sum of a mean's values or of costs),
    ``denominator`` (its volume: member-years, eligible patients, observations, member-months) and,
    for a mean or cost (``count`` False), ``sum_sq``. The network rate of each stratum is
    sum(numerator) / sum(denominator) over every unit; a unit's expected = the sum over its strata
    of denominator x network rate (the network's rate applied to the unit's own case mix).
    ``risk`` True: each row's expected is also multiplied by its mean risk score over the stratum's
    network mean risk score (columns ``risk_sum``, ``risk_n``; a missing score counts as 1).

    Returns a DataFrame per unit: observed, expected, volume, oe, oe_low, oe_high and ``expected_sd``
    (the standard deviation of the expected sum for a mean or cost: sqrt(sum of denominator x the
    stratum's network variance); NaN for counts). The O/E interval is the exact Poisson interval
    of the observed count over expected (``count``) or oe +/- z * expected_sd / expected.
    """
    strata = list(strata)
    frame = rows.copy()
    sums = ["numerator", "denominator"] + ([] if count else ["sum_sq"]) + (["risk_sum", "risk_n"] if risk else [])
    net = frame.groupby(strata, as_index=False)[sums].sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        net["rate"] = net["numerator"] / net["denominator"].where(net["denominator"] > 0)
        if not count:
            net["var"] = np.maximum(net["sum_sq"] / net["denominator"] - net["rate"] ** 2, 0.0)
            net["var"] = net["var"] * net["denominator"] / (net["denominator"] - 1).where(net["denominator"] > 1)
        if risk:
            net["risk_mean"] = net["risk_sum"] / net["risk_n"].where(net["risk_n"] > 0)
    keep = ["rate"] + ([] if count else ["var"]) + (["risk_mean"] if risk else [])
    frame = frame.merge(net[[*strata, *keep]], on=strata, how="left")
    expected = frame["denominator"] * frame["rate"].fillna(0.0)
    if risk:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (frame["risk_sum"] / frame["risk_n"].where(frame["risk_n"] > 0)) / frame["risk_mean"]
        expected = expected * ratio.replace([np.inf, -np.inf], np.nan).fillna(1.0)
    frame = frame.assign(expected=expected, expected_var=0.0 if count else frame["denominator"] * frame["var"].fillna(0.0))
    out = frame.groupby(unit, as_index=False).agg(observed=("numerator", "sum"), expected=("expected", "sum"),
                                                  volume=("denominator", "sum"), expected_var=("expected_var", "sum"))  # fmt: skip
    with np.errstate(divide="ignore", invalid="ignore"):
        e = out["expected"].where(out["expected"] > 0)
        out["oe"] = out["observed"] / e
        if count:
            low, high = poisson_exact_interval(out["observed"].to_numpy(), e.to_numpy(), confidence)
            out["expected_sd"] = np.nan
        else:
            out["expected_sd"] = np.sqrt(out["expected_var"])
            half = z_of(confidence) * out["expected_sd"] / e
            low, high = out["oe"] - half, out["oe"] + half
    out["oe_low"], out["oe_high"] = np.asarray(low, dtype="float64"), np.asarray(high, dtype="float64")
    return out.drop(columns="expected_var")
