"""Honest statistics for results tables: mean +- std over seeds, paired deltas with a 95% t interval, and a
verdict on each of the source's claims.

A delta pairs runs by seed (same seed = same initialisation stream and data order for both arms), so
seed-to-seed noise common to both arms cancels. The interval is Student's t on the per-seed differences,
mean +- t(0.975, n-1) * sd / sqrt(n): with 2 or 3 seeds it is wide, as it should be. n = 1 gives no
interval (and so no verdict beyond "inconclusive"), and neither do per-seed differences that are all equal:
t would make that a zero-width interval, but with a few seeds and an error counted in whole test images
(steps of 0.1% on 1,000) equal differences are a coincidence of rounding, not a noise-free effect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

INTERVAL_METHOD = "paired Student t, 95%"


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample std (n-1; 0 for one value) and n."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return m, sd, n


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (Numerical Recipes, Lentz's method)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                    -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbeta) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbeta) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: int) -> float:
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2.0, 0.5, x)
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: int) -> float:
    """Inverse of t_cdf by bisection (monotone; exact to ~1e-12)."""
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class PairedDelta:
    mean: float  # mean of (variant - baseline) over paired seeds
    low: Optional[float]  # 95% interval; None with fewer than 2 pairs or all differences equal
    high: Optional[float]
    n: int
    seeds: tuple[int, ...]

    def excludes_zero(self) -> bool:
        return self.low is not None and (self.low > 0 or self.high < 0)


def paired_delta(variant: Mapping[int, float], baseline: Mapping[int, float], level: float = 0.95
                 ) -> PairedDelta:
    """Delta of a metric (variant - baseline) over the seeds both have."""
    seeds = tuple(sorted(set(variant) & set(baseline)))
    diffs = [variant[s] - baseline[s] for s in seeds]
    m, sd, n = mean_std(diffs)
    if n < 2 or sd <= 1e-9 * max(1.0, abs(m)):  # one pair, or no spread to estimate (module docstring)
        return PairedDelta(m, None, None, n, seeds)
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return PairedDelta(m, m - half, m + half, n, seeds)


REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NO_CLAIM = "reproduced", "not reproduced", "inconclusive", "no claim"


def verdict(delta: PairedDelta, source_delta: Optional[float]) -> str:
    """The source claims `source_delta` (same metric, variant - baseline). Reproduced: our interval excludes 0
    on the claim's side; not reproduced: it excludes 0 on the other side; inconclusive otherwise. A source
    delta of exactly 0 or missing makes no directional claim."""
    if source_delta is None or source_delta == 0 or math.isnan(source_delta):
        return NO_CLAIM
    if not delta.excludes_zero():
        return INCONCLUSIVE
    same_side = (delta.mean > 0) == (source_delta > 0)
    return REPRODUCED if same_side else NOT_REPRODUCED


def median_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, Optional[float],
                                                                       Optional[float], float]:
    """Median of `values` with a distribution-free interval: the order statistics (x_(k), x_(n+1-k)) for
    the largest k whose coverage 1 - 2 P(Binom(n, 1/2) < k) is still at least `level`. Returns (median,
    low, high, coverage); low = high = None (coverage 0) when n is too small for `level` (n < 6 at 95%).
    For timings: no normality assumed, and one stalled repeat moves it by one order statistic only."""
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        return math.nan, None, None, 0.0
    mid = n // 2
    median = xs[mid] if n % 2 else (xs[mid - 1] + xs[mid]) / 2
    below = 0.0  # P(Binom(n, 1/2) < k) as k grows
    best = None
    for k in range(1, n // 2 + 1):
        below += math.comb(n, k - 1) / 2 ** n
        coverage = 1 - 2 * below
        if coverage < level:
            break
        best = (k, coverage)
    if best is None:
        return median, None, None, 0.0
    k, coverage = best
    return median, xs[k - 1], xs[n - k], coverage


def by_seed(rows: Iterable[tuple[int, float]]) -> dict[int, float]:
    """{seed: value}; a seed seen twice is an error in the store, not something to average away."""
    out: dict[int, float] = {}
    for seed, value in rows:
        if seed in out:
            raise ValueError(f"seed {seed} appears twice for one configuration")
        out[seed] = value
    return out
