"""Real-traffic worlds for the detection benchmark: repeat users, the real judge(), before and after.

Where `bench/detection.py` replicates the judge on request-level streams (every
request a new user), this simulates what apps send: users who come back
(geometric and Pareto request counts), per-user random effects, a ramp whose
stages a user stays in (5 -> 25 -> 50 %), small and bursty apps, a 1 % stratum
made of a few accounts, retries, lost outcomes and cost spikes. Every look (every
150 requests) aggregates the stream exactly as `rollout.store.evidence` does (per
unit, per stage: the numpy twin `unit_sums` below, which tests/bench pins equal to
`UnitSums.from_units` and tests/store pins the SQL against) and calls the real
`rollout.core.stats.judge()` with the sizing reconcile passes
(`rollout.core.policy.judge_sizing`). Two arms on the same streams:

- after: the evidence with per-unit sums (what `load_evidence` returns now);
- before: the same evidence without them: judge() then treats every outcome as
  its own unit, which is today's row-level pooled comparison (`pooled_comparison`);
- gbstats rows / gbstats per unit: GrowthBook's stats engine (`gbstats`, its
  sequential two-sided t-test, tuned to the same planned samples) on request
  rows, and on per-unit ratio statistics (its cluster-aware form), pooled over
  stages and segments as GrowthBook does; a rollback is a lower bound above 0.

    python bench/traffic.py --quick        # smoke run
    python bench/traffic.py                # the full worlds (part of bench/detection.py)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rollout.core.plan import Stage, StageKind  # noqa: E402
from rollout.core.policy import judge_sizing  # noqa: E402
from rollout.core.stats import ArmStats, CompletionSpec, Decision, Evidence, MetricSpec, UnitSums, judge  # noqa: E402

LOOK = 150  # requests between two looks
RAMP = ((0.0, 500), (0.2, 2_500), (0.45, 5_000))  # (from share of the horizon, candidate basis points)
SIZING = judge_sizing(Stage("canary", StageKind.RAMP, min_samples=1_000))  # the example plan's canary stage
ERROR_0 = MetricSpec("error", kind="binary", better="lower", margin=0.0)
ERROR_PLAN = MetricSpec("error", kind="binary", better="lower", margin=0.005)  # examples/plans/ticket-summarizer.yaml
COST_PLAN = MetricSpec("cost_usd", better="lower", margin=0.15, relative=True)  # statistic: mean, the bill
COST_LOG = MetricSpec("cost_usd", better="lower", margin=0.15, relative=True, scale="log")  # the typical request


@dataclass(frozen=True)
class World:
    name: str
    about: str
    users: int
    horizon: int  # requests
    counts: str = "one"  # "one" (a new user per request), "geometric", "pareto"
    heterogeneity: float = 0.0  # sd of the per-user logit random effect
    error: float = 0.02
    candidate_error: float | None = None
    loss: float = 0.0  # share of the candidate's requests that never report an outcome
    slowest_first: bool = False  # lost outcomes are the slowest requests
    retries: bool = False  # an error is retried up to 3 times by the same user
    few_accounts: int = 0  # a 1 % stratum made of this many accounts
    bursty: bool = False
    cost_spike: float = 0.0  # share of candidate calls 26x dearer (2 % of them: +50 % on the bill)
    metric: str = "error"
    runs: int = 500


def worlds(quick: bool, runs: int | None = None) -> list[World]:
    """The worlds; quick: 3 runs each on a third of the horizon (a smoke run, seconds per world)."""
    aa = runs or (3 if quick else 500)
    power = runs or (2 if quick else 200)
    out = _worlds(aa, power)
    if quick:
        out = [replace(w, horizon=w.horizon // 3) for w in out]
    return out


def _worlds(aa: int, power: int) -> list[World]:
    return [
        World("aa_one", "one request per user (the old bench's world)", 0, 15_000, runs=aa),
        World("aa_repeat", "3,000 users x ~5 requests, per-user effects (sd 1.0 on the logit)", 3_000, 15_000,
              "geometric", 1.0, runs=aa),
        World("aa_pareto", "power users: Pareto(1.2) request counts over 5,000 users, per-user effects", 5_000,
              15_000, "pareto", 1.0, runs=aa),
        World("aa_small", "a small app: 300 users, bursts, per-user effects", 300, 15_000, "geometric", 1.0,
              bursty=True, runs=aa),
        World("aa_retries", "retry storms: an error is retried up to 3 times by the same user", 0, 15_000,
              retries=True, error=0.05, runs=aa),
        World("aa_few_accounts", "a 1 % stratum made of ~30 accounts (others: 3,000 repeat users)", 3_000, 15_000,
              "geometric", 1.0, few_accounts=30, runs=aa),
        World("loss_2", "the candidate silently loses 2 % of its requests (exposures without outcomes)", 3_000,
              15_000, "geometric", 0.5, loss=0.02, runs=power),
        World("err_2_3", "error 2 % -> 3 %, repeat users (3,000 x ~10, per-user effects)", 3_000, 30_000,
              "geometric", 1.0, candidate_error=0.03, runs=power),
        World("cost_spike", "cost +50 % from 2 % of candidate calls 26x dearer", 3_000, 60_000, "geometric", 0.5,
              cost_spike=0.02, metric="cost_usd", runs=power),
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


def _stream(w: World, rng: np.random.Generator):
    """One run's requests: (user, stratum, stage, variant, value, reported, exposures per request)."""
    t = w.horizon
    if w.counts == "one":
        user = np.arange(t)
        n_users = t
    else:
        n_users = w.users
        if w.counts == "pareto":
            weight = rng.pareto(1.2, n_users) + 1.0
        else:
            weight = rng.exponential(1.0, n_users)
        if w.bursty:  # bursts: a few users at a time send most of the requests in a window
            weight = weight ** 2
        user = rng.choice(n_users, size=t, p=weight / weight.sum())
    stratum = np.zeros(t, dtype=int)
    if w.few_accounts:
        # Requests of the small stratum come from `few_accounts` extra users (ids after the others).
        small = rng.random(t) < 0.01
        user = np.where(small, n_users + rng.integers(0, w.few_accounts, t), user)
        stratum = small.astype(int)
        n_users += w.few_accounts
    stage = np.searchsorted([r[0] for r in RAMP], np.arange(t) / t, side="right") - 1
    share = np.array([r[1] for r in RAMP])[stage] / 10_000
    bucket = rng.random(n_users)
    cand = bucket[user] < share
    effect = rng.normal(0, w.heterogeneity, n_users)[user] if w.heterogeneity else 0.0
    base_logit = math.log(w.error / (1 - w.error))
    p = np.broadcast_to(1 / (1 + np.exp(-(base_logit + effect))), (t,))
    if w.candidate_error is not None:
        odds = (w.candidate_error / (1 - w.candidate_error)) / (w.error / (1 - w.error))
        pc = 1 / (1 + np.exp(-(base_logit + math.log(odds) + effect)))
        p = np.where(cand, pc, p)
    if w.metric == "cost_usd":
        value = rng.lognormal(math.log(0.002), 0.5, t) * np.exp(0.3 * effect if w.heterogeneity else 0.0)
        spike = cand & (rng.random(t) < w.cost_spike) if w.cost_spike else np.zeros(t, dtype=bool)
        value = np.where(spike, value * 26.0, value)  # 2 % of calls 26x dearer: +50 % on the bill, median unchanged
    else:
        value = (rng.random(t) < p).astype(float)
    if w.retries:
        # An error is retried by the same user (up to 3 more requests, each failing with the user's rate again).
        extra = []
        for i in np.flatnonzero(value > 0):
            for _ in range(3):
                fail = rng.random() < p[i] * 5  # a retry of a failing request fails far more often
                extra.append((i, float(fail)))
                if not fail:
                    break
        if extra:
            idx = np.array([e[0] for e in extra])
            order = np.argsort(np.concatenate([np.arange(t), idx]), kind="stable")
            user = np.concatenate([user, user[idx]])[order]
            stratum = np.concatenate([stratum, stratum[idx]])[order]
            stage = np.concatenate([stage, stage[idx]])[order]
            cand = np.concatenate([cand, cand[idx]])[order]
            value = np.concatenate([value, np.array([e[1] for e in extra])])[order]
            t = len(value)
    reported = np.ones(t, dtype=bool)
    if w.loss:
        if w.slowest_first:
            reported = ~(cand & (rng.random(t) < 2 * w.loss) & (value > np.median(value)))
        else:
            reported = ~(cand & (rng.random(t) < w.loss))
    return user, stratum, stage, cand, value, reported, n_users


