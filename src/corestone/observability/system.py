"""System health: host and process gauges at scrape time, and checks that judge them.

:class:`SystemMonitor` reads a :class:`SystemSample` (psutil, through
:class:`PsutilProbe`) at most once per ``cache_seconds``, whoever asks: a scrape of
``/metrics`` and every ``/health/ready`` caller in that interval share one sample, so a
load balancer polling hard costs a few system calls per interval, not per poll. It is a
prometheus_client collector exposing::

    corestone_system_memory_used_ratio          host memory in use (0..1, from "available")
    corestone_process_resident_memory_bytes     this process's resident set
    corestone_system_cpu_used_ratio             host CPU busy since the previous sample (0..1)
    corestone_process_cpu_seconds_total         this process's user + system CPU time
    corestone_system_disk_free_ratio{path}      free share of the disk holding each data path
    corestone_system_disk_free_bytes{path}      free bytes there
    corestone_process_open_fds                  open file descriptors (POSIX)
    corestone_process_max_fds                   their soft limit (POSIX; absent if unlimited)
    corestone_event_loop_lag_seconds            the loop's recent max scheduling delay

and it registers up to five readiness checks (``CORESTONE_SYSTEM_CHECKS`` picks them),
each ``pass`` / ``warn`` / ``fail`` by the thresholds in :class:`SystemThresholds`:
``memory:utilization``, ``cpu:utilization``, ``disk:free``, ``fds:utilization`` and
``event-loop:lag``.

Only the disk check is critical. A full disk is the one state here in which the service
cannot serve: SQLite, the outbox and the email spool cannot write, so requests would fail
one by one; taking the instance out of rotation is the honest answer. High memory, a busy
CPU, many descriptors or a slow loop make the service slower, not unable: failing
readiness for them would move the load onto the other instances, which are usually just
as loaded, and empty the pool. Their ``fail`` turns readiness to ``warn``, for alerts and
the dashboard. A probe that cannot read the system warns rather than fails, for the same
reason: not knowing is not being broken.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from corestone._system_settings import SYSTEM_CHECKS, SystemCheckName, SystemSettings
from corestone.observability._loop_lag import LoopLagMonitor
from corestone.observability._system_probe import (
    DiskSample,
    PsutilProbe,
    SystemSample,
    existing_directory,
)
from corestone.observability.health import CheckResult, HealthRegistry, HealthStatus
from corestone.observability.logging import get_logger
from corestone.observability.metrics import Metrics

__all__ = [
    "DiskSample",
    "LoopLagMonitor",
    "PsutilProbe",
    "SystemMonitor",
    "SystemSample",
    "SystemThresholds",
    "data_paths",
]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SystemThresholds:
    """Where each reading turns ``warn`` and ``fail`` (ratios 0..1, lag in seconds).

    A reading at or above a threshold reaches it; for free disk, at or below.
    """

    memory_warn: float = 0.90
    memory_fail: float = 0.98
    cpu_warn: float = 0.90
    cpu_fail: float = 1.0
    disk_free_warn: float = 0.10
    disk_free_fail: float = 0.02
    fds_warn: float = 0.80
    fds_fail: float = 0.95
    loop_lag_warn: float = 0.1
    loop_lag_fail: float = 1.0

    @classmethod
    def from_settings(cls, settings: SystemSettings) -> Self:
        return cls(
            memory_warn=settings.system_memory_warn_ratio,
            memory_fail=settings.system_memory_fail_ratio,
            cpu_warn=settings.system_cpu_warn_ratio,
            cpu_fail=settings.system_cpu_fail_ratio,
            disk_free_warn=settings.system_disk_warn_free_ratio,
            disk_free_fail=settings.system_disk_fail_free_ratio,
            fds_warn=settings.system_fds_warn_ratio,
            fds_fail=settings.system_fds_fail_ratio,
            loop_lag_warn=settings.loop_lag_warn_seconds,
            loop_lag_fail=settings.loop_lag_fail_seconds,
        )


def data_paths(database_url: str, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The directories whose disks hold the data: the SQLite file's, then ``extra``.

    With neither (a PostgreSQL database and no list), the working directory, where the
    defaults put ``var/`` (the file email provider's spool, logs).
    """
    paths: list[str] = []
    if database_url.startswith("sqlite"):
        _, _, rest = database_url.partition(":///")
        file = rest.split("?", 1)[0]
        if file and file != ":memory:":
            paths.append(existing_directory(Path(file).parent))
    paths.extend(existing_directory(path) for path in extra)
    return list(dict.fromkeys(paths)) or [existing_directory(".")]


