"""Real-traffic worlds for the detection benchmark: repeat users, the real judge(), the SPRT oracle, fixed-n.

Where `bench/detection.py` replicates the judge on request-level streams (every
request a new user), this simulates what apps send: users who come back
(geometric and Pareto request counts), per-user random effects, drift across
stages, heavy tails (Pareto 1.5 / 2.5 costs), a small bursty app, retries, a
1 % stratum of ~30 accounts, lost outcomes (at random, slowest first) and late
outcomes (credited, through the exposure token, to the variant and stage that
served them), on a 5 -> 25 -> 50 % ramp a user keeps his bucket through. Every
look (every 150 requests) sees the outcomes arrived so far, aggregated as
`rollout.store.evidence` does (per unit and stage: `unit_sums` below, which
tests/bench pins equal to `UnitSums.from_units`, which tests/store pins the SQL
against; exposures per unit for SRM and completion), and the decision is the
real `rollout.core.stats.judge()`'s, with the sizing reconcile passes
(`judge_sizing` of the example plan's canary stage) and the example plan's
metrics and completion settings (examples/plans/ticket-summarizer.yaml).

The real judge costs ~1.8 ms a check, too much for every look of 500 runs of
every world; `bench/unit_looks.py` computes the judge's comparison for every
look at once, and the real judge() is called wherever that twin comes within
a factor SLACK of a decision, and at every look of the first CROSS_RUNS runs
of each world, where the two are compared (the report gives the count).
Beside it, on the same streams: the Wald SPRT oracle (knows the true effect;
on the same cluster-robust estimate), a fixed-n test (one look at the
information a fixed design needs), and GrowthBook's `gbstats` (its sequential
t-test, on request rows and per unit, on fewer runs: it costs a call per look).

    python bench/traffic.py --quick        # smoke run
    python bench/traffic.py                # the full worlds (part of bench/detection.py)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy.stats import norm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import unit_looks  # noqa: E402
from rollout.app.plans import load_plan  # noqa: E402
from rollout.core.policy import judge_sizing  # noqa: E402
from rollout.core.stats import (  # noqa: E402
    BINS_PER_LN, ArmStats, Code, Decision, Evidence, LogHistogram, MetricSpec, UnitSums, exceedance_thresholds, judge,
)

LOOK = 150  # requests between two looks
RAMP = ((0.0, 500), (0.2, 2_500), (0.45, 5_000))  # (from share of the horizon, candidate basis points)
STAGES = len(RAMP)
PLAN = load_plan(ROOT / "examples" / "plans" / "ticket-summarizer.yaml")
SIZING = judge_sizing(next(s for s in PLAN.stages if s.name == "canary"))  # what reconcile passes there
ALPHA = PLAN.alpha
_SPEC = {m.name: m for m in PLAN.metrics}
ERROR_PLAN = _SPEC["error"]  # absolute margin 0.005
ERROR_0 = replace(ERROR_PLAN, margin=0.0)
COST_PLAN = _SPEC["cost_usd"]  # statistic: mean (the bill), 15 %
COST_0 = replace(COST_PLAN, margin=0.0)
COST_LOG = replace(COST_PLAN, scale="log")  # the typical request
P95 = MetricSpec("latency_p95", better="lower", margin=0.10, relative=True, quantile=0.95, source="latency_ms")
# The example plan's own metrics: error, latency (typical), cost (mean), quality. Its online judges' metrics
# (graded answers) are left out: the simulated traffic has no answers to grade.
_JUDGED = {j.name for j in PLAN.online_evals}
FOUR = [m for m in PLAN.metrics if m.metric not in _JUDGED]
FIVE = [replace(m, margin=0.0) for m in FOUR + [P95]]  # detection: margin 0 on every metric, as one metric has
SLACK = 4.0  # the real judge is called where the twin's e-value is within this factor of the boundary
CROSS_RUNS = 6  # runs per world where the real judge checks every look beside the twin (1 where checks are dear)
GB_RUNS = 25  # runs per A/A world that gbstats judges at every look


@dataclass(frozen=True)
class World:
    name: str
    about: str
    users: int
    horizon: int  # requests
    counts: str = "one"  # "one" (a new user per request), "geometric", "pareto"
    heterogeneity: float = 0.0  # sd of the per-user random effect (logit for errors, log for cost/latency)
    error: float = 0.02
    candidate_error: float | None = None
    drift: tuple[float, ...] | None = None  # both arms: the error odds multiplied per stage (time drift)
    loss: float = 0.0  # share of the candidate's requests that never report an outcome
    loss_both: float = 0.0  # the same in both arms (A/A)
    slowest_first: bool = False  # lost outcomes are the slowest requests
    late: float = 0.0  # share of outcomes that arrive late (mean 10 looks), credited to what was served
    retries: bool = False  # an error is retried up to 3 times by the same user
    few_accounts: int = 0  # a 1 % stratum made of this many accounts
    bursty: bool = False
    tail: float | None = None  # cost drawn Pareto with this shape (1.5: infinite variance)
    cost_spike: float = 0.0  # share of candidate calls 26x dearer (2 % of them: +50 % on the bill)
    metric: str = "error"  # what the A/A and detection plans judge: "error" or "cost_usd"; "plan": every metric
    kind: str = "aa"  # aa | detect | loss | pass
    runs: int = 500

    @property
    def strata(self) -> int:
        return 2 if self.few_accounts else 1


def worlds(quick: bool, runs: int | None = None) -> list[World]:
    """The worlds; quick: a few runs each on a third of the horizon (a smoke run)."""
    aa = runs or (4 if quick else 500)
    power = runs or (3 if quick else 200)
    heavy = runs or (2 if quick else 30)  # the five-metric plan and healthy passes: the real judge at every look
    out = _worlds(aa, power, heavy)
    if quick:
        out = [replace(w, horizon=w.horizon // 3) for w in out]
    return out


def _worlds(aa: int, power: int, heavy: int) -> list[World]:
    rep = dict(users=3_000, counts="geometric", heterogeneity=1.0)
    return [
        World("aa_one", "one request per user (the old bench's world)", 0, 15_000, runs=aa),
        World("aa_geometric", "3,000 users x ~5 requests (geometric), per-user effects sd 1.0", horizon=15_000,
              runs=aa, **rep),
        World("aa_pareto", "power users: Pareto(1.2) request counts over 5,000 users, per-user effects", 5_000,
              15_000, "pareto", 1.0, runs=aa),
        World("aa_drift", "repeat users, base error drifting across stages (x1, x1.6, x0.7)", horizon=15_000,
              drift=(1.0, 1.6, 0.7), runs=aa, **rep),
        World("aa_small", "a small app: 300 users, bursts, per-user effects", 300, 15_000, "geometric", 1.0,
              bursty=True, runs=aa),
        World("aa_retries", "retry storms: an error is retried up to 3 times by the same user", 0, 15_000,
              retries=True, error=0.05, runs=aa),
        World("aa_few_accounts", "a 1 % stratum made of ~30 accounts (others: 3,000 repeat users)", horizon=15_000,
              few_accounts=30, runs=aa, **rep),
        World("aa_lost_random", "repeat users, 3 % of outcomes lost at random in both arms", horizon=15_000,
              loss_both=0.03, runs=aa, **rep),
        World("aa_lost_slowest", "repeat users, the slowest 3 % of requests never report, both arms",
              horizon=15_000, loss_both=0.03, slowest_first=True, runs=aa, **rep),
        World("aa_late", "repeat users, 30 % of outcomes arrive late (mean 10 looks, across stage changes)",
              horizon=15_000, late=0.3, runs=aa, **rep),
        World("aa_cost_pareto15", "cost, Pareto 1.5 tail (infinite variance), repeat users", horizon=15_000,
              tail=1.5, metric="cost_usd", runs=aa, users=3_000, counts="geometric", heterogeneity=0.5),
        World("aa_cost_pareto25", "cost, Pareto 2.5 tail, repeat users", horizon=15_000, tail=2.5,
              metric="cost_usd", runs=aa, users=3_000, counts="geometric", heterogeneity=0.5),
        World("err_2_3", "error 2 % -> 3 %, repeat users (3,000 x ~10, per-user effects sd 1.0)", horizon=30_000,
              candidate_error=0.03, kind="detect", runs=power, **rep),
        World("err_2_3_plan", "error 2 % -> 3 %, repeat users, the five-metric plan (example plan + p95, margin 0)",
              horizon=30_000, candidate_error=0.03, kind="detect", metric="plan", runs=heavy, **rep),
        World("loss_2", "the candidate silently loses 2 % of its requests (exposures without outcomes)", 3_000,
              15_000, "geometric", 0.5, loss=0.02, kind="loss", runs=power),
        World("cost_spike", "cost +50 % from 2 % of candidate calls 26x dearer", 3_000, 60_000, "geometric", 0.5,
              cost_spike=0.02, metric="cost_usd", kind="detect", runs=power),
        World("pass_healthy", "a healthy candidate, the example plan's four metrics at its margins", 3_000,
              60_000, "geometric", 0.5, metric="plan", kind="pass", runs=heavy),
    ]


def unit_sums(y: np.ndarray, n: np.ndarray, stages: tuple[int, ...]) -> UnitSums:
    """The numpy twin of the SQL's per-unit aggregation: y, n are (units x stages) per-unit sums and counts."""
    present = n > 0
    return UnitSums(
        stages=stages,
        units=tuple(int(k) for k in present.sum(axis=0)),
        units_total=int(present.any(axis=1).sum()),
        n=tuple(float(v) for v in n.sum(axis=0)),
        y=tuple(float(v) for v in y.sum(axis=0)),
        yy=tuple(map(tuple, (y.T @ y).tolist())),
        yn=tuple(map(tuple, (y.T @ n).tolist())),
        nn=tuple(map(tuple, (n.T @ n).tolist())),
    )


