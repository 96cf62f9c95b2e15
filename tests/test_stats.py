"""Statistics against hand-computed cases."""

import math

import pytest

from sebench.report.stats import (INCONCLUSIVE, NO_CLAIM, NOT_REPRODUCED, REPRODUCED, by_seed, mean_std,
                                  paired_delta, t_quantile, verdict)


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
    assert d.excludes_zero() and verdict(d, -1.0) == REPRODUCED


def test_equal_differences_give_no_interval():
    # 43.2 - 45.7 and 40.2 - 42.7: both -2.5 (up to float rounding), sd 0. t would say [-2.5, -2.5] and
    # "reproduced" on two seeds; the suite gives no interval and no verdict beyond inconclusive.
    d = paired_delta({0: 43.2, 1: 40.2}, {0: 45.7, 1: 42.7})
    assert d.n == 2 and d.mean == pytest.approx(-2.5) and d.low is None and d.high is None
    assert not d.excludes_zero() and verdict(d, -1.0) == INCONCLUSIVE
    from sebench.report.tables import format_delta
    assert format_delta(d, "top1_err") == "-2.50 (n=2, equal per-seed differences, no interval)"
    # 41.9 - 45.7 and 46.5 - 42.7 cancel up to float noise: a delta of zero prints without a sign flip
    assert format_delta(paired_delta({0: 41.9, 1: 46.5}, {0: 45.7, 1: 42.7}), "top1_err").startswith("+0.00 [")


def test_one_pair_has_no_interval():
    d = paired_delta({0: 1.0}, {0: 2.0})
    assert d.low is None and not d.excludes_zero()
    assert verdict(d, -1.0) == INCONCLUSIVE


def test_verdicts():
    noisy = paired_delta({0: 9.0, 1: 8.0, 2: 7.5}, {0: 10.0, 1: 10.0, 2: 10.5})  # (-4.48, 0.48)
    assert verdict(noisy, -1.16) == INCONCLUSIVE
    clear = paired_delta({0: 9.0, 1: 9.1, 2: 8.9}, {0: 10.0, 1: 10.0, 2: 10.0})
    assert verdict(clear, -1.16) == REPRODUCED  # the paper: SE lowers error; so do we
    assert verdict(clear, +0.5) == NOT_REPRODUCED  # the paper claims the opposite direction
    assert verdict(clear, 0.0) == NO_CLAIM and verdict(clear, None) == NO_CLAIM


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
