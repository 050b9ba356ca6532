"""BreakerRegistry: defaults and overrides from settings, snapshots, health, metrics."""

from __future__ import annotations

import pytest

from corestone.errors import CircuitOpenError, InvalidInputError
from corestone.observability.health import CheckResult, HealthStatus
from corestone.observability.metrics import Metrics
from corestone.resilience import BreakerConfig, BreakerRegistry, State
from corestone.testing import ManualClock


def test_from_mapping_applies_defaults_then_per_name_overrides() -> None:
    """'default' options apply to all; a named entry overrides only its own fields."""
    registry = BreakerRegistry.from_mapping(
        {"default": {"wait_in_open_seconds": 10}, "smtp": {"failure_rate_threshold": 20}}
    )
    assert registry.get("database").config.wait_in_open_seconds == 10.0
    smtp = registry.get("smtp").config
    assert (smtp.wait_in_open_seconds, smtp.failure_rate_threshold) == (10.0, 20.0)
    assert registry.get("smtp") is registry.get("smtp")


@pytest.mark.parametrize(
    ("mapping", "field"),
    [
        ({"database": {"failure_rate_threshold": 150}}, "breakers.database.failure_rate_threshold"),
        ({"database": {"window_size": "big"}}, "breakers.database.window_size"),
        ({"default": {"windw_size": 3}}, "breakers.default.windw_size"),
        ({"database": 3}, "breakers.database"),
        ({"x": {"window_type": "sliding"}}, "breakers.x.window_type"),
        ({"x": {"automatic_transition": 1}}, "breakers.x.automatic_transition"),
    ],
)
def test_bad_settings_name_the_field(mapping: dict[str, object], field: str) -> None:
    """A wrong value raises InvalidInputError naming breakers.<name>.<option>."""
    with pytest.raises(InvalidInputError) as caught:
        BreakerRegistry.from_mapping(mapping)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert field in caught.value.message


def test_snapshot_and_as_json() -> None:
    """Every breaker appears, sorted, with its state, rates and counters."""
    clock = ManualClock()
    registry = BreakerRegistry(BreakerConfig(minimum_calls=2, window_size=4), clock=clock)
    db = registry.get("database")
    registry.get("cache")
    db.call(lambda: 1)
    with pytest.raises(ZeroDivisionError):
        db.call(lambda: 1 / 0)
    body = registry.as_json()
    names = [b["name"] for b in body["breakers"]]  # type: ignore[attr-defined]
    assert names == ["cache", "database"]
    snap = registry.snapshot()[1]
    assert snap.state is State.OPEN
    assert snap.failure_rate_percent == 50.0  # the window that opened it, kept until CLOSED
    assert snap.successful_calls == 1
    assert snap.failed_calls == 1
    assert snap.retry_after_seconds == 30.0


async def test_health_check_turns_an_open_breaker_into_warn() -> None:
    """A passing check becomes warn while the breaker is open; a rejection is warn too."""
    clock = ManualClock()
    registry = BreakerRegistry(clock=clock)

    async def passing() -> CheckResult:
        return CheckResult(HealthStatus.PASS, 1.0, "ms", output="pool ok")

    async def rejected() -> CheckResult:
        raise CircuitOpenError("database", retry_after=3.0)

    check = registry.health_check("database", passing)
    assert (await check()).status is HealthStatus.PASS  # type: ignore[union-attr]
    registry.get("database").transition_to(State.FORCED_OPEN)
    result = await check()
    assert result is not None
    assert result.status is HealthStatus.WARN
    assert "forced_open" in (result.output or "")
    rejected_result = await registry.health_check("database", rejected)()
    assert rejected_result is not None
    assert rejected_result.status is HealthStatus.WARN


def test_metrics_are_exported_at_scrape_time() -> None:
    """corestone_breaker_* families carry calls by outcome, state and rates per breaker."""
    metrics = Metrics()
    registry = BreakerRegistry(metrics=metrics)
    breaker = registry.get("database")
    breaker.call(lambda: 1)
    breaker.transition_to(State.FORCED_OPEN)
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: 1)
    text = metrics.render().decode()
    assert 'corestone_breaker_calls_total{name="database",outcome="successful"} 1.0' in text
    assert 'corestone_breaker_not_permitted_calls_total{name="database"} 1.0' in text
    assert 'corestone_breaker_state{name="database",state="forced_open"} 1.0' in text
    assert 'corestone_breaker_failure_ratio{name="database"}' in text


def test_on_create_hooks_see_existing_and_new_breakers() -> None:
    """A hook (how fleet mode attaches) runs for breakers made before and after it."""
    registry = BreakerRegistry()
    registry.get("a")
    seen: list[str] = []
    registry.on_create(lambda b: seen.append(b.name))
    registry.get("b")
    registry.get("a")
    assert seen == ["a", "b"]
