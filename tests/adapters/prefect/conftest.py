"""One real Prefect server for the whole test session.

`prefect_server` starts `prefect server start` on a free loopback port with its
PREFECT_HOME in a session tmp dir, points this test process at it through
`prefect.settings.temporary_settings` (API URL, heartbeat off), yields the
`PrefectServer`, and at the end drains the log/event workers and stops it.

Where the template database lives: in pytest's own cache,
`.pytest_cache/d/prefect-template/`. It survives between sessions, so only the
first `make test` on a checkout pays the ~9 s migration; it stays inside the
repo (nothing written to the user's home by a test run); and `make clean` or
`pytest --cache-clear` removes it. ROLLOUT_PREFECT_TEMPLATE_DIR overrides the
place (CI can point it at a cached directory). With the cache plugin disabled
(`-p no:cacheprovider`) it falls back to a session tmp dir, i.e. a cold start.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollout.testing.prefect_server import (
    PrefectServer,
    drain_workers,
    prefect_client_settings,
    start_server,
)


def _template_dir(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    override = os.environ.get("ROLLOUT_PREFECT_TEMPLATE_DIR")
    if override:
        return Path(override)
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("prefect-template"))
    return tmp_path_factory.mktemp("prefect-template")


@pytest.fixture(scope="session")
def prefect_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrefectServer]:
    home = tmp_path_factory.mktemp("prefect-home")
    server = start_server(home, template_dir=_template_dir(request.config, tmp_path_factory))
    try:
        with prefect_client_settings(server.api_url):
            try:
                yield server
            finally:
                # Flush while the workers still see the server's settings;
                # otherwise the last logs/events are lost or exit hangs ~80 s.
                drain_workers()
    finally:
        server.stop()
