"""ApiSettings on pydantic-settings: ROLLOUT_API_* variables, ROLLOUT_DATABASE_URL, validation, round trip."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rollout.adapters.api.settings import ApiSettings


def test_settings_come_from_the_environment_with_our_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLOUT_DATABASE_URL", "sqlite:///x.db")
    monkeypatch.setenv("ROLLOUT_API_RATE_LIMIT", "250")
    monkeypatch.setenv("ROLLOUT_API_LISTEN", "false")
    monkeypatch.setenv("ROLLOUT_API_REFRESH_TIMEOUT", "1.5")
    settings = ApiSettings.from_env(max_batch=10, rate_burst=None)
    assert (settings.database_url, settings.rate_limit, settings.listen, settings.refresh_timeout,
            settings.max_batch, settings.rate_burst) == ("sqlite:///x.db", 250.0, False, 1.5, 10, None)


@pytest.mark.parametrize(("variable", "value"), [
    ("ROLLOUT_API_RATE_LIMIT", "fast"),
    ("ROLLOUT_API_RATE_LIMIT", "-1"),
    ("ROLLOUT_API_MAX_HEADERS", "0"),
    ("ROLLOUT_API_REFRESH_TIMEOUT", "0"),
])
def test_a_bad_value_fails_at_start_naming_the_setting(monkeypatch: pytest.MonkeyPatch, variable: str,
                                                       value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.removeprefix("ROLLOUT_API_").lower()):
        ApiSettings.from_env()


def test_to_env_rebuilds_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given settings as `rollout serve` passes them to its worker processes
    settings = ApiSettings(database_url="postgresql://h/db", rate_limit=5, listen=False, token_grace=30)
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    # Then a worker rebuilds exactly them
    assert ApiSettings.from_env() == settings


def test_settings_are_frozen_and_unknown_ones_refused() -> None:
    with pytest.raises(ValidationError):
        ApiSettings(no_such_setting=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        ApiSettings().rate_limit = 3  # type: ignore[misc]
