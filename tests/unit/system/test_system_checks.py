"""System health: thresholds judge samples, one sample serves every caller, the gauges."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from corestone.observability import HealthRegistry, HealthStatus, Metrics
from corestone.observability.system import (
    DiskSample,
    PsutilProbe,
    SystemMonitor,
    SystemSample,
    SystemThresholds,
    data_paths,
)
from corestone.testing import ManualClock

CALM = SystemSample(
    memory_used_ratio=0.5,
    process_resident_bytes=100 * 2**20,
    cpu_used_ratio=0.2,
    process_cpu_seconds=1.5,
    disks=(DiskSample("/data", free_bytes=50 * 2**30, total_bytes=100 * 2**30),),
    open_fds=20,
    max_fds=1024,
)


def monitor_of(sample: SystemSample, **kwargs: object) -> SystemMonitor:
    return SystemMonitor(lambda: sample, cache_seconds=0, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "check", "expected"),
    [
        ({}, "check_memory", HealthStatus.PASS),
        ({"memory_used_ratio": 0.93}, "check_memory", HealthStatus.WARN),
        ({"memory_used_ratio": 0.99}, "check_memory", HealthStatus.FAIL),
        ({"cpu_used_ratio": 0.95}, "check_cpu", HealthStatus.WARN),
        ({"cpu_used_ratio": 1.0}, "check_cpu", HealthStatus.FAIL),
        ({"open_fds": 900}, "check_fds", HealthStatus.WARN),
        ({"open_fds": 1000}, "check_fds", HealthStatus.FAIL),
        ({"open_fds": None, "max_fds": None}, "check_fds", HealthStatus.PASS),
        ({"disks": (DiskSample("/d", 8, 100),)}, "check_disk", HealthStatus.WARN),
        ({"disks": (DiskSample("/d", 1, 100),)}, "check_disk", HealthStatus.FAIL),
        ({"disks": (DiskSample("/a", 50, 100), DiskSample("/b", 1, 100))}, "check_disk",
         HealthStatus.FAIL),
    ],
)  # fmt: skip
async def test_thresholds_decide_the_status(
    change: dict[str, object], check: str, expected: HealthStatus
) -> None:
    """Each reading is pass below warn, warn from warn, fail from fail (free disk: below)."""
    monitor = monitor_of(dataclasses.replace(CALM, **change))  # type: ignore[arg-type]
    result = await getattr(monitor, check)()
    assert result.status is expected


async def test_the_disk_check_names_the_fullest_path() -> None:
    """With several data paths, the disk check reports the one closest to full."""
    disks = (DiskSample("/roomy", 90, 100), DiskSample("/tight", 5, 100))
    result = await monitor_of(dataclasses.replace(CALM, disks=disks)).check_disk()
    assert result.observed_value == 0.05
    assert result.output is not None
    assert result.output.startswith("/tight")


async def test_loop_lag_thresholds() -> None:
    """The loop-lag check warns and fails on the recent max lag the probe recorded."""
    monitor = monitor_of(CALM, thresholds=SystemThresholds(loop_lag_warn=0.1, loop_lag_fail=1))
    assert (await monitor.check_loop_lag()).status is HealthStatus.PASS
    monitor.loop_lag.record(0.3)
    assert (await monitor.check_loop_lag()).status is HealthStatus.WARN
    monitor.loop_lag.record(2.0)
    assert (await monitor.check_loop_lag()).status is HealthStatus.FAIL


async def test_only_a_full_disk_fails_readiness() -> None:
    """Memory, CPU and fd failures leave readiness at warn; a full disk fails it."""
    clock = ManualClock()
    strained = dataclasses.replace(CALM, memory_used_ratio=0.99, cpu_used_ratio=1.0, open_fds=1024)
    health = HealthRegistry(cache_seconds=0)
    monitor_of(strained).register(Metrics(), health)
    assert (await health.ready()).status is HealthStatus.WARN
    full = dataclasses.replace(strained, disks=(DiskSample("/data", 0, 100),))
    health = HealthRegistry(cache_seconds=0, clock=clock)
    monitor_of(full).register(Metrics(), health)
    report = await health.ready()
    assert report.status is HealthStatus.FAIL
    assert report.checks["disk:free"][0]["status"] == "fail"
    assert report.checks["memory:utilization"][0]["status"] == "fail"


async def test_concurrent_readiness_calls_share_one_sample() -> None:
    """Fifty concurrent /health/ready runs (no report cache) read the system once per interval."""
    clock = ManualClock()
    real = PsutilProbe(["."])
    reads = 0

    def counting_probe() -> SystemSample:
        nonlocal reads
        reads += 1
        return real()

    health = HealthRegistry(cache_seconds=0, clock=clock)
    SystemMonitor(counting_probe, cache_seconds=2.0, clock=clock).register(Metrics(), health)
    reports = await asyncio.gather(*(health.ready() for _ in range(50)))
    assert reads == 1
    assert all("cpu:utilization" in r.checks for r in reports)
    clock.advance(2.0)
    await health.ready()
    assert reads == 2


async def test_a_failed_read_keeps_the_last_sample_and_warns() -> None:
    """A probe that raises keeps the last good sample; with none, the checks warn."""
    clock = ManualClock()
    samples: list[SystemSample | Exception] = [OSError("no /proc"), CALM, OSError("gone")]

    def flaky() -> SystemSample:
        value = samples.pop(0)
        if isinstance(value, Exception):
            raise value
        return value

    monitor = SystemMonitor(flaky, cache_seconds=1.0, clock=clock)
    first = await monitor.check_disk()
    assert first.status is HealthStatus.WARN
    assert first.output is not None
    assert "no /proc" in first.output
    clock.advance(1)
    assert monitor.sample() is CALM
    clock.advance(1)
    assert monitor.sample() is CALM
    assert monitor.last_error is not None
    assert "gone" in monitor.last_error


def test_gauges_have_the_contract_names_and_real_values(tmp_path: Path) -> None:
    """A real psutil reading exposes every gauge under its contract name, ratios in 0..1."""
    metrics = Metrics()
    SystemMonitor(PsutilProbe([tmp_path]), full_name=metrics.full_name).register(
        metrics, HealthRegistry()
    )
    samples = {
        (s.name, s.labels.get("path")): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }
    path = str(tmp_path)
    for ratio in ("corestone_system_memory_used_ratio", "corestone_system_cpu_used_ratio"):
        assert 0 <= samples[(ratio, None)] <= 1
    assert 0 < samples[("corestone_system_disk_free_ratio", path)] <= 1
    assert samples[("corestone_system_disk_free_bytes", path)] > 0
    assert samples[("corestone_process_resident_memory_bytes", None)] > 0
    assert samples[("corestone_process_cpu_seconds_total", None)] > 0
    assert (
        0
        < samples[("corestone_process_open_fds", None)]
        <= samples[("corestone_process_max_fds", None)]
    )
    assert samples[("corestone_event_loop_lag_seconds", None)] == 0


def test_data_paths_watch_the_sqlite_directory_and_the_list(tmp_path: Path) -> None:
    """The SQLite file's directory comes first, then the configured paths, without repeats."""
    db = tmp_path / "var" / "app.db"
    db.parent.mkdir()
    extra = tmp_path / "not-yet" / "made"
    paths = data_paths(f"sqlite+aiosqlite:///{db}", [str(tmp_path / "var"), str(extra)])
    assert paths == [str(tmp_path / "var"), str(tmp_path)]
    assert data_paths("postgresql+asyncpg://u@h/db") == [str(Path.cwd())]


async def test_every_infrastructure_has_the_system_checks_unless_switched_off(
    tmp_path: Path,
) -> None:
    """Infrastructure wires the checks, gauges and loop-lag probe; the setting turns them off."""
    from corestone import Infrastructure, Settings

    url = f"sqlite+aiosqlite:///{tmp_path}/app.db"
    every = ["memory", "cpu", "disk", "fds", "event-loop"]
    async with Infrastructure(Settings(database_url=url, system_checks=every)) as infra:
        assert set(every) <= set(infra.health.names)
        assert infra.system is not None
        assert infra.system.loop_lag.running
        assert b"corestone_event_loop_lag_seconds" in infra.metrics.render()
    async with Infrastructure(Settings(database_url=url, system_health=False)) as infra:
        assert "memory" not in infra.health.names
        assert infra.system is None
        assert b"corestone_system_memory_used_ratio" not in infra.metrics.render()
