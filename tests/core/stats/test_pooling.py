"""Post-stratified pooling: golden numbers and the confounding it must not fall for."""

import numpy as np
import pytest

from rollout.core.stats import binary_variance, pooled_comparison


def test_pooled_difference_golden():
    # Given two cells: (n_c=100, n_b=100) and (n_c=300, n_b=100)
    #   CMH weights n_c n_b / (n_c + n_b): 50 and 75 -> shares 0.4 and 0.6
    #   differences 0.05 - 0.03 = 0.02 and 0.02 - 0.01 = 0.01
    #   estimate = 0.4 * 0.02 + 0.6 * 0.01 = 0.014
    #   variance = 0.16 (0.0475/100 + 0.0291/100) + 0.36 (0.0196/300 + 0.0099/100)
    #            = 0.00012256 + 0.00005916 = 0.00018172
    est, var, n_eff, mc, mb = pooled_comparison(
        [100, 300], [0.05, 0.02], [0.0475, 0.0196], [100, 100], [0.03, 0.01], [0.0291, 0.0099], relative=False
    )
    assert float(est) == pytest.approx(0.014)
    assert float(var) == pytest.approx(0.00018172)
    assert float(n_eff) == 125
    assert (float(mc), float(mb)) == pytest.approx((0.032, 0.018))


def test_relative_difference_golden():
    # Given one cell, means 110 vs 100, variances 400 and 400, n = 100 each:
    #   estimate = 110 / 100 - 1 = 0.10
    #   variance = (400/100) / 100**2 + 110**2 * (400/100) / 100**4 = 0.0004 + 0.000484 = 0.000884
    est, var, *_ = pooled_comparison([100], [110.0], [400.0], [100], [100.0], [400.0], relative=True)
    assert float(est) == pytest.approx(0.10)
    assert float(var) == pytest.approx(0.000884)


def test_given_mix_shift_without_effect_then_pooled_estimate_stays_near_zero():
    # Given a stratum with a 1 % error rate and one with 10 %, identical in both arms,
    # and a candidate that gets 90 % of its traffic from the 10 % stratum
    # (a ramp that opened the risky segment first),
    n_c, n_b = np.array([1_000, 9_000]), np.array([9_000, 1_000])
    rate = np.array([0.01, 0.10])
    var = rate * (1 - rate)
    est, variance, *_ = pooled_comparison(n_c, rate, var, n_b, rate, var, relative=False)
    # Then the naive difference of overall rates is 0.091 - 0.019 = +7.2 points (pure confounding),
    naive = (n_c * rate).sum() / n_c.sum() - (n_b * rate).sum() / n_b.sum()
    assert naive == pytest.approx(0.072)
    # while the within-stratum comparison sees nothing.
    assert float(est) == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("n_c", "n_b"),
    [([0, 0], [100, 100]), ([1, 1], [100, 100]), ([], [])],
    ids=["empty candidate", "one outcome per cell", "no cells"],
)
def test_unusable_cells_give_nan_not_errors(n_c, n_b):
    k = len(n_c)
    est, var, n_eff, *_ = pooled_comparison(n_c, [0.1] * k, [0.09] * k, n_b, [0.1] * k, [0.09] * k, relative=False)
    assert np.isnan(est) and np.isnan(var) and float(n_eff) == 0


def test_binary_variance_never_claims_zero_spread():
    # (0 + 1) / (10 + 2) = 1/12 -> 1/12 * 11/12 = 0.0764
    assert float(binary_variance(0, 10)) == pytest.approx(11 / 144)
