"""Every look of a run at once: per-unit sums updated incrementally, and the judge's comparison vectorised.

Calling the real `judge()` at every look of 500 runs x 12 worlds costs ~1.8 ms a
call (profiled: half of it in `boundary()`'s Newton steps, the rest building
Evidence), about an hour on 2 cores. So `bench/traffic.py` screens looks with
this vectorised twin of `_judge._compare` (the cluster-robust UnitSums
covariance with its CR1 factor, the binary floor, CMH weights on units,
`min_samples` in units, the same `log_evalue` and `boundary`) and calls the
real `judge()` at every look the twin puts near a decision, and at every look
of a share of the runs, counting where the two disagree. What is judged is
what `judge()` decides.

Incremental sums: a row of unit u in stage g with value z (counted c in {0, 1})
changes sum_u Y_ua Y_ub by dY_a Y_ub + Y_ua dY_b + dY_a dY_b, where Y_u are the
unit's totals before the row; so one sort by unit and one cumulative sum give
every row's increment, and a bincount by look plus a cumulative sum over looks
gives the UnitSums of every look in O(rows).
"""

from __future__ import annotations

import math

import numpy as np

from rollout.core.stats import binary_variance, boundary, log_evalue

NAN = float("nan")


def look_sums(group: np.ndarray, unit: np.ndarray, stage: np.ndarray, look: np.ndarray, z: np.ndarray,
              c: np.ndarray, n_groups: int, n_looks: int, n_stages: int) -> dict[str, np.ndarray]:
    """Cumulative per-look UnitSums fields per group (variant x stratum): arrays (groups, looks, ...).

    Rows must be in arrival order (the order the store would have them); `look` is the look at which a
    row is first seen. Keys: n, y, units (groups, looks, S); total (groups, looks); yy, yn, nn (.., S, S).
    """
    s = n_stages
    r = len(z)
    out_shape = (n_groups, n_looks)
    if r == 0:
        zero = np.zeros(out_shape + (s,))
        return {"n": zero, "y": zero, "units": zero, "total": np.zeros(out_shape),
                "yy": np.zeros(out_shape + (s, s)), "yn": np.zeros(out_shape + (s, s)),
                "nn": np.zeros(out_shape + (s, s))}
    key = group.astype(np.int64) * (int(unit.max()) + 1) + unit
    order = np.argsort(key, kind="stable")  # by unit, arrival order kept within a unit
    k = key[order]
    rows = np.arange(r)
    Z = np.zeros((r, s))
    C = np.zeros((r, s))
    Z[rows, stage[order]] = z[order]
    C[rows, stage[order]] = c[order]
    exZ = np.cumsum(Z, axis=0) - Z
    exC = np.cumsum(C, axis=0) - C
    start = np.ones(r, dtype=bool)
    start[1:] = k[1:] != k[:-1]
    first = np.maximum.accumulate(np.where(start, rows, 0))
    Yp = exZ - exZ[first]  # the unit's totals before this row
    Np = exC - exC[first]
    yy = Z[:, :, None] * Yp[:, None, :] + Yp[:, :, None] * Z[:, None, :] + Z[:, :, None] * Z[:, None, :]
    yn = Z[:, :, None] * Np[:, None, :] + Yp[:, :, None] * C[:, None, :] + Z[:, :, None] * C[:, None, :]
    nn = C[:, :, None] * Np[:, None, :] + Np[:, :, None] * C[:, None, :] + C[:, :, None] * C[:, None, :]
    new_in_stage = (C > 0) & (Np == 0)
    new_unit = (C.sum(1) > 0) & (Np.sum(1) == 0)
    cell = group[order].astype(np.int64) * n_looks + look[order]
    size = n_groups * n_looks

    def agg(values: np.ndarray) -> np.ndarray:
        flat = values.reshape(r, -1)
        acc = np.stack([np.bincount(cell, weights=flat[:, j], minlength=size) for j in range(flat.shape[1])], -1)
        return np.cumsum(acc.reshape((n_groups, n_looks) + values.shape[1:]), axis=1)

    return {"n": agg(C), "y": agg(Z), "units": agg(new_in_stage.astype(float)), "total": agg(new_unit[:, None]
            .astype(float))[..., 0], "yy": agg(yy), "yn": agg(yn), "nn": agg(nn)}  # fmt: skip


