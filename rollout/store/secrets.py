"""Per-namespace secrets (unit-hash keys, exposure-token keys): created on first use, never served by any API."""

from __future__ import annotations

import secrets as _random
import threading

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rollout.store.db import transaction
from rollout.store.models import NamespaceSecret, utcnow

UNIT = "unit"          # keys the stored unit hashes
EXPOSURE = "exposure"  # signs exposure tokens


def current_secret(session: Session, namespace: str, purpose: str) -> tuple[int, bytes]:
    """The newest unretired (version, key) for this namespace and purpose, created if there is none.

    Two processes creating the first key at once: the loser's insert fails on the
    primary key inside a savepoint and it reads the winner's key.
    """
    row = _newest(session, namespace, purpose)
    if row is None:
        try:
            with session.begin_nested():
                session.add(NamespaceSecret(namespace=namespace, purpose=purpose, version=1,
                                            secret=_random.token_hex(32), created_at=utcnow()))
        except IntegrityError:
            pass
        row = _newest(session, namespace, purpose)
        assert row is not None
    return row.version, bytes.fromhex(row.secret)


def all_secrets(session: Session, namespace: str, purpose: str) -> dict[int, bytes]:
    """Every unretired version's key, for verifying what older versions signed."""
    rows = session.scalars(select(NamespaceSecret).where(
        NamespaceSecret.namespace == namespace, NamespaceSecret.purpose == purpose,
        NamespaceSecret.retired_at.is_(None)))
    return {r.version: bytes.fromhex(r.secret) for r in rows}


def rotate(session: Session, namespace: str, purpose: str) -> int:
    """Add a new version; the previous ones stay valid for verification until retired."""
    newest = _newest(session, namespace, purpose)
    version = 1 if newest is None else newest.version + 1
    session.add(NamespaceSecret(namespace=namespace, purpose=purpose, version=version,
                                secret=_random.token_hex(32), created_at=utcnow()))
    session.flush()
    return version


class UnitKeys:
    """The UNIT key of each namespace, read once per namespace and kept: what the SDK and the service hash with.

    Kept for the life of the process: after a rotation a running process goes on
    with the key it read until it restarts (see docs/unit-hashes.md for what the
    judge then sees). Reading may create the namespace's first key.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._keys: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def cached(self, namespace: str) -> bytes | None:
        """The key if it was read already, else None: never touches the database."""
        return self._keys.get(namespace)

    def get(self, namespace: str) -> bytes:
        """The key; raises the database's error if it is not cached and cannot be read."""
        key = self._keys.get(namespace)
        if key is not None:
            return key
        with self._lock:
            key = self._keys.get(namespace)
            if key is None:
                with transaction(self._engine) as session:
                    _version, key = current_secret(session, namespace, UNIT)
                self._keys[namespace] = key
        return key


def _newest(session: Session, namespace: str, purpose: str) -> NamespaceSecret | None:
    return session.scalars(select(NamespaceSecret).where(
        NamespaceSecret.namespace == namespace, NamespaceSecret.purpose == purpose,
        NamespaceSecret.retired_at.is_(None)).order_by(NamespaceSecret.version.desc()).limit(1)).first()


__all__ = ["EXPOSURE", "UNIT", "UnitKeys", "all_secrets", "current_secret", "rotate"]
