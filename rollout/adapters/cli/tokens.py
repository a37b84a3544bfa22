"""`rollout token ...` (API tokens) and `rollout serve` (the HTTP service), registered in `rollout.adapters.cli.main`.

    rollout token create ci-reader --namespace shop --scope read   # prints the token once, on stdout
    rollout token list --namespace shop
    rollout token revoke ci-reader --namespace shop --reason "leaked in a log"
    rollout serve --host 127.0.0.1 --port 8080
"""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer

from rollout.adapters.cli.common import ByOption, JsonOption, actor_name, print_table, table, transaction
from rollout.errors import InvalidInputError

token_app = typer.Typer(help="API tokens for the HTTP service (stored only as salted hashes).", no_args_is_help=True)

NamespaceOption = Annotated[str | None, typer.Option(
    "--namespace", "-n", help="The token's namespace [default: the global --namespace, else 'default']")]


def _namespace(ctx: typer.Context, namespace: str | None) -> str:
    return namespace if namespace is not None else ctx.obj.namespace


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A name for the token; the audit log calls its actions token:NAME")],
    scope: Annotated[str, typer.Option("--scope", help="read (flags, evaluate), write (+ outcomes) or admin "
                                                       "(+ rollback, metrics)")] = "read",
    namespace: NamespaceOption = None,
    by: ByOption = None,
) -> None:
    """Create a token and print it once: only a salted hash is kept, so it cannot be shown again."""
    from rollout.store.tokens import create_token

    with transaction(ctx) as session:
        issued = create_token(session, name, namespace=_namespace(ctx, namespace), scope=scope, actor=actor_name(by))
    typer.echo(issued.token)
    info = issued.info
    typer.echo(f"created token {info.name!r} for namespace {info.namespace!r} with scope {info.scope.value}; "
               "it is shown only this once", err=True)


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context,
    name: str,
    namespace: NamespaceOption = None,
    reason: Annotated[str, typer.Option("--reason", help="Why; kept in the audit log")] = "",
    by: ByOption = None,
) -> None:
    """Revoke a token for good; running services refuse it within seconds (their token cache's TTL)."""
    from rollout.store.tokens import revoke_token

    with transaction(ctx) as session:
        info = revoke_token(session, name, namespace=_namespace(ctx, namespace), actor=actor_name(by), reason=reason)
    typer.echo(f"revoked token {info.name!r} of namespace {info.namespace!r}")


@token_app.command("list")
def token_list(
    ctx: typer.Context,
    namespace: NamespaceOption = None,
    all_namespaces: Annotated[bool, typer.Option("--all", help="Tokens of every namespace")] = False,
    as_json: JsonOption = False,
) -> None:
    """Tokens (names, scopes, state; never secrets)."""
    from rollout.store.tokens import list_tokens

    with transaction(ctx) as session:
        tokens = list_tokens(session, namespace=None if all_namespaces else _namespace(ctx, namespace))
    if as_json:
        typer.echo(json.dumps([{"name": t.name, "namespace": t.namespace, "scope": t.scope.value,
                                "public_id": t.public_id, "created_by": t.created_by,
                                "created_at": t.created_at.isoformat(),
                                "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None}
                               for t in tokens], indent=2))
        return
    if not tokens:
        typer.echo("no tokens")
        return
    rows = table("NAME", "NAMESPACE", "SCOPE", "STATE", "CREATED")
    for t in tokens:
        rows.add_row(t.name, t.namespace, t.scope.value, "active" if t.active else "revoked",
                     f"{t.created_at:%Y-%m-%d %H:%M} by {t.created_by}")
    print_table(rows)


def serve_cmd(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on", min=1, max=65535)] = 8080,
    db: Annotated[str | None, typer.Option("--db", help="Database URL [default: the global --db]")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes", min=1, max=64)] = 1,
    rate_limit: Annotated[float | None, typer.Option("--rate-limit", help="Requests/s per token and worker "
                                                                          "(0: off) [default: 1000]")] = None,
    cors_origin: Annotated[list[str] | None, typer.Option(
        "--cors-origin", help="A browser origin allowed to call the service (repeat for more; '*' for any). "
                              "Off by default")] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "warning",
) -> None:
    """Run the HTTP flag service (flags, evaluate, OFREP, outcomes, rollback) under uvicorn."""
    import uvicorn
    from sqlalchemy import text

    from rollout.adapters.api.settings import ApiSettings
    from rollout.store.db import database_url, make_engine

    url = database_url(db or ctx.obj.db)
    if rate_limit is not None and rate_limit < 0:
        raise InvalidInputError("--rate-limit must be 0 (off) or more")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1 FROM api_tokens WHERE 1 = 0"))
    except Exception as exc:  # noqa: BLE001 - say what to do instead of serving 503s
        raise InvalidInputError(f"the database at {url.split('@')[-1]} is not ready for the service "
                                f"(run `rollout db upgrade`): {type(exc).__name__}") from None
    finally:
        engine.dispose()
    settings = ApiSettings.from_env(database_url=url, rate_limit=rate_limit,
                                    cors_origins=",".join(cors_origin) if cors_origin else None)
    # Worker processes rebuild the settings from the environment.
    os.environ.update(settings.to_env())
    uvicorn.run("rollout.adapters.api.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                loop="uvloop" if _has("uvloop") else "asyncio",
                # httptools plus a deadline for request headers (slowloris): see rollout.adapters.api.limits.
                http="rollout.adapters.api.limits:GuardedHttpToolsProtocol" if _has("httptools") else "h11",
                log_level=log_level, access_log=False, timeout_graceful_shutdown=3, server_header=False)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