def _evidence(w, state, stages_seen, clustered: bool) -> Evidence:
    arms, clusters, units, completion = {}, {}, {}, {}
    stages = tuple(range(len(RAMP)))
    for v, name in ((0, "baseline"), (1, "candidate")):
        for s in range(2 if w.few_accounts else 1):
            y, q, n, e = (state[k][v, s] for k in ("y", "q", "n", "e"))
            sums = unit_sums(y, n, stages)
            for g in stages_seen:
                if sums.n[g] > 0:
                    arms[(w.metric, name, str(s), g)] = ArmStats(n=int(sums.n[g]), sum=sums.y[g],
                                                                 sum_sq=float(q[:, g].sum()))
                exposed = int(((e if clustered else n)[:, g] > 0).sum())
                if exposed:
                    units[(name, str(s), g)] = exposed
            if clustered:
                clusters[(w.metric, name, str(s), "linear")] = sums
                done = np.minimum(n.sum(axis=1), e.sum(axis=1))[:, None]
                exp = e.sum(axis=1)[:, None]
                keep = exp[:, 0] > 0
                completion[(name, str(s))] = unit_sums(done[keep], exp[keep], (-1,))
    alloc = {(str(s), g): RAMP[g][1] for s in range(2 if w.few_accounts else 1) for g in stages_seen}
    return Evidence(arms, units=units, allocation_bp=alloc, clusters=clusters, completion=completion,
                    exposed=clustered)


