"""Service settings: arguments of `create_app`, or ROLLOUT_API_* environment variables for `rollout serve`.

pydantic-settings reads and validates them (a bad value fails at start with
the variable's name); the database URL is ROLLOUT_DATABASE_URL, shared with
the CLI and the SDK.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DATABASE_URL_ENV = "ROLLOUT_DATABASE_URL"
ENV_PREFIX = "ROLLOUT_API_"


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, populate_by_name=True, extra="forbid")

    database_url: str | None = Field(default=None, validation_alias=DATABASE_URL_ENV)
    max_body_bytes: int = Field(2 * 1024 * 1024, gt=0)
    """Request bodies over this are answered 413 before they are read in full."""
    max_batch: int = Field(5_000, gt=0)
    """Outcomes (or evaluations) in one request; more is answered 413."""
    rate_limit: float = Field(1_000.0, ge=0)
    """Requests a second per token (token bucket, per worker process); 0 turns the limit off."""
    rate_burst: float | None = Field(None, gt=0)
    """Bucket size; default: one second's worth of `rate_limit`."""
    max_wait: float = Field(60.0, ge=0)
    """Longest `?wait=` a long-poll may ask for, in seconds."""
    refresh_interval: float = Field(0.25, gt=0)
    """How often the snapshot checks the database fingerprint (one cheap query, whatever the load)."""
    refresh_timeout: float = Field(3.0, gt=0)
    """A refresh not answered within this marks the snapshot STALE: STALE within interval + timeout."""
    listen: bool = True
    """On PostgreSQL, also wake on NOTIFY rollout_flags."""
    token_ttl: float = Field(2.0, gt=0)
    """How long a verified token is trusted before it is read again: the delay for a revocation to bite."""
    token_grace: float = Field(300.0, ge=0)
    """While the database is unreachable, a token verified within this many seconds stays valid."""
    token_timeout: float = Field(1.0, gt=0)
    """Longest wait for a token's row; past it the request is answered from the grace cache or 503."""
    max_headers: int = Field(100, gt=0)
    """Request header lines; more is answered 431 before any routing or authentication."""
    max_header_bytes: int = Field(32 * 1024, gt=0)
    """Total size of the request headers (names and values); more is answered 431."""
    body_timeout: float = Field(10.0, gt=0)
    """Seconds a client has to send a whole request body; a slower one is answered 408."""
    header_timeout: float = Field(10.0, gt=0)
    """Seconds a connection has to send a request's headers once it started one (or opened): else closed."""

    cors_origins: str | None = None
    """Browser origins allowed to call the service (CORS), comma-separated, or "*"; none by default."""
    otlp_unit_attribute: str = "feature_flag.context.id"
    """OTLP: the span attribute that names the unit (then `user.id`, `enduser.id`, `session.id` are tried)."""
    otlp_cost_attribute: str | None = "gen_ai.usage.cost"
    """OTLP: a numeric span attribute stored as the metric `cost` (none: no cost)."""
    otlp_quality_attribute: str | None = "gen_ai.evaluation.score"
    """OTLP: a numeric span attribute stored as the metric `quality` (none: no quality)."""

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in (self.cors_origins or "").split(",") if o.strip()]
    exposure_horizon: float = 7 * 24 * 3600.0
    """Seconds after it was issued that an exposure token still credits an outcome (as the SDK's setting)."""
    comment_namespaces: str | None = None
    """Namespaces whose feedback comments (POST /v1/feedback `comment`) are stored, comma-separated, or "*";
    none by default: comments are dropped unless a namespace opted in."""
    comment_redact: str | None = None
    """Import path (module:function) of a text -> text hook that redacts comments before they are stored."""
    comment_max_chars: int = Field(2_000, gt=0)
    """Comments are capped at this many characters (after redaction), like shadow outputs."""

    def keeps_comments(self, namespace: str) -> bool:
        names = {n.strip() for n in (self.comment_namespaces or "").split(",") if n.strip()}
        return "*" in names or namespace in names

    @classmethod
    def from_env(cls, **overrides: object) -> ApiSettings:
        """Settings from the environment, with the given non-None values on top."""
        return cls(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The environment that makes `from_env` rebuild these settings (for uvicorn worker processes)."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            key = DATABASE_URL_ENV if name == "database_url" else f"{ENV_PREFIX}{name.upper()}"
            env[key] = str(value).lower() if isinstance(value, bool) else str(value)
        return env
