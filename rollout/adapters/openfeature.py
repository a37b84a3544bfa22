"""`RolloutProvider`: rollout behind the vendor-neutral OpenFeature API.

Two ways to reach flag state, one behaviour:

    from openfeature import api
    from rollout.adapters.openfeature import RolloutProvider

    api.set_provider_and_wait(RolloutProvider.in_process("postgresql://..."))          # evaluates locally (RolloutClient)
    api.set_provider_and_wait(RolloutProvider.remote("http://flags:8080", token))      # asks the service (OFREP)

    client = api.get_client()
    model = client.get_string_value("summarizer", "current", EvaluationContext("user-42", {"tier": "free"}))
    client.track("summarizer", EvaluationContext("user-42"), TrackingEventDetails(attributes={"latency_ms": 812}))

Values: `get_string_value` answers the variant's payload when it is text, else
the variant's name; `get_boolean_value` answers a boolean payload, else
whether the unit is in the candidate arm; integer, float and object answer
the payload and report TYPE_MISMATCH when it has another type. Details carry
variant, reason (OpenFeature's words) and error code; `flag_metadata` holds
stratum, inShadow, isCandidate and flagVersion. On an error the value is the
caller's default (OpenFeature's rule); with TARGETING_KEY_MISSING the variant
and metadata still say which arm rollout counts the unit in (the baseline).

Status and events (OpenFeature spec 1.7, 2.8, 5.3): a watcher thread (every
`watch_interval` seconds; in-process it reads the client's snapshot, remote
it asks the bulk OFREP endpoint with its ETag) emits PROVIDER_READY when flags
are loaded and fresh, PROVIDER_STALE while the database (or, remote, the
service's database) is unreachable and the last snapshot is served,
PROVIDER_ERROR when there is nothing to serve from (never loaded; remote: the
service unreachable or refusing the token), and
PROVIDER_CONFIGURATION_CHANGED with `flags_changed` = the keys whose version
changed, appeared or went. `initialize` fails (status ERROR) when nothing can
be served yet; the watcher then reports READY once it can. `shutdown` stops
the watcher and closes what the provider owns; a later `initialize` (the SDK
does it when the provider is set again) opens them anew.

Tracking (spec section 6): `track(event_name, context, details)` stores one
outcome per flag the event belongs to, for the context's targeting key. The
numeric entries of `details.attributes` are the metrics; `details.value` is
the metric named after the event (or `value`, when the event is named after
the flag or its name is no metric name). Which flags, first match wins:
1. `details.attributes["flag"]` (one key) or `["flags"]` (a list of keys);
2. the provider's `track_flags`, when configured;
3. the flags this provider evaluated for this targeting key (the last
   `remember` units), each with the variant it was served;
4. else the event name itself, as a flag key.
Tracking never raises (an OpenFeature rule); a refused outcome is logged.

Evaluation never raises either, whatever the service sends: on any fault the
caller's default comes back with reason ERROR and an error code.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode as OFErrorCode
from openfeature.exception import ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, Reason as OFReason
from openfeature.provider import AbstractProvider, Metadata
from openfeature.track import TrackingEventDetails

from rollout.core.outcome import METRIC_NAME
from rollout.errors import RolloutError
from rollout.sdk import RolloutClient

log = logging.getLogger("rollout.openfeature")

__all__ = ["RolloutProvider"]

_CODES = frozenset(OFErrorCode._value2member_map_)
_WATCH_CONTEXT = {"context": {"targetingKey": "rollout-openfeature-watch"}}


@dataclass(frozen=True, slots=True)
class _Answer:
    """An evaluation, whichever way it was obtained."""

    variant: str | None
    payload: Any
    reason: str
    error_code: str | None
    error_message: str | None
    metadata: dict[str, bool | int | float | str]
    is_candidate: bool = False


@dataclass(frozen=True, slots=True)
class _Health:
    """What the watcher saw: 'ready', 'stale' or 'error', each flag's version, and why (for errors)."""

    state: str
    versions: dict[str, int] | None
    message: str = ""


