"""Per-namespace secrets (unit-hash keys, exposure-token keys): created on first use, never served by any API."""

from __future__ import annotations

import secrets as _random

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

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


def _newest(session: Session, namespace: str, purpose: str) -> NamespaceSecret | None:
    return session.scalars(select(NamespaceSecret).where(
        NamespaceSecret.namespace == namespace, NamespaceSecret.purpose == purpose,
        NamespaceSecret.retired_at.is_(None)).order_by(NamespaceSecret.version.desc()).limit(1)).first()


__all__ = ["EXPOSURE", "UNIT", "all_secrets", "current_secret", "rotate"]
