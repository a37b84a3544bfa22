"""Service settings: arguments of `create_app`, or ROLLOUT_API_* environment variables for `rollout serve`."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class ApiSettings:
    database_url: str | None = None
    max_body_bytes: int = 2 * 1024 * 1024
    """Request bodies over this are answered 413 before they are read in full."""
    max_batch: int = 5_000
    """Outcomes (or evaluations) in one request; more is answered 413."""
    rate_limit: float = 1_000.0
    """Requests a second per token (token bucket, per worker process); 0 turns the limit off."""
    rate_burst: float | None = None
    """Bucket size; default: one second's worth of `rate_limit`."""
    max_wait: float = 60.0
    """Longest `?wait=` a long-poll may ask for, in seconds."""
    refresh_interval: float = 0.25
    """How often the snapshot checks the database fingerprint (one cheap query, whatever the load)."""
    listen: bool = True
    """On PostgreSQL, also wake on NOTIFY rollout_flags."""
    token_ttl: float = 2.0
    """How long a verified token is trusted before it is read again: the delay for a revocation to bite."""
    exposure_horizon: float = 7 * 24 * 3600.0
    """Seconds after it was issued that an exposure token still credits an outcome (as the SDK's setting)."""

    @classmethod
    def from_env(cls, **overrides: object) -> ApiSettings:
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = os.environ.get("ROLLOUT_DATABASE_URL" if f.name == "database_url" else f"ROLLOUT_API_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "str")
            if kind.startswith("int"):
                values[f.name] = int(raw)
            elif kind.startswith("float"):
                values[f.name] = float(raw)
            elif kind.startswith("bool"):
                values[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
            else:
                values[f.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The environment that makes `from_env` rebuild these settings (for uvicorn worker processes)."""
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            name = "ROLLOUT_DATABASE_URL" if f.name == "database_url" else f"ROLLOUT_API_{f.name.upper()}"
            env[name] = str(value).lower() if isinstance(value, bool) else str(value)
        return env
