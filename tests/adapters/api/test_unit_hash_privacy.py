"""Stored unit hashes cannot be reversed with what a read token sees (flag salts), only with the namespace's secret."""

from __future__ import annotations

import hashlib

from sqlalchemy import select

from rollout import RolloutClient
from rollout.store.db import transaction
from rollout.store.models import NamespaceSecret, Outcome
from rollout.store.secrets import UNIT
from tests.adapters.api.conftest import Service

USERS = 300
CANDIDATES = 200_000


def _hash(key: bytes, unit: str) -> int:
    """The keyed 64-bit BLAKE2b an attacker would try (the SDK's algorithm is public)."""
    return int.from_bytes(hashlib.blake2b(unit.encode(), digest_size=8, key=key[:64]).digest(), "big", signed=True)


def _recovered(stored: set[int], key: bytes, candidates: list[str]) -> int:
    return sum(1 for c in candidates if _hash(key, c) in stored)


def test_hashing_200000_candidate_emails_with_the_flag_salts_recovers_no_unit(api: Service) -> None:
    # Given 300 users, identified by e-mail, whose outcomes were recorded by the SDK and over HTTP
    emails = [f"person{i}@example.net" for i in range(USERS)]
    with RolloutClient(api.url, listen=False, refresh_interval=3600) as client:
        for email in emails[: USERS // 2]:
            client.record("summarizer", email, {"error": 0})
    posted = api.client.post("/v1/outcomes", headers=api.auth("write"), json={"outcomes": [
        {"flag": "summarizer", "unit_id": email, "metrics": {"error": 0}} for email in emails[USERS // 2:]]})
    assert posted.json()["stored"] == USERS // 2
    with transaction(api.engine) as s:
        stored = set(s.scalars(select(Outcome.unit_hash)))
        secret = bytes.fromhex(s.scalars(select(NamespaceSecret.secret).where(
            NamespaceSecret.namespace == "default", NamespaceSecret.purpose == UNIT)).one())
    assert len(stored) == USERS
    # And an attacker with a read token: every flag's salt, and 200,000 candidate e-mails that include all 300
    flags = api.client.get("/v1/flags", headers=api.auth("read")).json()["flags"]
    salt = next(f["salt"] for f in flags if f["key"] == "summarizer").encode()
    candidates = emails + [f"someone{i}@example.net" for i in range(CANDIDATES - USERS)]
    # When they hash every candidate with the flag's salt (as the stored hash used to be keyed)
    found = _recovered(stored, salt, candidates)
    # Then no stored unit is recovered
    assert found == 0
    # While the same attack with the namespace's secret (which no API returns) recovers all 300:
    # the attack is sound, the key is what stops it
    assert _recovered(stored, secret, candidates) == USERS
    assert not any(secret.hex() in str(f) for f in flags)
