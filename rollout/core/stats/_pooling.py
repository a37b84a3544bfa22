"""Post-stratified comparison of two arms over (stratum, stage) cells (array functions).

Each cell is compared within itself (candidate against the baseline of the same
stratum and the same stage), and the cell differences are averaged with weights
from traffic: w = n_c * n_b / (n_c + n_b), the Cochran-Mantel-Haenszel weight.
Because no cell is ever compared with another, a baseline that drifts between
stages, or a stratum with a high base rate that gets more candidate traffic,
cannot fake an effect. The CMH weight is the traffic share when every cell has
the same split, and it discounts a cell where one arm is tiny (a 1 % stage),
which would otherwise dominate the variance.
"""

from __future__ import annotations

import numpy as np


def binary_variance(successes, n):
    """Per-outcome variance of a rate, from p~ = (x + 1) / (n + 2).

    The plug-in p(1-p) is 0 when a small arm has seen no error yet, which would
    claim infinite precision; one pseudo-success and one pseudo-failure avoid that.
    """
    p = (np.asarray(successes, dtype=float) + 1.0) / (np.asarray(n, dtype=float) + 2.0)
    return p * (1.0 - p)


def pooled_comparison(n_c, mean_c, var_c, n_b, mean_b, var_b, *, relative: bool):
    """Candidate minus baseline, pooled over the last axis (cells).

    Returns (estimate, variance, n_eff, pooled_mean_c, pooled_mean_b). With
    `relative`, the estimate is pooled_mean_c / pooled_mean_b - 1 (delta method).
    n_eff = sum of weights: the per-arm sample size of an equivalent 50/50 split, halved.
    Cells with fewer than 2 outcomes in an arm or no variance estimate get weight 0;
    all-zero weights give nan estimates (the caller turns that into a reason).
    """
    n_c = np.asarray(n_c, dtype=float)
    n_b = np.asarray(n_b, dtype=float)
    mean_c = np.asarray(mean_c, dtype=float)
    mean_b = np.asarray(mean_b, dtype=float)
    var_c = np.asarray(var_c, dtype=float)
    var_b = np.asarray(var_b, dtype=float)
    usable = (n_c >= 2) & (n_b >= 2) & np.isfinite(var_c) & np.isfinite(var_b)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(usable, n_c * n_b / np.where(usable, n_c + n_b, 1.0), 0.0)
        n_eff = w.sum(axis=-1)
        share = w / n_eff[..., None]
        se2_c = np.where(usable, var_c / np.where(usable, n_c, 1.0), 0.0)
        se2_b = np.where(usable, var_b / np.where(usable, n_b, 1.0), 0.0)
        mc = np.sum(share * np.where(usable, mean_c, 0.0), axis=-1)
        mb = np.sum(share * np.where(usable, mean_b, 0.0), axis=-1)
        vc = np.sum(share * share * se2_c, axis=-1)
        vb = np.sum(share * share * se2_b, axis=-1)
        if relative:
            estimate = mc / mb - 1.0
            variance = vc / (mb * mb) + mc * mc * vb / mb**4
            bad = ~(mb > 0)
            estimate = np.where(bad, np.nan, estimate)
            variance = np.where(bad, np.nan, variance)
        else:
            estimate = mc - mb
            variance = vc + vb
        empty = ~(n_eff > 0)
        estimate = np.where(empty, np.nan, estimate)
        variance = np.where(empty, np.nan, variance)
        mc = np.where(empty, np.nan, mc)
        mb = np.where(empty, np.nan, mb)
    return estimate, variance, n_eff, mc, mb


def clustered_comparison(units_c, mean_c, cov_c, units_b, mean_b, cov_b, *, relative: bool):
    """Candidate minus baseline pooled over cells, each arm with a full covariance matrix of its cell means.

    The twin of `pooled_comparison` (one comparison, not an array of them) for
    the cluster-robust case: a unit that appears in two stage cells of its
    stratum makes their means correlated, so the pooled variance is
    share' Cov share, not the sum of squared shares times the diagonal. Weights
    are CMH weights on units (the randomised samples), not on outcome rows.
    Returns floats (estimate, variance, n_eff, pooled_mean_c, pooled_mean_b).
    """
    k_c = np.asarray(units_c, dtype=float)
    k_b = np.asarray(units_b, dtype=float)
    mean_c = np.asarray(mean_c, dtype=float)
    mean_b = np.asarray(mean_b, dtype=float)
    cov_c = np.asarray(cov_c, dtype=float)
    cov_b = np.asarray(cov_b, dtype=float)
    usable = (
        (k_c >= 2) & (k_b >= 2) & np.isfinite(np.diagonal(cov_c)) & np.isfinite(np.diagonal(cov_b))
        & np.isfinite(mean_c) & np.isfinite(mean_b)
    )
    if not usable.any():
        return NAN, NAN, 0.0, NAN, NAN
    w = np.where(usable, k_c * k_b / np.where(usable, k_c + k_b, 1.0), 0.0)
    n_eff = float(w.sum())
    share = w / n_eff
    if not usable.all():
        use = np.flatnonzero(usable)
        share, mean_c, mean_b = share[use], mean_c[use], mean_b[use]
        cov_c, cov_b = cov_c[use][:, use], cov_b[use][:, use]
    mc = float(share @ mean_c)
    mb = float(share @ mean_b)
    # An unusable cell's nan never reaches here; off-diagonal nans cannot arise (cells with data give numbers).
    vc = float(share @ cov_c @ share)
    vb = float(share @ cov_b @ share)
    if relative:
        if not mb > 0:
            return NAN, NAN, n_eff, mc, mb
        return mc / mb - 1.0, vc / (mb * mb) + mc * mc * vb / mb**4, n_eff, mc, mb
    return mc - mb, vc + vb, n_eff, mc, mb


NAN = float("nan")
