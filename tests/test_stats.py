"""Statistics against hand-computed cases and published values, and the verdicts built on them."""

import math

import pytest

from sebench.report.stats import (by_seed, friedman, holm, holm_levels, mean_std, minimum_detectable_effect,
                                  paired_delta, paired_t_power, paired_t_pvalue, pairs_needed, spearman_exact,
                                  spearman_replicated,
                                  t_interval, t_quantile, tost_pvalue)
from sebench.report.verdicts import (BETTER, CONTRADICTS, EQUIVALENT, INCONCLUSIVE, NO_VERDICT, NOT_TESTED,
                                     REPRODUCED, WORSE, Question, judge_correlations, judge_family, margin_for,
                                     omnibus_verdict)


def one(diffs, **kw):
    """The judgement of a comparison alone in its table (a family of one: Holm changes nothing)."""
    return judge_family([Question(diffs=tuple(diffs), **kw)])[0]


@pytest.mark.parametrize("df, expected", [(1, 12.706205), (2, 4.302653), (4, 2.776445), (9, 2.262157),
                                          (30, 2.042272)])
def test_t_quantiles_match_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-5)


def test_mean_std():
    m, sd, n = mean_std([1.0, 2.0, 3.0, 4.0])
    assert (m, n) == (2.5, 4)
    assert sd == pytest.approx(math.sqrt(5 / 3))
    assert mean_std([7.0]) == (7.0, 0.0, 1)


def test_paired_delta_hand_computed():
    # differences: -1.0, -2.0, -3.0 -> mean -2, sd 1, half-width 4.302653 / sqrt(3)
    variant = {0: 9.0, 1: 8.0, 2: 7.5}
    baseline = {0: 10.0, 1: 10.0, 2: 10.5, 3: 99.0}  # seed 3 has no pair and is ignored
    d = paired_delta(variant, baseline)
    half = 4.302653 / math.sqrt(3)
    assert d.n == 3 and d.seeds == (0, 1, 2)
    assert d.mean == pytest.approx(-2.0)
    assert d.low == pytest.approx(-2.0 - half, abs=1e-5) and d.high == pytest.approx(-2.0 + half, abs=1e-5)
    assert not d.excludes_zero()  # (-4.48, 0.48): three seeds cannot exclude 0 here


def test_pairing_cancels_common_seed_noise():
    # unpaired the arms overlap heavily (5..13 vs 4.4..12.6); paired, the variant is better by 0.4-0.6 each
    # seed: differences -0.6, -0.5, -0.4 -> mean -0.5, sd 0.1, half-width 4.302653 * 0.1 / sqrt(3)
    baseline = {0: 5.0, 1: 9.0, 2: 13.0}
    variant = {0: 4.4, 1: 8.5, 2: 12.6}
    d = paired_delta(variant, baseline)
    half = 4.302653 * 0.1 / math.sqrt(3)
    assert d.mean == pytest.approx(-0.5)
    assert d.low == pytest.approx(-0.5 - half, abs=1e-5) and d.high == pytest.approx(-0.5 + half, abs=1e-5)
    assert d.excludes_zero() and one((-0.6, -0.5, -0.4), source_delta=-1.0).verdict.kind == REPRODUCED


def test_equal_differences_give_no_interval():
    # 43.2 - 45.7 and 40.2 - 42.7: both -2.5 (up to float rounding), sd 0. t would say [-2.5, -2.5] and
    # "reproduced" on two seeds; the suite gives no interval and no verdict.
    d = paired_delta({0: 43.2, 1: 40.2}, {0: 45.7, 1: 42.7})
    assert d.n == 2 and d.mean == pytest.approx(-2.5) and d.low is None and d.high is None
    assert not d.excludes_zero() and one((-2.5, -2.5), source_delta=-1.0).verdict.kind == NO_VERDICT
    # with three equal differences there is still no spread to test: inconclusive, and it says why
    j = one((-2.5, -2.5, -2.5), source_delta=-1.0)
    assert j.verdict.text == "inconclusive (equal per-seed differences, no interval)"
    from sebench.report.tables import format_delta
    assert format_delta(d, "top1_err") == "-2.50 (n=2, equal per-seed differences, no interval)"
    # 41.9 - 45.7 and 46.5 - 42.7 cancel up to float noise: a delta of zero prints without a sign flip
    assert format_delta(paired_delta({0: 41.9, 1: 46.5}, {0: 45.7, 1: 42.7}), "top1_err").startswith("+0.00 [")


def test_one_pair_has_no_interval():
    d = paired_delta({0: 1.0}, {0: 2.0})
    assert d.low is None and not d.excludes_zero()
    assert one((-1.0,), source_delta=-1.0).verdict.kind == NO_VERDICT
    assert one((), source_delta=-1.0).verdict.kind == NOT_TESTED