# --------------------------------------------------------------------------- streams


@dataclass
class Stream:
    """One run: requests in serving order, and the outcomes that arrive (in arrival order)."""

    user: np.ndarray
    stratum: np.ndarray
    stage: np.ndarray
    cand: np.ndarray
    values: dict[str, np.ndarray]
    arrive: np.ndarray  # the request index at which each request's outcome arrives (a large number: never)
    n_users: int
    rows: np.ndarray = field(init=False)  # indices of requests whose outcome arrives, in arrival order
    row_look: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n_looks = self.looks
        look = self.arrive // LOOK
        seen = np.flatnonzero(look < n_looks)
        self.rows = seen[np.argsort(self.arrive[seen], kind="stable")]
        self.row_look = look[self.rows]

    @property
    def looks(self) -> int:
        return -(-len(self.user) // LOOK)

    def served(self, j: int) -> int:
        """Requests served by look j."""
        return min((j + 1) * LOOK, len(self.user))

    def stages_seen(self) -> np.ndarray:
        ends = np.minimum((np.arange(self.looks) + 1) * LOOK, len(self.user)) - 1
        return self.stage[ends] + 1


def _needs(w: World) -> set[str]:
    if w.metric == "plan":
        return {"error", "latency_ms", "cost_usd", "quality"}
    return {w.metric} | ({"latency_ms"} if w.slowest_first else set())


def _stream(w: World, rng: np.random.Generator) -> Stream:
    t = w.horizon
    if w.counts == "one":
        user = np.arange(t)
        n_users = t
    else:
        n_users = w.users
        weight = rng.pareto(1.2, n_users) + 1.0 if w.counts == "pareto" else rng.exponential(1.0, n_users)
        if w.bursty:  # bursts: a few users at a time send most of the requests in a window
            weight = weight**2
        user = rng.choice(n_users, size=t, p=weight / weight.sum())
    stratum = np.zeros(t, dtype=np.int64)
    if w.few_accounts:
        # Requests of the small stratum come from `few_accounts` extra users (ids after the others).
        small = rng.random(t) < 0.01
        user = np.where(small, n_users + rng.integers(0, w.few_accounts, t), user)
        stratum = small.astype(np.int64)
        n_users += w.few_accounts
    stage = np.searchsorted([r[0] for r in RAMP], np.arange(t) / t, side="right") - 1
    share = np.array([r[1] for r in RAMP])[stage] / 10_000
    bucket = rng.random(n_users)  # a unit keeps its bucket, so its arm only changes when the ramp passes it
    cand = bucket[user] < share
    effect = rng.normal(0, w.heterogeneity, n_users)[user] if w.heterogeneity else np.zeros(t)
    values: dict[str, np.ndarray] = {}
    needs = _needs(w)
    base_logit = _calibrated_logit(w.error, w.heterogeneity)
    logit = base_logit + effect
    if w.drift:
        logit = logit + np.log(np.array(w.drift))[stage]
    if w.candidate_error is not None:
        logit = logit + np.where(cand, _calibrated_logit(w.candidate_error, w.heterogeneity) - base_logit, 0.0)
    p = 1 / (1 + np.exp(-logit))
    error = (rng.random(t) < p).astype(float)
    if "error" in needs:
        values["error"] = error
    if "latency_ms" in needs:
        lat = np.exp(math.log(300.0) + 0.3 * effect + 0.6 * rng.standard_normal(t))
        values["latency_ms"] = np.where(error > 0, 2.0 * lat, lat)
    if "cost_usd" in needs:
        if w.tail:
            cost = 0.002 * (1 - rng.random(t)) ** (-1 / w.tail) * np.exp(0.3 * effect)
        else:
            cost = rng.lognormal(math.log(0.002), 0.5, t) * np.exp(0.3 * effect)
        if w.cost_spike:
            cost = np.where(cand & (rng.random(t) < w.cost_spike), cost * 26.0, cost)  # median unchanged
        values["cost_usd"] = cost
    if "quality" in needs:
        values["quality"] = np.clip(rng.beta(8, 2, t) + 0.03 * effect, 0.0, 1.0)
    if w.retries:
        user, stratum, stage, cand, values, p = _retry(rng, user, stratum, stage, cand, values, p)
        t = len(user)
    reported = np.ones(t, dtype=bool)
    for share_lost, who in ((w.loss, cand), (w.loss_both, np.ones(t, dtype=bool))):
        if not share_lost:
            continue
        if w.slowest_first:
            slow = values["latency_ms"] >= np.quantile(values["latency_ms"], 1 - 2 * share_lost)
            reported &= ~(who & slow & (rng.random(t) < 0.5))
        else:
            reported &= ~(who & (rng.random(t) < share_lost))
    arrive = np.arange(t, dtype=np.int64)
    if w.late:
        late = rng.random(t) < w.late
        arrive = arrive + np.where(late, rng.geometric(1 / (10 * LOOK), t), 0)
    arrive = np.where(reported, arrive, np.iinfo(np.int64).max // 2)
    return Stream(user, stratum, stage, cand, values, arrive, n_users)


_LOGITS: dict[tuple[float, float], float] = {}


def _calibrated_logit(rate: float, sd: float) -> float:
    """The logit whose per-user random effects (sd on the logit) average to `rate` over users: the world's
    error rate is the marginal one (2 % -> 3 % means what a dashboard shows)."""
    if (rate, sd) not in _LOGITS:
        e = np.random.default_rng(0).normal(0, sd, 100_000) if sd else np.zeros(1)
        lo, hi = -15.0, 5.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if np.mean(1 / (1 + np.exp(-(mid + e)))) < rate else (lo, mid)
        _LOGITS[(rate, sd)] = (lo + hi) / 2
    return _LOGITS[(rate, sd)]


def _retry(rng, user, stratum, stage, cand, values, p):
    """An error is retried by the same user, up to 3 more requests, each failing far more often."""
    error = values["error"]
    extra_i, extra_v = [], []
    for i in np.flatnonzero(error > 0):
        for _ in range(3):
            fail = rng.random() < min(1.0, p[i] * 5)
            extra_i.append(i)
            extra_v.append(float(fail))
            if not fail:
                break
    if not extra_i:
        return user, stratum, stage, cand, values, p
    idx = np.array(extra_i)
    order = np.argsort(np.concatenate([np.arange(len(user)), idx]), kind="stable")

    def grow(a, add=None):
        return np.concatenate([a, a[idx] if add is None else add])[order]

    values = {"error": grow(error, np.array(extra_v))}
    return grow(user), grow(stratum), grow(stage), grow(cand), values, grow(p)


# --------------------------------------------------------------------------- the real judge on one look


def _cells_state(s: Stream, j: int, w: World):
    """Indices of the outcomes arrived by look j, and the exposures served by then."""
    rows = s.rows[: np.searchsorted(s.row_look, j, side="right")]
    return rows, s.served(j)


def evidence_at(s: Stream, j: int, w: World, specs: list[MetricSpec]) -> Evidence:
    """The evidence `load_evidence` would return at look j (per-unit sums, histograms, exposures)."""
    rows, served = _cells_state(s, j, w)
    stages = tuple(range(STAGES))
    seen = range(int(s.stage[served - 1]) + 1)
    shape = (2, w.strata, s.n_users, STAGES)
    v, st, u, g = s.cand[rows].astype(np.int64), s.stratum[rows], s.user[rows], s.stage[rows]
    size = int(np.prod(shape))

    def flat_of(vv, ss, uu, gg):
        return ((vv * shape[1] + ss) * shape[2] + uu) * shape[3] + gg

    def cells(flat, weights=None):
        # np.bincount on the flat cell index: ~10x faster than np.add.at on a 4-d array
        return np.bincount(flat, weights=weights, minlength=size).astype(float).reshape(shape)

    e = cells(flat_of(s.cand[:served].astype(np.int64), s.stratum[:served], s.user[:served], s.stage[:served]))
    arms, clusters, units, completion = {}, {}, {}, {}
    names = ("baseline", "candidate")
    metrics = sorted({m.metric for m in specs})
    done_metric = metrics[0]
    quantiles = [m for m in specs if m.quantile is not None]
    flat = flat_of(v, st, u, g)
    for metric in metrics:
        val = s.values[metric][rows]
        pos = val > 0
        lv = np.where(pos, np.log(np.where(pos, val, 1.0)), 0.0)
        acc = {}
        for k, x, m in (("n", None, None), ("y", val, None), ("q", val * val, None), ("ln", None, pos),
                        ("ly", lv, pos), ("lq", lv * lv, pos)):  # fmt: skip
            acc[k] = cells(flat, x if m is None else np.where(m, 1.0 if x is None else x, 0.0))
        bins = hist = None
        if any(q.metric == metric for q in quantiles):
            bins = np.floor(lv[pos] * BINS_PER_LN).astype(np.int64)
            # every cell's histogram in one pass: counts per (variant, stratum, stage, bin)
            lo = int(bins.min()) if len(bins) else 0
            span = int(bins.max()) - lo + 1 if len(bins) else 1
            cell = ((v[pos] * w.strata + st[pos]) * STAGES + g[pos]) * span + (bins - lo)
            hist = np.bincount(cell, minlength=2 * w.strata * STAGES * span).reshape(2, w.strata, STAGES, span)
        for vi, name in enumerate(names):
            for si in range(w.strata):
                lin = unit_sums(acc["y"][vi, si], acc["n"][vi, si], stages)
                log = unit_sums(acc["ly"][vi, si], acc["ln"][vi, si], stages)
                clusters[(metric, name, str(si), "linear")] = lin
                clusters[(metric, name, str(si), "log")] = log
                for gi in seen:
                    if lin.n[gi] > 0:
                        histogram = LogHistogram()
                        if hist is not None:
                            nz = np.flatnonzero(hist[vi, si, gi])
                            histogram = LogHistogram(tuple(zip((nz + lo).tolist(), hist[vi, si, gi][nz].tolist())))
                        arms[(metric, name, str(si), gi)] = ArmStats(
                            n=int(lin.n[gi]), sum=lin.y[gi], sum_sq=float(acc["q"][vi, si][:, gi].sum()),
                            log_n=int(log.n[gi]), log_sum=log.y[gi], log_sum_sq=float(acc["lq"][vi, si][:, gi].sum()),
                            histogram=histogram)  # fmt: skip
        if bins is not None:
            clusters.update(_exceedance(metric, arms, quantiles, flat[pos], bins, shape))
        if metric == done_metric:
            n_done = acc["n"]
    for vi, name in enumerate(names):
        for si in range(w.strata):
            for gi in seen:
                exposed = int((e[vi, si][:, gi] > 0).sum())
                if exposed:
                    units[(name, str(si), gi)] = exposed
            exp = e[vi, si].sum(axis=1)
            keep = exp > 0
            done = np.minimum(n_done[vi, si].sum(axis=1), exp)
            completion[(name, str(si))] = unit_sums(done[keep][:, None], exp[keep][:, None], (-1,))
    alloc = {(str(si), gi): RAMP[gi][1] for si in range(w.strata) for gi in seen}
    return Evidence(arms, units=units, allocation_bp=alloc, clusters=clusters, completion=completion, exposed=True)


def _exceedance(metric, arms, quantiles, flat, bins, shape):
    """Per-unit counts above every threshold the judge's quantile comparisons will use (as the store does)."""
    base = {k: a for k, a in arms.items() if k[0] == metric and k[1] == "baseline"}
    scopes = [list(base.values())] + [[a for k, a in base.items() if k[2] == s] for s in {k[2] for k in base}]
    thresholds = set()
    for spec in (q for q in quantiles if q.metric == metric):
        for scope in scopes:
            pooled = LogHistogram()
            for a in scope:
                pooled = pooled + a.histogram
            t = exceedance_thresholds(pooled, spec.quantile, spec.margin)
            if t is not None:
                thresholds.update(t)
    out = {}
    size = int(np.prod(shape))
    ones = np.bincount(flat, minlength=size).astype(float).reshape(shape)
    for t in sorted(thresholds):
        above = np.bincount(flat, weights=(bins >= t).astype(float), minlength=size).reshape(shape)
        for vi, name in enumerate(("baseline", "candidate")):
            for si in range(shape[1]):
                out[(metric, name, str(si), f"exceed:{t}")] = unit_sums(above[vi, si], ones[vi, si],
                                                                       tuple(range(STAGES)))
    return out


def real_verdict(s: Stream, j: int, w: World, specs: list[MetricSpec]):
    return judge(evidence_at(s, j, w, specs), specs, alpha=ALPHA, min_samples=SIZING.min_samples,
                 planned_samples=SIZING.planned_samples, completion=PLAN.completion)


# --------------------------------------------------------------------------- the twin's looks


def twin_scopes(s: Stream, w: World, spec: MetricSpec, sums_cache: dict):
    """Per scope (pooled, then each stratum if several): per-look (ok, estimate in the worse direction, var, k)."""
    series = "log" if spec.scale == "log" else "linear"
    key = (spec.metric, series)
    if key not in sums_cache:
        val = s.values[spec.metric][s.rows]
        if series == "log":
            c = (val > 0).astype(float)
            z = np.where(val > 0, np.log(np.where(val > 0, val, 1.0)), 0.0)
        else:
            c, z = np.ones(len(val)), val
        group = s.cand[s.rows].astype(np.int64) * w.strata + s.stratum[s.rows]
        sums_cache[key] = unit_looks.look_sums(group, s.user[s.rows], s.stage[s.rows], s.row_look, z, c,
                                               2 * w.strata, s.looks, STAGES)
    sums = sums_cache[key]
    pairs = [(si, w.strata + si) for si in range(w.strata)]
    scopes = [pairs] + ([[p] for p in pairs] if w.strata > 1 else [])
    sign = 1.0 if spec.better == "lower" else -1.0
    margin = math.log1p(spec.margin) if spec.scale == "log" else spec.margin
    out = []
    for scope in scopes:
        ok, est, var, k = unit_looks.comparison(
            sums, scope, s.stages_seen(), binary=spec.kind == "binary", relative=spec.relative and series != "log",
            min_samples=SIZING.min_samples, planned_samples=SIZING.planned_samples, all_stages=STAGES)
        out.append((ok, sign * est, var, k, margin))
    return out


def _levels(w: World, m: int) -> tuple[float, float]:
    """(pooled alpha for the smallest Holm step, per-stratum alpha), as judge() spends them."""
    if w.strata > 1:
        return ALPHA * (1 - 0.2) / m, ALPHA * 0.2 / (w.strata * m)
    return ALPHA / m, math.nan


def twin_harm(scopes, w: World, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Per look: the largest log e-value over scopes relative to its level (>= 0: the twin rolls back)."""
    pooled, stratum = _levels(w, m)
    best = np.full(len(scopes[0][0]), -np.inf)
    for i, (ok, est, var, k, margin) in enumerate(scopes):
        level = pooled if i == 0 else stratum
        best = np.maximum(best, unit_looks.harm_log_evalue(ok, est, var, k, margin) + math.log(level))
    return best


def _first(flags: np.ndarray) -> int:
    hit = np.flatnonzero(flags)
    return int(hit[0]) if len(hit) else -1


# --------------------------------------------------------------------------- gbstats


def _gbstats_rollback(s: Stream, j: int, per_unit: bool) -> bool:
    """GrowthBook's sequential t-test on the error rate, candidate minus baseline: lower bound above 0."""
    from gbstats.frequentist.tests import SequentialConfig, SequentialTwoSidedTTest
    from gbstats.models.statistics import RatioStatistic, SampleMeanStatistic

    rows = s.rows[: np.searchsorted(s.row_look, j, side="right")]
    stats = []
    for arm in (False, True):
        r = rows[s.cand[rows] == arm]
        y_rows = s.values["error"][r]
        if per_unit:
            users, inv = np.unique(s.user[r], return_inverse=True)
            k = len(users)
            if k < 2:
                return False
            y = np.bincount(inv, weights=y_rows, minlength=k)
            n = np.bincount(inv, minlength=k).astype(float)
            stats.append(RatioStatistic(n=k, m_statistic=SampleMeanStatistic(n=k, sum=float(y.sum()),
                                                                              sum_squares=float((y * y).sum())),
                                        d_statistic=SampleMeanStatistic(n=k, sum=float(n.sum()),
                                                                        sum_squares=float((n * n).sum())),
                                        m_d_sum_of_products=float((y * n).sum())))  # fmt: skip
        else:
            if len(r) < 2:
                return False
            stats.append(SampleMeanStatistic(n=len(r), sum=float(y_rows.sum()), sum_squares=float((y_rows**2).sum())))
    config = SequentialConfig(difference_type="absolute", alpha=ALPHA, sequential_tuning_parameter=SIZING.planned_samples)
    lower = SequentialTwoSidedTTest(stats[0], stats[1], config).compute_result().ci[0]
    return lower is not None and math.isfinite(lower) and lower > 0


# --------------------------------------------------------------------------- worlds


def _plans(w: World) -> dict[str, list[MetricSpec]]:
    if w.metric == "plan":
        return {"five metrics": FIVE} if w.kind == "detect" else {"four metrics": FOUR}
    if w.metric == "cost_usd":
        plans = {"margin 0": [COST_0], "plan margin": [COST_PLAN]}
        if w.kind == "detect":
            plans = {"plan margin": [COST_PLAN], "cost as typical (log)": [COST_LOG]}
        return plans
    if w.kind == "aa":
        return {"margin 0": [ERROR_0], "plan margin": [ERROR_PLAN]}
    return {"margin 0": [ERROR_0]}


def _true_effect(w: World, spec: MetricSpec) -> float:
    """The effect the oracle knows, on the judge's scale (the alternative it is told in an A/A world)."""
    if spec.metric == "cost_usd":
        return 0.5  # the +50 % bill
    if w.candidate_error is None:
        return 0.01  # 2 % -> 3 %, the effect the detection target is about
    return w.candidate_error - w.error  # marginal rates (see _calibrated_logit)


def run_world(w: World, seed: int, plans: dict[str, list[MetricSpec]] | None = None, *, cross_runs: int = CROSS_RUNS,
              gb_runs: int = 0) -> dict:
    """Per plan: per run the look of the first rollback, hold and pass (-1: none), with candidate requests then."""
    plans = plans or _plans(w)
    rng = np.random.default_rng(seed)
    keys = ("rollback", "hold", "pass", "cand_at_rollback", "cand_at_hold", "cand_at_pass", "sprt", "sprt_reject",
            "cand_at_sprt",
            "fixed", "cand_at_fixed", "fixed_ni", "cand_at_fixed_ni")
    out = {p: {k: np.full(w.runs, -1) for k in keys} for p in plans}
    for gb in ("gbstats rows", "gbstats per unit"):
        if gb_runs:
            out[gb] = {k: np.full(min(gb_runs, w.runs), -1) for k in ("rollback", "cand_at_rollback")}
    audit = {"checks": 0, "real_calls": 0, "disagree": 0, "verdicts_differ": 0, "max_log_e_gap": 0.0}
    for r in range(w.runs):
        s = _stream(w, rng)
        cand_cum = np.cumsum(s.cand)

        def cands(j: int) -> int:
            return int(cand_cum[s.served(j) - 1]) if j >= 0 else -1

        cache: dict = {}
        for name, specs in plans.items():
            o = out[name]
            every = w.kind in ("loss",) or (w.kind == "detect" and w.metric == "plan") or r < cross_runs
            twin_ok = all(sp.quantile is None for sp in specs)
            scopes = {sp.name: twin_scopes(s, w, sp, cache) for sp in specs if sp.quantile is None}
            first = specs[0]
            if first.quantile is None:
                ok, est, var, _k, margin = scopes[first.name][0]
                delta = _true_effect(w, first)
                sprt = unit_looks.wald_sprt(ok, est, var, delta)
                # Its samples: where it stops, at either boundary (what Wald's average sample number counts);
                # "sprt_reject": whether it stopped by rejecting H0 (a rollback).
                o["sprt"][r] = _first(sprt != 0)
                o["sprt_reject"][r] = int(o["sprt"][r] >= 0 and sprt[o["sprt"][r]] == 1)
                o["cand_at_sprt"][r] = cands(o["sprt"][r])
                o["fixed"][r] = unit_looks.fixed_n_look(ok, var, delta)
                if o["fixed"][r] >= 0 and not (est[o["fixed"][r]] / math.sqrt(var[o["fixed"][r]]) > norm.isf(ALPHA)):
                    o["fixed"][r] = -1  # looked once, did not reject
                o["cand_at_fixed"][r] = cands(o["fixed"][r])
            if w.kind == "pass":
                # the fixed-n non-inferiority test: the information every metric needs at its margin, power 0.8
                need = -1
                for sp in specs:
                    if sp.quantile is None:
                        ok, est, var, _k, margin = scopes[sp.name][0]
                        need = max(need, unit_looks.fixed_n_look(ok, var, margin) if margin > 0 else s.looks)
                o["fixed_ni"][r] = need
                o["cand_at_fixed_ni"][r] = cands(need)
            # The looks the real judge sees: all of them in a cross-checked run (or where the twin cannot
            # follow: a quantile metric), else those where the twin is near a rollback, or (a healthy
            # candidate) near non-inferiority on every metric, which a pass needs.
            audited = twin_ok and r < cross_runs
            harm = np.full(s.looks, -np.inf)
            for sp in specs:
                if sp.quantile is None:
                    harm = np.maximum(harm, twin_harm(scopes[sp.name], w, len(specs)))
            if every or not twin_ok:
                looks = range(s.looks)
            else:
                near = harm >= -math.log(SLACK)
                if w.kind == "pass":
                    ni_all = np.ones(s.looks, dtype=bool)
                    for sp in specs:
                        ok, est, var, k, margin = scopes[sp.name][0]
                        ni_all &= unit_looks.ni_upper(ok, est, var, k, ALPHA * SLACK) < margin
                    near |= ni_all
                looks = np.flatnonzero(near)
            for j in looks:
                verdict = real_verdict(s, int(j), w, specs)
                audit["real_calls"] += 1
                d = verdict.decision
                if audited:
                    audit["checks"] += 1
                    audit["disagree"] += int((d is Decision.ROLLBACK) != bool(harm[j] >= 0))
                    for sp, res in zip(specs, verdict.metrics, strict=True):
                        ok, est, var, k, margin = scopes[sp.name][0]
                        audit["verdicts_differ"] += int(bool(ok[j]) != (res.code is Code.OK))
                        if ok[j] and res.code is Code.OK and res.e_value > 0:
                            twin = float(unit_looks.harm_log_evalue(ok[j:j + 1], est[j:j + 1], var[j:j + 1],
                                                                   k[j:j + 1], margin)[0])
                            if abs(twin) < 700:
                                audit["max_log_e_gap"] = max(audit["max_log_e_gap"], abs(twin - math.log(res.e_value)))
                if d is Decision.ROLLBACK and o["rollback"][r] < 0:
                    o["rollback"][r] = j
                    o["cand_at_rollback"][r] = cands(int(j))
                elif d is Decision.HOLD and o["hold"][r] < 0 and any(
                        h.name in ("sample_ratio", "completion") and not h.ok for h in verdict.health):
                    o["hold"][r] = j
                    o["cand_at_hold"][r] = cands(int(j))
                elif d is Decision.PASS and o["pass"][r] < 0:
                    o["pass"][r] = j
                    o["cand_at_pass"][r] = cands(int(j))
                stop = o["rollback"][r] >= 0 or (w.kind == "loss" and o["hold"][r] >= 0) or (
                    w.kind == "pass" and o["pass"][r] >= 0)
                if stop and not audited:
                    break
        if r < (gb_runs or 0):
            for gb in ("gbstats rows", "gbstats per unit"):
                for j in range(s.looks):
                    if _gbstats_rollback(s, j, per_unit=gb.endswith("unit")):
                        out[gb]["rollback"][r] = j
                        out[gb]["cand_at_rollback"][r] = cands(j)
                        break
    out["_audit"] = audit
    return out


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _one(job):
    w, seed, gb = job
    ts = time.perf_counter()
    res = run_world(w, seed, gb_runs=gb, cross_runs=1 if w.metric == "plan" else CROSS_RUNS)
    return w, res, time.perf_counter() - ts


def run(quick: bool, seed: int, only: set[str] | None = None, runs: int | None = None, workers: int = 2) -> str:
    t0 = time.perf_counter()
    jobs = []
    for i, w in enumerate(worlds(quick, runs)):
        if only and w.name not in only:
            continue
        gb = (2 if quick else GB_RUNS) if w.kind == "aa" and w.metric == "error" or w.name == "err_2_3" else 0
        jobs.append((w, seed + i, gb))
    # Heaviest first, so two workers finish together.
    jobs.sort(key=lambda j: -(j[0].runs * j[0].horizon * (8 if j[0].metric == "plan" else 1)))
    rows = []
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            for w, res, secs in pool.imap_unordered(_one, jobs):
                print(f"{w.name}: {w.runs} runs in {secs:.0f} s", flush=True)
                rows.append((w, res, secs))
    else:
        for job in jobs:
            w, res, secs = _one(job)
            print(f"{w.name}: {w.runs} runs in {secs:.0f} s", flush=True)
            rows.append((w, res, secs))
    order = {w.name: i for i, w in enumerate(worlds(quick, runs))}
    rows.sort(key=lambda row: order[row[0].name])
    return report(rows, quick, time.perf_counter() - t0, workers)


def _med(x: np.ndarray) -> float:
    """Median over all runs, a run without the event counted as never (inf)."""
    return float(np.median(np.where(x >= 0, x, np.inf))) if len(x) else math.nan


def _n(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{x:,.0f}"


def report(rows, quick: bool, seconds: float, workers: int = 1) -> str:
    lines = [
        "### Real traffic: repeat users through the real `judge()` (`bench/traffic.py`)",
        "",
        f"{'QUICK smoke run: too few runs to read anything into. ' if quick else ''}"
        f"Looks every {LOOK} requests on a 5 -> 25 -> 50 % ramp (a user keeps his bucket); the real `judge()` with"
        f" the example plan's metrics and completion and reconcile's sizing (min_samples {SIZING.min_samples},"
        f" planned_samples {SIZING.planned_samples} units per arm, alpha {ALPHA}). The real judge decides at every"
        f" look where the vectorised twin (`bench/unit_looks.py`) is within a factor {SLACK:.0f} of a decision, and"
        f" at every look of the first {CROSS_RUNS} runs of each world. Beside it on the same streams: the Wald SPRT"
        " oracle (told the true effect; A/A worlds: the detection target's effect, error +1 point or cost +50 %),"
        " a fixed-n test (one look at the information a fixed design with power 0.8 needs), and gbstats' sequential"
        f" t-test on the first {GB_RUNS} runs. Samples are candidate requests. Wilson 95 % intervals."
        f" {seconds:.0f} s in all on {workers} worker(s).",
        "",
        "#### A/A: false rollbacks",
        "",
        "| world | runs | judged | false rollbacks | 95 % Wilson | SPRT oracle: rejects | fixed-n: rejects |",
        "|---|---:|---|---:|---|---:|---:|",
    ]
    targets = []
    audit = {"checks": 0, "real_calls": 0, "disagree": 0, "verdicts_differ": 0, "max_log_e_gap": 0.0}
    for w, res, _ in rows:
        for k in audit:
            audit[k] = max(audit[k], res["_audit"][k]) if k == "max_log_e_gap" else audit[k] + res["_audit"][k]
    for w, res, _ in rows:
        if w.kind != "aa":
            continue
        for plan, o in res.items():
            if plan.startswith("_"):
                continue
            n = len(o["rollback"])
            k = int((o["rollback"] >= 0).sum())
            lo, hi = wilson(k, n)
            sprt = fixed = ""
            if "sprt" in o:
                sprt = f"{(o['sprt_reject'] > 0).mean():.3f}"
                fixed = f"{(o['fixed'] >= 0).mean():.3f}"
            label = plan if plan.startswith("gbstats") else f"judge(), {plan} ({_margin(w, plan)})"
            lines.append(f"| {w.name}: {w.about} | {n} | {label} | {k / n:.3f} | [{lo:.3f}, {hi:.3f}] | {sprt} | {fixed} |")
            if not plan.startswith("gbstats"):
                met = k / n <= 0.05 and hi <= 0.07
                targets.append((f"A/A false rollbacks <= 0.05 (upper Wilson <= 0.07): {w.name}, {plan}",
                                f"{k / n:.3f} [{lo:.3f}, {hi:.3f}] over {n} runs", met))
    lines += ["", "#### Regressions, losses, healthy candidates", "",
              "| world | runs | judged | rollbacks | holds (SRM / completion) | passes | median candidate requests"
              " to rollback | to hold | to pass | SPRT oracle: median to its decision | fixed-n |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for w, res, _ in rows:
        if w.kind == "aa":
            continue
        for plan, o in res.items():
            if plan.startswith("_"):
                continue
            n = len(o["rollback"])
            rate = lambda key: f"{(o[key] >= 0).mean():.3f}" if key in o else ""  # noqa: E731
            med = lambda key: _n(_med(o[key])) if key in o else ""  # noqa: E731
            fixed = med("cand_at_fixed_ni") if w.kind == "pass" else med("cand_at_fixed")
            sprt = "" if w.kind == "pass" else med("cand_at_sprt")  # no effect to tell an oracle about
            lines.append(f"| {w.name}: {w.about} | {n} | {plan} | {rate('rollback')} | {rate('hold')} | {rate('pass')}"
                         f" | {med('cand_at_rollback')} | {med('cand_at_hold')} | {med('cand_at_pass')}"
                         f" | {sprt} | {fixed} |")
    by = {w.name: (w, res) for w, res, _ in rows}
    for name, plan, label in (("err_2_3_plan", "five metrics", "five-metric plan"), ("err_2_3", "margin 0", "one metric")):
        if name in by:
            o = by[name][1][plan]
            ref, m = _med(o["cand_at_sprt"]), _med(o["cand_at_rollback"])
            targets.append((f"error 2 % -> 3 %, repeat users, {label}: median samples to rollback <= 2.0x the"
                            " SPRT oracle of the same world", f"{_n(m)} candidate requests = {m / ref:.2f}x the"
                            f" oracle's {_n(ref)}", m <= 2.0 * ref))  # fmt: skip
    if "loss_2" in by:
        o = by["loss_2"][1]["margin 0"]
        held = float(((o["cand_at_hold"] >= 0) & (o["cand_at_hold"] <= 1_500)).mean())
        targets.append(("2 % silent candidate loss held within 1,500 candidate requests in >= 90 % of runs",
                        f"{held:.1%} of {len(o['hold'])} runs (median {_n(_med(o['cand_at_hold']))})", held >= 0.9))
    if "cost_spike" in by:
        o = by["cost_spike"][1]["plan margin"]
        share = float(((o["cand_at_rollback"] >= 0) & (o["cand_at_rollback"] <= 20_000)).mean())
        targets.append(("cost +50 % from 2 % of calls rolled back by 20k candidate requests in >= 95 % of runs",
                        f"{share:.1%} of {len(o['rollback'])} runs", share >= 0.95))
    if "pass_healthy" in by:
        o = by["pass_healthy"][1]["four metrics"]
        m, f = _med(o["cand_at_pass"]), _med(o["cand_at_fixed_ni"])
        targets.append(("healthy candidate at the example plan's margins: median samples to pass <= 1.3x the fixed-n"
                        " non-inferiority test's", f"{_n(m)} candidate requests = {m / f:.2f}x the fixed-n {_n(f)}"
                        f" ({(o['pass'] >= 0).mean():.1%} of {len(o['pass'])} runs passed within the horizon)",
                        m <= 1.3 * f))  # fmt: skip
    lines += ["", f"The real judge() was called {audit['real_calls']:,} times; on the {audit['checks']:,} checks of the"
              f" cross-checked runs, its rollback decision and the twin's differed {audit['disagree']} times, whether a"
              f" metric had a verdict at all {audit['verdicts_differ']} times, and the harm test's log e-value by at most"
              f" {audit['max_log_e_gap']:.2g}.",
              "", "#### Against the targets", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {'met' if ok else '**MISSED**'} |" for t, m, ok in targets]
    return "\n".join(lines + [""])


def _margin(w: World, plan: str) -> str:
    if plan == "margin 0":
        return "margin 0"
    return "error +0.5 points" if w.metric == "error" else "cost +15 %"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--only", default=None)
    ap.add_argument("--runs", type=int, default=None, help="runs per world (default 500 A/A, fewer otherwise)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS_traffic.md")
    args = ap.parse_args(argv)
    md = run(args.quick, args.seed, None if args.only is None else set(args.only.split(",")), args.runs, args.workers)
    args.out.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
