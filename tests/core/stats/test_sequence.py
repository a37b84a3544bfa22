"""The confidence sequence: golden numbers, invariants, coverage under repeated looks."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rollout.core.stats import anytime_p_value, boundary, log_evalue, srm_log_evalue

ks = st.floats(min_value=1e-3, max_value=1e3)
alphas = st.floats(min_value=1e-6, max_value=0.5)


def test_log_evalue_golden_at_zero_excess_and_planned_information():
    # Given u = 0, k = 1 (CENTER = 2, SPREAD = 1):
    # log M = -0.5 ln 2 + (0 + 0 - 4) / (2 * 2) + ln Phi(2 / sqrt 2) - ln Phi(2)
    #       = -0.34657 - 1 + ln 0.92135 - ln 0.97725 = -0.34657 - 1 - 0.08192 + 0.02301 = -1.4055
    assert float(log_evalue(0.0, 1.0)) == pytest.approx(-1.4055, abs=1e-4)


def test_boundary_golden_at_planned_information():
    # Untruncated closed form at k = 1, alpha = 0.05:
    #   c = ln 20 + 0.5 ln 2 = 3.3423; b = 2 * 2 = 4; disc = 16 + 4 (4 + 4 * 3.3423) = 85.478
    #   u0 = (-4 + sqrt 85.478) / 2 = 2.6227
    # Truncating to lam >= 0 adds ln(Phi(3.2687) / Phi(2)) = 0.0225 to log M there;
    # with slope ~ (u0 + 2) / 2 = 2.311 that moves the crossing down 0.0097: 2.6130.
    assert float(boundary(1.0, 0.05)) == pytest.approx(2.6130, abs=2e-4)
    # A fixed-n one-sided 5 % test would need 1.645: the price of looking at any time.
    assert float(boundary(1.0, 0.05)) > 1.645


@given(ks, alphas)
def test_boundary_is_where_the_evalue_reaches_one_over_alpha(k, alpha):
    u = boundary(k, alpha)
    assert float(log_evalue(u, k)) == pytest.approx(-math.log(alpha), abs=1e-6)


@given(ks, st.floats(-20, 20), st.floats(0.01, 5))
def test_evalue_grows_with_the_excess(k, u, du):
    assert float(log_evalue(u + du, k)) >= float(log_evalue(u, k))


@given(ks, alphas, alphas)
def test_smaller_alpha_means_wider_bound(k, a, b):
    lo, hi = sorted((a, b))
    assert float(boundary(k, lo)) >= float(boundary(k, hi)) - 1e-9


def test_p_value_and_boundary_agree():
    k = np.array([0.1, 1.0, 10.0])
    u = boundary(k, 0.01)
    assert anytime_p_value(u, k) == pytest.approx([0.01, 0.01, 0.01])
    assert np.all(anytime_p_value(u - 0.1, k) > 0.01)


def test_srm_evalue_golden_when_counts_match_the_allocation():
    # S = 50 - 100 * 0.5 = 0, V = 100 * 0.25 = 25,
    # rho^2 = (-2 ln 0.001 + ln(1 - 2 ln 0.001)) / (0.25 * 200000) = 16.5112 / 50000 = 3.3022e-4
    # log e = -0.5 ln(1 + 25 * 3.3022e-4) = -0.00411
    assert float(srm_log_evalue([50], [100], [0.5], 200_000)) == pytest.approx(-0.00411, abs=1e-5)


def test_coverage_under_repeated_looks_in_seeded_aa_streams():
    # Given 4,000 seeded A/A streams of Gaussian outcomes (difference 0), looked at
    # after every 20 pairs for 300 looks, with the variance estimated from the data,
    # When we record whether the lower bound ever rose above the true difference,
    # Then that happened in at most alpha of the streams (+ 3 standard errors).
    rng = np.random.default_rng(2026)
    runs, looks, step, alpha = 4_000, 300, 20, 0.05
    diff = rng.standard_normal((runs, looks, step)) - rng.standard_normal((runs, looks, step))
    s = np.cumsum(diff.sum(-1), axis=1)
    ss = np.cumsum((diff**2).sum(-1), axis=1)
    n = step * np.arange(1, looks + 1)
    var_pair = (ss - s**2 / n) / (n - 1)
    estimate, variance = s / n, var_pair / n
    k = (n / 2) / (1_000 / 2)  # planned 1,000 per arm; n_eff = n / 2 for a 50/50 split
    lower = estimate - boundary(k, alpha) * np.sqrt(variance)
    miscovered = (lower > 0).any(axis=1).mean()
    assert miscovered <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)
    # and the naive fixed-n bound re-checked at every look is far from alpha
    naive = (estimate - 1.645 * np.sqrt(variance) > 0).any(axis=1).mean()
    assert naive > 3 * alpha