def _arm_columns(sums: dict[str, np.ndarray], gi: int, stages: list[int], binary: bool):
    """(units, ratio means, covariance) per look for one group's cells `stages`: twin of UnitSums.covariance."""
    n = sums["n"][gi][:, stages]
    y = sums["y"][gi][:, stages]
    units = sums["units"][gi][:, stages]
    k = sums["total"][gi]
    ix = np.ix_(range(n.shape[0]), stages, stages)
    yy, yn, nn = sums["yy"][gi][ix], sums["yn"][gi][ix], sums["nn"][gi][ix]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(n > 0, y / n, np.nan)
        factor = np.where(k > 1, k / (k - 1), np.nan)
        rr = np.nan_to_num(r)
        e = (yy - rr[:, None, :] * yn - rr[:, :, None] * np.swapaxes(yn, 1, 2) + rr[:, :, None] * rr[:, None, :] * nn)
        both = (n[:, :, None] > 0) & (n[:, None, :] > 0)
        cov = np.where(both, factor[:, None, None] * e / (n[:, :, None] * n[:, None, :]), 0.0)
    d = np.einsum("lii->li", cov)
    d[...] = np.where(d < 0, 0.0, d)  # rounding of a near-zero sum of squares
    if binary:
        with np.errstate(divide="ignore", invalid="ignore"):
            floor = np.where(n > 0, binary_variance(y, n) / n, 0.0)
        d[...] = np.where(np.isfinite(d), np.maximum(d, floor), d)
    return units, r, cov, n


def comparison(sums: dict[str, np.ndarray], groups: list[tuple[int, int]], stages_seen: np.ndarray, *,
               binary: bool, relative: bool, min_samples: int, planned_samples: int, all_stages: int):
    """Per look: (ok, estimate candidate minus baseline, variance, k) over the given strata's cells.

    groups: per stratum in scope, (baseline group, candidate group). stages_seen: per look, how many
    stages are live (cells are those stages where either arm has rows). Twin of `_compare` up to
    the sign and margin, which the caller applies.
    """
    n_looks = sums["n"].shape[1]
    s_all = list(range(all_stages))
    uc, mc_, cc_, nc_ = [], [], [], []
    ub, mb_, cb_, nb_ = [], [], [], []
    units_b = np.zeros(n_looks)
    units_c = np.zeros(n_looks)
    for gb, gc in groups:
        u_b, r_b, cov_b, n_b = _arm_columns(sums, gb, s_all, binary)
        u_c, r_c, cov_c, n_c = _arm_columns(sums, gc, s_all, binary)
        live = np.arange(all_stages)[None, :] < stages_seen[:, None]
        cell = live & ((n_b > 0) | (n_c > 0))
        # _units: the stratum's distinct units when its cells cover every stage of the sums, else per stage
        whole = cell.all(axis=1)
        units_b += np.where(whole, sums["total"][gb], np.where(cell, u_b, 0).sum(1))
        units_c += np.where(whole, sums["total"][gc], np.where(cell, u_c, 0).sum(1))
        ub.append(np.where(cell, u_b, 0.0)); mb_.append(np.where(cell, r_b, np.nan)); cb_.append(cov_b)
        uc.append(np.where(cell, u_c, 0.0)); mc_.append(np.where(cell, r_c, np.nan)); cc_.append(cov_c)
        nb_.append(np.where(cell, n_b, 0.0)); nc_.append(np.where(cell, n_c, 0.0))
    k_b, k_c = np.concatenate(ub, 1), np.concatenate(uc, 1)
    m_b, m_c = np.concatenate(mb_, 1), np.concatenate(mc_, 1)
    rows_b, rows_c = np.concatenate(nb_, 1).sum(1), np.concatenate(nc_, 1).sum(1)
    cov_b, cov_c = _block_diag(cb_), _block_diag(cc_)
    usable = ((k_c >= 2) & (k_b >= 2) & np.isfinite(np.einsum("lii->li", cov_c))
              & np.isfinite(np.einsum("lii->li", cov_b)) & np.isfinite(m_c) & np.isfinite(m_b))  # fmt: skip
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(usable, k_c * k_b / np.where(usable, k_c + k_b, 1.0), 0.0)
        n_eff = w.sum(1)
        share = w / n_eff[:, None]
        share = np.where(usable, share, 0.0)
        mc = np.einsum("li,li->l", share, np.nan_to_num(m_c))
        mb = np.einsum("li,li->l", share, np.nan_to_num(m_b))
        vc = np.einsum("li,lij,lj->l", share, np.nan_to_num(cov_c), share)
        vb = np.einsum("li,lij,lj->l", share, np.nan_to_num(cov_b), share)
        if relative:
            est = mc / mb - 1.0
            var = vc / (mb * mb) + mc * mc * vb / mb**4
            est = np.where(mb > 0, est, np.nan)
        else:
            est, var = mc - mb, vc + vb
    enough = (rows_b > 0) & (rows_c > 0) & (np.minimum(units_b, units_c) >= min_samples)
    ok = enough & usable.any(1) & np.isfinite(est) & np.isfinite(var) & (var > 0) & (n_eff > 0)
    k = np.where(ok, n_eff / (planned_samples / 2.0), 1.0)
    return ok, np.where(ok, est, 0.0), np.where(ok, var, 1.0), k


