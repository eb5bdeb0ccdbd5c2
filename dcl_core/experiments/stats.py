"""Student's t: the 97.5 % quantile behind a 95 % confidence interval of a mean of paired
differences, without scipy (the API builds sweep tables and imports only pydantic).

The distribution function comes from the regularised incomplete beta function,
P(|T| > t) = I_x(df/2, 1/2) with x = df / (df + t^2), evaluated by its continued fraction
(modified Lentz); the quantile is found by bisection on it.
"""

from __future__ import annotations

import math
import statistics
from functools import lru_cache


def _beta_fraction(a: float, b: float, x: float) -> float:
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| > |t|) for Student's t with `df` degrees of freedom."""
    return incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


@lru_cache(maxsize=256)
def t_quantile_975(df: int) -> float:
    """The t with P(T <= t) = 0.975 for `df` >= 1 degrees of freedom (12.706 at 1, 1.96 as df grows)."""
    if df < 1:
        raise ValueError("df must be at least 1")
    low, high = 0.0, 1.0
    while t_two_sided_p(high, df) > 0.05:
        high *= 2.0
    for _ in range(100):
        mid = (low + high) / 2.0
        low, high = (mid, high) if t_two_sided_p(mid, df) > 0.05 else (low, mid)
    return (low + high) / 2.0


def mean_ci95(values: list[float]) -> tuple[float, tuple[float, float] | None]:
    """The mean of `values` and its 95 % t-interval (None under two values)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    half = t_quantile_975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, (mean - half, mean + half)
