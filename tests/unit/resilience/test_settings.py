"""Breaker settings: CORESTONE_BREAKERS validated by the registry, fleet needs Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from corestone import ConfigurationError, Infrastructure, Settings, load_settings
from corestone.resilience import BreakerRegistry


def test_bad_breaker_option_names_the_variable_and_field(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong option stops start-up with CORESTONE_BREAKERS and breakers.<name>.<field>."""
    monkeypatch.setenv("CORESTONE_BREAKERS", '{"database": {"minimum_calls": 0}}')
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "CORESTONE_BREAKERS" in caught.value.message
    assert "breakers.database.minimum_calls" in caught.value.message


def test_fleet_mode_needs_redis() -> None:
    """breaker_fleet without redis_url is refused."""
    with pytest.raises(ConfigurationError, match="CORESTONE_REDIS_URL"):
        load_settings(breaker_fleet=True)


def test_infrastructure_builds_the_registry_from_settings(tmp_path: Path) -> None:
    """infra.breakers has the overrides, is registered as a service, guards the database."""
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        breakers={"default": {"wait_in_open_seconds": 7}, "database": {"minimum_calls": 3}},
    )
    infra = Infrastructure(settings)
    assert isinstance(infra.breakers, BreakerRegistry)
    assert infra.breakers.get("database").config.minimum_calls == 3
    assert infra.breakers.get("database").config.wait_in_open_seconds == 7.0
    assert infra.db.breakers is infra.breakers
    assert infra.fleet is None
    assert "corestone_breaker_state" in infra.metrics.render().decode()