# ---- tests against known values --------------------------------------------------------------------------

def test_t_interval_and_p_against_closed_forms():
    # df = 2 has closed forms: P(T > t) = (1 - t / sqrt(t^2 + 2)) / 2; t(0.975, 2) = 4.302653
    diffs = [-1.0, -2.0, -3.0]  # mean -2, sd 1, t = -2 sqrt(3) = -3.4641
    low, high = t_interval(diffs, 0.95)
    assert (low, high) == (pytest.approx(-2 - 4.302653 / math.sqrt(3), abs=1e-6),
                           pytest.approx(-2 + 4.302653 / math.sqrt(3), abs=1e-6))
    d = paired_delta({i: v for i, v in enumerate(diffs)}, {i: 0.0 for i in range(3)})
    assert (d.low, d.high) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))
    t = 2 * math.sqrt(3)
    assert paired_t_pvalue(diffs) == pytest.approx(1 - t / math.sqrt(t * t + 2), abs=1e-9)  # 0.0742
    assert paired_t_pvalue(diffs, mu=-2.0) == pytest.approx(1.0)
    assert math.isnan(paired_t_pvalue([1.0])) and math.isnan(paired_t_pvalue([1.0, 1.0, 1.0]))


def test_tost_against_closed_form_and_statsmodels():
    import numpy as np
    from statsmodels.stats.weightstats import ttost_paired

    diffs = [0.1, 0.2, 0.3]  # mean 0.2, se 0.1 / sqrt(3); margin 0.5, df 2
    se = 0.1 / math.sqrt(3)
    t_low, t_high = (0.2 + 0.5) / se, (0.2 - 0.5) / se
    p_low = (1 - t_low / math.sqrt(t_low ** 2 + 2)) / 2  # H0: mean <= -0.5
    p_high = (1 - abs(t_high) / math.sqrt(t_high ** 2 + 2)) / 2  # H0: mean >= +0.5
    assert tost_pvalue(diffs, 0.5) == pytest.approx(max(p_low, p_high), abs=1e-9)  # 0.0176
    sm = ttost_paired(np.array(diffs) + 10, np.full(3, 10.0), -0.5, 0.5)[0]
    assert tost_pvalue(diffs, 0.5) == pytest.approx(sm, abs=1e-9)
    # the (1 - 2 alpha) interval inside the margins <=> TOST p < alpha
    lo, hi = t_interval(diffs, 0.90)
    assert (-0.5 < lo and hi < 0.5) == (tost_pvalue(diffs, 0.5) < 0.05)
    assert tost_pvalue(diffs, 0.25) > 0.05  # 0.2 +- noise is not within +-0.25


def test_holm_against_hand_computation_and_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone: 0.06 for the last
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))
    assert holm([0.2, math.nan, 0.01])[1] != holm([0.2, math.nan, 0.01])[1]  # NaN stays NaN, is not counted
    assert holm([0.2, math.nan, 0.01])[2] == pytest.approx(0.02)
    # the level Holm tests each at: alpha/4, alpha/3, then it stops (0.03 >= 0.025): 0.025 for the rest
    assert holm_levels(p) == pytest.approx([0.05 / 3, 0.025, 0.025, 0.0125])


def test_holm_levels_give_intervals_that_agree_with_holm():
    import random

    rng = random.Random(0)
    for _ in range(200):
        fam = [[rng.gauss(rng.choice([0, 0.5, 1.5]), 1) for _ in range(rng.randint(3, 8))]
               for _ in range(rng.randint(1, 6))]
        p = [paired_t_pvalue(d) for d in fam]
        for d, adj, level in zip(fam, holm(p), holm_levels(p)):
            lo, hi = t_interval(d, 1 - level)
            assert (adj < 0.05) == (lo > 0 or hi < 0)


def test_friedman_against_the_textbook_formula_and_scipy():
    # 4 blocks ranking 3 arms the same way: rank sums 4, 8, 12;
    # chi2 = 12 / (n k (k+1)) * sum R^2 - 3 n (k+1) = 12/48 * 224 - 48 = 8; df 2: p = exp(-8/2)
    stat, df, p = friedman([[1.0, 2.0, 3.0], [1.1, 2.5, 3.2], [0.5, 0.6, 0.7], [10.0, 11.0, 12.0]])
    assert (stat, df) == (pytest.approx(8.0), 2) and p == pytest.approx(math.exp(-4))
    from scipy.stats import friedmanchisquare
    blocks = [[7.0, 9.0, 8.0], [6.0, 5.0, 7.0], [9.0, 7.0, 6.0], [8.0, 5.0, 6.0], [5.5, 6.5, 4.0]]
    assert friedman(blocks)[2] == pytest.approx(friedmanchisquare(*zip(*blocks)).pvalue)
    assert math.isnan(friedman([[1.0, 2.0, 3.0]])[2])  # one block tests nothing


