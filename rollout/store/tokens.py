"""API tokens for the HTTP service: issued once, kept only as a salted hash.

A token reads `rlt_<public id>_<secret>`. The public id (16 hex digits) names
the row, so a request finds it with one indexed lookup; the secret (32 random
bytes, URL-safe base64) is never stored. What is stored is
HMAC-SHA256(key=per-token random salt, secret).

Why a fast hash and not scrypt or PBKDF2: those exist to slow down guessing of
low-entropy passwords. This secret is 256 random bits, so no guessing attack
works whatever the hash's speed, while a slow KDF would cost milliseconds of
CPU on every API request (or force a cache of plaintext-equivalent state).
The per-token salt keeps two rows from ever sharing a hash and makes
precomputed tables useless. Comparison is `hmac.compare_digest`, so the time
taken says nothing about how much of a guess was right.

Like everything in `rollout.store`, these functions take a Session and never
commit; creating and revoking a token writes an audit row in the same
transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rollout.errors import InvalidInputError, TokenExistsError, TokenNotFoundError
from rollout.store.models import ApiToken, AuditEntry, utcnow

PREFIX = "rlt"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PUBLIC_ID = re.compile(r"^[0-9a-f]{16}$")
_SECRET = re.compile(r"^[A-Za-z0-9_-]{43}$")


class Scope(StrEnum):
    """What a token may do; each scope includes the ones before it."""

    READ = "read"    # flags, evaluation, OFREP
    WRITE = "write"  # + outcomes
    ADMIN = "admin"  # + rollback (and the other rollout actions), metrics

    def covers(self, needed: Scope) -> bool:
        return _RANK[self] >= _RANK[needed]


_RANK = {Scope.READ: 0, Scope.WRITE: 1, Scope.ADMIN: 2}


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as listings show it: never the secret, never its hash."""

    name: str
    namespace: str
    scope: Scope
    public_id: str
    created_by: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What the service needs to check a presented secret: the info plus salt and hash."""

    info: TokenInfo
    salt: str
    secret_hash: str

    def verify(self, secret: str) -> bool:
        """True when `secret` is this token's secret. Constant-time in the secret's content."""
        return hmac.compare_digest(_hash(self.salt, secret), self.secret_hash)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly created token. `token` is shown once and cannot be recovered later."""

    token: str
    info: TokenInfo


def split_token(token: str) -> tuple[str, str] | None:
    """(public id, secret) of a well-formed token, else None (without touching the database)."""
    if not isinstance(token, str) or len(token) != len(PREFIX) + 1 + 16 + 1 + 43:
        return None
    prefix, _, rest = token.partition("_")
    public_id, _, secret = rest.partition("_")
    if prefix != PREFIX or not _PUBLIC_ID.match(public_id) or not _SECRET.match(secret):
        return None
    return public_id, secret


def _hash(salt: str, secret: str) -> str:
    return hmac.new(bytes.fromhex(salt), secret.encode(), hashlib.sha256).hexdigest()


def _info(row: ApiToken) -> TokenInfo:
    return TokenInfo(name=row.name, namespace=row.namespace, scope=Scope(row.scope), public_id=row.public_id,
                     created_by=row.created_by, created_at=row.created_at, revoked_at=row.revoked_at)


def _check_names(name: str, namespace: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidInputError(f"token name {name!r} must be 1-100 letters, digits, '.', '_' or '-'")
    if not isinstance(namespace, str) or not NAMESPACE_PATTERN.match(namespace):
        raise InvalidInputError(f"namespace {namespace!r} must be 1-64 letters, digits, '.', '_' or '-'")


def create_token(session: Session, name: str, *, namespace: str, scope: Scope | str, actor: str) -> IssuedToken:
    """A new token for one namespace and scope. The returned `token` is the only copy of the secret."""
    _check_names(name, namespace)
    if scope not in Scope._value2member_map_:
        raise InvalidInputError(f"scope {scope!r} must be one of {', '.join(s.value for s in Scope)}")
    if not actor or not str(actor).strip():
        raise InvalidInputError("creating a token needs an actor (who is creating it)")
    scope = Scope(scope)
    if session.scalar(select(ApiToken.id).where(ApiToken.namespace == namespace, ApiToken.name == name)) is not None:
        raise TokenExistsError(f"a token named {name!r} exists already in namespace {namespace!r}")
    public_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    row = ApiToken(public_id=public_id, namespace=namespace, name=name, scope=scope.value, salt=salt,
                   secret_hash=_hash(salt, secret), created_by=actor, created_at=utcnow())
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError as exc:  # lost a race with another creator of the same name
        raise TokenExistsError(f"a token named {name!r} exists already in namespace {namespace!r}") from exc
    info = _info(row)
    _audit(session, info, actor=actor, action="token.create")
    return IssuedToken(token=f"{PREFIX}_{public_id}_{secret}", info=info)


def revoke_token(session: Session, name: str, *, namespace: str, actor: str, reason: str = "") -> TokenInfo:
    """Revoke a token for good. Revoking a revoked token changes nothing and writes no audit row."""
    _check_names(name, namespace)
    row = session.scalar(select(ApiToken).where(ApiToken.namespace == namespace, ApiToken.name == name))
    if row is None:
        raise TokenNotFoundError(f"no token named {name!r} in namespace {namespace!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
        _audit(session, _info(row), actor=actor, action="token.revoke", reason=reason)
    return _info(row)


def list_tokens(session: Session, *, namespace: str | None = None) -> list[TokenInfo]:
    q = select(ApiToken).order_by(ApiToken.namespace, ApiToken.name)
    if namespace is not None:
        q = q.where(ApiToken.namespace == namespace)
    return [_info(row) for row in session.scalars(q)]


def find_token(session: Session, public_id: str) -> TokenRecord | None:
    """The token row for a public id, or None. Ids that cannot be one never reach the database."""
    if not isinstance(public_id, str) or not _PUBLIC_ID.match(public_id):
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.public_id == public_id))
    if row is None:
        return None
    return TokenRecord(info=_info(row), salt=row.salt, secret_hash=row.secret_hash)


def authenticate(session: Session, token: str) -> TokenInfo | None:
    """The active token this string is, or None (unknown, malformed, wrong secret or revoked)."""
    parts = split_token(token)
    if parts is None:
        return None
    record = find_token(session, parts[0])
    if record is None or not record.verify(parts[1]) or not record.info.active:
        return None
    return record.info


def _audit(session: Session, info: TokenInfo, *, actor: str, action: str, reason: str = "") -> None:
    session.add(AuditEntry(namespace=info.namespace, flag_key=None, actor=actor, action=action, before=None,
                           after={"token": info.name, "scope": info.scope.value, "public_id": info.public_id},
                           reason=reason))
    session.flush()


__all__ = [
    "IssuedToken",
    "Scope",
    "TokenInfo",
    "TokenRecord",
    "authenticate",
    "create_token",
    "find_token",
    "list_tokens",
    "revoke_token",
    "split_token",
]
