"""The plan's three shapes (form, pasted YAML, registered name), the form's schema, and ramp windows in a plan."""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine

from rollout.app.plans import PlanModel, PlanName, PlanText, load_plan, plan_document, resolve_plan
from rollout.errors import InvalidPlanError, PlanNotFoundError
from rollout.store import plans as plan_store
from rollout.store.db import transaction

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plans" / "ticket-summarizer.yaml"
WINDOWED = {**yaml.safe_load(EXAMPLE.read_text()),
            "windows": [{"days": "mon-thu", "from": "09:00", "to": "16:00", "tz": "Europe/Berlin"}]}


def test_the_form_round_trips_to_the_same_plan() -> None:
    # Given the README's plan read into the typed form
    form = PlanModel.model_validate(WINDOWED)
    # When it is turned into the JSON document the database and Prefect keep, and read back
    document = plan_document(form)
    # Then it is plain JSON (durations as "10m", not ISO) and the same plan
    assert document["stages"][0]["min_duration"] == "10m" and document["windows"][0]["from"] == "09:00"
    assert load_plan(document) == load_plan(WINDOWED) == load_plan(form)


def test_a_plan_names_its_ramp_windows() -> None:
    (window,) = load_plan(WINDOWED).windows
    assert (window.days, window.start, window.end, window.tz) == (frozenset({0, 1, 2, 3}), time(9), time(16),
                                                                  "Europe/Berlin")


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


@pytest.mark.parametrize(("model", "path", "enum"), [
    ("StageModel", "kind", ["eval", "shadow", "ramp", "full"]),
    ("MetricModel", "kind", ["binary", "continuous"]),
    ("MetricModel", "better", ["lower", "higher"]),
    ("MetricModel", "scale", ["linear", "log"]),
    ("StageModel", "approval", ["required", "none"]),
    ("PlanModel", "on_inconclusive", ["hold", "rollback"]),
    ("PlanModel", "on_approval_timeout", ["hold", "rollback"]),
    ("PlanModel", "on_abort", ["rollback", "hold"]),
])
def test_the_form_schema_offers_dropdowns(model: str, path: str, enum: list[str]) -> None:
    # Given the JSON schema Prefect draws the form from
    schema = PlanModel.model_json_schema()
    node = schema if model == "PlanModel" else schema["$defs"][model]
    # Then each choice is an enum with a title (a dropdown), not free text
    field = _resolve(schema, node["properties"][path])
    assert field["enum"] == enum and field["title"]


def test_every_form_field_has_a_title_and_the_main_ones_examples() -> None:
    schema = PlanModel.model_json_schema()
    for name, definition in [("PlanModel", schema), *schema["$defs"].items()]:
        for field, spec in definition.get("properties", {}).items():
            assert spec.get("title"), f"{name}.{field} has no title"
    assert schema["properties"]["flag"]["examples"] == ["ticket-summarizer"]
    assert schema["properties"]["check_interval"]["type"] == "string"  # "30s", not an ISO-8601 duration


def test_pasted_yaml_and_the_form_give_the_same_plan() -> None:
    text = EXAMPLE.read_text()
    assert resolve_plan({"yaml": text})[0] == resolve_plan(PlanText(yaml=text))[0] == load_plan(EXAMPLE)
    assert resolve_plan(yaml.safe_load(text))[0] == load_plan(EXAMPLE)


@pytest.mark.parametrize(("source", "problem"), [
    ({"yaml": "  "}, "yaml: paste the plan's YAML text"),
    ({"yaml": "flag: [unclosed"}, "not valid YAML"),
    ("ticket-summarizer", "neither a plan's YAML text nor a plan file"),
    ({"name": ""}, "name: String should have at least 1 character"),
])
def test_a_source_that_is_no_plan_is_refused_in_words(source: Any, problem: str) -> None:
    with pytest.raises(InvalidPlanError) as info:
        resolve_plan(source)
    assert any(problem in p for p in info.value.problems), info.value.problems


def test_a_registered_plan_resolves_by_name_and_version(engine: Engine) -> None:
    # Given two versions of a plan registered under one name
    first = load_plan(EXAMPLE)
    second = {**WINDOWED, "check_interval": "1m"}
    with transaction(engine) as s:
        plan_store.register_plan(s, "summarizer", plan_document(EXAMPLE), flag=first.flag, actor="alice")
        plan_store.register_plan(s, "summarizer", second, flag=first.flag, actor="bob", comment="office hours")
    # When it is resolved by name, with and without a version
    latest, document = resolve_plan({"name": "summarizer"}, engine)
    pinned, _ = resolve_plan(PlanName(name="summarizer", version=1), engine)
    # Then the latest is the second, and version 1 is the first
    assert latest == load_plan(second) and document == second
    assert pinned == first
    with transaction(engine) as s:
        assert [(v.version, v.registered_by) for v in plan_store.plan_history(s, "summarizer")] == [(1, "alice"),
                                                                                                  (2, "bob")]


def test_an_unknown_name_says_which_plans_exist(engine: Engine) -> None:
    with transaction(engine) as s:
        plan_store.register_plan(s, "known", plan_document(EXAMPLE), flag="ticket-summarizer", actor="alice")
    with pytest.raises(PlanNotFoundError, match="registered plans: known"):
        resolve_plan({"name": "unknown"}, engine)
    with pytest.raises(PlanNotFoundError, match="version 9"):
        resolve_plan({"name": "known", "version": 9}, engine)


def test_the_canonical_document_fits_the_parameter_schema() -> None:
    # Given a plan written with numbers where the form has text (margin 0.005, a duration in seconds)
    import jsonschema

    from rollout.app.plans import canonical_document

    raw = {**yaml.safe_load(EXAMPLE.read_text()), "check_interval": 45}
    # When it is put in the shape the deployment's parameter takes
    document = canonical_document(raw)
    # Then the form's JSON schema accepts it (the Prefect server enforces that schema) and it is the same plan
    jsonschema.validate(document, PlanModel.model_json_schema())
    assert document["check_interval"] == "45s" and load_plan(document) == load_plan(raw)
