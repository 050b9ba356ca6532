"""The composition root: ordered start and stop, undo on failure, readiness, health checks."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from corestone.config import Settings
from corestone.container import Services
from corestone.db.database import Database
from corestone.errors import ShutdownError, StartupError
from corestone.observability.health import CheckResult, HealthRegistry, HealthStatus
from corestone.observability.metrics import Metrics
from corestone.runtime import Component, Infrastructure


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove any CORESTONE_* variable of the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("CORESTONE_"):
            monkeypatch.delenv(name)


class FakeComponent:
    """A component that records its lifecycle calls into a shared list."""

    def __init__(
        self,
        name: str,
        calls: list[str],
        *,
        start_error: BaseException | None = None,
        stop_error: BaseException | None = None,
        hang_on_stop: bool = False,
    ) -> None:
        self.name = name
        self.calls = calls
        self.start_error = start_error
        self.stop_error = stop_error
        self.hang_on_stop = hang_on_stop

    async def start(self) -> None:
        self.calls.append(f"start {self.name}")
        if self.start_error is not None:
            raise self.start_error

    async def aclose(self) -> None:
        self.calls.append(f"stop {self.name}")
        if self.hang_on_stop:
            await asyncio.Event().wait()
        if self.stop_error is not None:
            raise self.stop_error


class FakeDatabase(FakeComponent):
    """Stands in for Database: a component with a ping."""

    def __init__(self, calls: list[str], *, healthy: bool = True) -> None:
        super().__init__("database", calls)
        self.healthy = healthy
        self.monitor = None  # no query monitor

    async def ping(self) -> CheckResult:
        if not self.healthy:
            raise ConnectionError("database gone")
        return CheckResult(observed_value=1.0, observed_unit="ms")


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    # The system checks and their loop-lag probe have tests of their own (tests/unit/system).
    overrides.setdefault("system_health", False)
    return Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db", **overrides)  # type: ignore[arg-type]


def _infra(
    tmp_path: Path, calls: list[str], *, healthy: bool = True, **settings: object
) -> Infrastructure:
    return Infrastructure(
        _settings(tmp_path, **settings),
        database=FakeDatabase(calls, healthy=healthy),  # type: ignore[arg-type]
    )


async def _noop_check() -> None:
    return None


def test_fake_components_satisfy_the_protocol() -> None:
    """Anything with name, start and aclose is a Component."""
    assert isinstance(FakeComponent("x", []), Component)


async def test_start_in_registration_order_and_stop_in_reverse(tmp_path: Path) -> None:
    """Components start in the order they were added and stop in the opposite order."""
    calls: list[str] = []
    infra = _infra(tmp_path, calls)
    for name in ("search", "events", "email"):
        infra.add(FakeComponent(name, calls))

    async with infra:
        assert infra.running
        assert calls == ["start database", "start search", "start events", "start email"]
        calls.clear()

    assert not infra.running
    assert calls == ["stop email", "stop events", "stop search", "stop database"]


async def test_starting_twice_starts_nothing_again(tmp_path: Path) -> None:
    """start() on a running infrastructure is a no-op."""
    calls: list[str] = []
    infra = _infra(tmp_path, calls)

    async with infra:
        await infra.start()

    assert calls == ["start database", "stop database"]


async def test_a_failing_start_stops_the_started_ones_in_reverse(tmp_path: Path) -> None:
    """When a component cannot start, earlier ones stop in reverse and later ones never start."""
    calls: list[str] = []
    infra = _infra(tmp_path, calls)
    cause = OSError("connection refused")
    infra.add(FakeComponent("search", calls))
    infra.add(FakeComponent("events", calls))
    infra.add(FakeComponent("broker", calls, start_error=cause))
    infra.add(FakeComponent("email", calls))

    with pytest.raises(StartupError) as caught:
        async with infra:
            pytest.fail("the block must not run")

    assert caught.value.component == "broker"
    assert "broker" in caught.value.message
    assert "connection refused" in caught.value.message
    assert caught.value.__cause__ is cause
    assert calls == [
        "start database",
        "start search",
        "start events",
        "start broker",
        "stop events",
        "stop search",
        "stop database",
    ]
    assert not infra.running
    assert infra.health.names == []


async def test_a_failing_start_still_raises_startup_error_when_undo_fails(tmp_path: Path) -> None:
    """A component that also fails to stop during the undo does not hide the start failure."""
    calls: list[str] = []
    infra = _infra(tmp_path, calls)
    infra.add(FakeComponent("search", calls, stop_error=RuntimeError("stuck")))
    infra.add(FakeComponent("broker", calls, start_error=OSError("refused")))

    with pytest.raises(StartupError, match="broker"):
        await infra.start()

    assert calls[-2:] == ["stop search", "stop database"]


async def test_cancellation_during_start_stops_the_started_ones(tmp_path: Path) -> None:
    """A start cancelled midway (SIGTERM during boot) still stops what had started."""
    calls: list[str] = []
    infra = _infra(tmp_path, calls)
    entered = asyncio.Event()

    class SlowToStart(FakeComponent):
        async def start(self) -> None:
            await super().start()
            entered.set()
            await asyncio.Event().wait()

    infra.add(FakeComponent("search", calls))
    infra.add(SlowToStart("broker", calls))

    starting = asyncio.create_task(infra.start())
    await entered.wait()
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting

    assert calls == [
        "start database",
        "start search",
        "start broker",
        "stop search",
        "stop database",
    ]
    assert not infra.running


async def test_a_failing_stop_does_not_prevent_the_others(tmp_path: Path) -> None:
    """Every component is stopped even when one fails, and ShutdownError lists the failure."""
    calls: list[str] = []
    infra = _infra(tmp_path, calls)
    boom = RuntimeError("flush failed")
    infra.add(FakeComponent("search", calls))
    infra.add(FakeComponent("events", calls, stop_error=boom))
    infra.add(FakeComponent("email", calls))
    await infra.start()
    calls.clear()

    with pytest.raises(ShutdownError) as caught:
        await infra.aclose()

    assert calls == ["stop email", "stop events", "stop search", "stop database"]
    assert caught.value.failures == {"events": boom}
    assert "events" in caught.value.message
    assert not infra.running


async def test_a_hanging_stop_times_out_and_the_others_still_stop(tmp_path: Path) -> None:
    """A stop that never returns is cut off at the per-component timeout and reported."""
    calls: list[str] = []
    infra = _infra(tmp_path, calls, component_stop_timeout_seconds=0.01)
    infra.add(FakeComponent("search", calls, stop_error=RuntimeError("flush failed")))
    infra.add(FakeComponent("events", calls, hang_on_stop=True))
    infra.add(FakeComponent("email", calls))
    await infra.start()
    calls.clear()

    with pytest.raises(ShutdownError) as caught:
        await infra.aclose()

    assert calls == ["stop email", "stop events", "stop search", "stop database"]
    assert set(caught.value.failures) == {"events", "search"}
    assert isinstance(caught.value.failures["events"], TimeoutError)
    assert isinstance(caught.value.failures["search"], RuntimeError)


async def test_a_failing_stop_on_leaving_the_block_raises_shutdown_error(tmp_path: Path) -> None:
    """Leaving the async with block reports stop failures as ShutdownError."""
    calls: list[str] = []
    infra = _infra(tmp_path, calls)
    infra.add(FakeComponent("search", calls, stop_error=RuntimeError("stuck")))

    with pytest.raises(ShutdownError, match="search"):
        async with infra:
            pass


async def test_readiness_fails_as_soon_as_aclose_begins(tmp_path: Path) -> None:
    """While components are stopping, readiness is already fail so no new work arrives."""
    calls: list[str] = []
    infra = _infra(tmp_path, calls)
    seen: list[HealthStatus] = []

    class Observer(FakeComponent):
        async def aclose(self) -> None:
            seen.append((await infra.health.ready()).status)
            await super().aclose()

    infra.add(Observer("observer", calls), check=_noop_check)

    async with infra:
        assert (await infra.health.ready()).status is HealthStatus.PASS

    assert seen == [HealthStatus.FAIL]
    assert (await infra.health.ready()).status is HealthStatus.FAIL


async def test_health_checks_are_registered_per_component_once_started(tmp_path: Path) -> None:
    """Each component's check joins readiness when it starts and leaves when it stops."""
    calls: list[str] = []
    infra = _infra(tmp_path, calls)
    infra.add(FakeComponent("search", calls), check=_noop_check, critical=False)
    infra.add(FakeComponent("email", calls))

    assert infra.health.names == []
    async with infra:
        assert infra.health.names == ["cache", "database", "search"]
        document = (await infra.health.ready()).as_json()
        assert document["checks"]["database:responseTime"][0]["componentType"] == "datastore"
        assert document["checks"]["search:responseTime"][0]["componentType"] == "component"

    assert infra.health.names == []


