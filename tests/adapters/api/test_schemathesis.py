"""Property-based: requests generated from the service's own OpenAPI document never get a server error.

Bounded (a fixed number of examples per operation, derandomized so a run is
repeatable), on SQLite and PostgreSQL. Positive cases must also get answers
that match the document (status codes, content types, bodies); negative
cases (wrong types, missing fields, out-of-range values) must be refused
with a 4xx, never a 500.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.adapters.api.conftest import Service
from tests.adapters.api.test_rollout_endpoints import waiting_rollout

EXAMPLES = 25

POSITIVE_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
                   response_schema_conformance]
NEGATIVE_CHECKS = [not_a_server_error]
# Succeeds only with a signed exposure token, which no generator can make (tests/adapters/api/test_exposure_tokens.py does).
UNFORGEABLE = {"POST /v1/feedback"}


def operations(api: Service):  # type: ignore[no-untyped-def]
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app)
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
def test_no_generated_request_gets_a_server_error(api: Service, mode: GenerationMode) -> None:
    # Given the service's own OpenAPI document and an admin token (so every route is reachable)
    auth = api.auth("admin")
    checks = POSITIVE_CHECKS if mode is GenerationMode.POSITIVE else NEGATIVE_CHECKS
    # A rollout waiting at its approval gate, so approvals have something to answer.
    waiting_rollout(api)
    ops = operations(api)
    assert len(ops) >= 8
    nothing_to_break = []
    answered: dict[str, set[int]] = {}
    for operation in ops:
        # When schemathesis generates requests for the operation
        # Positive cases name a real flag in the path, so they reach past the lookup; negative ones go wild.
        known = {name: "summarizer" for name in ("flag", "key") if "{" + name + "}" in operation.path}
        if operation.path.endswith("/approve"):
            known = {"flag": "gated"}
        fixed = known if mode is GenerationMode.POSITIVE else {}

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode, headers=auth, path_parameters=fixed))
        def run(case) -> None:  # type: ignore[no-untyped-def]
            # Then every answer passes the checks (above all: no 5xx)
            response = case.call_and_validate(headers=auth, checks=checks)
            answered.setdefault(operation.label, set()).add(response.status_code)

        try:
            run()
        except Unsatisfiable:
            # An operation with no parameters and no body has no invalid form to generate.
            nothing_to_break.append(operation.label)
    assert set(nothing_to_break) <= {"GET /healthz", "GET /metrics"}, nothing_to_break
    if mode is GenerationMode.POSITIVE:
        # The token got the requests through: every operation answered a success at least once,
        # so the run reached the handlers, not just the auth check.
        missed = {label for label, statuses in answered.items() if not statuses & {200, 304}} - UNFORGEABLE
        assert missed == set(), answered