def _gbstats_rollback(state, per_unit: bool) -> bool:
    """GrowthBook's sequential t-test on the error rate, candidate minus baseline: lower bound above 0."""
    from gbstats.frequentist.tests import SequentialConfig, SequentialTwoSidedTTest
    from gbstats.models.statistics import RatioStatistic, SampleMeanStatistic

    stats = []
    for v in (0, 1):
        y = state["y"][v].sum(axis=(0, 2)) if per_unit else state["y"][v]
        n = state["n"][v].sum(axis=(0, 2)) if per_unit else state["n"][v]
        if per_unit:
            keep = n > 0
            y, n = y[keep], n[keep]
            k = int(keep.sum())
            if k < 2:
                return False
            stats.append(RatioStatistic(n=k, m_statistic=SampleMeanStatistic(n=k, sum=float(y.sum()),
                                                                              sum_squares=float((y * y).sum())),
                                        d_statistic=SampleMeanStatistic(n=k, sum=float(n.sum()),
                                                                        sum_squares=float((n * n).sum())),
                                        m_d_sum_of_products=float((y * n).sum())))  # fmt: skip
        else:
            rows = int(n.sum())
            if rows < 2:
                return False
            stats.append(SampleMeanStatistic(n=rows, sum=float(y.sum()), sum_squares=float(state["q"][v].sum())))
    config = SequentialConfig(difference_type="absolute", alpha=0.05, sequential_tuning_parameter=SIZING.planned_samples)
    result = SequentialTwoSidedTTest(stats[0], stats[1], config).compute_result()
    lower = result.ci[0]
    return lower is not None and math.isfinite(lower) and lower > 0


