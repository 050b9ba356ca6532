"""Liveness and readiness in the ``application/health+json`` format.

Components register their checks when they are built; the report is derived from those
registrations, never kept as a second list. Checks run concurrently, each bounded by a
timeout, and a finished report is cached briefly and shared by concurrent callers, so a
load balancer polling ``/health/ready`` hard costs the database one query per interval,
not one per poll. A change to the checks (register, unregister) is never hidden by a run
that began before it.

Every outcome of a check becomes its entry: a pass, a raise (``CancelledError`` of its
own included), a timeout, or a return value of the wrong type (``fail``). Only the
caller's own cancellation propagates. Each check runs in its own task, so one that
swallows the cancellation of its timeout is reported at the timeout and left to unwind
on its own; it cannot hold up the report, nor every later caller sharing it.

Readiness is ``fail`` only when the service cannot serve: a failing *critical* check
(the primary database) fails it; a failing non-critical one (Redis, whose loss the cache
survives) only makes it ``warn``. Once shutdown has begun, readiness fails at once so
load balancers stop sending new work.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from corestone.observability.logging import get_logger

__all__ = [
    "CheckFunction",
    "CheckResult",
    "HealthCheck",
    "HealthRegistry",
    "HealthReport",
    "HealthStatus",
]

log = get_logger(__name__)


class HealthStatus(enum.StrEnum):
    """The three statuses of the health+json draft, in order of severity."""

    PASS = "pass"  # noqa: S105 - a status, not a password
    WARN = "warn"
    FAIL = "fail"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {HealthStatus.PASS: 0, HealthStatus.WARN: 1, HealthStatus.FAIL: 2}


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What a check found. A check may also just return ``None`` (pass) or raise (fail)."""

    status: HealthStatus = HealthStatus.PASS
    observed_value: float | int | str | None = None
    observed_unit: str | None = None
    output: str | None = None


CheckFunction = Callable[[], Awaitable[CheckResult | None]]


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """A registered check: who it is, how to run it, and how much its failure matters."""

    name: str
    check: CheckFunction
    component_type: str = "component"
    measurement: str = "responseTime"
    critical: bool = True
    liveness: bool = False
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class HealthReport:
    """A finished report; :meth:`as_json` gives the health+json document."""

    status: HealthStatus
    checks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    description: str | None = None

    @property
    def http_status(self) -> int:
        return 503 if self.status is HealthStatus.FAIL else 200

    def as_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"status": self.status.value}
        if self.description:
            document["description"] = self.description
        document["checks"] = self.checks
        return document


