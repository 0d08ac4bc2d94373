"""Is a difference between two sets of seeds real? Welch's t-test, with ``math`` only.

One definition for ``bench/ablations.py``, ``bench/probes.py`` and notebook 08. For two lists of
per-seed scores ``a`` and ``b`` (sample variances ``s^2`` divided by ``n - 1``):

    t  = (mean(a) - mean(b)) / sqrt(s_a^2 / n_a + s_b^2 / n_b)
    df = (s_a^2/n_a + s_b^2/n_b)^2 / ((s_a^2/n_a)^2 / (n_a - 1) + (s_b^2/n_b)^2 / (n_b - 1))
                                                                   (Welch-Satterthwaite)
    p  = P(|T_df| >= |t|) = I_{df / (df + t^2)}(df / 2, 1 / 2)      (two-sided)

with ``I_x(a, b)`` the regularised incomplete beta function (a continued fraction, as in
Numerical Recipes' ``betacf``). With 3 seeds each, df is between 2 and 4, where |t| must reach
2.8-4.3 for p < 0.05: a fixed |t| cut-off would be wrong for some pairs and right for others.
"""
from __future__ import annotations

import math
import statistics
from typing import NamedTuple


class Welch(NamedTuple):
    diff: float      # mean(a) - mean(b)
    t: float         # Welch's t (+-inf when both sets are constant and differ, 0 when they are equal)
    df: float        # Welch-Satterthwaite degrees of freedom (n_a + n_b - 2 when both variances are 0)
    p: float         # two-sided p-value


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)`` for ``a, b > 0``, ``0 <= x <= 1``."""
    if not (a > 0 and b > 0) or not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc: needs a, b > 0 and 0 <= x <= 1, got a={a}, b={b}, x={x}")
    if x in (0.0, 1.0):
        return x
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1.0) / (a + b + 2.0):        # the continued fraction converges fast below this point
        return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b
    return math.exp(log_front) * _betacf(a, b, x) / a


def _betacf(a: float, b: float, x: float, eps: float = 1e-15, iterations: int = 500) -> float:
    """The continued fraction of ``I_x(a, b)`` by the modified Lentz method."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, iterations + 1):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= c * d
        if abs(c * d - 1.0) < eps:
            return h
    return h


def t_two_sided_p(t: float, df: float) -> float:
    """``P(|T| >= |t|)`` for Student's t with ``df > 0`` degrees of freedom (df need not be whole)."""
    if df <= 0 or math.isnan(df) or math.isnan(t):
        raise ValueError(f"t_two_sided_p: needs df > 0 and a number t, got t={t}, df={df}")
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def welch(a, b) -> Welch:
    """Welch's unequal-variance t-test of ``mean(a) - mean(b)``, two-sided; each list needs >= 2 values."""
    a, b = [float(v) for v in a], [float(v) for v in b]
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"welch: each side needs at least 2 values, got {len(a)} and {len(b)}")
    diff = statistics.mean(a) - statistics.mean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0.0:                 # two constant sets: equal (nothing to tell) or different (certain)
        return Welch(diff, 0.0 if diff == 0 else math.copysign(math.inf, diff), len(a) + len(b) - 2.0,
                     1.0 if diff == 0 else 0.0)
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return Welch(diff, t, df, t_two_sided_p(t, df))


def holm(pvalues) -> list[float]:
    """Holm's step-down adjustment of ``m`` p-values (family-wise error): adjusted p, in input order."""
    p = [float(v) for v in pvalues]
    order = sorted(range(len(p)), key=p.__getitem__)
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


def format_p(p: float) -> str:
    """A p-value for text: two significant digits, ``p < 0.001`` below that."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}" if p < 0.01 else f"p = {p:.2f}"


def t_critical(df: float, alpha: float = 0.05) -> float:
    """The |t| at which the two-sided p of Student's t with ``df`` degrees of freedom reaches
    ``alpha`` (the inverse of :func:`t_two_sided_p`, by bisection)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"t_critical: needs 0 < alpha < 1, got {alpha}")
    lo, hi = 0.0, 1.0
    while t_two_sided_p(hi, df) > alpha:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_two_sided_p(mid, df) > alpha else (lo, mid)
    return 0.5 * (lo + hi)
