"""The error tree as exit codes: every class exits with its code and says one line (a plan's problems, one each)."""

from __future__ import annotations

import pytest

from rollout.adapters.cli import errors as cli_errors
import rollout.errors
from tests.error_cases import EXAMPLES

# class -> exit code: 2 the caller can fix it, 1 a fault the command line cannot fix
EXPECTED: dict[str, int] = {
    "RolloutError": 2,
    "InvalidInputError": 2,
    "InvalidOutcomeError": 2,
    "InvalidExposureError": 2,
    "PlanNotFoundError": 2,
    "ExposureExpiredError": 2,
    "InvalidFlagError": 2,
    "InvalidPlanError": 2,
    "NotFoundError": 2,
    "FlagNotFoundError": 2,
    "RolloutNotFoundError": 2,
    "TokenNotFoundError": 2,
    "ConflictError": 2,
    "FlagExistsError": 2,
    "TokenExistsError": 2,
    "VersionConflictError": 2,
    "RolloutActiveError": 2,
    "AccessError": 2,
    "AuthenticationError": 2,
    "PermissionDeniedError": 2,
    "RateLimitedError": 2,
    "StoreUnavailableError": 1,
    "ClientClosedError": 2,
}


def test_every_error_class_has_an_expected_code() -> None:
    assert set(EXPECTED) == set(EXAMPLES) == set(rollout.errors.__all__)
    assert all(type(e).__name__ == name for name, e in EXAMPLES.items())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_an_error_exits_with_its_code_and_one_line(name: str) -> None:
    exc = EXAMPLES[name]
    assert cli_errors.exit_code(exc) == EXPECTED[name]
    text = cli_errors.message(exc)
    if name == "InvalidPlanError":
        assert text.splitlines()[1:] == ["  - stage 1 has no name", "  - no metrics"]
    else:
        assert text and "\n" not in text


@pytest.mark.parametrize(("module", "extra"), [
    ("typer", "controller"), ("prefect", "controller"), ("numpy", "controller"), ("matplotlib", "controller"),
    ("uvicorn", "server"), ("orjson", "server"), ("openfeature", "openfeature"),
])
def test_a_missing_module_names_the_extra_to_install(module: str, extra: str) -> None:
    exc = ModuleNotFoundError(f"No module named '{module}'", name=f"{module}.sub")
    assert cli_errors.exit_code(exc) == 1
    assert cli_errors.message(exc).endswith(f"pip install 'rollout[{extra}]'")


def test_an_unmapped_failure_is_a_fault() -> None:
    assert cli_errors.exit_code(RuntimeError("bug")) == 1


def test_a_missing_rollout_is_named_as_a_rollout() -> None:
    # (It used to print "unknown flag 'rollout 7'".)
    assert cli_errors.message(EXAMPLES["RolloutNotFoundError"]) == "unknown rollout #7"