def test_power_mde_and_seeds_needed_against_published_values():
    # Cohen's / G*Power's paired t (two-sided, alpha 0.05): d = 1 with 10 pairs has power 0.803;
    # d = 0.5 needs 34 pairs for 80% (power 0.808 at 34, 0.795 at 33)
    assert paired_t_power(1.0, 10) == pytest.approx(0.8031, abs=1e-4)
    assert paired_t_power(0.5, 34) == pytest.approx(0.8078, abs=1e-4)
    assert pairs_needed(0.5, 1.0) == 34 and pairs_needed(1.0, 1.0) == 10 and pairs_needed(-2.0, 4.0) == 34
    assert pairs_needed(0.001, 1.0) is None  # more than the cap of 10000
    assert pairs_needed(0.03, 1.0, cap=100_000) == pytest.approx(8723, abs=2)
    # the MDE is the effect with exactly 80% power at this n, in the data's units
    assert minimum_detectable_effect(2.0, 10) == pytest.approx(2 * 0.99600, abs=1e-4)
    assert paired_t_power(minimum_detectable_effect(0.3, 5) / 0.3, 5) == pytest.approx(0.8, abs=1e-6)
    assert math.isnan(minimum_detectable_effect(1.0, 1))


def test_spearman_exact_p():
    rho, p = spearman_exact([1, 2, 3, 4], [1, 2, 3, 4])
    assert rho == pytest.approx(1.0) and p == pytest.approx(2 / 24)  # 2 of 24 pairings are this extreme
    # ties: average ranks, and the permutation distribution of those ranks
    import itertools

    import numpy as np
    from scipy.stats import rankdata

    x, y = list(range(6)), [0.0, 0.0, 0.3, 0.0, 0.4, 0.9]
    rho, p = spearman_exact(x, y)
    ry, rx = rankdata(y), rankdata(x)

    def r(a):
        return float(np.corrcoef(rx, a)[0, 1])

    every = [abs(r(np.array(perm))) for perm in itertools.permutations(ry)]
    assert rho == pytest.approx(r(ry))
    assert p == pytest.approx(sum(v >= abs(rho) - 1e-12 for v in every) / len(every))


def test_spearman_replicated_convolves_each_replicates_permutations():
    """Over k replicates the sum of rank products has, with no trend, the distribution of k independent
    permutations: checked against every combination of the replicates' permutations (ties included). One
    replicate is spearman_exact."""
    import itertools

    import numpy as np
    from scipy.stats import rankdata

    x = list(range(5))
    ys = [[0.1, 0.3, 0.2, 0.4, 0.5], [0.2, 0.2, 0.3, 0.5, 0.4], [0.5, 0.1, 0.2, 0.3, 0.4]]
    rho, p = spearman_replicated(x, ys)
    cx = rankdata(x) - 3
    dists = [np.array([float((np.array(perm) - np.mean(perm)) @ cx) for perm in itertools.permutations(rankdata(y))])
             for y in ys]
    observed = sum(float((rankdata(y) - 3) @ cx) for y in ys)
    every = dists[0][:, None, None] + dists[1][None, :, None] + dists[2][None, None, :]
    assert p == pytest.approx(float(np.mean(np.abs(every) >= abs(observed) - 1e-9)))
    assert rho == pytest.approx(np.mean([spearman_exact(x, y)[0] for y in ys]))
    assert spearman_replicated(x, ys[:1]) == pytest.approx(spearman_exact(x, ys[0]))
    assert spearman_replicated(x, ys + ys)[1] < p  # the same trend in more replicates is less likely by chance
    # a replicate without a ranking (constant) adds 0 to the sum and stays out of the mean rho
    assert spearman_replicated(x, ys + [[0.3] * 5]) == pytest.approx((rho, p))
    # above 9 points: the normal approximation, two-sided; each numerator's variance is
    # sum(cx^2) sum(cy^2) / (n - 1) = 143^2 / 11 = 1859, so two perfect replicates give z = 286 / sqrt(3718)
    from scipy.stats import norm

    big = list(range(12))
    assert spearman_replicated(big, [big, big]) == pytest.approx((1.0, 2 * norm.sf(286 / math.sqrt(3718))))
    r, p_big = spearman_replicated(big, [big, big[::-1]])
    assert r == pytest.approx(0.0) and p_big == pytest.approx(1.0)
    assert all(math.isnan(v) for v in spearman_replicated(x, []))
    assert all(math.isnan(v) for v in spearman_replicated(x, [[1, 1, 1, 1, 1]]))
    with pytest.raises(ValueError):
        spearman_replicated(x, [[1, 2, 3]])


