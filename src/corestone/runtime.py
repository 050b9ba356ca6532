"""The composition root: build every component from settings, start and stop them in order.

``Infrastructure`` is an async context manager. Entering it starts components in
dependency order; if one fails, the ones already started are stopped again (in reverse)
and a :class:`~corestone.errors.StartupError` names the failing component (a
``CancelledError`` of the component's own, with nobody cancelling the start, included).
Leaving it fails readiness at once, then stops components in reverse order, each bounded
by a timeout and logged; every component is stopped even when an earlier stop fails, and the
failures are reported together in one :class:`~corestone.errors.ShutdownError`. Each
``aclose`` runs in its own task, so a component that raises ``CancelledError`` or hangs
(even ignoring cancellation) is a reported failure, not the end of the shutdown; a
cancellation of the shutdown itself propagates only after every component has stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

from corestone.cache.tiered import TieredCache
from corestone.config import Settings, load_settings
from corestone.container import Services
from corestone.db.database import Database
from corestone.db.stats import DatabaseStats, StatsOptions
from corestone.errors import ConfigurationError, ShutdownError, StartupError
from corestone.events.brokers.base import Broker
from corestone.events.brokers.guarded import guard_broker
from corestone.observability.health import CheckResult, HealthRegistry
from corestone.observability.logging import get_logger
from corestone.observability.metrics import Metrics
from corestone.observability.system import SystemMonitor
from corestone.resilience.fleet import Fleet
from corestone.resilience.registry import BreakerRegistry

if TYPE_CHECKING:
    from corestone.email.service import EmailService
    from corestone.events.wiring import Events
    from corestone.observability.alerts.wiring import Alerts

__all__ = ["Component", "Infrastructure"]

log = get_logger(__name__)

_CANCEL_GRACE_SECONDS = 1.0
"""How long a timed-out stop may take to unwind after its cancellation before it is abandoned."""


@runtime_checkable
class Component(Protocol):
    """Anything with a lifecycle the composition root manages."""

    name: str

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


def _forget(tasks: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: an abandoned stop's late failure was reported already

    return done


def _failed_by_itself(error: BaseException) -> bool:
    """Whether ``error`` out of a component's start is its failure, not our cancellation.

    A ``CancelledError`` while nobody cancelled this task is the component's own
    (``task.cancel(); await task``): a failed start like any other.
    """
    if isinstance(error, Exception):
        return True
    task = asyncio.current_task()
    return isinstance(error, asyncio.CancelledError) and task is not None and not task.cancelling()


def _describe(error: BaseException) -> str:
    """``repr(error)``, or its type when even that raises: a failure must not stop the rest."""
    try:
        return repr(error)
    except Exception:  # noqa: BLE001 - a broken __repr__ is the component's problem, not ours
        return f"<{type(error).__name__}, unprintable>"


@dataclass(frozen=True, slots=True)
class _Stoppable:
    """Something to stop like a component that is not one (the services' registry)."""

    name: str
    aclose: Callable[[], Awaitable[None]]


class _BrokerComponent:
    """The broker as the component named ``broker`` (its own name is its kind)."""

    name = "broker"

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def start(self) -> None:
        await self.broker.start()

    async def aclose(self) -> None:
        await self.broker.aclose()


@dataclass(frozen=True, slots=True)
class _Managed:
    component: Component
    check: Callable[[], Awaitable[CheckResult | None]] | None
    component_type: str
    critical: bool


class Infrastructure:
    """Every corestone component of one process, wired together.

    Any component may be passed in to replace the one built from settings (tests pass
    fakes or pre-built instances). Nothing does I/O until the block is entered.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        metrics: Metrics | None = None,
        health: HealthRegistry | None = None,
        database: Database | None = None,
        services: Services | None = None,
        breakers: BreakerRegistry | None = None,
        cache: TieredCache | None = None,
        broker: Broker | None = None,
    ) -> None:
        self.settings = settings if settings is not None else load_settings()
        self.metrics = (
            metrics if metrics is not None else Metrics(max_series=self.settings.metrics_max_series)
        )
        self.health = (
            health
            if health is not None
            else HealthRegistry(
                default_timeout=self.settings.health_check_timeout_seconds,
                cache_seconds=self.settings.health_cache_seconds,
            )
        )
        self.breakers = (
            breakers
            if breakers is not None
            else BreakerRegistry.from_mapping(self.settings.breakers, metrics=self.metrics)
        )
        self.cache = (
            cache
            if cache is not None
            else TieredCache.from_settings(
                self.settings, breakers=self.breakers, metrics=self.metrics
            )
        )
        self.db = (
            database
            if database is not None
            else Database.from_settings(
                self.settings, metrics=self.metrics, breakers=self.breakers, cache=self.cache
            )
        )
        self.services = services if services is not None else Services()
        self._managed: list[_Managed] = []
        self._started: list[_Managed] = []
        self._running = False
        self._abandoned: set[asyncio.Task[None]] = set()
        self._lifecycle = self.metrics.histogram(
            "runtime_component_transition_seconds",
            "Time taken by a component to start or stop.",
            ["component", "transition"],
        )
        self._email: EmailService | None = None
        self._events: Events | None = None
        self._alerts: Alerts | None = None
        self.fleet: Fleet | None = None
        if self.settings.breaker_fleet and self.settings.redis_url:
            self.fleet = Fleet(
                self.breakers,
                url=self.settings.redis_url,
                prefix=self.settings.breaker_fleet_prefix,
            )
            self.add(self.fleet, critical=False)  # first up, last down: breakers linked early
        self.add(
            self.db,
            check=self.breakers.health_check("database", self.db.ping),
            component_type="datastore",
            critical=True,
        )
        self.db_stats = DatabaseStats(
            lambda: self.db.engine,
            StatsOptions(
                cache_seconds=self.settings.database_stats_seconds,
                top_tables=self.settings.database_stats_top_tables,
                long_query_seconds=self.settings.database_long_query_seconds,
            ),
            prefix=self.metrics.full_name("db"),
        )
        """The database's own statistics: gauges at scrape time (``corestone.db.stats``)."""
        self.metrics.register_collector(self.db_stats)
        self.metrics.add_refresher(self.db_stats.refresh)
        if self.settings.database_stats_health:  # warns only: never fails readiness
            self.health.register(
                "database:stats", self.db_stats.check, component_type="datastore", critical=False
            )
        self.system: SystemMonitor | None = None
        """Host and process gauges and checks (``corestone.observability.system``), unless
        ``CORESTONE_SYSTEM_HEALTH=false``; its loop-lag probe runs as a component."""
        if self.settings.system_health:
            self.system = SystemMonitor.from_settings(
                self.settings, self.settings.database_url, self.metrics
            )
            self.system.register(self.metrics, self.health, self.settings.system_checks)
            self.add(self.system.loop_lag, critical=False)
        # Not critical: with Redis away the cache serves from L1 and the loader (warn).
        self.add(self.cache, check=self.cache.check, component_type="datastore", critical=False)
        self.broker: Broker | None = None
        """The events broker (behind its breaker): ``CORESTONE_BROKER_URL``'s, or the memory
        broker ``add_events`` adds when that is unset; None until one of them is there."""
        if broker is None and self.settings.broker_url:
            from corestone.events.brokers.url import broker_from_url

            broker = broker_from_url(self.settings.broker_url)
        if broker is not None:
            self._add_broker(broker)
        for svc_type, value in (
            (Settings, self.settings),
            (Metrics, self.metrics),
            (HealthRegistry, self.health),
            (Database, self.db),
            (BreakerRegistry, self.breakers),
            (TieredCache, self.cache),
            (Infrastructure, self),
        ):
            self.services.register_value(svc_type, value)
        if self.db.monitor is not None:  # corestone.db.monitor.QueryMonitor ('queries' extra)
            self.services.register_value(type(self.db.monitor), self.db.monitor)

    def add(
        self,
        component: Component,
        *,
        check: Callable[[], Awaitable[CheckResult | None]] | None = None,
        component_type: str = "component",
        critical: bool = True,
    ) -> None:
        """Manage ``component``: started after those added before it, stopped before them.

        ``check``, if given, becomes its readiness check, registered once it has started;
        a non-critical check's failure makes readiness ``warn`` instead of ``fail``.
        """
        if self._running:
            raise RuntimeError("add components before the infrastructure starts")
        if any(m.component.name == component.name for m in self._managed):
            raise ValueError(f"a component named {component.name!r} is already managed")
        self._managed.append(_Managed(component, check, component_type, critical))

    def _add_broker(self, broker: Broker) -> Broker:
        """Make ``broker`` this process's: behind ``broker:<kind>``, managed, in readiness.

        Called for ``CORESTONE_BROKER_URL``'s broker, and by ``add_events`` for the
        memory broker when none is configured; returns the guarded broker.
        """
        if self.broker is not None:
            raise ValueError("this infrastructure already has a broker")
        breaker = f"broker:{broker.name}"
        self.broker = guard_broker(broker, self.breakers.get(breaker))
        # Not critical: while the broker is away the outbox keeps every event (warn).
        self.add(
            _BrokerComponent(self.broker),
            check=self.breakers.health_check(breaker, self.broker.ping),
            component_type="broker",
            critical=False,
        )
        self.services.register_value(Broker, self.broker)  # type: ignore[type-abstract]
        return self.broker

    @property
    def running(self) -> bool:
        return self._running

    @property
    def email(self) -> EmailService:
        """The :class:`~corestone.email.EmailService`, once ``add_email(infra)`` has wired it.

        Not built by default: email needs the ``email`` extra, and a process that sends
        none should not need it. Before ``add_email`` this raises ConfigurationError.
        """
        if self._email is None:
            raise ConfigurationError(
                "email is not set up on this infrastructure: call "
                "corestone.email.add_email(infra) (providers from CORESTONE_EMAIL_PROVIDERS) "
                "before using infra.email"
            )
        return self._email

    @email.setter
    def email(self, service: EmailService) -> None:
        if self._email is not None:
            raise ValueError("email is already set up on this infrastructure (add_email twice?)")
        if self._running:
            raise RuntimeError("set up email before the infrastructure starts")
        self._email = service

    @property
    def events(self) -> Events:
        """The :class:`~corestone.events.Events`, once ``add_events(infra, registry)`` wired them.

        Not built by default: events need the application's registry of event types.
        Before ``add_events`` this raises ConfigurationError.
        """
        if self._events is None:
            raise ConfigurationError(
                "events are not set up on this infrastructure: call "
                "corestone.events.add_events(infra, registry) before using infra.events"
            )
        return self._events

    @events.setter
    def events(self, events: Events) -> None:
        if self._events is not None:
            raise ValueError("events are already set up on this infrastructure (add_events twice?)")
        if self._running:
            raise RuntimeError("set up events before the infrastructure starts")
        self._events = events

    @property
    def alerts(self) -> Alerts:
        """The :class:`~corestone.observability.alerts.wiring.Alerts`, once ``add_alerts`` ran.

        Not built by default: alerts need a sink to notify. Before ``add_alerts(infra,
        sink)`` this raises ConfigurationError.
        """
        if self._alerts is None:
            raise ConfigurationError(
                "alerts are not set up on this infrastructure: call "
                "corestone.observability.alerts.add_alerts(infra, sink) before infra.alerts"
            )
        return self._alerts

    @alerts.setter
    def alerts(self, alerts: Alerts) -> None:
        if self._alerts is not None:
            raise ValueError("alerts are already set up on this infrastructure (add_alerts twice?)")
        if self._running:
            raise RuntimeError("set up alerts before the infrastructure starts")
        self._alerts = alerts

    async def start(self) -> None:
        """Start every component in order; on a failure undo and raise StartupError."""
        if self._running:
            return
        for managed in self._managed:
            name = managed.component.name
            started = time.perf_counter()
            try:
                await managed.component.start()
            except BaseException as error:
                if not _failed_by_itself(error):
                    # Cancelled mid-start (SIGTERM, a timeout around start): nobody will call
                    # aclose() for a block that was never entered, so undo here, then go on.
                    await self._stop_started()
                    raise
                log.error("component failed to start", component=name, error=_describe(error))
                _, cancelled = await self._stop_started()
                if cancelled:
                    raise asyncio.CancelledError from error
                raise StartupError(name, error) from error
            elapsed = time.perf_counter() - started
            self._lifecycle.labels(component=name, transition="start").observe(elapsed)
            log.info("component started", component=name, seconds=round(elapsed, 4))
            self._started.append(managed)
            if managed.check is not None:
                self.health.register(
                    name,
                    managed.check,
                    component_type=managed.component_type,
                    critical=managed.critical,
                )
        self._running = True

    async def aclose(self) -> None:
        """Fail readiness, stop everything in reverse order, then raise any failures."""
        self.health.mark_shutting_down()
        failures, cancelled = await self._stop_started()
        # The registry's close callbacks are bounded like a component's stop: one that
        # cancels itself or hangs is a reported failure, not our cancellation or a hang.
        error, interrupted = await self._stop_one(_Stoppable("services", self.services.aclose))
        cancelled = cancelled or interrupted
        if error is not None:
            failures["services"] = error
        self._running = False
        if cancelled:  # the shutdown was cancelled from outside; failures are logged
            raise asyncio.CancelledError
        if failures:
            raise ShutdownError(failures)

    async def _stop_started(self) -> tuple[dict[str, BaseException], bool]:
        """Stop the started components in reverse; return the failures and any cancellation.

        A cancellation of this shutdown from outside does not cut it short: every
        component still gets its stop (each bounded by its timeout), and the caller
        raises ``CancelledError`` once everything has run. A ``CancelledError`` out of a
        component's own ``aclose`` (``task.cancel(); await task``) is that component's failure.
        """
        failures: dict[str, BaseException] = {}
        cancelled = False
        while self._started:
            managed = self._started.pop()
            name = managed.component.name
            self.health.unregister(name)
            started = time.perf_counter()
            error, interrupted = await self._stop_one(managed.component)
            cancelled = cancelled or interrupted
            if error is not None:
                failures[name] = error
                continue
            elapsed = time.perf_counter() - started
            self._lifecycle.labels(component=name, transition="stop").observe(elapsed)
            log.info("component stopped", component=name, seconds=round(elapsed, 4))
        return failures, cancelled

    async def _stop_one(
        self, component: Component | _Stoppable
    ) -> tuple[BaseException | None, bool]:
        """Run ``component.aclose()`` in its own task; return its failure and any outside cancel.

        Its own task keeps the component's cancellations apart from ours, and lets the
        shutdown move on from a component that hangs even while ignoring cancellation.
        """
        name = component.name
        timeout = self.settings.component_stop_timeout_seconds
        try:
            task = asyncio.ensure_future(component.aclose())
        except Exception as failed:  # noqa: BLE001 - not awaitable, or raised at once
            log.error("component failed to stop", component=name, error=_describe(failed))
            return failed, False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        cancelled = False
        while not task.done() and (remaining := deadline - loop.time()) > 0:
            try:
                await asyncio.wait({task}, timeout=remaining)
            except asyncio.CancelledError:
                cancelled = True  # from outside: finish stopping everything, then propagate
        if not task.done():
            task.cancel()
            # A well-behaved aclose unwinds on cancellation (cancelling and awaiting its own
            # tasks, rolling back): give it a grace period so nothing it owns outlives the
            # shutdown; only one that ignores the cancellation is abandoned.
            grace_deadline = loop.time() + max(timeout, _CANCEL_GRACE_SECONDS)
            while not task.done() and (remaining := grace_deadline - loop.time()) > 0:
                try:
                    await asyncio.wait({task}, timeout=remaining)
                except asyncio.CancelledError:
                    cancelled = True
            if not task.done():
                self._abandoned.add(task)
                task.add_done_callback(_forget(self._abandoned))
            log.error("component stop timed out", component=name, timeout_seconds=timeout)
            return TimeoutError(f"{name} did not stop within {timeout:g}s"), cancelled
        outcome: BaseException | None
        outcome = asyncio.CancelledError() if task.cancelled() else task.exception()
        if outcome is not None:
            log.error("component failed to stop", component=name, error=_describe(outcome))
        return outcome, cancelled

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.aclose()
        except ShutdownError:
            # Leaving on a cancellation (or KeyboardInterrupt): that must go on propagating,
            # not turn into an ordinary exception; the stop failures were logged one by one.
            if exc_type is not None and not issubclass(exc_type, Exception):
                return
            raise