class HealthRegistry:
    """The checks of one process, and the live/ready reports built from them."""

    def __init__(
        self,
        *,
        default_timeout: float = 2.0,
        cache_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._checks: dict[str, HealthCheck] = {}
        self._default_timeout = default_timeout
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cached: tuple[float, HealthReport] | None = None
        self._inflight: asyncio.Task[HealthReport] | None = None
        self._generation = 0  # bumped by every change to the checks
        self._shutting_down = False
        self._on_shutting_down: list[Callable[[], None]] = []
        self._started_at = clock()
        self._abandoned: set[asyncio.Future[Any]] = set()  # timed-out checks still unwinding

    def register(
        self,
        name: str,
        check: CheckFunction,
        *,
        component_type: str = "component",
        measurement: str = "responseTime",
        critical: bool = True,
        liveness: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Add (or replace) the check called ``name``."""
        self._checks[name] = HealthCheck(
            name, check, component_type, measurement, critical, liveness, timeout
        )
        self._changed()

    def unregister(self, name: str) -> None:
        """Remove the check called ``name`` if there is one."""
        self._checks.pop(name, None)
        self._changed()

    def _forget(self, task: asyncio.Future[Any]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the check was reported as timed out already

    def _changed(self) -> None:
        # A run in progress predates this change: its callers still get it, but it is
        # neither shared with later callers nor cached.
        self._generation += 1
        self._cached = None
        self._inflight = None

    @property
    def names(self) -> list[str]:
        return sorted(self._checks)

    def mark_shutting_down(self) -> None:
        """Fail readiness from now on: the process is draining and wants no new work.

        Then calls every :meth:`on_shutting_down` listener (once): work that would hold
        the drain open, such as live streams, ends on the signal itself.
        """
        if self._shutting_down:
            return
        self._shutting_down = True
        for listener in list(self._on_shutting_down):
            try:
                listener()
            except Exception as error:  # noqa: BLE001 - one listener's bug stops no other
                log.warning("shutting-down listener failed", error=repr(error))

    def on_shutting_down(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` when the process starts shutting down; returns its remover.

        Called at once if it already is.
        """
        if self._shutting_down:
            listener()
            return lambda: None
        self._on_shutting_down.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._on_shutting_down.remove(listener)

        return remove

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    async def live(self) -> HealthReport:
        """Liveness: the process runs its event loop, plus any checks marked ``liveness``."""
        uptime = {
            "componentType": "system",
            "observedValue": round(self._clock() - self._started_at, 3),
            "observedUnit": "s",
            "status": HealthStatus.PASS.value,
            "time": _now(),
        }
        report = await self._run([c for c in self._checks.values() if c.liveness])
        checks = {"process:uptime": [uptime], **report.checks}
        return HealthReport(report.status, checks)

    async def ready(self) -> HealthReport:
        """Readiness: every registered check, cached for ``cache_seconds``."""
        if self._shutting_down:
            return HealthReport(
                HealthStatus.FAIL,
                {"process:shutdown": [_entry("system", HealthStatus.FAIL, output="shutting down")]},
                description="shutting down",
            )
        now = self._clock()
        if self._cached is not None and now - self._cached[0] < self._cache_seconds:
            return self._cached[1]
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._run(list(self._checks.values())))
        generation = self._generation
        report = await asyncio.shield(self._inflight)
        if generation == self._generation:
            self._cached = (self._clock(), report)
        return report

    async def _run(self, checks: list[HealthCheck]) -> HealthReport:
        results = await asyncio.gather(*(self._run_one(c) for c in checks))
        status = HealthStatus.PASS
        document: dict[str, list[dict[str, Any]]] = {}
        for check, (result, entry) in zip(checks, results, strict=True):
            document[f"{check.name}:{check.measurement}"] = [entry]
            effective = result
            if result is HealthStatus.FAIL and not check.critical:
                effective = HealthStatus.WARN
            if effective.severity > status.severity:
                status = effective
        return HealthReport(status, document)

    async def _run_one(self, check: HealthCheck) -> tuple[HealthStatus, dict[str, Any]]:
        timeout = check.timeout if check.timeout is not None else self._default_timeout
        started = time.perf_counter()
        # Its own task, waited on rather than awaited: a check that swallows the
        # cancellation of its timeout (some drivers do) is left behind, not waited for.
        try:
            task = asyncio.ensure_future(check.check())
        except Exception as exc:  # noqa: BLE001 - not awaitable, or raised at once
            return _failed(check, _describe(exc))
        try:
            await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:
            task.cancel()  # the caller gave up (each check runs in a task of gather)
            raise
        if not task.done():
            task.cancel()
            self._abandoned.add(task)
            task.add_done_callback(self._forget)
            return _failed(check, f"timed out after {timeout:g}s")
        if task.cancelled():  # not by us: the check raised CancelledError of its own
            return _failed(check, "the check raised CancelledError (cancelled)")
        error = task.exception()
        if error is not None:
            return _failed(check, _describe(error))
        result: object = task.result()
        elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
        if result is None:
            result = CheckResult(observed_value=elapsed_ms, observed_unit="ms")
        problem = _invalid(result)
        if problem is not None:
            return _failed(check, problem)
        assert isinstance(result, CheckResult)  # _invalid said so
        value = result.observed_value
        unit = result.observed_unit
        if value is None:
            value, unit = elapsed_ms, "ms"
        # /health/ready is unauthenticated: a check's own words are redacted like errors.
        output = None if result.output is None else _redact(result.output)
        entry = _entry(check.component_type, result.status, value=value, unit=unit, output=output)
        return result.status, entry


def _failed(check: HealthCheck, output: str) -> tuple[HealthStatus, dict[str, Any]]:
    return HealthStatus.FAIL, _entry(check.component_type, HealthStatus.FAIL, output=output)


def _invalid(result: object) -> str | None:
    """Why ``result`` is not a usable check result, or ``None`` when it is."""
    if not isinstance(result, CheckResult):
        return f"the check returned {type(result).__name__}, expected CheckResult or None"
    # The dataclass does not check types; a check written without mypy can put anything in.
    status: object = result.status
    value: object = result.observed_value
    unit: object = result.observed_unit
    output: object = result.output
    if not isinstance(status, HealthStatus):
        return f"the check returned status {type(status).__name__}, expected HealthStatus"
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float | str)):
        return f"the check returned observedValue {type(value).__name__}, expected a number or str"
    if not isinstance(unit, str | None) or not isinstance(output, str | None):
        return "the check returned an observedUnit or output that is not a str"
    return None


def _entry(
    component_type: str,
    status: HealthStatus,
    *,
    value: float | int | str | None = None,
    unit: str | None = None,
    output: str | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"componentType": component_type, "status": status.value}
    if value is not None:
        entry["observedValue"] = value
    if unit is not None:
        entry["observedUnit"] = unit
    entry["time"] = _now()
    if output:
        entry["output"] = output
    return entry


def _describe(exc: BaseException) -> str:
    # Exception text from drivers can carry DSNs; keep it short and redacted.
    try:
        text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    except Exception:  # noqa: BLE001 - an exception whose __str__ fails still gets an entry
        text = type(exc).__name__
    return _redact(text)


def _redact(text: str) -> str:
    from corestone.observability.logging import SecretRedactor

    # Lone surrogates (bytes decoded with surrogateescape) are not UTF-8: JSON would refuse
    # the whole report. Escape them as \udcff.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return SecretRedactor().redact_text(text)[:300]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
