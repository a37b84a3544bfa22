"""The demo: a flag with three strata, 100,000 simulated users, and a rollback they all see.

Runs on an embedded SQLite file (demo-output/demo.db), nothing else needed:

    make demo
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from rollout import RolloutClient  # noqa: E402
from rollout.domain import Stratum  # noqa: E402
from rollout.store import flags as store  # noqa: E402
from rollout.store import migrate  # noqa: E402
from rollout.store.db import make_engine, transaction  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "demo-output"
FLAG = "ticket-summarizer"
USERS = 100_000
# Low-stakes users first: staff see everything, free users a little, paying users barely.
PLAN = {"internal": 10_000, "free": 500, "default": 100}


def simulated_users(n: int, seed: int = 7) -> list[tuple[str, dict[str, str]]]:
    rng = random.Random(seed)
    users = []
    for i in range(n):
        r = rng.random()
        if r < 0.05:
            attrs = {"email_domain": "example.com", "tier": rng.choice(["free", "pro"])}
        elif r < 0.65:
            attrs = {"email_domain": "mail.test", "tier": "free"}
        else:
            attrs = {"email_domain": "corp.test", "tier": rng.choice(["pro", "enterprise"])}
        users.append((f"user-{i}", attrs))
    return users


def main() -> None:
    OUT.mkdir(exist_ok=True)
    db_path = OUT / "demo.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{db_path}"
    print(f"rollout demo: embedded SQLite at {db_path}\n")

    migrate.upgrade(url)
    engine = make_engine(url)
    with transaction(engine) as s:
        store.create_flag(
            s, FLAG, variants={"current": {"model": "small-v1"}, "new-model": {"model": "large-v2"}},
            actor="demo", description="Summarize support tickets with the new model",
            strata=[
                Stratum.from_json({"name": "internal", "match": {"attribute": "email_domain", "in": ["example.com"]}}),
                Stratum.from_json({"name": "free", "match": {"attribute": "tier", "equals": "free"}}),
            ],
        )
        store.set_allocations(s, FLAG, PLAN, actor="demo", reason="canary: staff, then free users")
    print(f"flag {FLAG!r}: strata internal (email_domain in [example.com]), free (tier = free), default")

    users = simulated_users(USERS)
    with RolloutClient(url, refresh_interval=0.1) as client:
        started = time.perf_counter()
        assignments = [(client.assign(FLAG, uid, attrs)) for uid, attrs in users]
        elapsed = time.perf_counter() - started
        total = Counter(a.stratum for a in assignments)
        on_candidate = Counter(a.stratum for a in assignments if a.is_candidate)

        print(f"\nassigned {USERS:,} simulated users in {elapsed * 1000:.0f} ms "
              f"({elapsed / USERS * 1e9:.0f} ns each, including the loop)\n")
        print(f"{'stratum':<10} {'users':>8} {'on new-model':>13} {'observed':>9} {'allocation':>11}")
        for name in ("internal", "free", "default"):
            n, k = total[name], on_candidate[name]
            print(f"{name:<10} {n:>8,} {k:>13,} {100 * k / max(n, 1):>8.2f}% {PLAN[name] / 100:>10.2f}%")

        # Outcomes go to a background buffer; the judge (next issues) reads them back with SQL.
        rng = random.Random(1)
        for (uid, attrs), a in zip(users[:5_000], assignments[:5_000], strict=True):
            latency = rng.lognormvariate(6.0 if a.is_candidate else 5.9, 0.5)
            client.record(FLAG, uid, {"latency_ms": latency, "error": rng.random() < 0.02}, attributes=attrs)
        client.flush(timeout=30)
        print(f"\nrecorded 5,000 outcomes; stored {client.stats.outcomes_written:,}, dropped {client.stats.outcomes_dropped}")

        # A rollback by someone else reaches this running client within its refresh interval.
        sample = [(uid, attrs) for (uid, attrs), a in zip(users, assignments, strict=True) if a.is_candidate][:1_000]
        with transaction(engine) as s:
            store.rollback(s, FLAG, actor="release-manager", reason="demo: error rate up in free tier")
        t0 = time.perf_counter()
        while any(client.assign(FLAG, uid, attrs).is_candidate for uid, attrs in sample):
            time.sleep(0.005)
        print(f"rollback seen by the running client after {1000 * (time.perf_counter() - t0):.0f} ms; "
              f"all {len(sample):,} candidate users are back on 'current'")

    with transaction(engine) as s:
        print("\naudit log:")
        for e in reversed(store.audit_log(s, FLAG)):
            print(f"  {e.created_at:%H:%M:%S} {e.actor:<16} {e.action:<22} {e.reason}")
    engine.dispose()


if __name__ == "__main__":
    main()
