"""API tokens in the store: shown once, kept as salted hashes, scoped, revocable, audited."""

from __future__ import annotations

import hmac

import pytest
from sqlalchemy import Engine, select

from rollout.errors import InvalidInputError, TokenExistsError, TokenNotFoundError
from rollout.store import flags as store
from rollout.store.db import transaction
from rollout.store.models import ApiToken
from rollout.store.tokens import Scope, authenticate, create_token, list_tokens, revoke_token, split_token


def test_only_a_salted_hash_of_the_secret_is_stored(engine: Engine) -> None:
    # Given two tokens
    with transaction(engine) as s:
        one = create_token(s, "one", namespace="default", scope="read", actor="alice")
        two = create_token(s, "two", namespace="default", scope="read", actor="alice")
    # When the table is read back
    with transaction(engine) as s:
        rows = {r.name: (r.salt, r.secret_hash, r.public_id) for r in s.scalars(select(ApiToken))}
    # Then no column holds the secret, each row has its own salt, and the token authenticates
    for issued in (one, two):
        _, secret = split_token(issued.token)  # type: ignore[misc]
        salt, digest, public_id = rows[issued.info.name]
        assert secret not in (salt, digest, public_id)
        assert len(digest) == 64
    assert rows["one"][0] != rows["two"][0]
    with transaction(engine) as s:
        assert authenticate(s, one.token) == one.info


def test_verification_uses_a_constant_time_comparison(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a token, and hmac.compare_digest watched
    with transaction(engine) as s:
        issued = create_token(s, "t", namespace="default", scope="read", actor="alice")
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr("rollout.store.tokens.hmac.compare_digest", lambda a, b: calls.append(1) or real(a, b))
    # When a right and a wrong secret are checked
    wrong = issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B")
    with transaction(engine) as s:
        assert authenticate(s, issued.token) is not None
        assert authenticate(s, wrong) is None
    # Then both went through compare_digest
    assert len(calls) == 2


@pytest.mark.parametrize("token", ["", "rlt_", "rlt_zz_yy", "Bearer x", "rlt_" + "0" * 16 + "_" + "a" * 42,
                                   "' OR 1=1 --", "rlt_0000000000000000_" + "a" * 43])
def test_malformed_or_unknown_tokens_do_not_authenticate(engine: Engine, token: str) -> None:
    with transaction(engine) as s:
        assert authenticate(s, token) is None


def test_revoked_tokens_stop_authenticating_and_both_changes_are_audited(engine: Engine) -> None:
    # Given a token, When it is revoked (twice)
    with transaction(engine) as s:
        issued = create_token(s, "ci", namespace="shop", scope="admin", actor="alice")
    with transaction(engine) as s:
        revoke_token(s, "ci", namespace="shop", actor="bob", reason="leaked")
        revoke_token(s, "ci", namespace="shop", actor="bob")
    # Then it no longer authenticates, lists as revoked, and the audit log holds one create and one revoke
    with transaction(engine) as s:
        assert authenticate(s, issued.token) is None
        assert [t.active for t in list_tokens(s, namespace="shop")] == [False]
        trail = [(e.actor, e.action, e.after["token"]) for e in store.audit_log(s, namespace="shop")]
    assert trail == [("bob", "token.revoke", "ci"), ("alice", "token.create", "ci")]


@pytest.mark.parametrize("name,namespace,scope,message", [
    ("bad name", "default", "read", "token name"),
    ("x", "bad ns!", "read", "namespace"),
    ("x", "default", "root", "scope"),
    ("x" * 101, "default", "read", "token name"),
])
def test_bad_token_definitions_are_refused(engine: Engine, name: str, namespace: str, scope: str,
                                           message: str) -> None:
    with transaction(engine) as s, pytest.raises(InvalidInputError, match=message):
        create_token(s, name, namespace=namespace, scope=scope, actor="alice")


def test_names_are_unique_per_namespace_and_revoke_needs_a_real_one(engine: Engine) -> None:
    with transaction(engine) as s:
        create_token(s, "app", namespace="a", scope="read", actor="alice")
        create_token(s, "app", namespace="b", scope="read", actor="alice")
    with transaction(engine) as s, pytest.raises(TokenExistsError, match="exists already"):
        create_token(s, "app", namespace="a", scope="write", actor="alice")
    with transaction(engine) as s, pytest.raises(TokenNotFoundError):
        revoke_token(s, "nope", namespace="a", actor="alice")


@pytest.mark.parametrize("have,need,ok", [
    (Scope.READ, Scope.READ, True), (Scope.READ, Scope.WRITE, False), (Scope.WRITE, Scope.READ, True),
    (Scope.WRITE, Scope.ADMIN, False), (Scope.ADMIN, Scope.WRITE, True),
])
def test_scopes_cover_the_ones_below(have: Scope, need: Scope, ok: bool) -> None:
    assert have.covers(need) is ok