def _default_name(suffix: str) -> str:
    return f"corestone_{suffix}"


class SystemMonitor:
    """Cached psutil samples as gauges, judged by thresholds into health checks (module doc)."""

    def __init__(
        self,
        probe: Callable[[], SystemSample],
        *,
        thresholds: SystemThresholds | None = None,
        loop_lag: LoopLagMonitor | None = None,
        cache_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        full_name: Callable[[str], str] = _default_name,
    ) -> None:
        self.probe = probe
        self.thresholds = thresholds if thresholds is not None else SystemThresholds()
        self.loop_lag = loop_lag if loop_lag is not None else LoopLagMonitor()
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._name = full_name
        self._lock = threading.Lock()
        self._sample: SystemSample | None = None
        self._taken: float | None = None
        self._error: str | None = None

    @classmethod
    def from_settings(cls, settings: SystemSettings, database_url: str, metrics: Metrics) -> Self:
        """The monitor of a process configured by ``settings`` (paths from ``database_url``)."""
        return cls(
            PsutilProbe(data_paths(database_url, settings.system_disk_paths)),
            thresholds=SystemThresholds.from_settings(settings),
            loop_lag=LoopLagMonitor(
                interval=settings.loop_lag_interval_seconds,
                window=settings.loop_lag_window_seconds,
            ),
            cache_seconds=settings.system_sample_seconds,
            full_name=metrics.full_name,
        )

    def register(
        self,
        metrics: Metrics,
        health: HealthRegistry,
        checks: Iterable[SystemCheckName] = SYSTEM_CHECKS,
    ) -> None:
        """Expose the gauges in ``metrics`` and add the ``checks`` named to ``health``."""
        metrics.register_collector(self)
        available = {
            "memory": (self.check_memory, "utilization", False),
            "cpu": (self.check_cpu, "utilization", False),
            "disk": (self.check_disk, "free", True),
            "fds": (self.check_fds, "utilization", False),
            "event-loop": (self.check_loop_lag, "lag", False),
        }
        for name in dict.fromkeys(checks):
            check, measurement, critical = available[name]
            health.register(
                name, check, component_type="system", measurement=measurement, critical=critical
            )

    def sample(self) -> SystemSample | None:
        """The current sample: cached for ``cache_seconds``; the last good one if a read fails.

        None only when no read has ever succeeded (``last_error`` says why).
        """
        with self._lock:  # one read per interval, however many callers arrive together
            now = self._clock()
            if self._taken is not None and now - self._taken < self.cache_seconds:
                return self._sample
            self._taken = now
            try:
                self._sample = self.probe()
            except Exception as error:  # noqa: BLE001 - psutil raises many kinds; keep the last
                if self._error is None:
                    log.warning("system sample failed", error=repr(error))
                self._error = repr(error)
            else:
                self._error = None
            return self._sample

    @property
    def last_error(self) -> str | None:
        return self._error

    # -- health checks ------------------------------------------------------------------

    async def check_memory(self) -> CheckResult:
        """Host memory in use against ``memory_warn`` / ``memory_fail``."""
        sample = self.sample()
        if sample is None:
            return self._unknown()
        t = self.thresholds
        return _above(sample.memory_used_ratio, t.memory_warn, t.memory_fail, "host memory in use")

    async def check_cpu(self) -> CheckResult:
        """Host CPU busy since the previous sample against ``cpu_warn`` / ``cpu_fail``."""
        sample = self.sample()
        if sample is None:
            return self._unknown()
        t = self.thresholds
        return _above(sample.cpu_used_ratio, t.cpu_warn, t.cpu_fail, "host CPU busy")

    async def check_disk(self) -> CheckResult:
        """The fullest watched disk against ``disk_free_warn`` / ``disk_free_fail`` (critical)."""
        sample = self.sample()
        if sample is None:
            return self._unknown()
        if not sample.disks:
            return CheckResult(output="no data path is watched")
        disk = min(sample.disks, key=lambda d: d.free_ratio)
        t = self.thresholds
        status = HealthStatus.PASS
        if disk.free_ratio <= t.disk_free_fail:
            status = HealthStatus.FAIL
        elif disk.free_ratio <= t.disk_free_warn:
            status = HealthStatus.WARN
        output = f"{disk.path}: {disk.free_bytes // 2**20} MiB free ({disk.free_ratio:.1%})"
        return CheckResult(status, round(disk.free_ratio, 4), "ratio", output)

    async def check_fds(self) -> CheckResult:
        """Open descriptors as a share of their soft limit against ``fds_warn`` / ``fds_fail``."""
        sample = self.sample()
        if sample is None:
            return self._unknown()
        if sample.open_fds is None or not sample.max_fds:
            return CheckResult(output="no descriptor limit to compare with")
        t = self.thresholds
        result = _above(sample.open_fds / sample.max_fds, t.fds_warn, t.fds_fail, "descriptors")
        output = f"{sample.open_fds} of {sample.max_fds} descriptors open"
        return CheckResult(result.status, result.observed_value, result.observed_unit, output)

    async def check_loop_lag(self) -> CheckResult:
        """The loop's recent max lag against ``loop_lag_warn`` / ``loop_lag_fail``."""
        lag = self.loop_lag.lag()
        t = self.thresholds
        status = HealthStatus.PASS
        if lag >= t.loop_lag_fail:
            status = HealthStatus.FAIL
        elif lag >= t.loop_lag_warn:
            status = HealthStatus.WARN
        output = None if status is HealthStatus.PASS else f"the event loop ran {lag:.3f}s late"
        return CheckResult(status, round(lag, 6), "s", output)

    def _unknown(self) -> CheckResult:
        return CheckResult(HealthStatus.WARN, output=f"cannot read the system: {self._error}")

    # -- collector ----------------------------------------------------------------------

    def describe(self) -> Iterator[Metric]:
        yield from self._families(None, describe=True)

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self.sample())

    def _families(self, sample: SystemSample | None, *, describe: bool = False) -> Iterator[Metric]:
        name = self._name
        memory = GaugeMetricFamily(
            name("system_memory_used_ratio"), "Share of host memory in use (0..1)."
        )
        rss = GaugeMetricFamily(
            name("process_resident_memory_bytes"), "Resident memory of this process."
        )
        cpu = GaugeMetricFamily(
            name("system_cpu_used_ratio"), "Share of host CPU time busy since the last sample."
        )
        cpu_seconds = CounterMetricFamily(
            name("process_cpu_seconds_total"), "User and system CPU time of this process."
        )
        disk_ratio = GaugeMetricFamily(
            name("system_disk_free_ratio"),
            "Free share of the disk holding a data path.",
            None,
            ["path"],
        )
        disk_bytes = GaugeMetricFamily(
            name("system_disk_free_bytes"),
            "Free bytes on the disk holding a data path.",
            None,
            ["path"],
        )
        open_fds = GaugeMetricFamily(name("process_open_fds"), "Open file descriptors.")
        max_fds = GaugeMetricFamily(name("process_max_fds"), "Soft limit of file descriptors.")
        lag = GaugeMetricFamily(
            name("event_loop_lag_seconds"), "Largest event-loop scheduling delay, recent window."
        )
        if sample is not None:
            memory.add_metric([], sample.memory_used_ratio)
            rss.add_metric([], sample.process_resident_bytes)
            cpu.add_metric([], sample.cpu_used_ratio)
            cpu_seconds.add_metric([], sample.process_cpu_seconds)
            for disk in sample.disks:
                disk_ratio.add_metric([disk.path], disk.free_ratio)
                disk_bytes.add_metric([disk.path], disk.free_bytes)
            if sample.open_fds is not None:
                open_fds.add_metric([], sample.open_fds)
            if sample.max_fds is not None:
                max_fds.add_metric([], sample.max_fds)
        if not describe:
            lag.add_metric([], self.loop_lag.lag())
        yield from (memory, rss, cpu, cpu_seconds, disk_ratio, disk_bytes, open_fds, max_fds, lag)


def _above(value: float, warn: float, fail: float, what: str) -> CheckResult:
    status = HealthStatus.PASS
    if value >= fail:
        status = HealthStatus.FAIL
    elif value >= warn:
        status = HealthStatus.WARN
    output = None if status is HealthStatus.PASS else f"{what}: {value:.1%}"
    return CheckResult(status, round(value, 4), "ratio", output)
