"""Stock OpenFeature OFREP clients, none written here, against a real `rollout serve` on a loopback port.

- Python: openfeature-sdk with `openfeature-provider-ofrep` (the test extra).
- Node: `@openfeature/server-sdk` + `@openfeature/ofrep-provider`, and `@openfeature/web-sdk` +
  `@openfeature/ofrep-web-provider`, from the npm registry (tests/node, pinned by its package-lock.json;
  `.ci/run` runs `npm ci` there). The web provider runs in Node 20, which has fetch.

Every golden case, the error cases included, must come out of every client as
`ofrep_expected` says: the same value, variant, reason and error code.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from openfeature import api as openfeature
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext

from rollout.store.db import make_engine
from tests.adapters.api.conftest import make_tokens, module_database, seed, start_server, stop_server
from tests.conftest import BACKENDS
from tests.spec import CASES
from tests.spec.test_assignment_spec_ofrep import CODE_DEFAULT, ofrep_expected

pytestmark = pytest.mark.slow

NODE_DIR = Path(__file__).resolve().parents[2] / "node"
APP_ORIGIN = "http://app.example.test"


@dataclass
class Served:
    base_url: str
    tokens: dict[str, str]


@pytest.fixture(scope="module", params=BACKENDS)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One real service per backend for the module: seeded with the spec's flags, CORS open to one origin."""
    url = module_database(request, tmp_path_factory, "ofrep")
    engine = make_engine(url)
    seed(engine)
    tokens = make_tokens(engine)
    engine.dispose()
    server = start_server(url, "--rate-limit", "0", "--cors-origin", APP_ORIGIN)
    try:
        yield Served(server.base_url, tokens)
    finally:
        stop_server(server)


def observed(value: Any, variant: Any, reason: Any, error_code: Any, metadata: dict[str, Any]) -> dict[str, Any]:
    got = {"value": value, "variant": variant, "reason": str(getattr(reason, "value", reason)),
           "errorCode": getattr(error_code, "value", error_code)}
    if got["errorCode"] is None:
        got.update(stratum=metadata.get("stratum"), inShadow=metadata.get("inShadow"))
    return got


def mismatches(results: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    by_name = {c["name"]: c for c in CASES}
    return [(r["name"], r["got"], ofrep_expected(by_name[r["name"]]))
            for r in results if r["got"] != ofrep_expected(by_name[r["name"]])]


def test_the_python_ofrep_provider_resolves_every_golden_case(served: Served) -> None:
    # Given the stock Python provider, configured as docs/http.md says (base URL without a trailing slash)
    token = served.tokens["read"]
    openfeature.set_provider_and_wait(OFREPProvider(served.base_url,
                                           headers_factory=lambda: {"Authorization": f"Bearer {token}"}))
    client = openfeature.get_client()
    results = []
    try:
        # When every case is asked through OpenFeature's client
        for case in CASES:
            unit = case["unit_id"]
            ctx = EvaluationContext(None if unit is None else str(unit), dict(case["attributes"] or {}))
            d = client.get_string_details(case["flag"], case.get("default") or CODE_DEFAULT, ctx)
            results.append({"name": case["name"],
                            "got": observed(d.value, d.variant, d.reason, d.error_code, d.flag_metadata)})
    finally:
        openfeature.shutdown()
    # Then all 78 come out as the spec says, error codes included
    assert len(results) == len(CASES) == 78
    assert mismatches(results) == []


def _node_clients() -> None:
    """The pinned Node clients (package-lock.json), installed with `npm ci` on a fresh clone (.ci/run does too)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("Node 20 and npm are needed for the stock Node OFREP clients")
    if not (NODE_DIR / "node_modules").is_dir():
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, f"npm ci in tests/node failed: {done.stderr[-2000:]}"


def run_node(mode: str, served: Served, tmp_path: Path) -> list[dict[str, Any]]:
    _node_clients()
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps(CASES), encoding="utf-8")
    done = subprocess.run(["node", "resolve.mjs", mode, served.base_url, served.tokens["read"], str(cases)],
                          cwd=NODE_DIR, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    return [{"name": r["name"], "got": observed(r["value"], r["variant"], r["reason"], r["errorCode"],
                                                 r["flagMetadata"])} for r in rows]


@pytest.mark.parametrize("mode", ["server", "web"])
def test_the_node_ofrep_providers_resolve_every_golden_case(served: Served, mode: str, tmp_path: Path) -> None:
    # Given the stock Node server provider (one request per flag) or web provider (bulk, static context)
    # When the Node script asks every case through it
    results = run_node(mode, served, tmp_path)
    # Then all 78 come out exactly as through the Python client and as the spec says
    assert len(results) == 78
    assert mismatches(results) == []


def test_a_browser_preflight_from_the_allowed_origin_is_answered(served: Served) -> None:
    # Given a service started with --cors-origin, When a browser preflights the bulk evaluation
    with httpx.Client(base_url=served.base_url, timeout=10) as http:
        pre = http.options("/ofrep/v1/evaluate/flags", headers={
            "Origin": APP_ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,if-none-match"})
        other = http.options("/ofrep/v1/evaluate/flags", headers={
            "Origin": "http://elsewhere.test", "Access-Control-Request-Method": "POST"})
        real = http.post("/ofrep/v1/evaluate/flags", json={"context": {"targetingKey": "u"}},
                         headers={"Origin": APP_ORIGIN, "Authorization": f"Bearer {served.tokens['read']}"})
    # Then the allowed origin may send the token and read the ETag; another origin is refused
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "authorization" in pre.headers["access-control-allow-headers"].lower()
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    assert real.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "etag" in real.headers["access-control-expose-headers"].lower()
