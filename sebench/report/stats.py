"""Honest statistics for results tables and the claims ledger: mean +- std over seeds, paired deltas with a
95% t interval, and the tests behind the verdicts (t tests, TOST, Holm, power and the minimum detectable
effect, Friedman, Spearman); which verdict each test gives is defined in sebench.report.verdicts.

A delta pairs runs by seed (same seed = same initialisation stream and data order for both arms), so
seed-to-seed noise common to both arms cancels. The interval is Student's t on the per-seed differences,
mean +- t(0.975, n-1) * sd / sqrt(n): with 2 or 3 seeds it is wide, as it should be. n = 1 gives no
interval (and so no verdict), and neither do per-seed differences that are all equal:
t would make that a zero-width interval, but with a few seeds and an error counted in whole test images
(steps of 0.1% on 1,000) equal differences are a coincidence of rounding, not a noise-free effect.
"""

from __future__ import annotations

import functools
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


# ---- tests behind the claims ledger's verdicts (sebench.report.verdicts says which verdict each gives) -------
# scipy and statsmodels are imported inside the functions: `sebench --help` and the table code stay light.

def paired_t_pvalue(diffs: Sequence[float], mu: float = 0.0) -> float:
    """Two-sided p of Student's one-sample t test of H0: mean(diffs) = mu (a paired t test on the per-seed
    differences). NaN with fewer than 2 differences or none of them different (no spread to estimate)."""
    from scipy import stats as sps

    m, sd, n = mean_std(list(diffs))
    if n < 2 or sd <= 1e-9 * max(1.0, abs(m)):
        return math.nan
    t = (m - mu) / (sd / math.sqrt(n))
    return float(2 * sps.t.sf(abs(t), n - 1))


def tost_pvalue(diffs: Sequence[float], margin: float) -> float:
    """Two one-sided tests (Schuirmann's TOST) of equivalence within (-margin, +margin): the larger of the
    one-sided p values of H0: mean <= -margin and H0: mean >= +margin. p < alpha says equivalent at level
    alpha, which is the same as the (1 - 2 alpha) t interval lying inside the margins. NaN as paired_t_pvalue."""
    from scipy import stats as sps

    m, sd, n = mean_std(list(diffs))
    if n < 2 or sd <= 1e-9 * max(1.0, abs(m)) or not margin > 0:
        return math.nan
    se = sd / math.sqrt(n)
    p_low = sps.t.sf((m + margin) / se, n - 1)  # H0: mean <= -margin
    p_high = sps.t.cdf((m - margin) / se, n - 1)  # H0: mean >= +margin
    return float(max(p_low, p_high))


def t_interval(diffs: Sequence[float], level: float) -> tuple[Optional[float], Optional[float]]:
    """The Student t interval of the mean of `diffs` at `level` (None, None where paired_delta gives none)."""
    from scipy import stats as sps

    m, sd, n = mean_std(list(diffs))
    if n < 2 or sd <= 1e-9 * max(1.0, abs(m)):
        return None, None
    half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return m - half, m + half


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p values (same order as given; NaN stays NaN and is not counted):
    sorted ascending, p_(j) * (k - j + 1), made monotone, capped at 1. Rejecting where the adjusted p < alpha
    controls the family-wise error rate at alpha."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    k = len(order)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for j, i in enumerate(order):
        running = max(running, min(1.0, (k - j) * pvalues[i]))
        out[i] = running
    return out


def holm_levels(pvalues: Sequence[float], alpha: float = 0.05) -> list[float]:
    """The level at which Holm's procedure tests each hypothesis: alpha / (k - j + 1) at step j (1-based, p
    ascending) up to the first step that fails, and that step's level for every hypothesis after it. A test
    at this level rejects exactly the hypotheses Holm rejects, so the t interval at 1 - level is the
    interval that goes with Holm's decision (it excludes the null value exactly when Holm rejects; it is
    not a simultaneous confidence set). NaN for NaN p values."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    k = len(order)
    out = [math.nan] * len(pvalues)
    stopped = None
    for j, i in enumerate(order):
        level = alpha / (k - j)
        if stopped is None and pvalues[i] >= level:
            stopped = level
        out[i] = stopped if stopped is not None else level
    return out


def paired_t_power(effect: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t test at level alpha with n pairs for a standardised effect
    (mean difference / SD of the differences): P(|T| > t_crit) for T noncentral t with n - 1 degrees of
    freedom and noncentrality effect * sqrt(n) (what statsmodels' TTestPower computes). Where scipy's
    noncentral t gives no number (very large n), the normal approximation, exact enough there."""
    from scipy import stats as sps

    if n < 2:
        return math.nan
    df, nc = n - 1, abs(effect) * math.sqrt(n)
    crit = float(sps.t.ppf(1 - alpha / 2, df))
    power = float(sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc))
    if math.isnan(power):
        z = float(sps.norm.ppf(1 - alpha / 2))
        power = float(sps.norm.cdf(nc - z) + sps.norm.cdf(-nc - z))
    return power


