"""Faults: what the SDK, the HTTP service and the controller keep of their word when PostgreSQL fails.

Every scenario runs real parts (a RolloutClient, `rollout serve` as a subprocess,
the foreground controller) against PostgreSQL on 127.0.0.1 through the
fault-injecting TCP proxy of the fault tests (tests/harness/tcp_proxy.py:
refuse, black-hole, cut after COMMIT), then counts straight from the database.
One row per fault: what was acknowledged, what is stored, what is stored twice,
and the times (to STALE, to fail a write, to recover) measured in this run.
Loopback only; every count and wait is bounded.

    python -m bench.faults            # or --quick
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import Engine, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.common import postgres_available, scratch_database, table  # noqa: E402
from bench.server import start_server, stop_server  # noqa: E402
from rollout import RolloutClient  # noqa: E402
from rollout.app.reconcile import CheckResult  # noqa: E402
from rollout.app.runner import run_foreground  # noqa: E402
from rollout.core.controller import Status  # noqa: E402
from rollout.errors import ClientClosedError, RolloutActiveError  # noqa: E402
from rollout.store import flags as store  # noqa: E402
from rollout.store.db import make_engine, transaction  # noqa: E402
from rollout.store.models import Decision, Flag, Rollout, utcnow  # noqa: E402
from rollout.store.tokens import create_token  # noqa: E402
from rollout.testing import ScriptedEvidence, passing  # noqa: E402
from tests.harness.faults import FAST, RAMP_PLAN, empty_postgres, outcome_counts, record_until_closed  # noqa: E402
from tests.harness.tcp_proxy import Mode, TcpProxy  # noqa: E402

# Sizes (run.py --quick lowers them; read at call time).
OUTCOMES = 3_000        # outcomes recorded through lost commit replies (2 metrics each)
CUTS = 10               # commit replies lost
UNITS = 1_000           # units assigned EXPOSURES times each through lost replies
EXPOSURES = 3
RESETS = 5              # times the server goes away and comes back mid-stream
PARTITION_S = 5.0       # how long the SDK's and the service's network is black-holed
CLOSE_OUTCOMES = 1_000  # buffered when close() meets a database that is down
HTTP_BATCHES = 30       # POST /v1/outcomes batches (50 items) through lost commit replies
CONTROLLER_RUNS = ("blip", "controller_partition", "stopped", "stopped_in_partition")  # 5-20 s each

REFRESH_INTERVAL, REFRESH_TIMEOUT = 0.2, 1.0   # the SDK's and the service's, short so STALE shows in seconds
SERVER_ENV = {"ROLLOUT_API_REFRESH_INTERVAL": str(REFRESH_INTERVAL), "ROLLOUT_API_REFRESH_TIMEOUT": str(REFRESH_TIMEOUT),
              "ROLLOUT_API_TOKEN_TTL": "0.5", "ROLLOUT_API_TOKEN_TIMEOUT": "0.5",
              "ROLLOUT_DB_CONNECT_TIMEOUT": "2", "ROLLOUT_DB_IO_TIMEOUT": "3", "ROLLOUT_DB_STATEMENT_TIMEOUT": "5",
              # off: the outage loop asks as fast as it can, and a 429 would read as an unanswered request
              "ROLLOUT_API_RATE_LIMIT": "0"}
ITEMS = 50


def _until(condition: Callable[[], bool], within: float, poll: float = 0.02) -> float | None:
    """Seconds until `condition()` held, or None if it did not within `within` seconds."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > within:
            return None
        time.sleep(poll)
    return time.monotonic() - start


def _s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.2f} s"


def _client(url: str, **kwargs: Any) -> RolloutClient:
    engine = make_engine(url, connection=FAST)
    kwargs.setdefault("refresh_interval", 3600)
    return RolloutClient(engine=engine, listen=False, flush_interval=0.02, **kwargs)


