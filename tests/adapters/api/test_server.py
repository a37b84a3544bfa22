"""End to end: `rollout token create` and `rollout serve` as real processes, spoken to over loopback HTTP."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import httpx
import pytest

from rollout.store.db import make_engine
from tests.adapters.api.conftest import ROOT, seed, start_server, stop_server

pytestmark = pytest.mark.slow


def cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rollout", "--db", db_url, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_a_real_server_serves_flags_evaluations_and_rollbacks_to_long_polls(db_url: str) -> None:
    # Given a database with flags, and tokens made with the CLI (printed once, on stdout)
    engine = make_engine(db_url)
    seed(engine)
    engine.dispose()
    reader = cli(db_url, "token", "create", "app", "--scope", "read")
    admin = cli(db_url, "token", "create", "ops", "--scope", "admin", "--namespace", "default")
    assert reader.returncode == 0 and admin.returncode == 0, reader.stderr + admin.stderr
    read_token, admin_token = reader.stdout.strip(), admin.stdout.strip()
    assert "shown only this once" in reader.stderr
    # When the service runs in its own process on a loopback port
    server = start_server(db_url)
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            auth = {"Authorization": f"Bearer {read_token}"}
            # Then it evaluates like the SDK
            answer = http.post("/v1/evaluate", headers=auth, json={
                "flag": "summarizer", "unit_id": "user-1", "attributes": {"email_domain": "example.com"}}).json()
            assert (answer["variant"], answer["stratum"], answer["reason"]) == ("new-model", "internal", "SPLIT")
            # And a client long-polling the flags hears of a rollback made through the API within a second
            etag = http.get("/v1/flags", headers=auth).headers["etag"]
            woke: dict[str, object] = {}

            def poll() -> None:
                with httpx.Client(base_url=server.base_url, timeout=15) as poller:
                    r = poller.get("/v1/flags?wait=10", headers={**auth, "If-None-Match": etag})
                woke["at"], woke["status"] = time.monotonic(), r.status_code

            thread = threading.Thread(target=poll)
            thread.start()
            time.sleep(0.3)
            sent = time.monotonic()
            rolled = http.post("/v1/rollouts/summarizer/rollback", json={"reason": "e2e"},
                               headers={"Authorization": f"Bearer {admin_token}"})
            thread.join(timeout=15)
            assert rolled.status_code == 200
            assert woke["status"] == 200
            assert woke["at"] - sent < 1.0  # type: ignore[operator]
            # And a token revoked with the CLI stops working (the service trusts a token for 2 s at most)
            assert cli(db_url, "token", "revoke", "app").returncode == 0
            time.sleep(2.2)
            assert http.get("/v1/flags", headers=auth).status_code == 401
            listed = cli(db_url, "token", "list").stdout
            assert "revoked" in listed and read_token not in listed
    finally:
        stop_server(server)


def test_serve_refuses_a_database_that_is_not_migrated(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Given an empty SQLite file, When the service is started on it
    done = cli(f"sqlite:///{tmp_path / 'empty.db'}", "serve", "--port", "1")
    # Then it says what to do on one line and exits 2 without serving
    assert done.returncode == 2
    assert "rollout db upgrade" in done.stderr and len(done.stderr.strip().splitlines()) == 1
