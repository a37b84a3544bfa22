"""Shared by the benchmarks: scratch databases, machine facts, result tables."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from rollout.core import Stratum
from rollout.store import migrate
from rollout.store.db import database_url

BENCH = Path(__file__).resolve().parent
POSTGRES = os.environ.get("ROLLOUT_BENCH_POSTGRES_URL",
                          os.environ.get("ROLLOUT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))


def three_strata() -> list[Stratum]:
    """The strata every flag benchmark uses: staff by domain, free tier, beta opt-in (then default)."""
    return [
        Stratum.from_json({"name": "internal", "match": {"attribute": "email_domain", "in": ["example.com"]}}),
        Stratum.from_json({"name": "free", "match": {"attribute": "tier", "equals": "free"}}),
        Stratum.from_json({"name": "beta", "match": {"attribute": "beta", "exists": True}}),
    ]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    pg = ""
    try:
        pg = subprocess.run(["psql", "--version"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return (f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}" + (f", {pg}" if pg else ""))


def postgres_available() -> bool:
    try:
        engine = create_engine(database_url(POSTGRES))
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:  # noqa: BLE001
        return False


@contextmanager
def scratch_database(kind: str, tmp: Path) -> Iterator[str]:
    """A migrated, empty database that is removed afterwards."""
    if kind == "sqlite":
        path = tmp / f"bench-{uuid.uuid4().hex[:6]}.db"
        url = f"sqlite:///{path}"
        migrate.upgrade(url)
        try:
            yield url
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    server = make_url(database_url(POSTGRES))
    name = f"rollout_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
