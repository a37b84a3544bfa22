"""Property-based, against OFREP's own OpenAPI document (open-feature/protocol, vendored in ./ofrep/).

Requests are generated from the protocol's document, not ours, and sent to
the service; every answer must be one the protocol allows: a documented
status, the documented content type and a body matching the documented
schema (positive cases), and never a server error (negative cases too).
Bounded and derandomized, on SQLite and PostgreSQL.

The document's known flaw, worked around here: `evaluationSuccess` puts the
value types in a `oneOf` whose last branch, `codeDefaultFlag`, is
`{"type": "object", "properties": {}}`, which every answer matches, and an
integer value matches both `integerFlag` and `floatFlag`. So every correct
success matches two or more branches and fails a strict `oneOf`, whatever a
server sends. We load the document with that one `oneOf` read as `anyOf`
(what it means: the value is one of these types, or absent), and check that
the rest of it holds as written.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.adapters.api.conftest import Service

DOCUMENT = Path(__file__).with_name("ofrep") / "openapi.yaml"
EXAMPLES = 25
POSITIVE_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
                   response_schema_conformance]


def ofrep_document() -> dict[str, Any]:
    doc = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    fixed = copy.deepcopy(doc)
    success = fixed["components"]["schemas"]["evaluationSuccess"]
    value_types = success["allOf"][1]
    assert list(value_types) == ["oneOf"], "the upstream document changed: re-check the work-around"
    success["allOf"][1] = {"anyOf": value_types["oneOf"]}
    return fixed


def test_the_documents_oneof_flaw_is_real() -> None:
    # Given the document as published, When a correct success answer is validated against evaluationSuccess
    import jsonschema

    doc = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    schemas = doc["components"]["schemas"]
    registry_doc = {"components": {"schemas": schemas}}
    answer = {"key": "f", "value": "on", "reason": "STATIC", "variant": "on"}
    validator = jsonschema.Draft202012Validator({**schemas["evaluationSuccess"], **registry_doc})
    strict = list(validator.iter_errors(answer))
    fixed = jsonschema.Draft202012Validator({**ofrep_document()["components"]["schemas"]["evaluationSuccess"],
                                             **registry_doc})
    # Then it fails as written (two oneOf branches match) and passes with the work-around
    assert strict and "valid under each of" in strict[0].message
    assert list(fixed.iter_errors(answer)) == []


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
def test_requests_from_the_ofrep_document_get_answers_it_allows(api: Service, mode: GenerationMode) -> None:
    # Given OFREP's document, the service, and a read token
    schema = schemathesis.openapi.from_dict(ofrep_document())
    schema.app = api.client.app
    auth = api.auth("read")
    checks = POSITIVE_CHECKS if mode is GenerationMode.POSITIVE else [not_a_server_error]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == {"POST /ofrep/v1/evaluate/flags/{key}", "POST /ofrep/v1/evaluate/flags"}
    statuses: dict[str, set[int]] = {}
    for operation in operations:
        fixed = {"key": "summarizer"} if "{key}" in operation.path and mode is GenerationMode.POSITIVE else {}

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode, headers=auth, path_parameters=fixed))
        def run(case) -> None:  # type: ignore[no-untyped-def]
            # When schemathesis sends what the document allows (or, negative, what it does not)
            response = case.call_and_validate(headers=auth, checks=checks)
            # Then every answer passes the protocol's checks
            statuses.setdefault(operation.label, set()).add(response.status_code)

        run()
    if mode is GenerationMode.POSITIVE:
        # the generated contexts reached evaluation: each operation answered a success
        assert all(200 in s for s in statuses.values()), statuses