def _record(client: RolloutClient, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        client.record("summarizer", f"user-{i}", {"latency_ms": 100.0 + i, "error": 0})


def _flag(direct: Engine) -> None:
    with transaction(direct) as s:
        store.create_flag(s, "summarizer", variants=["current", "new-model"], actor="bench")
        store.set_allocation(s, "summarizer", 5_000, actor="bench")


# --- the SDK -----------------------------------------------------------------------------


def lost_commit_replies(proxy: TcpProxy, url: str, direct: Engine) -> dict[str, Any]:
    client = _client(url, batch_size=100)
    proxy.cut_budget, proxy.commits_cut = CUTS, 0
    proxy.set_mode("cut_after_commit")
    started = time.monotonic()
    _record(client, OUTCOMES)
    drained = client.flush(timeout=120)
    took = time.monotonic() - started
    stats = client.stats
    client.close()
    proxy.set_mode("pass")
    _rows, keys, extra = outcome_counts(direct)
    return {"acknowledged": stats.outcomes_accepted, "stored": keys, "duplicates": extra,
            "cut": proxy.commits_cut, "write_errors": stats.write_errors, "drained": drained, "seconds": took}


def lost_exposure_replies(proxy: TcpProxy, url: str, direct: Engine) -> dict[str, Any]:
    with transaction(direct) as s:  # exposures are counted only while the flag has a rollout
        flag_id = s.scalar(select(Flag.id).where(Flag.key == "summarizer"))
        s.add(Rollout(flag_id=flag_id, active_flag_id=flag_id, plan={}, status="running", stage_index=1,
                      started_by="bench", lease_owner="bench", started_at=utcnow(), updated_at=utcnow()))
    client = _client(url, batch_size=100)
    proxy.cut_budget, proxy.commits_cut = max(1, CUTS // 2), 0
    proxy.set_mode("cut_after_commit")
    started = time.monotonic()
    for _ in range(EXPOSURES):
        for i in range(UNITS):
            client.assign("summarizer", f"user-{i}")
    drained = client.flush(timeout=120)
    took = time.monotonic() - started
    stats = client.stats
    client.close()
    proxy.set_mode("pass")
    with direct.connect() as conn:
        counts = [int(c) for c in conn.scalars(text("SELECT count FROM exposures"))]
    return {"units": UNITS, "expected": EXPOSURES, "stored_units": len(counts), "stored_total": sum(counts),
            "over": sum(max(0, c - EXPOSURES) for c in counts), "under": sum(max(0, EXPOSURES - c) for c in counts),
            "cut": proxy.commits_cut, "dropped": stats.exposures_dropped, "drained": drained, "seconds": took}


def connection_resets(proxy: TcpProxy, url: str, direct: Engine) -> dict[str, Any]:
    client = _client(url, batch_size=50)
    bursts = OUTCOMES // 100

    pause = RESETS * 0.45 / bursts  # the app records through all the resets, not before the first

    def app() -> None:
        for burst in range(bursts):
            _record(client, 100, start=burst * 100)
            time.sleep(pause)

    thread = threading.Thread(target=app, name="bench-app")
    started = time.monotonic()
    thread.start()
    for _ in range(RESETS):  # the server goes away (open connections cut) and comes back
        time.sleep(0.15)
        proxy.set_mode("refuse")
        time.sleep(0.3)
        proxy.set_mode("pass")
    thread.join(timeout=120)
    drained = client.flush(timeout=120)
    took = time.monotonic() - started
    stats = client.stats
    client.close()
    _rows, keys, extra = outcome_counts(direct)
    return {"acknowledged": stats.outcomes_accepted, "stored": keys, "duplicates": extra, "resets": RESETS,
            "write_errors": stats.write_errors, "drained": drained, "seconds": took}


def partition(proxy: TcpProxy, url: str, direct: Engine) -> dict[str, Any]:
    client = _client(url, batch_size=100, refresh_interval=REFRESH_INTERVAL, refresh_timeout=REFRESH_TIMEOUT)
    _record(client, 100)
    client.flush(timeout=30)  # the pool holds a live connection: the partition catches it open
    errors_before = client.stats.write_errors
    proxy.set_mode("blackhole")
    cut = time.monotonic()
    recorded = 100
    stale_at = stale_reason_at = write_failed_at = None
    # The partition lasts PARTITION_S, and at least until a write has failed (bounded: 20 s), so the time a
    # write takes to fail is measured, not cut short.
    deadline, bound = cut + PARTITION_S, cut + 20.0
    while time.monotonic() < deadline or (write_failed_at is None and time.monotonic() < bound):
        now = time.monotonic() - cut
        if stale_at is None and client.stats.stale:
            stale_at = now
        if stale_reason_at is None and client.assign("summarizer", "user-1").reason.value == "STALE":
            stale_reason_at = now
        if write_failed_at is None and client.stats.write_errors > errors_before:
            write_failed_at = now
        _record(client, 20, start=recorded)
        recorded += 20
        time.sleep(0.02)
    during = client.stats
    proxy.set_mode("pass")
    healed = time.monotonic()
    fresh = _until(lambda: not client.stats.stale, within=30)
    drained = client.flush(timeout=60)
    recovered = time.monotonic() - healed
    final = client.stats
    client.close()
    _rows, keys, extra = outcome_counts(direct)
    return {"partition_s": healed - cut, "stale_s": stale_at, "stale_reason_s": stale_reason_at, "write_failed_s": write_failed_at,
            "buffered_during": during.outcomes_buffered, "dropped": final.outcomes_dropped, "fresh_s": fresh,
            "recover_s": recovered if drained else None, "acknowledged": final.outcomes_accepted, "stored": keys,
            "duplicates": extra}


def close_database_down(proxy: TcpProxy, url: str, direct: Engine) -> dict[str, Any]:
    client = _client(url, batch_size=5_000)
    proxy.set_mode("refuse")
    _record(client, CLOSE_OUTCOMES)
    started = time.monotonic()
    result = client.close(timeout=3)
    took = time.monotonic() - started
    stats = client.stats
    late_refused = False
    try:
        client.record("summarizer", "late", {"error": 0})
    except ClientClosedError:
        late_refused = True
    proxy.set_mode("pass")
    _rows, keys, extra = outcome_counts(direct)
    return {"accepted": stats.outcomes_accepted, "stored": keys, "close_stored": result.stored,
            "unstored": result.unstored, "counted": stats.outcomes_unstored_at_close, "duplicates": extra,
            "late_refused": late_refused, "seconds": took}


def close_while_recording(_proxy: TcpProxy, url: str, direct: Engine) -> dict[str, Any]:
    client = _client(url, batch_size=500)
    accepted, refused = [0] * 4, [0] * 4

    app = record_until_closed(client, accepted, refused)

    threads = [threading.Thread(target=app, args=(k,), name=f"bench-app-{k}") for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    started = time.monotonic()
    result = client.close(timeout=60)
    took = time.monotonic() - started
    for t in threads:
        t.join(timeout=30)
    _rows, keys, extra = outcome_counts(direct)
    return {"accepted": sum(accepted), "stored": keys, "unstored": result.unstored, "duplicates": extra,
            "late_refused": all(r == 1 for r in refused), "seconds": took}


# --- the HTTP service --------------------------------------------------------------------


def service(proxy: TcpProxy, url: str, direct: Engine) -> dict[str, Any]:
    with transaction(direct) as s:
        store.create_flag(s, "summarizer", variants=["old", "new"], actor="bench")
        store.promote(s, "summarizer", actor="bench")
        reader = create_token(s, "reader", namespace="default", scope="read", actor="bench").token
        writer = create_token(s, "app", namespace="default", scope="write", actor="bench").token
    server = start_server(url, env=SERVER_ENV)
    out: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            evaluate = lambda: http.post("/v1/evaluate", json={"flag": "summarizer", "unit_id": "u-1"},  # noqa: E731
                                         headers={"Authorization": f"Bearer {reader}"})
            health = lambda: http.get("/healthz").json()["status"]  # noqa: E731
            for fault in ("refuse", "blackhole"):
                _until(lambda: health() == "ok", within=15)
                assert evaluate().status_code == 200  # the token is seen while the database answers
                proxy.set_mode(fault)  # type: ignore[arg-type]
                to_stale = _until(lambda: health() == "stale", within=10)
                answered = asked = stale = 0
                healthz: set[str] = set()
                slowest = 0.0
                until = time.monotonic() + PARTITION_S
                while time.monotonic() < until:
                    t0 = time.monotonic()
                    try:
                        r = evaluate()
                    except httpx.HTTPError:
                        r = None
                    slowest = max(slowest, time.monotonic() - t0)
                    asked += 1
                    if r is not None and r.status_code == 200:
                        answered += 1
                        stale += r.json()["reason"] == "STALE"
                    if asked % 10 == 0:
                        healthz.add(health())
                proxy.set_mode("pass")
                to_fresh = _until(lambda: health() == "ok", within=30)
                fresh_reason = evaluate().json()["reason"]
                out[fault] = {"asked": asked, "answered": answered, "stale": stale, "to_stale": to_stale,
                              "healthz": sorted(healthz), "to_fresh": to_fresh, "fresh_reason": fresh_reason,
                              "slowest": slowest}
            out["outcomes"] = _resent_batches(proxy, http, writer, direct)
    finally:
        proxy.set_mode("pass")
        stop_server(server)
    return out


def _resent_batches(proxy: TcpProxy, http: httpx.Client, token: str, direct: Engine) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {token}"}
    assert http.post("/v1/outcomes", json={"outcomes": []}, headers=auth).status_code == 200
    proxy.cut_budget, proxy.commits_cut = max(1, CUTS // 2), 0
    proxy.set_mode("cut_after_commit")
    answered_503 = acknowledged = resent_found = 0
    for b in range(HTTP_BATCHES):
        body = {"outcomes": [{"flag": "summarizer", "unit_id": f"user-{b}-{i}",
                              "metrics": {"latency_ms": 10.0 + i, "error": 0}} for i in range(ITEMS)]}
        for _attempt in range(30):  # what a 503 says: send the same batch again
            r = http.post("/v1/outcomes", json=body, headers=auth)
            if r.status_code == 200:
                acknowledged += r.json()["accepted"]
                resent_found += r.json()["duplicates"]
                break
            answered_503 += 1
    proxy.set_mode("pass")
    _rows, keys, extra = outcome_counts(direct)
    return {"batches": HTTP_BATCHES, "cut": proxy.commits_cut, "answered_503": answered_503,
            "acknowledged": acknowledged, "stored": keys, "duplicates": extra, "resent_found": resent_found}


# --- the controller ----------------------------------------------------------------------


def controller(proxy: TcpProxy, url: str, direct: Engine, mode: Mode, outage: float,
               stop_after: bool = False) -> dict[str, Any]:
    """The foreground controller through `outage` s of `mode` mid-ramp; with `stop_after`, interrupted
    (Ctrl-C, SIGTERM) at its first wait after the outage, users still on the candidate."""
    engine = make_engine(url, connection=FAST)
    marks: dict[str, float] = {}
    sequences: list[int] = []
    checks_after = [0]

    def on_check(result: CheckResult) -> None:
        if result.sequence is not None:
            sequences.append(result.sequence)
        if "healed" in marks:
            checks_after[0] += 1
        if result.step.state.status is Status.RAMPING and "start" not in marks:
            marks["start"] = time.monotonic()
            proxy.set_mode(mode)

            def heal() -> None:
                proxy.set_mode("pass")
                marks["healed"] = time.monotonic()

            threading.Timer(outage, heal).start()

    def sleep(seconds: float) -> None:
        if stop_after and checks_after[0] > 0 and "stopped" not in marks:
            marks["stopped"] = time.monotonic()
            raise KeyboardInterrupt
        time.sleep(seconds)

    started = time.monotonic()
    try:
        ending = run_foreground(engine, RAMP_PLAN, actor="bench", evidence=ScriptedEvidence(passing),
                                on_check=on_check, sleep=sleep)
    finally:
        engine.dispose()
    took = time.monotonic() - started
    with transaction(direct) as s:
        phase = store.get_flag(s, "summarizer").phase.value
        stored = list(s.scalars(select(Decision.sequence)))
    return {"mode": mode, "outage": outage, "status": ending.state.status.value, "phase": phase,
            "kept_judging": checks_after[0] > 0, "lost": len(set(sequences) - set(stored)),
            "doubled": len(stored) - len(set(stored)) + len(set(stored) - set(sequences)),
            "decisions": len(stored), "stop_after": stop_after, "lease_lost": ending.lost, "seconds": took,
            "abort_s": (time.monotonic() - marks["stopped"]) if "stopped" in marks else None}


def controller_stopped_in_partition(proxy: TcpProxy, url: str, direct: Engine) -> dict[str, Any]:
    """Stopped while the database is black-holed: on_abort cannot be applied, so the lease is left to expire;
    after the partition heals, the next controller takes the rollout over and finishes it."""
    engine = make_engine(url, connection=FAST)
    marks: dict[str, float] = {}

    def on_check(result: CheckResult) -> None:
        if result.step.state.status is Status.RAMPING and "start" not in marks:
            marks["start"] = time.monotonic()
            proxy.set_mode("blackhole")

    def sleep(seconds: float) -> None:
        if "start" in marks:  # the first wait once the partition is on: Ctrl-C, SIGTERM
            marks["stopped"] = time.monotonic()
            raise KeyboardInterrupt
        time.sleep(seconds)

    try:
        ending = run_foreground(engine, RAMP_PLAN, actor="bench", evidence=ScriptedEvidence(passing),
                                on_check=on_check, sleep=sleep)
    finally:
        engine.dispose()
    gave_up = time.monotonic() - marks["stopped"]
    with transaction(direct) as s:
        phase_left = store.get_flag(s, "summarizer").phase.value  # read straight, not through the partition
    proxy.set_mode("pass")
    healed = time.monotonic()
    # The next controller (a second `rollout start`) takes over once the lease has expired.
    next_engine = make_engine(url, connection=FAST)
    taken: dict[str, float] = {}

    def next_check(_result: CheckResult) -> None:
        taken.setdefault("at", time.monotonic() - healed)

    try:
        while True:
            try:
                after = run_foreground(next_engine, RAMP_PLAN, actor="bench", evidence=ScriptedEvidence(passing),
                                       on_check=next_check)
                break
            except RolloutActiveError:  # the lease has not expired yet
                if time.monotonic() - healed > 60:
                    raise
                time.sleep(0.2)
    finally:
        next_engine.dispose()
    with transaction(direct) as s:
        phase = store.get_flag(s, "summarizer").phase.value
    return {"lost": ending.lost, "status_left": ending.state.status.value, "phase_left": phase_left,
            "gave_up_s": gave_up, "takeover_s": taken.get("at"), "status": after.state.status.value,
            "phase": phase}


# --- the report --------------------------------------------------------------------------


def measure(url: str) -> dict[str, Any]:
    parsed = make_url(url)
    direct = make_engine(url)
    out: dict[str, Any] = {}
    sdk: list[tuple[str, Callable[[TcpProxy, str, Engine], dict[str, Any]]]] = [
        ("lost_commits", lost_commit_replies), ("lost_exposures", lost_exposure_replies),
        ("resets", connection_resets), ("partition", partition), ("close_down", close_database_down),
        ("close_threads", close_while_recording)]
    try:
        with TcpProxy((parsed.host or "127.0.0.1", parsed.port or 5432)) as proxy:
            proxied = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
            for name, scenario in sdk:
                empty_postgres(url)
                _flag(direct)
                proxy.set_mode("pass")
                t0 = time.monotonic()
                out[name] = scenario(proxy, proxied, direct)
                out[name]["took"] = time.monotonic() - t0
            empty_postgres(url)
            t0 = time.monotonic()
            out["service"] = service(proxy, proxied, direct)
            out["service"]["took"] = time.monotonic() - t0
            for name, mode, outage, stop in (("blip", "refuse", 3.0, False),
                                             ("controller_partition", "blackhole", PARTITION_S, False),
                                             ("stopped", "blackhole", 3.0, True)):
                if name in CONTROLLER_RUNS:
                    empty_postgres(url)
                    _flag(direct)
                    proxy.set_mode("pass")
                    t0 = time.monotonic()
                    out[name] = controller(proxy, proxied, direct, mode, outage, stop)  # type: ignore[arg-type]
                    out[name]["took"] = time.monotonic() - t0
            if "stopped_in_partition" in CONTROLLER_RUNS:
                empty_postgres(url)
                _flag(direct)
                proxy.set_mode("pass")
                t0 = time.monotonic()
                out["stopped_in_partition"] = controller_stopped_in_partition(proxy, proxied, direct)
                out["stopped_in_partition"]["took"] = time.monotonic() - t0
            proxy.set_mode("pass")
    finally:
        direct.dispose()
    return out


def report(m: dict[str, Any]) -> str:
    rows: list[list[str]] = []
    c = m["lost_commits"]
    rows.append(["SDK outcomes, commit replies lost", f"{c['cut']} replies cut; flushed in {c['seconds']:.1f} s",
                 f"{c['acknowledged']:,} / {c['stored']:,} / {c['duplicates']}", "-", "-"])
    e = m["lost_exposures"]
    rows.append(["SDK exposures, commit replies lost",
                 f"{e['units']:,} units × {e['expected']} = {e['units'] * e['expected']:,} expected; {e['cut']} replies cut",
                 f"{e['units'] * e['expected']:,} / {e['stored_total']:,} ({e['stored_units']:,} units) / "
                 f"over {e['over']}, under {e['under']}", "-", "-"])
    r = m["resets"]
    rows.append(["SDK outcomes, connection resets mid-batch", f"server gone and back {r['resets']}×; "
                 f"{r['write_errors']} failed writes retried", f"{r['acknowledged']:,} / {r['stored']:,} / {r['duplicates']}",
                 "-", f"drained {r['seconds']:.1f} s after the first reset"])
    p = m["partition"]
    rows.append(["SDK, partition (black-hole)", f"{p['partition_s']:.1f} s; first write failed after "
                 f"{_s(p['write_failed_s'])}; {p['buffered_during']:,} buffered meanwhile, {p['dropped']} dropped",
                 f"{p['acknowledged']:,} / {p['stored']:,} / {p['duplicates']}",
                 f"stats.stale after {_s(p['stale_s'])}, assign() reason STALE after {_s(p['stale_reason_s'])}",
                 f"fresh {_s(p['fresh_s'])}, buffer drained {_s(p['recover_s'])} after it healed"])
    d = m["close_down"]
    rows.append(["SDK close(timeout=3), database down", f"returned in {d['seconds']:.1f} s; counted unstored "
                 f"{d['counted']:,}; record() after it raises: {'yes' if d['late_refused'] else 'NO'}",
                 f"{d['accepted']:,} / {d['stored']:,} + {d['unstored']:,} reported unstored / {d['duplicates']}",
                 "-", "-"])
    t = m["close_threads"]
    rows.append(["SDK close() while 4 threads record", f"close() took {t['seconds']:.1f} s; later record()s raise: "
                 f"{'yes' if t['late_refused'] else 'NO'}",
                 f"{t['accepted']:,} / {t['stored']:,} + {t['unstored']:,} unstored / {t['duplicates']}", "-", "-"])
    for fault, label in (("refuse", "outage (refused)"), ("blackhole", "partition (black-hole)")):
        s = m["service"][fault]
        share = s["answered"] / s["asked"] if s["asked"] else 0.0
        rows.append([f"HTTP service, {label}",
                     f"{s['answered']:,} of {s['asked']:,} evaluations answered ({share:.1%}), {s['stale']:,} STALE, "
                     f"slowest {s['slowest'] * 1e3:,.0f} ms; /healthz said {', '.join(s['healthz']) or '-'}",
                     "-", f"/healthz stale after {_s(s['to_stale'])}",
                     f"ok {_s(s['to_fresh'])} after the database was back (no flag changed), then {s['fresh_reason']}"])
    o = m["service"]["outcomes"]
    rows.append(["HTTP POST /v1/outcomes, commit replies lost",
                 f"{o['batches']} batches of {ITEMS}; {o['cut']} replies cut, {o['answered_503']} answered 503 and "
                 f"resent; {o['resent_found']:,} items found stored on resend",
                 f"{o['acknowledged']:,} / {o['stored']:,} / {o['duplicates']}", "-", "-"])
    for name, label in (("blip", "Controller, 3 s refusal mid-ramp"),
                        ("controller_partition", f"Controller, {PARTITION_S:g} s partition mid-ramp"),
                        ("stopped", "Controller stopped after a 3 s partition, users on the candidate")):
        if name not in m:
            continue
        k = m[name]
        what = (f"kept judging: {'yes' if k['kept_judging'] else 'NO'}; ended {k['status']}, flag {k['phase']}"
                + (f"; on_abort applied {_s(k['abort_s'])} after the stop" if k["stop_after"] else "")
                + ("; lease left to expire" if k["lease_lost"] else ""))
        rows.append([label, what, f"{k['decisions']} decisions: lost {k['lost']}, doubled {k['doubled']}", "-",
                     f"run took {k['seconds']:.1f} s"])
    if "stopped_in_partition" in m:
        k = m["stopped_in_partition"]
        rows.append(["Controller stopped during a partition, users on the candidate",
                     f"on_abort could not be applied: {'lease left to expire' if k['lost'] else 'NO: ' + k['status_left']}"
                     f" (gave up after {k['gave_up_s']:.1f} s, flag left {k['phase_left']}); the next controller "
                     f"took over and ended {k['status']}, flag {k['phase']}", "-", "-",
                     f"taken over {_s(k['takeover_s'])} after the partition healed"])
    md = table(["fault", "what happened", "acknowledged / stored / duplicates", "time to STALE", "time to recover"],
               rows)
    md += ("\n\nPostgreSQL on 127.0.0.1 through tests/harness/tcp_proxy.py; the SDK and the controller use "
           "short connection timeouts (tests/harness/faults.py FAST: connect 2 s, I/O 3 s), the service the same "
           f"through ROLLOUT_DB_*; refresh every {REFRESH_INTERVAL:g} s with a {REFRESH_TIMEOUT:g} s timeout. "
           "Acknowledged: record() returned / the answer said accepted; stored: distinct outcome keys in the table; "
           "duplicates: rows beyond one per key. Times are wall-clock on a shared machine.")
    return md


def figures(m: dict[str, Any]) -> dict[str, float]:
    """The consistency figures the smoke test checks, flat."""
    f: dict[str, float] = {}
    for name in ("lost_commits", "resets", "partition"):
        f[f"{name}_acknowledged"], f[f"{name}_stored"] = m[name]["acknowledged"], m[name]["stored"]
        f[f"{name}_duplicates"] = m[name]["duplicates"]
    e = m["lost_exposures"]
    f["exposures_over"], f["exposures_under"] = e["over"], e["under"]
    d = m["close_down"]
    f["close_down_accepted"], f["close_down_accounted"] = d["accepted"], d["stored"] + d["unstored"]
    t = m["close_threads"]
    f["close_threads_accepted"], f["close_threads_stored"] = t["accepted"], t["stored"]
    for fault in ("refuse", "blackhole"):
        s = m["service"][fault]
        f[f"service_{fault}_answered_share"] = s["answered"] / s["asked"] if s["asked"] else 0.0
    o = m["service"]["outcomes"]
    f["http_acknowledged"], f["http_stored"], f["http_duplicates"] = o["acknowledged"], o["stored"], o["duplicates"]
    for name in ("blip", "controller_partition", "stopped"):
        if name in m:
            f[f"{name}_lost"], f[f"{name}_doubled"] = m[name]["lost"], m[name]["doubled"]
    if "stopped_in_partition" in m:
        f["stopped_in_partition_lease_left"] = m["stopped_in_partition"]["lost"]
    return {f"faults_{k}": float(v) for k, v in f.items()}


def run() -> tuple[str, dict[str, Any]]:
    if not postgres_available():
        return "_PostgreSQL was not reachable: the fault benchmark needs it (the proxy stands in front of it)._", {}
    started = time.monotonic()
    # The faults are the point here: their retries and warnings (each logged as in production) would drown
    # the report, so only errors are shown while it runs.
    quiet = logging.getLogger("rollout")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as tmp, scratch_database("postgres", Path(tmp)) as url:
            m = measure(url)
    finally:
        quiet.setLevel(level)
    took = ", ".join(f"{k} {v['took']:.0f} s" for k, v in m.items() if "took" in v)
    md = report(m) + f" This benchmark took {time.monotonic() - started:.0f} s ({took})."
    return md, {**figures(m), "faults_raw": m}


def quick() -> None:
    """The --quick sizes (run.py sets these too): ≤ 40 s."""
    global OUTCOMES, CUTS, UNITS, RESETS, PARTITION_S, CLOSE_OUTCOMES, HTTP_BATCHES, CONTROLLER_RUNS
    OUTCOMES, CUTS, UNITS, RESETS, PARTITION_S, CLOSE_OUTCOMES, HTTP_BATCHES = 1_000, 4, 300, 3, 2.0, 300, 10
    CONTROLLER_RUNS = ("blip",)  # the partition and the stop run in full mode


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    if parser.parse_args().quick:
        quick()
    print(run()[0])
