"""A real, local Prefect server for the end-to-end tests and `make demo`.

Imperative shell: this module starts and stops processes and touches files.
Nothing in the core imports it.

    with start_server(tmp_path / "prefect") as server:      # healthy when it returns
        with prefect_client_settings(server.api_url):        # this process -> server
            my_flow()
        subprocess.run([...], env={**os.environ, **server.env()})   # other processes

API
---
`start_server(home, *, port=None, database_url=None, timeout=180, template_dir=None,
server_env=None) -> PrefectServer`
    Runs `prefect server start --host 127.0.0.1 --port <port>` in its own process
    group with PREFECT_HOME=home, analytics off, the UI on and SQLite at
    `home/prefect.db`, logging to `home/server.log`, and returns once
    `GET {api_url}/health` answers. With `database_url` (PostgreSQL; any
    `postgresql://` or `postgresql+psycopg://` URL is turned into
    `postgresql+asyncpg://`) the server uses that database and migrates it itself.
`PrefectServer`
    `.api_url`, `.ui_url`, `.home`, `.log_path`, `.pid`, `.startup_seconds`,
    `.template_seconds` (time spent creating the template, 0 when it was cached),
    `.env()` (what a client process needs), `.stop()`, context manager.
`prefect_client_settings(api_url)`
    Context manager: points *this* process at the server through
    `prefect.settings.temporary_settings` and switches the flow-run heartbeat off.
`drain_workers(timeout=10) -> bool`
    Flushes this process's Prefect log and event workers.
`ensure_template(template_dir=None, *, timeout=180) -> Path`
    Returns the pre-migrated SQLite template, creating it once per machine and
    Prefect version.

Fast starts: the template database
----------------------------------
Migrating a new SQLite database is most of a cold start. The first start on a
machine therefore builds a template in a separate Python process (alembic
upgrade plus block-type registration) under `template_dir`, by default
`$XDG_CACHE_HOME/rollout` or `~/.cache/rollout`, as
`prefect-template-<prefect version>.db`. It is written to a temporary file and
renamed into place under an exclusive `flock`, so two sessions starting at once
build it once. Every later start copies it to `home/prefect.db` and starts the
server with `PREFECT_SERVER_DATABASE_MIGRATE_ON_START=false` and
`PREFECT_SERVER_REGISTER_BLOCKS_ON_START=false`, because the copy already holds
both. A template only fits the Prefect version (and installed block
collections) it was made with, hence the version in its name; delete the file
to rebuild it.

Measured here (prefect 3.9.1, Python 3.11, 2 cores, loopback; "healthy" means
`GET /api/health` answers 200; ranges are over several runs, pytest adds load):

    plain `prefect server start`, new SQLite database                 11.4 s
    building the template (own process: import 2.2 s,
        alembic upgrade 5.0 s, block registration 1.2 s)              7.6-8.8 s
    start_server(), no template yet (build + start)                   11.1-13.3 s
    start_server() from the cached template (the usual case)          3.3-3.5 s
        (4.9 s as the pytest session fixture)
    same copy but migrate + register blocks on start                  6.8 s
    PostgreSQL via asyncpg: new database / existing database          7.1 s / 4.1 s
    stop(): SIGTERM to the group until exit                           0.2-0.3 s
    flow run in-process, heartbeat off: first / later runs            0.5-0.8 s / 0.08-0.2 s
    the same with the default heartbeat (180)                         1.07-1.11 s every run
    resume_flow_run() -> paused flow returns, poll_interval=1         0.7-0.8 s

PREFECT_NOTES.md measured 24 s (new) and 9 s (existing) on a busier machine;
the point holds: the template removes the migration from every start but the
first.

Settings verified in the installed prefect 3.9.1 source
-------------------------------------------------------
* `PREFECT_FLOWS_HEARTBEAT_FREQUENCY` (`settings.flows.heartbeat_frequency`,
  Optional[int], default 180, ge=30; legacy alias
  PREFECT_RUNNER_HEARTBEAT_FREQUENCY). With a value the engine starts a
  heartbeat thread per flow run and joins it on exit with `timeout=2`; the
  thread sleeps in 1 s steps, so each run pays ~1 s. `None` skips the
  thread. An environment variable cannot say None, so it is set through
  `temporary_settings`.
* `PREFECT_SERVER_ANALYTICS_ENABLED=false` (server and UI) and `DO_NOT_TRACK=1`
  (SDK).
* `PREFECT_SERVER_UI_ENABLED=true` and `PREFECT_SERVER_UI_API_URL` for the
  server; `PREFECT_UI_URL` for clients, so that their logs link to this UI.
* `PREFECT_SERVER_EPHEMERAL_ENABLED` (legacy PREFECT_SERVER_ALLOW_EPHEMERAL_MODE):
  False by default in the settings model, but Prefect's default profile
  ("ephemeral") turns it on. Set to false, a Prefect call with no API URL
  raises `ValueError("No Prefect API URL provided...")` at once instead of
  starting a temporary server. `env()` and `prefect_client_settings` set it.
* `PREFECT_SERVER_DATABASE_CONNECTION_URL`,
  `PREFECT_SERVER_DATABASE_MIGRATE_ON_START`,
  `PREFECT_SERVER_REGISTER_BLOCKS_ON_START`.
* Draining: `prefect.logging.handlers.APILogWorker` and
  `prefect.events.worker.EventsWorker` are `QueueService`s; their classmethod
  `drain_all(timeout=None, at_exit=True)` stops every instance and waits for
  the queue, returning `concurrent.futures.wait(...)` from sync code (a
  coroutine inside an event loop). A drained worker is recreated on next use,
  so draining between tests is safe.

Traps met
---------
* Threads do not see `temporary_settings`: a new thread starts with an empty
  contextvars context and falls back to the settings read at `import prefect`
  (no API URL), so a Prefect call there would start the slow ephemeral server.
  Run such code with `contextvars.copy_context().run(...)` (as the resume
  test does) or enter `prefect_client_settings` inside the thread. Changing
  `os.environ` after `import prefect` does not help either; only
  PREFECT_SERVER_EPHEMERAL_ENABLED=false in the environment *before* the
  import turns that silent slow path into an immediate error. One combined
  run here (tests/flows + tests/domain, while rollout/adapters/prefect/flow.py was being
  edited) took 6 min 53 s and logged "Stopping temporary server"; it did not
  recur (the same run: 43 s).
* `PREFECT_LOGGING_LEVEL` in `temporary_settings` does not quieten the console:
  logging is configured at import. Set it in the environment before import.
* The heartbeat costs a full ~1 s per flow run (measured 1.07-1.11 s against
  0.08-0.1 s), not "up to": the engine joins the heartbeat thread, which
  sleeps in 1 s steps.
* Not draining before the server goes: "--- Error logging to API --- All
  connection attempts failed" on stderr, the run's last logs lost, and the
  interpreter took 4 s longer to exit here (PREFECT_NOTES saw ~80 s). The
  test fixture drains while the test settings are still in force.
* SQLite runs in WAL mode: a server stopped with SIGTERM leaves
  `prefect.db-wal` next to the database, so copy a database only after a
  clean close. The template is built by a process that disposes its engine,
  then checkpointed and switched to journal_mode=DELETE: one file.
* Block registration is memoised in `home/memo_store.toml` keyed by the
  connection URL, so a copied database in a fresh home re-registers on every
  start unless told not to (one of the two settings above; together they save
  3.4 s per start).
* `start_server` strips every `PREFECT_*` variable from the caller's
  environment before starting the server (so a stray PREFECT_API_URL or
  database URL cannot leak in); pass what you want in `server_env`, e.g.
  `PREFECT_SERVER_API_AUTH_STRING`.
* Pause for input: give the decision fields no defaults. Then
  `resume_flow_run(id)` with no input, with `{}` or with a value outside the
  schema raises `RuntimeError("Cannot resume this run: Reason: Validation
  failed... 'decision' is a required property")` and the run stays Paused.
* Custom final state: a flow that *returns* `Failed(name="RolledBack",
  message=...)` ends with type FAILED, name "RolledBack" and that message,
  on the server too. Called plainly (no `return_state=True`) it raises
  `prefect.exceptions.FailedRun` with the message. A flow that raises ends in
  a state named "Failed" with the exception in its message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HOST = "127.0.0.1"

#: Environment that keeps Prefect quiet and offline, for servers and clients alike.
OFFLINE_ENV: dict[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}

# Settings from the caller's environment that must not leak into a harness server.
_STRIPPED_ENV_PREFIXES = ("PREFECT_",)


class PrefectServerError(RuntimeError):
    """The Prefect server could not be started or did not become healthy."""


def prefect_version() -> str:
    """The installed Prefect version, read without importing prefect (~3 s)."""
    from importlib.metadata import version

    return version("prefect")


def default_template_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rollout"


def template_path(template_dir: Path | None = None) -> Path:
    directory = Path(template_dir) if template_dir is not None else default_template_dir()
    return directory / f"prefect-template-{prefect_version()}.db"


def free_port() -> int:
    """A TCP port on the loopback that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _prefect_executable() -> list[str]:
    """Run the CLI with this interpreter so the venv's prefect is the one started."""
    return [sys.executable, "-m", "prefect"]


