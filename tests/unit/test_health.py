"""Health checks: aggregation, failures as results, concurrency, caching, health+json shape."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

import pytest

from corestone.observability.health import (
    CheckResult,
    HealthRegistry,
    HealthReport,
    HealthStatus,
)
from corestone.testing import ManualClock


def _counting(
    result: CheckResult | None = None,
) -> tuple[list[int], Callable[[], Awaitable[CheckResult | None]]]:
    calls: list[int] = []

    async def check() -> CheckResult | None:
        calls.append(1)
        return result

    return calls, check


async def _passing() -> None:
    return None


async def _failing() -> CheckResult:
    raise ConnectionError("refused")


def test_statuses_are_ordered_by_severity() -> None:
    """pass < warn < fail, and their values are the health+json words."""
    assert HealthStatus.PASS.severity < HealthStatus.WARN.severity < HealthStatus.FAIL.severity
    assert [s.value for s in HealthStatus] == ["pass", "warn", "fail"]


async def test_all_passing_checks_give_pass() -> None:
    """With every check passing, readiness is pass with HTTP 200."""
    health = HealthRegistry()
    health.register("database", _passing)
    health.register("cache", _passing, critical=False)

    report = await health.ready()

    assert report.status is HealthStatus.PASS
    assert report.http_status == 200


async def test_no_checks_is_a_pass() -> None:
    """A registry with nothing registered is ready."""
    report = await HealthRegistry().ready()

    assert report.status is HealthStatus.PASS
    assert report.as_json() == {"status": "pass", "checks": {}}


async def test_a_failing_non_critical_check_gives_warn() -> None:
    """A lost Redis (non-critical) degrades readiness to warn, still HTTP 200."""
    health = HealthRegistry()
    health.register("database", _passing)
    health.register("redis", _failing, critical=False)

    report = await health.ready()

    assert report.status is HealthStatus.WARN
    assert report.http_status == 200
    assert report.checks["redis:responseTime"][0]["status"] == "fail"


async def test_a_failing_critical_check_gives_fail_and_503() -> None:
    """A lost primary database (critical) fails readiness with HTTP 503."""
    health = HealthRegistry()
    health.register("database", _failing, critical=True)
    health.register("redis", _passing, critical=False)

    report = await health.ready()

    assert report.status is HealthStatus.FAIL
    assert report.http_status == 503


async def test_a_check_reporting_warn_gives_warn() -> None:
    """A check may report warn itself (a pool near exhaustion) without failing."""
    health = HealthRegistry()
    health.register("pool", _counting(CheckResult(HealthStatus.WARN, 95, "%"))[1])

    report = await health.ready()

    assert report.status is HealthStatus.WARN
    assert report.http_status == 200


async def test_fail_outranks_warn() -> None:
    """One critical failure makes the whole report fail whatever else warns."""
    health = HealthRegistry()
    health.register("redis", _failing, critical=False)
    health.register("database", _failing)

    assert (await health.ready()).status is HealthStatus.FAIL


async def test_a_check_that_raises_is_a_fail_entry_with_an_output() -> None:
    """An exception from a check becomes a fail entry naming it, with secrets redacted."""

    async def broken() -> None:
        raise OSError("cannot connect to postgresql://app:hunter2@db/app\nsecond line")

    health = HealthRegistry()
    health.register("database", broken, component_type="datastore")

    report = await health.ready()

    [entry] = report.checks["database:responseTime"]
    assert entry["status"] == "fail"
    assert entry["componentType"] == "datastore"
    assert entry["output"] == "OSError: cannot connect to postgresql://app:***@db/app"
    assert "observedValue" not in entry


async def test_a_check_that_hangs_times_out_as_a_fail_entry() -> None:
    """A check that never answers is cut off at its timeout and reported as failed."""
    never = asyncio.Event()

    async def hangs() -> None:
        await never.wait()

    health = HealthRegistry()
    health.register("broker", hangs, timeout=0.01)

    report = await health.ready()

    [entry] = report.checks["broker:responseTime"]
    assert report.status is HealthStatus.FAIL
    assert entry["status"] == "fail"
    assert entry["output"] == "timed out after 0.01s"


async def test_the_default_timeout_applies_to_checks_without_one() -> None:
    """default_timeout bounds a check that sets no timeout of its own."""
    never = asyncio.Event()

    async def hangs() -> None:
        await never.wait()

    health = HealthRegistry(default_timeout=0.01)
    health.register("broker", hangs)

    report = await health.ready()

    assert report.checks["broker:responseTime"][0]["output"] == "timed out after 0.01s"


async def test_checks_run_concurrently() -> None:
    """Two checks that each wait for the other to start can only pass if run together."""
    a_started, b_started = asyncio.Event(), asyncio.Event()

    async def check_a() -> None:
        a_started.set()
        await b_started.wait()

    async def check_b() -> None:
        b_started.set()
        await a_started.wait()

    health = HealthRegistry(default_timeout=30)
    health.register("a", check_a)
    health.register("b", check_b)

    report = await health.ready()

    assert report.status is HealthStatus.PASS


async def test_ready_is_cached_for_cache_seconds() -> None:
    """Within cache_seconds the same report is returned without running the checks again."""
    clock = ManualClock()
    calls, check = _counting()
    health = HealthRegistry(cache_seconds=5, clock=clock)
    health.register("database", check)

    first = await health.ready()
    clock.advance(4.9)
    second = await health.ready()

    assert second is first
    assert len(calls) == 1

    clock.advance(0.2)
    third = await health.ready()

    assert third is not first
    assert len(calls) == 2


async def test_zero_cache_seconds_runs_every_time() -> None:
    """With caching off every sequential call runs the checks."""
    clock = ManualClock()
    calls, check = _counting()
    health = HealthRegistry(cache_seconds=0, clock=clock)
    health.register("database", check)

    await health.ready()
    await health.ready()

    assert len(calls) == 2


async def test_concurrent_callers_share_one_run() -> None:
    """Callers arriving while a run is in flight wait for it instead of starting their own."""
    started, release = asyncio.Event(), asyncio.Event()
    calls: list[int] = []

    async def slow() -> None:
        calls.append(1)
        started.set()
        await release.wait()

    health = HealthRegistry(default_timeout=30, cache_seconds=0, clock=ManualClock())
    health.register("database", slow)

    waiting = [asyncio.create_task(health.ready()) for _ in range(5)]
    await started.wait()
    late = asyncio.create_task(health.ready())
    await asyncio.sleep(0)
    release.set()
    waiting.append(late)
    reports = await asyncio.gather(*waiting)

    assert len(calls) == 1
    assert all(report is reports[0] for report in reports)


async def test_a_cancelled_caller_does_not_cancel_the_shared_run() -> None:
    """One caller giving up leaves the run going for the others."""
    started, release = asyncio.Event(), asyncio.Event()
    calls: list[int] = []

    async def slow() -> None:
        calls.append(1)
        started.set()
        await release.wait()

    health = HealthRegistry(default_timeout=30, cache_seconds=0, clock=ManualClock())
    health.register("database", slow)

    impatient = asyncio.create_task(health.ready())
    patient = asyncio.create_task(health.ready())
    await started.wait()
    impatient.cancel()
    release.set()

    assert (await patient).status is HealthStatus.PASS
    with pytest.raises(asyncio.CancelledError):
        await impatient
    assert len(calls) == 1


async def test_registering_a_check_invalidates_the_cache() -> None:
    """A new or removed check shows up in the next report, cache or not."""
    health = HealthRegistry(cache_seconds=60, clock=ManualClock())
    health.register("database", _passing)
    await health.ready()

    health.register("redis", _failing, critical=False)
    assert (await health.ready()).status is HealthStatus.WARN

    health.unregister("redis")
    assert (await health.ready()).status is HealthStatus.PASS
    assert health.names == ["database"]


async def test_registering_a_name_again_replaces_the_check() -> None:
    """A second registration under a name replaces the first."""
    health = HealthRegistry()
    health.register("database", _failing)
    health.register("database", _passing)

    assert (await health.ready()).status is HealthStatus.PASS


async def test_shutting_down_fails_ready_without_running_checks() -> None:
    """Once draining, readiness fails at once so load balancers stop sending work."""
    calls, check = _counting()
    health = HealthRegistry()
    health.register("database", check)

    health.mark_shutting_down()
    report = await health.ready()

    assert health.shutting_down
    assert report.status is HealthStatus.FAIL
    assert report.http_status == 503
    assert calls == []
    document = report.as_json()
    assert document["description"] == "shutting down"
    [entry] = document["checks"]["process:shutdown"]
    assert entry["status"] == "fail"
    assert entry["output"] == "shutting down"


async def test_shutting_down_ignores_a_cached_pass() -> None:
    """A pass cached just before shutdown began is not served afterwards."""
    health = HealthRegistry(cache_seconds=60, clock=ManualClock())
    health.register("database", _passing)
    assert (await health.ready()).status is HealthStatus.PASS

    health.mark_shutting_down()

    assert (await health.ready()).status is HealthStatus.FAIL


async def test_document_has_the_health_json_shape() -> None:
    """The JSON has status and checks keyed component:measurement with the draft's fields."""
    health = HealthRegistry()
    health.register(
        "database",
        _counting(CheckResult(HealthStatus.PASS, 1.5, "ms", output="pool size 10"))[1],
        component_type="datastore",
    )
    health.register(
        "disk",
        _counting(CheckResult(observed_value=42, observed_unit="%"))[1],
        component_type="system",
        measurement="utilization",
    )
    health.register("cache", _passing, component_type="component")

    document = (await health.ready()).as_json()

    assert document["status"] == "pass"
    assert set(document["checks"]) == {
        "database:responseTime",
        "disk:utilization",
        "cache:responseTime",
    }
    [database] = document["checks"]["database:responseTime"]
    assert database == {
        "componentType": "datastore",
        "status": "pass",
        "observedValue": 1.5,
        "observedUnit": "ms",
        "time": database["time"],
        "output": "pool size 10",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", database["time"])
    [disk] = document["checks"]["disk:utilization"]
    assert (disk["observedValue"], disk["observedUnit"]) == (42, "%")
    [cache] = document["checks"]["cache:responseTime"]
    assert cache["observedUnit"] == "ms"
    assert isinstance(cache["observedValue"], float)
    assert "output" not in cache


async def test_live_reports_uptime_from_the_clock_and_runs_only_liveness_checks() -> None:
    """Liveness has the process uptime and runs only checks marked liveness."""
    clock = ManualClock()
    ready_calls, ready_check = _counting()
    live_calls, live_check = _counting()
    health = HealthRegistry(clock=clock)
    health.register("database", ready_check)
    health.register("event_loop", live_check, liveness=True)
    clock.advance(12.5)

    report = await health.live()

    assert report.status is HealthStatus.PASS
    [uptime] = report.checks["process:uptime"]
    assert uptime["observedValue"] == 12.5
    assert uptime["observedUnit"] == "s"
    assert uptime["componentType"] == "system"
    assert "event_loop:responseTime" in report.checks
    assert "database:responseTime" not in report.checks
    assert (len(ready_calls), len(live_calls)) == (0, 1)


async def test_live_fails_when_a_liveness_check_fails() -> None:
    """A failing critical liveness check fails liveness."""
    health = HealthRegistry()
    health.register("event_loop", _failing, liveness=True)

    report = await health.live()

    assert report.status is HealthStatus.FAIL
    assert report.http_status == 503


@pytest.mark.parametrize(
    ("status", "http"),
    [(HealthStatus.PASS, 200), (HealthStatus.WARN, 200), (HealthStatus.FAIL, 503)],
)
def test_http_status_is_503_only_on_fail(status: HealthStatus, http: int) -> None:
    """Only fail maps to 503; warn still serves."""
    assert HealthReport(status).http_status == http


async def test_a_check_registered_during_a_run_is_in_the_next_report() -> None:
    """A check added while a readiness run is in flight is not hidden by that run's cache."""
    started, release = asyncio.Event(), asyncio.Event()

    async def slow() -> None:
        started.set()
        await release.wait()

    health = HealthRegistry(default_timeout=30, cache_seconds=60, clock=ManualClock())
    health.register("database", slow)

    first = asyncio.create_task(health.ready())
    await started.wait()
    health.register("redis", _failing, critical=False)
    release.set()
    await first

    report = await health.ready()

    assert "redis:responseTime" in report.checks
    assert report.status is HealthStatus.WARN


async def test_a_check_raising_cancelled_error_is_a_fail_entry() -> None:
    """A check that raises CancelledError of its own (not the caller's) is a fail entry."""

    async def cancels() -> None:
        task = asyncio.create_task(asyncio.Event().wait())
        task.cancel()
        await task

    health = HealthRegistry(cache_seconds=0, clock=ManualClock())
    health.register("events", cancels)
    health.register("database", _passing)

    report = await health.ready()

    entry = report.checks["events:responseTime"][0]
    assert entry["status"] == "fail"
    assert "cancelled" in entry["output"]
    assert report.checks["database:responseTime"][0]["status"] == "pass"
    assert report.status is HealthStatus.FAIL
    live = await health.live()
    assert live.status is HealthStatus.PASS


@pytest.mark.parametrize("returned", ["ok", 1, True, HealthStatus.PASS, {"status": "pass"}])
async def test_a_check_returning_the_wrong_type_is_a_fail_entry(returned: object) -> None:
    """A check that returns neither None nor a CheckResult is a fail entry naming the type."""

    async def wrong() -> object:
        return returned

    health = HealthRegistry(cache_seconds=0, clock=ManualClock())
    health.register("search", wrong)  # type: ignore[arg-type]

    report = await health.ready()

    entry = report.checks["search:responseTime"][0]
    assert entry["status"] == "fail"
    assert type(returned).__name__ in entry["output"]
    assert report.status is HealthStatus.FAIL


async def test_a_check_result_with_a_bad_status_is_a_fail_entry() -> None:
    """A CheckResult whose status is not a HealthStatus becomes a fail entry, not a crash."""

    async def bad() -> CheckResult:
        return CheckResult(status="great")  # type: ignore[arg-type]

    health = HealthRegistry(cache_seconds=0, clock=ManualClock())
    health.register("search", bad)

    report = await health.ready()

    assert report.checks["search:responseTime"][0]["status"] == "fail"


async def test_cancelling_the_caller_still_cancels_its_own_live_checks() -> None:
    """An outside cancellation of live() propagates; it is not turned into a fail entry."""
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.Event().wait()

    health = HealthRegistry(default_timeout=30, clock=ManualClock())
    health.register("loop", slow, liveness=True)

    task = asyncio.create_task(health.live())
    await started.wait()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_check_that_swallows_its_cancellation_still_times_out() -> None:
    """A check that ignores the cancellation meant to end it is a fail entry at its timeout."""
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # a driver that swallows cancellation

    health = HealthRegistry(cache_seconds=0, clock=ManualClock())
    health.register("database", stubborn, timeout=0.01)
    health.register("cache", _passing)

    try:
        async with asyncio.timeout(5):  # a guard: unfixed, ready() never returns
            first = await health.ready()
            second = await health.ready()
    finally:
        release.set()
        await asyncio.sleep(0)

    for report in (first, second):
        [entry] = report.checks["database:responseTime"]
        assert (entry["status"], entry["output"]) == ("fail", "timed out after 0.01s")
        assert report.checks["cache:responseTime"][0]["status"] == "pass"
        assert report.status is HealthStatus.FAIL


async def test_a_check_output_is_redacted_like_an_exception() -> None:
    """A check's own output (a worker's last error) cannot put a password on /health/ready."""

    async def worker() -> CheckResult:
        error = ConnectionError("postgresql://app:hunter2@db/app refused")
        return CheckResult(HealthStatus.WARN, output=f"last pass: {error!r}")

    health = HealthRegistry(cache_seconds=0, clock=ManualClock())
    health.register("sagas", worker)

    report = await health.ready()

    [entry] = report.checks["sagas:responseTime"]
    assert entry["output"] == "last pass: ConnectionError('postgresql://app:***@db/app refused')"


async def test_an_error_text_that_is_not_valid_unicode_still_gives_a_json_report() -> None:
    """A lone surrogate in a check's error (bytes decoded with surrogateescape) is escaped."""
    import httpx
    from fastapi import FastAPI

    from corestone.observability.metrics import Metrics
    from corestone.web.routes import operations_router

    async def undecodable() -> None:
        raise ConnectionError(b"server said: \xff".decode("utf-8", "surrogateescape"))

    health = HealthRegistry(cache_seconds=0, clock=ManualClock())
    health.register("legacy", undecodable)
    app = FastAPI()
    app.include_router(operations_router(health, Metrics()))

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/health/ready")

    assert response.status_code == 503
    output = response.json()["checks"]["legacy:responseTime"][0]["output"]
    assert output == "ConnectionError: server said: \\udcff"