class RolloutProvider(AbstractProvider):
    """An OpenFeature provider over a `RolloutClient` (in-process) or the HTTP service (remote, OFREP)."""

    def __init__(
        self,
        client: RolloutClient | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        http_client: httpx.Client | None = None,
        timeout: float = 2.0,
        owns_client: bool = False,
        client_factory: Callable[[], RolloutClient] | None = None,
        track_flags: Sequence[str] = (),
        watch_interval: float = 1.0,
        remember: int = 10_000,
    ) -> None:
        super().__init__()
        if (client is None and client_factory is None) == (url is None and http_client is None):
            raise RolloutError("give a RolloutClient (in-process) or a service url (remote), not both or neither")
        self._client = client
        self._client_factory = client_factory
        self._owns_client = owns_client or (client is None and client_factory is not None)
        self._url, self._timeout = url, timeout
        self._owns_http = http_client is None and url is not None
        self._http = http_client if http_client is not None else (
            httpx.Client(base_url=url, timeout=timeout) if url is not None else None)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._track_flags = tuple(track_flags)
        self._watch_interval = watch_interval
        self._remember = remember
        self._seen: OrderedDict[str, dict[str, str]] = OrderedDict()  # targeting key -> flag -> variant served
        self._seen_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._health = _Health("ready", None)
        self._etag: str | None = None
        self._closed = False

    @classmethod
    def in_process(cls, database_url: str | None = None, *, track_flags: Sequence[str] = (),
                   watch_interval: float = 1.0, **client_options: Any) -> RolloutProvider:
        """Evaluate locally from the database snapshot; the provider owns (and closes, and reopens) its client."""
        def factory() -> RolloutClient:
            return RolloutClient(database_url, **client_options)

        return cls(factory(), owns_client=True, client_factory=factory, track_flags=track_flags,
                   watch_interval=watch_interval)

    @classmethod
    def remote(cls, url: str, token: str, *, timeout: float = 2.0, http_client: httpx.Client | None = None,
               track_flags: Sequence[str] = (), watch_interval: float = 1.0) -> RolloutProvider:
        """Ask a running `rollout serve` over OFREP with a read token (write, to track outcomes)."""
        return cls(url=url, token=token, timeout=timeout, http_client=http_client, track_flags=track_flags,
                   watch_interval=watch_interval)

    # --- OpenFeature provider API: life cycle ----------------------------------------------

    def get_metadata(self) -> Metadata:
        return Metadata(name="rollout")

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        if self._closed:
            self._reopen()
        health = self._check()
        self._health = health
        self._stop.clear()
        if self._watcher is None or not self._watcher.is_alive():
            self._watcher = threading.Thread(target=self._watch, name="rollout-openfeature-watch", daemon=True)
            self._watcher.start()
        if health.state == "error":
            # The SDK marks the provider ERROR; the watcher reports READY once flags can be served.
            raise ProviderNotReadyError(health.message)

    def shutdown(self) -> None:
        self._stop.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=5)
        self._watcher = None
        if self._client is not None and self._owns_client:
            self._client.close()
        if self._http is not None and self._owns_http:
            self._http.close()
        self._closed = True

    def _reopen(self) -> None:
        if self._client is not None and self._owns_client and self._client_factory is not None:
            self._client = self._client_factory()
        if self._http is not None and self._owns_http:
            self._http = httpx.Client(base_url=self._url or "", timeout=self._timeout)
        self._etag = None
        self._closed = False

    # --- status and events --------------------------------------------------------------

    def _check(self) -> _Health:
        """Never raises: how the flags look now, through whichever way this provider reaches them."""
        try:
            return self._check_local() if self._client is not None else self._check_remote()
        except Exception as exc:  # noqa: BLE001 - a watcher fault is a status, not a crash
            return _Health("error", None, f"{type(exc).__name__}: {exc}"[:300])

    def _check_local(self) -> _Health:
        assert self._client is not None
        stats = self._client.stats
        if not stats.loaded:
            return _Health("error", None, f"flags have never loaded: {stats.last_error or 'no answer yet'}")
        return _Health("stale" if stats.stale else "ready", self._client.flag_versions(),
                       (stats.last_error or "") if stats.stale else "")

    def _check_remote(self) -> _Health:
        assert self._http is not None
        headers = dict(self._headers)
        if self._etag is not None:
            headers["If-None-Match"] = self._etag
        response = self._http.post("/ofrep/v1/evaluate/flags", json=_WATCH_CONTEXT, headers=headers)
        if response.status_code == 304 and self._health.versions is not None:
            return self._health
        if response.status_code != 200:
            return _Health("error", None, f"HTTP {response.status_code} from the service: {response.text[:200]}")
        flags = response.json()["flags"]
        versions = {str(f["key"]): int(f.get("metadata", {}).get("flagVersion", 0)) for f in flags}
        stale = any(f.get("metadata", {}).get("stale") for f in flags)
        self._etag = response.headers.get("etag")
        return _Health("stale" if stale else "ready", versions, "the service serves its last snapshot" if stale else "")

    def _watch(self) -> None:
        while not self._stop.wait(self._watch_interval):
            self._observe(self._check())

    def _observe(self, now: _Health) -> None:
        before, self._health = self._health, now
        if now.state != before.state:
            details = ProviderEventDetails(message=now.message or None)
            if now.state == "ready":
                self.emit_provider_ready(details)
            elif now.state == "stale":
                self.emit_provider_stale(details)
            else:
                self.emit_provider_error(ProviderEventDetails(message=now.message, error_code=OFErrorCode.GENERAL))
        if now.versions is not None and before.versions is not None and now.versions != before.versions:
            changed = sorted(k for k in now.versions.keys() | before.versions.keys()
                             if now.versions.get(k) != before.versions.get(k))
            self.emit_provider_configuration_changed(ProviderEventDetails(flags_changed=changed))
        elif now.versions is None and before.versions is not None:
            self._health = _Health(now.state, before.versions, now.message)  # keep what we knew across an outage

    # --- evaluation -----------------------------------------------------------------------

    def resolve_boolean_details(self, flag_key: str, default_value: bool,
                                evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, evaluation_context, bool)

    def resolve_string_details(self, flag_key: str, default_value: str,
                               evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, str)

    def resolve_integer_details(self, flag_key: str, default_value: int,
                                evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, evaluation_context, int)

    def resolve_float_details(self, flag_key: str, default_value: float,
                              evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, default_value, evaluation_context, float)

    def resolve_object_details(self, flag_key: str, default_value: Any,
                               evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[Any]:
        return self._resolve(flag_key, default_value, evaluation_context, object)

    def _resolve(self, flag_key: str, default: Any, ctx: EvaluationContext | None,
                 kind: type) -> FlagResolutionDetails[Any]:
        try:
            ctx = ctx or EvaluationContext()
            answer = self._local(flag_key, ctx) if self._client is not None else self._remote(flag_key, ctx)
            if answer.error_code is not None or answer.variant is None:
                code = answer.error_code if answer.error_code in _CODES else OFErrorCode.GENERAL.value
                return FlagResolutionDetails(value=default, reason=OFReason.ERROR, error_code=OFErrorCode(code),
                                             error_message=answer.error_message, variant=answer.variant,
                                             flag_metadata=answer.metadata)
            self._remember_served(ctx.targeting_key, flag_key, answer.variant)
            value, mismatch = _typed(kind, answer)
            if mismatch:
                return FlagResolutionDetails(value=default, reason=OFReason.ERROR,
                                             error_code=OFErrorCode.TYPE_MISMATCH, error_message=mismatch,
                                             variant=answer.variant, flag_metadata=answer.metadata)
            return FlagResolutionDetails(value=value, variant=answer.variant, reason=answer.reason,
                                         flag_metadata=answer.metadata)
        except Exception as exc:  # noqa: BLE001 - evaluation never raises into the app
            return FlagResolutionDetails(value=default, reason=OFReason.ERROR, error_code=OFErrorCode.GENERAL,
                                         error_message=f"{type(exc).__name__}: {exc}"[:300])

    def _local(self, flag_key: str, ctx: EvaluationContext) -> _Answer:
        assert self._client is not None
        a = self._client.assign(flag_key, ctx.targeting_key, dict(ctx.attributes))  # type: ignore[arg-type]
        metadata: dict[str, bool | int | float | str] = {
            "flagVersion": a.flag_version, "inShadow": a.in_shadow, "isCandidate": a.is_candidate}
        if a.stratum is not None:
            metadata["stratum"] = a.stratum
        code = a.error_code.value if a.error_code is not None else None
        return _Answer(a.variant, a.value, a.reason.value, code, code and f"{code} for {flag_key!r}", metadata,
                       a.is_candidate)

    def _remote(self, flag_key: str, ctx: EvaluationContext) -> _Answer:
        assert self._http is not None
        context: dict[str, Any] = {k: _jsonable(v) for k, v in ctx.attributes.items()}
        if ctx.targeting_key is not None:
            context["targetingKey"] = ctx.targeting_key
        response = self._http.post(f"/ofrep/v1/evaluate/flags/{quote(flag_key, safe='')}",
                                   json={"context": context}, headers=self._headers)
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _Answer(None, None, "ERROR", "GENERAL",
                           f"HTTP {response.status_code}: the service sent no OFREP answer", {})
        metadata = _scalars(body.get("metadata"))
        reason = metadata.pop("rolloutReason", None) or body.get("reason")
        metadata.pop("variant", None)
        variant = body.get("variant")
        if response.status_code != 200 or "errorCode" in body:
            code = body.get("errorCode")
            detail = body.get("errorDetails") or body.get("error")
            served = _variant_in_failure(body)
            return _Answer(served, None, "ERROR", code if code in _CODES else "GENERAL",
                           f"HTTP {response.status_code}: {str(detail)[:300]}", metadata if served else {})
        if not isinstance(variant, str) or not isinstance(reason, str):
            return _Answer(None, None, "ERROR", "PARSE_ERROR", "the service's answer has no variant or reason", {})
        value = body.get("value")
        payload = None if value == variant else value
        return _Answer(variant, payload, reason, None, None, metadata, metadata.get("isCandidate") is True)

    # --- tracking -------------------------------------------------------------------------

    def track(self, tracking_event_name: str, evaluation_context: EvaluationContext | None = None,
              tracking_event_details: TrackingEventDetails | None = None) -> None:
        try:
            ctx = evaluation_context or EvaluationContext()
            attrs = dict(tracking_event_details.attributes) if tracking_event_details is not None else {}
            metrics: dict[str, Any] = {k: v for k, v in attrs.items()
                                       if isinstance(v, (int, float)) and k not in ("flag", "flags")}
            targets = self._track_targets(tracking_event_name, ctx.targeting_key, attrs)
            value = tracking_event_details.value if tracking_event_details is not None else None
            attributes = {k: _jsonable(v) for k, v in ctx.attributes.items()}
            for flag, variant in targets:
                row = dict(metrics)
                if value is not None:
                    named = tracking_event_name != flag and METRIC_NAME.match(tracking_event_name)
                    row[tracking_event_name if named else "value"] = value
                self._store_outcome(flag, variant, ctx.targeting_key, row, attributes)
        except Exception as exc:  # noqa: BLE001 - tracking must never raise into the app
            log.warning("rollout: outcome for %r not recorded: %s", tracking_event_name, exc)

    def _track_targets(self, event: str, unit: str | None, attrs: Mapping[str, Any]) -> list[tuple[str, str | None]]:
        """(flag, variant served or None) pairs the event belongs to, by the convention in the module docstring."""
        with self._seen_lock:
            served = dict(self._seen.get(unit, {})) if unit is not None else {}
        named = attrs.get("flag")
        if isinstance(named, str):
            return [(named, served.get(named))]
        listed = attrs.get("flags")
        if isinstance(listed, (list, tuple)) and listed and all(isinstance(f, str) for f in listed):
            return [(f, served.get(f)) for f in listed]
        if self._track_flags:
            return [(f, served.get(f)) for f in self._track_flags]
        if served:
            return list(served.items())
        return [(event, None)]

    def _remember_served(self, unit: str | None, flag: str, variant: str) -> None:
        if not unit:
            return
        with self._seen_lock:
            flags = self._seen.pop(unit, None) or {}
            flags[flag] = variant
            self._seen[unit] = flags
            while len(self._seen) > self._remember:
                self._seen.popitem(last=False)

    def _store_outcome(self, flag: str, variant: str | None, unit: str | None, metrics: dict[str, Any],
                       attributes: dict[str, Any]) -> None:
        if self._client is not None:
            try:
                self._client.record(flag, unit, metrics, variant=variant, attributes=attributes)  # type: ignore[arg-type]
            except RolloutError as exc:
                log.warning("rollout: outcome for %r refused: %s", flag, exc)
            return
        assert self._http is not None
        outcome = {"flag": flag, "unit_id": unit, "metrics": metrics, "attributes": attributes, "variant": variant}
        response = self._http.post("/v1/outcomes", json={"outcomes": [outcome]}, headers=self._headers)
        if response.status_code != 200:
            log.warning("rollout: outcome for %r not stored: HTTP %s %s", flag, response.status_code,
                        response.text[:200])
        elif response.json().get("rejected"):
            log.warning("rollout: outcome for %r refused: %s", flag, response.json()["errors"][0]["error"])


def _jsonable(value: Any) -> Any:
    """A context value as JSON: datetimes as RFC 3339 text (OpenFeature allows them; JSON has no such type)."""
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _scalars(metadata: Any) -> dict[str, bool | int | float | str]:
    """Flag metadata as OpenFeature types it (text keys, scalar values); anything else the service sent is dropped."""
    if not isinstance(metadata, dict):
        return {}
    return {k: v for k, v in metadata.items() if isinstance(k, str) and isinstance(v, (bool, int, float, str))}


def _variant_in_failure(body: dict[str, Any]) -> str | None:
    """The arm rollout counts the unit in, when a failure says (TARGETING_KEY_MISSING does)."""
    metadata = body.get("metadata")
    variant = metadata.get("variant") if isinstance(metadata, dict) else None
    return variant if isinstance(variant, str) and body.get("errorCode") == "TARGETING_KEY_MISSING" else None


def _typed(kind: type, answer: _Answer) -> tuple[Any, str | None]:
    """The value of the served variant as the asked-for type, or why it has none."""
    payload = answer.payload
    if kind is str:
        return (payload if isinstance(payload, str) else answer.variant), None
    if kind is bool:
        return (payload if isinstance(payload, bool) else answer.is_candidate), None
    if kind is int and isinstance(payload, int) and not isinstance(payload, bool):
        return payload, None
    if kind is float and isinstance(payload, (int, float)) and not isinstance(payload, bool):
        return float(payload), None
    if kind is object and isinstance(payload, Mapping):
        return payload, None
    return None, f"variant {answer.variant!r} has no {kind.__name__} payload (it has {payload!r})"