async def test_a_failing_non_critical_component_check_warns(tmp_path: Path) -> None:
    """A component added with critical=False only degrades readiness to warn."""
    calls: list[str] = []
    infra = _infra(tmp_path, calls)

    async def redis_down() -> None:
        raise ConnectionError("redis gone")

    infra.add(FakeComponent("search", calls), check=redis_down, critical=False)

    async with infra:
        report = await infra.health.ready()

    assert report.status is HealthStatus.WARN


async def test_a_failing_database_fails_readiness(tmp_path: Path) -> None:
    """The database is critical: its failing ping fails readiness."""
    infra = _infra(tmp_path, [], healthy=False)

    async with infra:
        report = await infra.health.ready()

    assert report.status is HealthStatus.FAIL
    assert "database gone" in report.checks["database:responseTime"][0]["output"]


async def test_adding_a_component_with_a_taken_name_is_refused(tmp_path: Path) -> None:
    """Two components may not share a name (health entries and failures are keyed by it)."""
    infra = _infra(tmp_path, [])

    with pytest.raises(ValueError, match="database"):
        infra.add(FakeComponent("database", []))


async def test_adding_after_start_is_refused(tmp_path: Path) -> None:
    """The component list is fixed once the infrastructure runs."""
    infra = _infra(tmp_path, [])

    async with infra:
        with pytest.raises(RuntimeError, match="before the infrastructure starts"):
            infra.add(FakeComponent("late", []))