def run_world(w: World, seed: int, specs: dict[str, list[MetricSpec]]):
    """Per run and arm: the request index of the first rollback and of the first hold (or -1)."""
    rng = np.random.default_rng(seed)
    out = {arm: {"rollback": np.full(w.runs, -1), "hold": np.full(w.runs, -1), "pass": np.full(w.runs, -1),
                 "cand_requests_at_hold": np.full(w.runs, -1), "cand_requests_at_rollback": np.full(w.runs, -1)}
           for arm in specs}  # fmt: skip
    for r in range(w.runs):
        user, stratum, stage, cand, value, reported, n_users = _stream(w, rng)
        strata = 2 if w.few_accounts else 1
        shape = (2, strata, n_users, len(RAMP))
        state = {k: np.zeros(shape) for k in ("y", "q", "n", "e")}
        done = dict.fromkeys(specs, False)
        for start in range(0, len(value), LOOK):
            sl = slice(start, start + LOOK)
            v, s, u, g = cand[sl].astype(int), stratum[sl], user[sl], stage[sl]
            ok = reported[sl]
            np.add.at(state["e"], (v, s, u, g), 1.0)
            np.add.at(state["n"], (v[ok], s[ok], u[ok], g[ok]), 1.0)
            np.add.at(state["y"], (v[ok], s[ok], u[ok], g[ok]), value[sl][ok])
            np.add.at(state["q"], (v[ok], s[ok], u[ok], g[ok]), value[sl][ok] ** 2)
            seen = tuple(range(int(g.max()) + 1))
            at = start + LOOK
            for arm, arm_specs in specs.items():
                if done[arm]:
                    continue
                o = out[arm]
                if arm.startswith("gbstats"):
                    if _gbstats_rollback(state, per_unit=arm.endswith("unit")):
                        o["rollback"][r] = at
                        o["cand_requests_at_rollback"][r] = int(cand[:at].sum())
                        done[arm] = True
                    continue
                ev = _evidence(w, state, seen, clustered=arm != "before")
                verdict = judge(ev, arm_specs, min_samples=SIZING.min_samples, planned_samples=SIZING.planned_samples,
                                completion=CompletionSpec())
                o = out[arm]
                if verdict.decision is Decision.ROLLBACK:
                    o["rollback"][r] = at
                    o["cand_requests_at_rollback"][r] = int(cand[:at].sum())
                    done[arm] = True
                elif verdict.decision is Decision.HOLD and o["hold"][r] < 0:
                    if any(h.name in ("sample_ratio", "completion") and not h.ok for h in verdict.health):
                        o["hold"][r] = at
                        o["cand_requests_at_hold"][r] = int(cand[:at].sum())
                        if w.loss:
                            done[arm] = True
                elif verdict.decision is Decision.PASS and o["pass"][r] < 0:
                    o["pass"][r] = at
    return out


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--only", default=None)
    ap.add_argument("--runs", type=int, default=None, help="runs per world (default 500 A/A, 200 otherwise)")
    ap.add_argument("--lean", action="store_true", help="only the after and before arms")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS_traffic.md")
    args = ap.parse_args(argv)
    md = run(args.quick, args.seed, None if args.only is None else set(args.only.split(",")), args.runs, args.lean)
    args.out.write_text(md)
    print(md)
    return 0


def run(quick: bool, seed: int, only: set[str] | None = None, runs: int | None = None, lean: bool = False) -> str:
    t0 = time.perf_counter()
    rows = []
    for i, w in enumerate(worlds(quick, runs)):
        if only and w.name not in only:
            continue
        if w.metric == "cost_usd":
            specs = {"after": [COST_PLAN], "before": [COST_PLAN], "after, cost as typical (log)": [COST_LOG]}
        elif w.name.startswith("aa"):
            specs = {"after": [ERROR_0], "before": [ERROR_0], "after, plan margin": [ERROR_PLAN],
                     "gbstats rows": [], "gbstats per unit": []}
        else:
            specs = {"after": [ERROR_0], "before": [ERROR_0], "gbstats rows": [], "gbstats per unit": []}
        if lean:
            specs = {k: v for k, v in specs.items() if k in ("after", "before") or k.startswith("gbstats")}
        ts = time.perf_counter()
        res = run_world(w, seed + i, specs)
        rows.append((w, res, time.perf_counter() - ts))
        print(f"{w.name}: {w.runs} runs in {time.perf_counter() - ts:.0f} s", flush=True)
    return report(rows, quick, time.perf_counter() - t0)