def _base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_STRIPPED_ENV_PREFIXES)}
    env.update(OFFLINE_ENV)
    env["PREFECT_HOME"] = str(home)
    env["PREFECT_PROFILES_PATH"] = str(home / "profiles.toml")
    return env


_TEMPLATE_SCRIPT = r"""
import asyncio, sys, time
t0 = time.monotonic()
from prefect.server.database import provide_database_interface
from prefect.server.models.block_registration import run_block_auto_registration

async def main():
    db = provide_database_interface()
    await db.create_db()
    session = await db.session()
    async with session:
        await run_block_auto_registration(session=session)
    engine = await db.engine()
    await engine.dispose()

asyncio.run(main())
print(f"template built in {time.monotonic() - t0:.2f} s", file=sys.stderr)
"""


def ensure_template(template_dir: Path | None = None, *, timeout: float = 180) -> Path:
    """Return the pre-migrated SQLite template, building it if this machine has none."""
    target = template_path(template_dir)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.with_suffix(".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if target.exists():  # another process built it while we waited
                return target
            scratch = target.parent / f".{target.name}.{os.getpid()}.building"
            scratch.mkdir(parents=True, exist_ok=True)
            try:
                db_file = scratch / "prefect.db"
                env = _base_env(scratch)
                env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{db_file}"
                done = subprocess.run(
                    [sys.executable, "-c", _TEMPLATE_SCRIPT],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                )
                if done.returncode != 0:
                    raise PrefectServerError(
                        f"building the Prefect template database failed:\n{done.stderr[-4000:]}"
                    )
                # Fold any WAL into the main file so the template is one file.
                with contextlib.closing(sqlite3.connect(db_file)) as conn:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    conn.execute("PRAGMA journal_mode=DELETE")
                os.replace(db_file, target)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def _asyncpg_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix):]
    return url