async def test_transitions_are_measured(tmp_path: Path) -> None:
    """Start and stop durations are recorded per component in the runtime histogram."""
    infra = _infra(tmp_path, [])
    infra.add(FakeComponent("search", []))

    async with infra:
        pass

    families = {f.name: f for f in text_string_to_metric_families(infra.metrics.render().decode())}
    counts = {
        (s.labels["component"], s.labels["transition"]): s.value
        for s in families["corestone_runtime_component_transition_seconds"].samples
        if s.name.endswith("_count")
    }
    assert counts == {
        ("database", "start"): 1.0,
        ("cache", "start"): 1.0,
        ("search", "start"): 1.0,
        ("search", "stop"): 1.0,
        ("cache", "stop"): 1.0,
        ("database", "stop"): 1.0,
    }


async def test_core_services_are_registered(tmp_path: Path) -> None:
    """Settings, metrics, health, the database and the infrastructure resolve from a scope."""
    infra = _infra(tmp_path, [])

    async with infra, infra.services.scope() as scope:
        assert await scope.aget(Settings) is infra.settings
        assert await scope.aget(Metrics) is infra.metrics
        assert await scope.aget(HealthRegistry) is infra.health
        assert await scope.aget(Database) is infra.db
        assert await scope.aget(Infrastructure) is infra


async def test_given_parts_are_used(tmp_path: Path) -> None:
    """Metrics, health and services passed in replace the ones built from settings."""
    metrics, health, services = Metrics(), HealthRegistry(), Services()

    infra = Infrastructure(
        _settings(tmp_path),
        metrics=metrics,
        health=health,
        database=FakeDatabase([]),  # type: ignore[arg-type]
        services=services,
    )

    assert (infra.metrics, infra.health, infra.services) == (metrics, health, services)