def report(rows, quick: bool, seconds: float) -> str:
    lines = [
        "### Real traffic: repeat users through the real `judge()` (`bench/traffic.py`)",
        "",
        f"{'QUICK smoke run: too few runs to read anything into. ' if quick else ''}"
        f"Looks every {LOOK} requests on a 5 -> 25 -> 50 % ramp; the real `judge()` with reconcile's sizing"
        f" (min_samples {SIZING.min_samples}, planned_samples {SIZING.planned_samples} units per arm, alpha 0.05);"
        " `after` = evidence with per-unit sums (cluster-robust), `before` = the same evidence at row level"
        f" (today's pooled comparison). Wilson 95 % intervals. {seconds:.0f} s in all.",
        "",
        "| world | runs | arm | false rollbacks (A/A) or rollbacks | 95 % Wilson | holds (SRM / completion) |"
        " median requests to rollback | median candidate requests to hold |",
        "|---|---:|---|---:|---|---:|---:|---:|",
    ]
    for w, res, _ in rows:
        for arm, o in res.items():
            k = int((o["rollback"] >= 0).sum())
            lo, hi = wilson(k, w.runs)
            holds = int((o["hold"] >= 0).sum())
            rb = o["rollback"][o["rollback"] >= 0]
            ch = o["cand_requests_at_hold"][o["cand_requests_at_hold"] >= 0]
            lines.append(
                f"| {w.name}: {w.about} | {w.runs} | {arm} | {k / w.runs:.3f} | [{lo:.3f}, {hi:.3f}] |"
                f" {holds / w.runs:.3f} | {np.median(rb):,.0f} |" if len(rb) else
                f"| {w.name}: {w.about} | {w.runs} | {arm} | {k / w.runs:.3f} | [{lo:.3f}, {hi:.3f}] |"
                f" {holds / w.runs:.3f} | - |"
            )
            lines[-1] += f" {np.median(ch):,.0f} |" if len(ch) else " - |"
    targets = []
    for w, res, _ in rows:
        o = res.get("after")
        if o is None:
            continue
        if w.name.startswith("aa"):
            k = int((o["rollback"] >= 0).sum())
            lo, hi = wilson(k, w.runs)
            targets.append(f"- {w.name}: A/A false rollbacks {k / w.runs:.3f} (upper {hi:.3f}); target <= 0.05"
                           f" (upper <= 0.07): {'met' if k / w.runs <= 0.05 and hi <= 0.07 else 'MISSED'}.")
        elif w.name == "loss_2":
            ch = o["cand_requests_at_hold"]
            held = float(((ch >= 0) & (ch <= 1_500)).mean())
            targets.append(f"- loss_2: held within 1,500 candidate requests in {held:.0%} of runs; target >= 90 %:"
                           f" {'met' if held >= 0.9 else 'MISSED'}.")
        elif w.name == "cost_spike":
            rb = o["cand_requests_at_rollback"]
            share = float(((rb >= 0) & (rb <= 20_000)).mean())
            targets.append(f"- cost_spike: rolled back within 20,000 candidate requests in {share:.0%} of runs;"
                           f" target >= 95 %: {'met' if share >= 0.95 else 'MISSED'}.")
    return "\n".join(lines + ["", "Targets (after):", "", *targets, ""])


if __name__ == "__main__":
    raise SystemExit(main())
