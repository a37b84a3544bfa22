"""The CLI: changes are audited with the actor; bad input is one line on stderr, exit 2, nothing written."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine

from rollout.adapters.cli.main import main, parse_stratum
from rollout.errors import InvalidFlagError
from rollout.store import flags as store
from rollout.store.db import transaction


def run(db_url: str, *args: str) -> int:
    return main(["--db", db_url, *args])


def test_a_release_managers_session(engine: Engine, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a new flag with two strata
    assert run(db_url, "flag", "create", "summarizer", "--variants", "current,new-model",
               "--stratum", "internal:email_domain=example.com|example.org", "--stratum", "free:tier=free",
               "--description", "ticket summaries", "--by", "alice") == 0
    # When the candidate goes to 5 % of free users, then everyone is rolled back
    assert run(db_url, "flag", "set", "summarizer", "--percent", "5", "--stratum", "free", "--by", "bob") == 0
    assert run(db_url, "flag", "set", "summarizer", "--percent", "0.01", "--stratum", "internal", "--by", "bob") == 0
    assert run(db_url, "rollback", "summarizer", "--reason", "errors up", "--by", "carol") == 0
    capsys.readouterr()
    assert run(db_url, "flag", "show", "summarizer", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    # Then the flag shows the rollback and every change is audited with its actor
    assert (shown["phase"], shown["version"], shown["allocations"]) == (
        "rolled_back", 4, {"internal": 0, "free": 0, "default": 0})
    with transaction(engine) as s:
        log = [(e.actor, e.action) for e in reversed(store.audit_log(s, "summarizer"))]
    assert log == [("alice", "flag.create"), ("bob", "flag.set_allocation"), ("bob", "flag.set_allocation"),
                   ("carol", "flag.rollback")]
    assert run(db_url, "flag", "list") == 0
    assert "summarizer" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [
        ["flag", "set", "summarizer", "--percent", "101"],
        ["flag", "set", "summarizer", "--percent", "-3"],
        ["flag", "set", "summarizer", "--percent", "0.001"],
        ["flag", "set", "summarizer", "--percent", "abc"],
        ["flag", "set", "summarizer", "--percent", "5", "--stratum", "ghost"],
        ["flag", "set", "ghost", "--percent", "5"],
        ["flag", "set", "summarizer"],
        ["flag", "create", "summarizer", "--variants", "a,b"],
        ["flag", "create", "other", "--variants", "only-one"],
        ["flag", "create", "other", "--variants", "a,b", "--stratum", "nocolon"],
        ["flag", "create", "other", "--variants", "a,b", "--stratum", "default:tier=free"],
        ["flag", "create", "bad key", "--variants", "a,b"],
        ["rollback", "summarizer", "--reason", "  "],
        ["rollback", "summarizer"],
        ["flag", "set", "summarizer", "--percent", "5", "--by", ""],
        ["flag", "frobnicate"],
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    engine: Engine, db_url: str, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    assert run(db_url, "flag", "create", "summarizer", "--variants", "current,new-model", "--by", "a") == 0
    capsys.readouterr()
    assert run(db_url, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("rollout: ") and err.count("\n") == 1, err
    with transaction(engine) as s:
        assert store.get_flag(s, "summarizer").version == 1
        assert len(store.audit_log(s)) == 1
        assert len(store.list_flags(s)) == 1


def test_an_unreachable_database_is_exit_1_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", "postgresql://postgres@127.0.0.1:1/none", "flag", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rollout: database unavailable") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("free:tier=free", {"name": "free", "match": {"attribute": "tier", "equals": "free"}}),
        ("int:email_domain=a.com|b.com", {"name": "int", "match": {"attribute": "email_domain", "in": ["a.com", "b.com"]}}),
        ("eu:region!=us|ca", {"name": "eu", "match": {"attribute": "region", "not_in": ["us", "ca"]}}),
        ("beta:beta?", {"name": "beta", "match": {"attribute": "beta", "exists": True}}),
        ("both:tier=free & region=eu", {"name": "both", "match": [
            {"attribute": "tier", "equals": "free"}, {"attribute": "region", "equals": "eu"}]}),
        ('{"name": "j", "match": {"attribute": "a", "in": ["x"]}}', {"name": "j", "match": {"attribute": "a", "in": ["x"]}}),
    ],
)
def test_stratum_syntax(spec: str, expected: dict) -> None:
    assert parse_stratum(spec).to_json() == expected


@pytest.mark.parametrize("spec", ["nocolon", "x:", "x:tier", "{not json"])
def test_bad_stratum_syntax(spec: str) -> None:
    with pytest.raises(InvalidFlagError):
        parse_stratum(spec)


def test_db_upgrade_creates_the_schema_from_the_console_script(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'new.db'}"
    done = subprocess.run([sys.executable, "-m", "rollout", "--db", url, "db", "upgrade"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert main(["--db", url, "flag", "create", "f", "--variants", "a,b", "--by", "t"]) == 0