def test_settings_come_from_the_environment_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without settings the infrastructure reads CORESTONE_* (and does no I/O yet)."""
    monkeypatch.setenv("CORESTONE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/env.db")

    infra = Infrastructure()

    assert infra.settings.database_url.endswith("env.db")
    assert not (tmp_path / "env.db").exists()


async def test_the_real_sqlite_database_starts_reports_and_stops(tmp_path: Path) -> None:
    """With a SQLite URL the built Database starts, passes its ready check and closes."""
    infra = Infrastructure(_settings(tmp_path))

    assert not (tmp_path / "x.db").exists()
    async with infra:
        report = await infra.health.ready()
        [entry] = report.checks["database:responseTime"]
        assert report.status is HealthStatus.PASS
        assert entry["componentType"] == "datastore"
        assert entry["observedUnit"] == "ms"

    assert (tmp_path / "x.db").exists()
    with pytest.raises(RuntimeError, match="not started"):
        _ = infra.db.engine


class CancellingComponent(FakeComponent):
    """A component whose aclose is the ``task.cancel(); await task`` pattern, unguarded."""

    async def start(self) -> None:
        await super().start()
        self.worker = asyncio.create_task(asyncio.Event().wait())

    async def aclose(self) -> None:
        self.calls.append(f"stop {self.name}")
        self.worker.cancel()
        await self.worker  # raises CancelledError out of aclose


class StubbornComponent(FakeComponent):
    """A component whose aclose hangs and swallows the cancellation meant to end it."""

    async def aclose(self) -> None:
        self.calls.append(f"stop {self.name}")
        self.released = asyncio.Event()
        while not self.released.is_set():
            try:
                await self.released.wait()
            except asyncio.CancelledError:
                self.calls.append(f"ignored cancel {self.name}")
                break
        await asyncio.Event().wait()


async def test_an_aclose_raising_cancelled_error_does_not_end_the_shutdown(
    tmp_path: Path,
) -> None:
    """A CancelledError out of one component's aclose is its failure: the rest still stop."""
    calls: list[str] = []
    infra = _infra(tmp_path, calls)
    infra.add(FakeComponent("search", calls))
    infra.add(CancellingComponent("events", calls))
    infra.add(FakeComponent("email", calls))
    await infra.start()
    calls.clear()

    with pytest.raises(ShutdownError) as caught:
        await infra.aclose()

    assert calls == ["stop email", "stop events", "stop search", "stop database"]
    assert set(caught.value.failures) == {"events"}
    assert isinstance(caught.value.failures["events"], asyncio.CancelledError)
    assert not infra.running


async def test_an_aclose_that_ignores_cancellation_is_abandoned_at_its_timeout(
    tmp_path: Path,
) -> None:
    """A stop that hangs and swallows its cancellation still cannot hold up the others."""
    calls: list[str] = []
    infra = _infra(tmp_path, calls, component_stop_timeout_seconds=0.01)
    infra.add(FakeComponent("search", calls))
    infra.add(StubbornComponent("events", calls))
    await infra.start()
    calls.clear()

    with pytest.raises(ShutdownError) as caught:
        await infra.aclose()

    assert calls[:2] == ["stop events", "ignored cancel events"]
    assert calls[2:] == ["stop search", "stop database"]
    assert isinstance(caught.value.failures["events"], TimeoutError)


async def test_cancelling_the_shutdown_still_stops_everything_then_propagates(
    tmp_path: Path,
) -> None:
    """A shutdown cancelled from outside runs every finalizer, then raises CancelledError."""
    calls: list[str] = []
    infra = _infra(tmp_path, calls)
    entered = asyncio.Event()
    release = asyncio.Event()

    class Slow(FakeComponent):
        async def aclose(self) -> None:
            self.calls.append(f"stop {self.name}")
            entered.set()
            await release.wait()

    infra.add(FakeComponent("search", calls))
    infra.add(Slow("events", calls))
    infra.add(FakeComponent("email", calls))
    await infra.start()
    calls.clear()

    shutdown = asyncio.create_task(infra.aclose())
    await entered.wait()
    shutdown.cancel()
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await shutdown

    assert calls == ["stop email", "stop events", "stop search", "stop database"]
    assert not infra.running


async def test_leaving_a_cancelled_block_stops_everything_and_stays_cancelled(
    tmp_path: Path,
) -> None:
    """Cancelling the task inside ``async with`` stops every component, even one that cancels."""
    calls: list[str] = []
    infra = _infra(tmp_path, calls)
    infra.add(FakeComponent("search", calls))
    infra.add(CancellingComponent("events", calls))
    inside = asyncio.Event()

    async def run() -> None:
        async with infra:
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(run())
    await inside.wait()
    calls.clear()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert calls == ["stop events", "stop search", "stop database"]


