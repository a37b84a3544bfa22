"""The `rollout` command line (Typer + rich): flags, plans, rollouts, tokens, the HTTP service."""

from rollout.adapters.cli.main import app, main

__all__ = ["app", "main"]