@dataclass
class PrefectServer:
    """A running `prefect server start` process and how to reach it."""

    process: subprocess.Popen[bytes]
    home: Path
    port: int
    log_path: Path
    database_url: str
    startup_seconds: float = 0.0
    template_seconds: float = 0.0
    _log_file: Any = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api"

    @property
    def ui_url(self) -> str:
        return self.base_url

    def env(self) -> dict[str, str]:
        """Environment variables a client process needs to use this server.

        The heartbeat cannot be switched off through the environment (None has
        no spelling); a client that cares enters `prefect_client_settings`.
        """
        return {
            "PREFECT_API_URL": self.api_url,
            "PREFECT_UI_URL": self.ui_url,
            "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",
            **OFFLINE_ENV,
        }

    def is_running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15, *, drain: bool = True) -> None:
        """Flush this process's Prefect workers, then SIGTERM the group, then SIGKILL."""
        if drain and "prefect" in sys.modules:
            drain_workers()
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        else:
            _signal_group(self.process.pid, signal.SIGKILL)  # stray children, if any
        if self._log_file is not None and not self._log_file.closed:
            self._log_file.close()

    def __enter__(self) -> PrefectServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the server is the leader of its own group
    except (ProcessLookupError, PermissionError):
        pass


def _wait_healthy(server: PrefectServer, deadline: float) -> None:
    with httpx.Client(timeout=2.0, trust_env=False) as http:
        while True:
            if not server.is_running():
                raise PrefectServerError(
                    f"prefect server exited with code {server.process.returncode}; "
                    f"log {server.log_path}:\n{server.log_tail()}"
                )
            try:
                if http.get(f"{server.api_url}/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise PrefectServerError(
                    f"prefect server not healthy at {server.api_url} in time; "
                    f"log {server.log_path}:\n{server.log_tail()}"
                )
            time.sleep(0.1)


