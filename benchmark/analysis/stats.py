"""Seed statistics without scipy: mean, sample std, Student-t 95% interval, Welch's and paired t-tests,
the paired difference by seed with its interval, and Holm's step-down correction for a family of tests.

Student's t CDF via the regularized incomplete beta function (Lentz's continued fraction,
Numerical Recipes' betacf), accurate to ~1e-10, which is ample for p-values and intervals.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def std(xs: Sequence[float]) -> float:
    """Sample standard deviation (n - 1); 0.0 for a single value."""
    if len(xs) < 2:
        return 0.0
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _betacf(a: float, b: float, x: float) -> float:
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                   -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_sf_two_sided(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom."""
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (p > 0.5), by bisection on the CDF."""
    lo, hi = 0.0, 1e3
    target = 2.0 * (1.0 - p)  # two-sided tail
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_sf_two_sided(mid, df) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def ci95(xs: Sequence[float]) -> Optional[tuple]:
    """Student-t 95% confidence interval of the mean; None for fewer than 2 values."""
    if len(xs) < 2:
        return None
    half = t_quantile(0.975, len(xs) - 1) * std(xs) / math.sqrt(len(xs))
    return (mean(xs) - half, mean(xs) + half)


def welch_p(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Two-sided p-value of Welch's t-test that a and b have the same mean."""
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = std(a) ** 2 / len(a), std(b) ** 2 / len(b)
    if va + vb == 0:
        return 1.0 if mean(a) == mean(b) else 0.0
    t = (mean(a) - mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return t_sf_two_sided(t, df)


def paired_p(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Two-sided p-value of the paired t-test that a[i] - b[i] has mean 0 (a[i], b[i]: one seed).
    Runs of one seed share the data order (and the initialisation where shapes agree), so pairing
    removes that shared noise."""
    if len(a) != len(b) or len(a) < 2:
        return None
    diffs = [x - y for x, y in zip(a, b)]
    spread = std(diffs)
    if spread == 0:
        return 1.0 if mean(diffs) == 0 else 0.0
    return t_sf_two_sided(mean(diffs) / (spread / math.sqrt(len(diffs))), len(diffs) - 1)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> Optional[dict]:
    """a[i] - b[i] over pairs (one seed each): n, mean difference, its Student-t 95% interval
    (None below 2 pairs) and the paired t-test's two-sided p-value; None without pairs."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    if not a:
        return None
    diffs = [x - y for x, y in zip(a, b)]
    interval = ci95(diffs)
    return {"n": len(diffs), "mean": mean(diffs), "ci95": list(interval) if interval else None,
            "p": paired_p(a, b)}


def holm(p_values: Sequence[Optional[float]]) -> list:
    """Holm's step-down adjusted p-values, in the input order, for one family of m tests.

    The i-th smallest p (1-based) becomes max over j <= i of min(1, (m - j + 1) p_(j)), so the
    adjusted values keep the order of the raw ones. A test without a p-value (None: too few runs)
    still counts in m, as p = 1, and stays None: a declared family never shrinks to the tests that
    happened to have data.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: 1.0 if p_values[i] is None else p_values[i])
    adjusted, running = [None] * m, 0.0
    for rank, i in enumerate(order):
        p = 1.0 if p_values[i] is None else p_values[i]
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = None if p_values[i] is None else running
    return adjusted


def summarize(xs: Sequence[float]) -> dict:
    interval = ci95(xs)
    return {"n": len(xs), "mean": mean(xs), "std": std(xs),
            "ci95": list(interval) if interval else None}