def minimum_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean difference (in the data's units) that a two-sided paired t test at level alpha
    with n pairs detects with the given power, when the differences have this SD. NaN for n < 2 or no SD."""
    from statsmodels.stats.power import TTestPower

    if n < 2 or not sd > 0 or math.isnan(sd):
        return math.nan
    d = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power, alternative="two-sided")
    return float(d) * sd


def pairs_needed(delta: float, sd: float, alpha: float = 0.05, power: float = 0.8, cap: int = 10_000
                 ) -> Optional[int]:
    """The smallest number of pairs (seeds) whose two-sided paired t test at level alpha detects a true mean
    difference `delta` with at least the given power, when the differences have SD `sd`; None when more
    than `cap` would be needed (or delta is 0)."""
    if not sd > 0 or math.isnan(sd) or math.isnan(delta) or delta == 0:
        return None
    effect = abs(delta) / sd
    if paired_t_power(effect, cap, alpha) < power:
        return None
    lo, hi = 1, 2  # power rises with n: double up to the first n that reaches it, then bisect
    while paired_t_power(effect, hi, alpha) < power:
        lo, hi = hi, min(2 * hi, cap)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if paired_t_power(effect, mid, alpha) >= power:
            hi = mid
        else:
            lo = mid
    return hi


def friedman(blocks: Sequence[Sequence[float]]) -> tuple[float, int, float]:
    """Friedman's test over blocks (seeds), each a sequence of one value per arm: (chi-square statistic with
    the tie correction, degrees of freedom k - 1, p). Whether the arms differ anywhere, without assuming
    normal differences; NaN with fewer than 2 blocks or 3 arms."""
    from scipy import stats as sps

    if len(blocks) < 2 or len(blocks[0]) < 3:  # scipy's test needs 3 arms; 2 arms are a paired comparison
        return math.nan, max(0, len(blocks[0]) - 1) if blocks else 0, math.nan
    columns = list(zip(*blocks))
    stat, p = sps.friedmanchisquare(*columns)
    return float(stat), len(columns) - 1, float(p)


@functools.lru_cache(maxsize=None)
def _permutations(n: int):
    """Every permutation of range(n) as an (n!, n) array: built once per n (9! rows for a ResNet-20's blocks),
    not once per analysis the ledger tests."""
    import itertools

    import numpy as np

    out = np.array(list(itertools.permutations(range(n))), dtype=np.int64)
    out.setflags(write=False)
    return out


def spearman_replicated(x: Sequence[float], ys: Sequence[Sequence[float]]) -> tuple[float, float]:
    """One trend tested over k independent replicates (e.g. one analysis per seed): the mean Spearman rho of
    x with each y, and the two-sided p of the sum over replicates of each rho's numerator, sum_i rank(x)_i x
    rank(y)_i centred (Page's trend test when y has no ties). Exact for n <= 9: under no trend each replicate's
    ranks are an independent uniform permutation, so the sum's distribution is the convolution of each
    replicate's permutation distribution (spearman_exact's); a normal approximation above that. (mean rho,
    p); NaN for n < 3, a constant x, or no replicate that varies (a constant one adds 0 to the sum, and is left
    out of the mean rho)."""
    import numpy as np
    from scipy import stats as sps

    n = len(x)
    rx = sps.rankdata(np.asarray(x, dtype=float))
    rys = [sps.rankdata(np.asarray(y, dtype=float)) for y in ys]
    if any(len(r) != n for r in rys):
        raise ValueError("every replicate needs one value per x")
    varied = [r for r in rys if r.std() > 0]  # a constant replicate has no ranking: it adds 0 to the sum
    if n < 3 or not varied or rx.std() == 0:
        return math.nan, math.nan
    rho = float(np.mean([np.corrcoef(rx, r)[0, 1] for r in varied]))
    cx = rx - rx.mean()
    observed = sum(float((r - r.mean()) @ cx) for r in varied)
    if n > 9:  # each numerator: mean 0, variance sum(cx^2) sum(cy^2) / (n - 1)
        var = sum(float(cx @ cx) * float((r - r.mean()) @ (r - r.mean())) / (n - 1) for r in varied)
        return rho, float(2 * sps.norm.sf(abs(observed) / math.sqrt(var)))
    # Average ranks are multiples of 1/2, so are the centred ones: 4 x each numerator is an integer.
    perms = _permutations(n)
    total = np.ones(1)
    low = 0
    for r in varied:
        values = np.rint(4 * ((r - r.mean())[perms] @ cx)).astype(np.int64)
        lo = int(values.min())
        pmf = np.bincount(values - lo) / len(values)
        total, low = np.convolve(total, pmf), low + lo
    support = np.arange(len(total)) + low
    p = float(total[np.abs(support) >= abs(round(4 * observed))].sum())
    return rho, min(1.0, p)


def spearman_exact(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Spearman's rank correlation (average ranks for ties) and its two-sided p: exact for n <= 9, the share
    of all n! pairings of the ranks whose |rho| is at least the observed one; the t approximation above
    that. (rho, p); NaN for n < 3 or a constant variable."""
    import numpy as np
    from scipy import stats as sps

    n = len(x)
    rx = sps.rankdata(np.asarray(x, dtype=float))
    ry = sps.rankdata(np.asarray(y, dtype=float))
    if n < 3 or rx.std() == 0 or ry.std() == 0:
        return math.nan, math.nan
    rho = float(np.corrcoef(rx, ry)[0, 1])
    if n > 9:
        return rho, float(sps.spearmanr(x, y).pvalue)
    return rho, spearman_replicated(x, [y])[1]  # one replicate: the same permutation distribution