# ---- verdicts -------------------------------------------------------------------------------------------

def test_verdicts_against_zero_the_source_and_a_margin():
    clear = (-1.0, -0.9, -1.1)  # error falls by 1.0 on every seed: the interval excludes 0
    assert one(clear, source_delta=-1.16).verdict.kind == REPRODUCED  # the paper: SE lowers error; so do we
    assert one(clear, source_delta=+0.5).verdict.kind == CONTRADICTS  # the paper claims the other direction
    assert one(clear).verdict.kind == BETTER and one(clear, higher_is_better=True).verdict.kind == WORSE
    assert one(clear, source_delta=-5.0).verdict.text == "reproduced (smaller than the source)"
    # interval contains 0 but excludes the source's +2: the source's effect is ruled out
    j = one((0.1, -0.3, 0.2, -0.1), source_delta=2.0)
    assert j.vs_zero.kind == INCONCLUSIVE and j.verdict.kind == CONTRADICTS
    # tight around 0, margin 0.5: equivalent; without a margin (test loss by default) inconclusive with its MDE
    flat = (0.05, -0.05, 0.02, -0.03, 0.01)
    assert one(flat, margin=0.5).verdict.text == "equivalent within ±0.50"
    inc = one(flat, decimals=4)
    assert inc.verdict.kind == INCONCLUSIVE and inc.verdict.text == f"inconclusive (MDE {inc.mde:.4f})"
    # noisy: inconclusive, and the MDE is what it would take
    noisy = one((-1.0, -2.0, -3.0, 2.5), source_delta=-0.3, margin=0.5)
    assert noisy.verdict.kind == INCONCLUSIVE and noisy.mde > 3 and noisy.pairs_for_source > 100
    assert margin_for("top1_err") == 0.5 and margin_for("test_loss") is None
    assert margin_for("test_loss", {"test_loss": 0.01}) == 0.01


def test_holm_makes_a_family_harder_to_pass():
    borderline = (-1.0, -0.4, -1.6, -0.9)  # alone: p 0.03 against 0
    assert paired_t_pvalue(borderline) < 0.05 and one(borderline).verdict.kind == BETTER
    family = [Question(diffs=borderline)] + [Question(diffs=(0.3, -0.2, 0.1, -0.4))] * 3
    j = judge_family(family)[0]
    assert j.p_zero_adj == pytest.approx(4 * paired_t_pvalue(borderline)) and j.verdict.kind == INCONCLUSIVE
    assert j.adj_low < 0 < j.adj_high  # the adjusted interval says the same
    assert judge_family([Question(diffs=(1.0, 2.0))] * 3)[0].verdict.kind == NO_VERDICT  # n < 3: not in it


def test_omnibus_and_correlation_verdicts():
    assert omnibus_verdict(0.01, 5).text == "arms differ (p < 0.05)"
    assert omnibus_verdict(0.6, 5).text == "inconclusive (no difference shown)"
    assert omnibus_verdict(0.01, 2).kind == NO_VERDICT
    (p1, v1), (p2, v2) = judge_correlations([0.5, 0.57], [0.18, 0.12], [9, 9], [1, 1])
    assert (p1, p2) == (pytest.approx(0.24), pytest.approx(0.24)) and v1.kind == v2.kind == INCONCLUSIVE
    (_, up), (_, down) = judge_correlations([0.95, -0.9], [0.0001, 0.001], [9, 9], [1, 1])
    assert up.kind == REPRODUCED and down.kind == CONTRADICTS
    assert EQUIVALENT == "equivalent"


def test_duplicate_seed_is_an_error():
    with pytest.raises(ValueError):
        by_seed([(0, 1.0), (0, 2.0)])


def test_median_interval_order_statistics():
    from sebench.report.stats import median_interval
    # n = 9: P(B <= 1) = 10/512, so k = 2 covers 1 - 20/512 = 96.1%; k = 3 would cover 82.0%
    m, lo, hi, cov = median_interval([9, 1, 8, 2, 7, 3, 6, 4, 5])
    assert (m, lo, hi) == (5, 2, 8) and cov == pytest.approx(1 - 20 / 512)
    # n = 6: only (min, max), covering 1 - 2/64 = 96.9%; n = 5 covers at most 93.8%: no interval
    assert median_interval([1, 2, 3, 4, 5, 100])[:3] == (3.5, 1, 100)
    assert median_interval([1, 2, 3, 4, 5]) == (3, None, None, 0.0)
    # one wild value moves the bounds by one order statistic, not by its size
    assert median_interval([1, 2, 3, 4, 5, 6, 7, 8, 1e9])[1:3] == (2, 8)
