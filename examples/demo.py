"""The demo: two rollouts driven by Prefect on a real local server, with simulated traffic.

    make demo

1. Assignment: a flag with three strata and 100,000 simulated users.
2. A healthy candidate of the example ticket summarizer (examples/ticket_app)
   goes eval gate -> shadow -> canary -> quarter -> full; the demo approves
   the gated stages through the same API `rollout approve` uses.
3. A second candidate, with twice the error rate for free-tier users, is
   rolled back by the judge; the demo prints the judge's reason.

Everything runs on an embedded SQLite file and a Prefect server the demo
starts (never Prefect's temporary server). Open the UI address it prints to
watch the runs, their artifacts, and the approval form.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_ENABLED", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rollout import RolloutClient  # noqa: E402
from rollout.app.approvals import submit_approval  # noqa: E402
from rollout.core import Stratum  # noqa: E402
from rollout.app.plans import canonical_document, plan_document  # noqa: E402
from rollout.testing.prefect_server import PrefectServer, prefect_client_settings, start_server  # noqa: E402
from rollout.adapters.prefect.report import plot_bounds  # noqa: E402
from rollout.app.status import rollout_status  # noqa: E402
from rollout.store import flags as store  # noqa: E402
from rollout.store import migrate  # noqa: E402
from rollout.store.db import make_engine, transaction  # noqa: E402
from rollout.testing import Traffic, VariantBehaviour, user_attributes  # noqa: E402

OUT = ROOT / "demo-output"
PLANS = ROOT / "examples" / "plans"
USERS = 100_000
DEADLINE = 150  # seconds a demo rollout may take before the demo gives up on it


def part_one(url: str) -> None:
    """Assignment: who gets the candidate, stratum by stratum."""
    plan = {"internal": 10_000, "free": 500, "default": 100}
    engine = make_engine(url)
    with transaction(engine) as s:
        store.create_flag(s, "split-demo", variants=["current", "new-model"], actor="demo", strata=[
            Stratum.from_json({"name": "internal", "match": {"attribute": "email_domain", "in": ["example.com"]}}),
            Stratum.from_json({"name": "free", "match": {"attribute": "tier", "equals": "free"}}),
        ])
        store.set_allocations(s, "split-demo", plan, actor="demo", reason="canary: staff, then free users")
    engine.dispose()
    rng = random.Random(7)
    users = []
    for i in range(USERS):
        r = rng.random()
        stratum = "internal" if r < 0.05 else "free" if r < 0.65 else "default"
        users.append((f"user-{i}", user_attributes(stratum, rng)))
    with RolloutClient(url, listen=False) as client:
        started = time.perf_counter()
        answers = [client.assign("split-demo", uid, attrs) for uid, attrs in users]
        elapsed = time.perf_counter() - started
    total = Counter(a.stratum for a in answers)
    on = Counter(a.stratum for a in answers if a.is_candidate)
    print(f"1. assignment: {USERS:,} simulated users in {elapsed * 1000:.0f} ms "
          f"({elapsed / USERS * 1e9:.0f} ns each, including the loop)\n")
    print(f"   {'stratum':<10} {'users':>8} {'on new-model':>13} {'observed':>9} {'allocation':>11}")
    for name in ("internal", "free", "default"):
        n, k = total[name], on[name]
        print(f"   {name:<10} {n:>8,} {k:>13,} {100 * k / max(n, 1):>8.2f}% {plan[name] / 100:>10.2f}%")


def serve_deployment(server: PrefectServer, url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **server.env(), "ROLLOUT_DATABASE_URL": url, "PREFECT_RUNNER_POLL_FREQUENCY": "1",
           "ROLLOUT_DEFAULT_STARTED_BY": "demo"}
    log = (OUT / "serve.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "rollout.adapters.prefect.serve"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def start_run(plan_file: Path, url: str) -> Any:
    """What `rollout start plan.yaml` does when a Prefect API is configured."""
    from prefect.deployments import run_deployment

    deadline = time.monotonic() + 60
    while True:
        try:
            return run_deployment(name="rollout/rollout", timeout=0, parameters={
                "plan": canonical_document(plan_file), "started_by": "demo", "database_url": url})
        except Exception:  # noqa: BLE001 - the serve process is still registering the deployment
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def cancel(flow_run_id: Any) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, Cancelling(), force=True)


def stop_serving(serve: subprocess.Popen[bytes]) -> None:
    """Stop the serve process and the flow runs it started: they share its process group."""
    try:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(serve.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def flow_state(flow_run_id: Any) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).state


def ticket_traffic(client: RolloutClient, flag: str, seed: int) -> Any:
    """The example app's users, with live models that really take a little time (1/500 of what they simulate)."""
    from examples.ticket_app.models import FakeSummarizer, ModelProfile
    from examples.ticket_app.service import TicketService, TicketTraffic

    live = {"small-v1": FakeSummarizer(ModelProfile("small-v1", sleep_scale=0.002)),
            "large-v2": FakeSummarizer(ModelProfile("large-v2", skill=0.94, sleep_scale=0.002))}
    return TicketTraffic(TicketService(client, flag, live), seed=seed)


