"""The error tree as HTTP: every class answers with its status, a one-line JSON reason and the headers to act on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from rollout.adapters.api import ApiSettings, create_app
from rollout.adapters.api.errors import STATUS, status_of
from rollout.errors import RolloutError
import rollout.errors
from tests.error_cases import EXAMPLES

# class -> (status, header that must come with it)
EXPECTED: dict[str, tuple[int, str | None]] = {
    "RolloutError": (500, None),
    "InvalidInputError": (422, None),
    "InvalidOutcomeError": (422, None),
    "InvalidExposureError": (422, None),
    "PlanNotFoundError": (404, None),
    "ExposureExpiredError": (422, None),
    "InvalidFlagError": (422, None),
    "InvalidPlanError": (422, None),
    "NotFoundError": (404, None),
    "FlagNotFoundError": (404, None),
    "RolloutNotFoundError": (404, None),
    "TokenNotFoundError": (404, None),
    "ConflictError": (409, None),
    "FlagExistsError": (409, None),
    "TokenExistsError": (409, None),
    "VersionConflictError": (409, None),
    "RolloutActiveError": (409, None),
    "AccessError": (403, None),
    "AuthenticationError": (401, "www-authenticate"),
    "PermissionDeniedError": (403, None),
    "RateLimitedError": (429, "retry-after"),
    "StoreUnavailableError": (503, "retry-after"),
    "ClientClosedError": (500, None),   # an app's own misuse of its client: never a service answer
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    # The real app with one extra route that raises whatever error it is named: the handlers are the app's own.
    from rollout.store import migrate

    url = f"sqlite:///{tmp_path_factory.mktemp('errors') / 'rollout.db'}"
    migrate.upgrade(url)
    app = create_app(ApiSettings(database_url=url, listen=False, rate_limit=0))  # type: ignore[call-arg]

    @app.get("/test/raise/{name}")
    async def raise_named(name: str) -> None:
        raise EXAMPLES[name]

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_every_error_class_has_an_expected_status() -> None:
    assert set(EXPECTED) == set(EXAMPLES) == set(rollout.errors.__all__)
    assert all(type(e).__name__ == name for name, e in EXAMPLES.items())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_an_error_answers_with_its_status(client: TestClient, name: str) -> None:
    status, header = EXPECTED[name]
    # Given a route that raises the error, When it is called
    response = client.get(f"/test/raise/{name}")
    # Then the status is the table's, the body one line of JSON, and the header a client needs is there
    assert response.status_code == status == status_of(EXAMPLES[name])
    reason = response.json()["error"]
    assert reason and "\n" not in reason
    if header is not None:
        assert header in response.headers


def test_the_database_s_words_stay_inside() -> None:
    # A 503 says "retry", not the driver's message (host names, SQL)
    from rollout.adapters.api.errors import message_of

    assert message_of(EXAMPLES["StoreUnavailableError"]) == "the database is unavailable; retry"


def test_the_table_maps_only_the_tree() -> None:
    assert all(issubclass(cls, RolloutError) for cls in STATUS)