def _block_diag(blocks: list[np.ndarray]) -> np.ndarray:
    looks = blocks[0].shape[0]
    size = sum(b.shape[1] for b in blocks)
    out = np.zeros((looks, size, size))
    at = 0
    for b in blocks:
        m = b.shape[1]
        out[:, at : at + m, at : at + m] = b
        at += m
    return out


def harm_log_evalue(ok, est_worse, var, k, margin: float) -> np.ndarray:
    """Per look, the harm test's log e-value (-inf where the comparison has no verdict)."""
    u = (est_worse - margin) / np.sqrt(var)
    return np.where(ok, log_evalue(u, k), -np.inf)


def ni_upper(ok, est_worse, var, k, alpha: float) -> np.ndarray:
    """Per look, the non-inferiority bound (inf where the comparison has no verdict)."""
    return np.where(ok, est_worse + boundary(k, alpha) * np.sqrt(var), np.inf)


def wald_sprt(ok, est_worse, var, delta: float, alpha: float = 0.05, beta: float = 0.2) -> np.ndarray:
    """The Wald SPRT oracle on the same cluster-robust estimate: H0 effect 0 against the true effect delta.

    Gaussian log-likelihood ratio delta * S - delta^2 * I / 2 with I = 1 / var, S = estimate * I.
    Returns per look +1 (rejects H0: rollback), -1 (accepts H0: stops), 0 (continues), from the first
    crossing on.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        llr = np.where(ok, (delta * est_worse - delta * delta / 2) / var, 0.0)
    up, down = math.log((1 - beta) / alpha), math.log(beta / (1 - alpha))
    state = np.where(llr >= up, 1, np.where(llr <= down, -1, 0))
    hit = np.flatnonzero(state != 0)
    out = np.zeros_like(state)
    if len(hit):
        out[hit[0]:] = state[hit[0]]
    return out


def fixed_n_look(ok, var, delta: float, alpha: float = 0.05, beta: float = 0.2) -> int:
    """The first look whose information reaches a fixed-n test's (z_a + z_b)^2 / delta^2, or -1."""
    from scipy.stats import norm

    need = ((norm.isf(alpha) + norm.isf(beta)) / delta) ** 2
    with np.errstate(divide="ignore"):
        info = np.where(ok, 1.0 / var, 0.0)
    hit = np.flatnonzero(info >= need)
    return int(hit[0]) if len(hit) else -1