def drive(title: str, plan_file: Path, url: str, server: PrefectServer, candidate: VariantBehaviour | None,
          seed: int) -> tuple[Any, int]:
    document = plan_document(plan_file)
    flag = document["flag"]
    flow_run = start_run(plan_file, url)
    print(f"\n{title}\n   flow run {flow_run.name}: {server.ui_url}/runs/flow-run/{flow_run.id}")
    engine = make_engine(url)
    seen: set[tuple[str, str | None]] = set()
    approved: set[str] = set()
    started = time.monotonic()
    with RolloutClient(url, refresh_interval=0.2) as client:
        traffic = (ticket_traffic(client, flag, seed) if candidate is None
                   else Traffic(client, flag, candidate=candidate, seed=seed))
        while True:
            state = flow_state(flow_run.id)
            if state is not None and state.is_final():
                break
            if time.monotonic() - started > DEADLINE:
                # A rollout that holds for a human would wait forever; a demo must end.
                cancel(flow_run.id)
                raise SystemExit(f"   the rollout did not finish within {DEADLINE} s; see `rollout status {flag}`")
            if flag in client.flag_versions():
                traffic.run(1_500 if candidate is not None else 400)
                client.flush(timeout=30)
            with transaction(engine) as s:
                info = rollout_status(s, flag).to_json() if store.list_flags(s) and _exists(s, flag) else None
            rollout = info and info["rollout"]
            if rollout:
                key = (rollout["status"], rollout["stage"])
                if key not in seen:
                    seen.add(key)
                    print(f"   {time.monotonic() - started:5.1f}s  {rollout['status']:<18} stage "
                          f"{rollout['stage'] or '-':<8} {_alloc(info['flag'])}")
                    for stage, rows in (rollout.get("eval") or {}).items():
                        if rows and ("eval", stage) not in seen:
                            seen.add(("eval", stage))
                            print(f"          eval gate {stage}: " + ", ".join(
                                f"{r['category']} {r['baseline pass rate']:.0%} -> {r['candidate pass rate']:.0%}"
                                for r in rows))
                pending = rollout["pending_approval"]
                if pending and pending not in approved and rollout["status"] == "awaiting_approval":
                    time.sleep(1.0)  # give a person watching the UI a moment to see the form
                    result = submit_approval(engine, flag, approver="demo-release-manager", approved=True,
                                             comment="demo: evidence looks fine")
                    approved.add(pending)
                    print(f"   {time.monotonic() - started:5.1f}s  approved stage {result.stage} "
                          f"(as `rollout approve {flag} --by demo-release-manager`)")
            time.sleep(0.1)
    with transaction(engine) as s:
        rollout_id = rollout_status(s, flag).to_json()["rollout"]["id"]
    png = plot_bounds(engine, rollout_id, OUT / f"{flag}-bounds.png")
    engine.dispose()
    print(f"   {time.monotonic() - started:5.1f}s  flow run ended {state.name}: {state.message or ''}")
    print(f"   confidence bounds per check: {png.relative_to(ROOT)}")
    return state, rollout_id


def _exists(session: Any, flag: str) -> bool:
    return any(f.key == flag for f in store.list_flags(session))


def _alloc(flag: dict[str, Any]) -> str:
    if flag["phase"] == "shadow":
        return f"(everyone on {flag['baseline']}; {flag['shadow_bp'] / 100:g} % also run {flag['candidate']})"
    return ", ".join(f"{n} {bp / 100:g}%" for n, bp in flag["allocations"].items())


def main() -> None:
    # `finally` blocks (which stop the Prefect server and the serve process) run on SIGTERM too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    begun = time.monotonic()
    OUT.mkdir(exist_ok=True)
    db = OUT / "demo.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{db}"
    migrate.upgrade(url)
    print(f"rollout demo: flag state in embedded SQLite at {db.relative_to(ROOT)}\n")
    part_one(url)

    print("\nstarting a local Prefect server (the first start on a machine builds a template, ~10 s) ...")
    server = start_server(OUT / "prefect")
    serve = None
    try:
        print(f"   Prefect UI: {server.ui_url}   (open it to watch the runs and the approval form)")
        os.environ["PREFECT_API_URL"] = server.api_url  # for `submit_approval`, as for the CLI
        with prefect_client_settings(server.api_url):
            serve = serve_deployment(server, url)
            healthy, _ = drive("2. a healthy candidate of the ticket summarizer: eval gate -> shadow -> canary -> "
                               "quarter -> full", PLANS / "demo-healthy.yaml", url, server, None, seed=1)
            regressed, _ = drive("3. a candidate with twice the error rate for free-tier users",
                                 PLANS / "demo-regressed.yaml", url, server,
                                 VariantBehaviour(error_rate_by_stratum={"free": 0.04}), seed=2)
            print(f"\n   the judge's reason for the rollback:\n   {regressed.message}")
            print(f"\n   promoted: {healthy.is_completed()}, rolled back: {regressed.name == 'RolledBack'}")
    finally:
        if serve is not None:
            stop_serving(serve)
        server.stop()
    print(f"\ndemo finished in {time.monotonic() - begun:.0f} s. Try: .venv/bin/rollout --db {url} "
          f"history reply-drafter")


if __name__ == "__main__":
    main()