async def test_two_infrastructures_sharing_one_metrics_expose_each_family_once(
    tmp_path: Path,
) -> None:
    """With one Metrics shared, every family and every series appears once, with one value."""
    metrics = Metrics()
    first = Infrastructure(_settings(tmp_path / "a"), metrics=metrics)
    second = Infrastructure(_settings(tmp_path / "b"), metrics=metrics)
    first.breakers.get("payments")
    second.breakers.get("payments")
    second.breakers.get("search")

    text = metrics.render().decode()

    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types))
    series = [line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")]
    assert len(series) == len(set(series))
    states = {
        (sample.labels["name"], sample.labels["state"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "corestone_breaker_state"
        for sample in family.samples
    }
    for name in ("payments", "search"):
        assert sum(v for (n, _), v in states.items() if n == name) == 1.0
    assert any(family.startswith("corestone_cache_") for family in types)


async def test_an_aclose_that_is_not_a_coroutine_is_a_failure_not_the_end(tmp_path: Path) -> None:
    """A component whose aclose raises before returning an awaitable is reported; others stop."""
    calls: list[str] = []
    infra = _infra(tmp_path, calls)

    class Sync(FakeComponent):
        def aclose(self) -> None:  # type: ignore[override]
            self.calls.append(f"stop {self.name}")
            raise RuntimeError("sync close failed")

    infra.add(FakeComponent("search", calls))
    infra.add(Sync("legacy", calls))
    await infra.start()
    calls.clear()

    with pytest.raises(ShutdownError) as caught:
        await infra.aclose()

    assert calls == ["stop legacy", "stop search", "stop database"]
    assert isinstance(caught.value.failures["legacy"], RuntimeError)


class Unprintable(Exception):
    """An exception whose ``str()`` and ``repr()`` both raise."""

    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


async def test_a_start_raising_its_own_cancelled_error_is_a_startup_error(tmp_path: Path) -> None:
    """A CancelledError out of a component's own start (nobody cancelled us) is a StartupError."""
    calls: list[str] = []
    infra = _infra(tmp_path, calls)

    class Cancels(FakeComponent):
        async def start(self) -> None:
            await super().start()
            worker = asyncio.create_task(asyncio.Event().wait())
            await asyncio.sleep(0)
            worker.cancel()
            await worker

    infra.add(FakeComponent("search", calls))
    infra.add(Cancels("broker", calls))

    with pytest.raises(StartupError, match="broker"):
        await infra.start()

    assert calls[-2:] == ["stop search", "stop database"]
    assert not infra.running


async def test_a_start_failure_that_cannot_be_printed_still_undoes_the_start(
    tmp_path: Path,
) -> None:
    """A start failure whose str() raises is a StartupError and the started ones are stopped."""
    calls: list[str] = []
    infra = _infra(tmp_path, calls)
    infra.add(FakeComponent("search", calls))
    infra.add(FakeComponent("broker", calls, start_error=Unprintable()))

    with pytest.raises(StartupError):
        await infra.start()

    assert calls[-2:] == ["stop search", "stop database"]


async def test_a_stop_failure_that_cannot_be_printed_does_not_end_the_shutdown(
    tmp_path: Path,
) -> None:
    """A stop failure whose repr() raises is reported; the components after it still stop."""
    calls: list[str] = []
    infra = _infra(tmp_path, calls)
    infra.add(FakeComponent("search", calls))
    infra.add(FakeComponent("events", calls, stop_error=Unprintable()))
    await infra.start()
    calls.clear()

    with pytest.raises(ShutdownError) as caught:
        await infra.aclose()

    assert calls == ["stop events", "stop search", "stop database"]
    assert isinstance(caught.value.failures["events"], Unprintable)


def _misbehaving_close(how: str) -> Callable[[], Awaitable[None]]:
    """A registry close callback that cancels itself or hangs the first time, then returns."""
    calls = 0

    async def close() -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            return
        if how == "hangs":
            await asyncio.Event().wait()
        worker = asyncio.create_task(asyncio.Event().wait())
        await asyncio.sleep(0)
        worker.cancel()
        await worker

    return close


@pytest.mark.parametrize(
    ("how", "failure"), [("cancels", asyncio.CancelledError), ("hangs", TimeoutError)]
)
async def test_a_service_close_callback_that_cancels_or_hangs_is_a_reported_failure(
    tmp_path: Path, how: str, failure: type[BaseException]
) -> None:
    """The services' close callbacks are bounded like a component: a ShutdownError, not a hang."""
    calls: list[str] = []
    infra = _infra(tmp_path, calls, component_stop_timeout_seconds=0.01)
    callback = _misbehaving_close(how)
    infra.services.registry.register_value(Path, tmp_path, on_registry_close=callback)
    await infra.start()

    with pytest.raises(ShutdownError) as caught:
        async with asyncio.timeout(5):  # a guard: unfixed, a hanging callback never returns
            await infra.aclose()

    assert isinstance(caught.value.failures["services"], failure)
    assert not infra.running
    await infra.services.aclose()  # the cut-off callback, run again, ends: no pending cleanup
