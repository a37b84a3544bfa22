"""POST /v1/outcomes on a real server whose database connection loses commit replies: a resend stores nothing twice.

A real `rollout serve` process on a loopback port; its PostgreSQL goes through
the fault-injecting proxy (tests/harness/tcp_proxy.py) in `cut_after_commit`
mode, so some batches are committed while the server hears only a dropped
connection and answers 503. The client does what the 503 says: sends the same
batch again.
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text

from rollout.store.db import make_engine, transaction
from rollout.store.tokens import create_token
from tests.adapters.api.conftest import seed, start_server, stop_server
from tests.harness.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

BATCHES, ITEMS = 30, 50
# Timeouts short enough for a test (see rollout.store.db.ConnectionSettings).
FAST_DB = {"ROLLOUT_DB_CONNECT_TIMEOUT": "2", "ROLLOUT_DB_IO_TIMEOUT": "3", "ROLLOUT_DB_STATEMENT_TIMEOUT": "5"}


def _batch(b: int) -> dict:
    return {"outcomes": [{"flag": "summarizer", "unit_id": f"user-{b}-{i}", "metrics": {"latency_ms": 10.0 + i,
                                                                                       "error": 0},
                          "attributes": {"email_domain": "example.com"}} for i in range(ITEMS)]}


def test_a_resent_batch_whose_commit_reply_was_lost_is_stored_once(_postgres_db: str,
                                                                     pg_proxy: tuple[TcpProxy, str]) -> None:
    # Given a real server whose database connection will lose 5 commit replies
    proxy, proxied_url = pg_proxy
    direct = make_engine(_postgres_db)
    seed(direct)
    with transaction(direct) as s:
        token = create_token(s, "app", namespace="default", scope="write", actor="test").token
    server = start_server(proxied_url, env=FAST_DB)
    answers: list[dict] = []
    unavailable = 0
    try:
        with httpx.Client(base_url=server.base_url, timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as http:
            # (one batch first, so the token and the namespace's key are read before any fault)
            assert http.post("/v1/outcomes", json={"outcomes": []}).status_code == 200
            proxy.cut_budget = 5
            proxy.set_mode("cut_after_commit")
            # When 30 batches are posted, each sent again on a 503 until it is answered 200
            for b in range(BATCHES):
                for _attempt in range(30):
                    response = http.post("/v1/outcomes", json=_batch(b))
                    if response.status_code == 200:
                        answers.append(response.json())
                        break
                    assert response.status_code == 503, response.text
                    unavailable += 1
                else:
                    pytest.fail(f"batch {b} was never answered 200")
    finally:
        stop_server(server)
    # Then replies were lost and answered 503, and a resend found its batch stored already
    assert proxy.commits_cut == 5 and unavailable >= 5
    assert sum(a["duplicates"] for a in answers) >= ITEMS
    assert sum(a["stored"] + a["duplicates"] for a in answers) == BATCHES * ITEMS
    # And the table holds each of the 1,500 outcomes exactly once (2 metrics each)
    with direct.connect() as conn:
        rows = conn.scalar(text("SELECT count(*) FROM outcomes"))
        keys = conn.scalar(text("SELECT count(*) FROM (SELECT DISTINCT source, seq FROM outcomes) k"))
    direct.dispose()
    assert (keys, rows) == (BATCHES * ITEMS, 2 * BATCHES * ITEMS)
