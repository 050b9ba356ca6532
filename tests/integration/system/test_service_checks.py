"""Every configured service has a readiness check: database, Redis, broker, each provider."""

from __future__ import annotations

from pathlib import Path

from corestone import Infrastructure, Settings
from corestone.email import ProviderRoute, add_email
from corestone.email.providers.memory import MemoryProvider
from corestone.resilience.breaker import State
from tests.integration.conftest import Board


async def test_every_configured_service_has_a_check(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    """Readiness names the database, Redis, the broker, email, each provider and the system."""
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        broker_url=redis_url,
        system_checks=["memory", "cpu", "disk", "fds", "event-loop"],
    )
    infra = Infrastructure(settings)
    routes = [
        ProviderRoute(MemoryProvider(name="primary")),
        ProviderRoute(MemoryProvider(name="backup")),
    ]
    add_email(infra, routes, run_sender=False)
    async with infra:
        report = (await infra.health.ready()).as_json()
        checks = report["checks"]
        assert {
            "database:responseTime",
            "cache:responseTime",
            "broker:responseTime",
            "email:responseTime",
            "email.primary:circuit",
            "email.backup:circuit",
            "memory:utilization",
            "cpu:utilization",
            "disk:free",
            "fds:utilization",
            "event-loop:lag",
        } <= set(checks)
        assert checks["cache:responseTime"][0]["status"] == "pass"  # Redis answered the ping
        assert checks["email.backup:circuit"][0]["observedValue"] == "closed"


async def test_an_open_provider_breaker_warns(tmp_path: Path) -> None:
    """A provider whose breaker is open shows as warn, never failing readiness."""
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/app.db", health_cache_seconds=0
    )
    infra = Infrastructure(settings)
    add_email(infra, [ProviderRoute(MemoryProvider(name="primary"))], run_sender=False)
    async with infra:
        infra.breakers.get("email.primary").transition_to(State.OPEN)
        report = await infra.health.ready()
        entry = report.checks["email.primary:circuit"][0]
        assert entry["status"] == "warn"
        assert "open" in entry["output"]
        assert report.http_status == 200


async def test_taskboard_readiness_shows_the_system_checks(board: Board) -> None:
    """taskboard's /health/ready carries the system checks the settings name, with readings."""
    response = await board.client.get("/health/ready")
    assert response.status_code == 200
    checks = response.json()["checks"]
    assert board.infra.settings.system_checks == ["memory", "disk", "fds"]  # tests/conftest.py
    for key in ("memory:utilization", "disk:free", "fds:utilization"):
        assert checks[key][0]["componentType"] == "system"
        assert checks[key][0]["observedUnit"] == "ratio"
    assert "cpu:utilization" not in checks