def start_server(
    home: Path,
    *,
    port: int | None = None,
    database_url: str | None = None,
    timeout: float = 180,
    template_dir: Path | None = None,
    server_env: Mapping[str, str] | None = None,
) -> PrefectServer:
    """Start a local Prefect server under `home` and return it once it is healthy.

    SQLite (the default) starts from a copy of the cached template database;
    `database_url` (PostgreSQL) is migrated by the server on start. The caller
    owns the result: call `.stop()` or use it as a context manager.
    """
    t0 = time.monotonic()
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = _base_env(home)
    env["PREFECT_SERVER_UI_ENABLED"] = "true"

    template_seconds = 0.0
    if database_url is None:
        db_file = home / "prefect.db"
        database_url = f"sqlite+aiosqlite:///{db_file}"
        if not db_file.exists():
            t_tpl = time.monotonic()
            template = ensure_template(template_dir, timeout=timeout)
            template_seconds = time.monotonic() - t_tpl
            shutil.copyfile(template, db_file)
            env["PREFECT_SERVER_DATABASE_MIGRATE_ON_START"] = "false"
            env["PREFECT_SERVER_REGISTER_BLOCKS_ON_START"] = "false"
    else:
        database_url = _asyncpg_url(database_url)
    env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    if server_env:
        env.update(server_env)

    attempts = 1 if port is not None else 3
    deadline = time.monotonic() + timeout
    last_error: PrefectServerError | None = None
    for attempt in range(attempts):
        chosen = port if port is not None else free_port()
        env["PREFECT_SERVER_UI_API_URL"] = f"http://{HOST}:{chosen}/api"
        log_path = home / ("server.log" if attempt == 0 else f"server.{attempt}.log")
        log_file = open(log_path, "wb")
        process = subprocess.Popen(
            [*_prefect_executable(), "server", "start", "--host", HOST, "--port", str(chosen)],
            env=env,
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() signals the whole group
        )
        server = PrefectServer(
            process=process,
            home=home,
            port=chosen,
            log_path=log_path,
            database_url=database_url,
            template_seconds=template_seconds,
            _log_file=log_file,
        )
        try:
            _wait_healthy(server, deadline)
        except PrefectServerError as error:
            server.stop(timeout=5, drain=False)
            last_error = error
            # A port taken between free_port() and bind is worth another try.
            if "already in use" in server.log_tail() and time.monotonic() < deadline:
                continue
            raise
        server.startup_seconds = time.monotonic() - t0
        return server
    assert last_error is not None
    raise last_error


def drain_workers(timeout: float = 10) -> bool:
    """Flush this process's Prefect log and event workers; True if both finished in time.

    Without this a process that ran flows can hang for ~80 s at exit, or lose
    its last logs and events, when the server goes away first.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    finished = True
    for worker in (APILogWorker, EventsWorker):
        _, not_done = worker.drain_all(timeout=timeout)  # sync call: (done, not_done)
        finished = finished and not not_done
    return finished


@contextlib.contextmanager
def prefect_client_settings(api_url: str) -> Iterator[None]:
    """Point this process (this thread's context) at `api_url` for flows that run fast.

    Sets PREFECT_API_URL, PREFECT_UI_URL and PREFECT_FLOWS_HEARTBEAT_FREQUENCY=None
    (saves up to ~1 s per flow run). Threads started inside need
    `contextvars.copy_context()` to see it. Console log level is not settable
    here (see the module's traps).
    """
    import prefect.settings as ps

    updates: dict[Any, Any] = {
        ps.PREFECT_API_URL: api_url,
        ps.PREFECT_UI_URL: api_url.removesuffix("/api"),
        ps.PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
        ps.PREFECT_SERVER_ANALYTICS_ENABLED: False,
        # Never fall back to the slow temporary server: fail at once instead.
        ps.PREFECT_SERVER_EPHEMERAL_ENABLED: False,
    }
    with ps.temporary_settings(updates=updates):
        yield
