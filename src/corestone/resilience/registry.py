"""BreakerRegistry: every named breaker of a process, from shared defaults and per-name overrides.

Any outbound dependency gets its breaker with one line, ``registry.get("smtp")``; the
registry makes it on first use from the defaults plus that name's overrides (from
settings, ``CORESTONE_BREAKERS``), exports its metrics, and lists it in ``snapshot()``
for health checks, ``/api/ops/breakers`` and the dashboard.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from corestone.clock import Clock, monotonic
from corestone.errors import CircuitOpenError, InvalidInputError
from corestone.observability.health import CheckResult, HealthStatus
from corestone.observability.metrics import Metrics
from corestone.resilience.breaker import CircuitBreaker
from corestone.resilience.config import BreakerConfig
from corestone.resilience.events import Listener, State
from corestone.resilience.snapshot import BreakerSnapshot, snapshot_of

__all__ = ["DEFAULTS_KEY", "BreakerRegistry"]

DEFAULTS_KEY = "default"
"""The key of a settings mapping whose options apply to every breaker."""

_NOT_CLOSED = (State.OPEN, State.HALF_OPEN, State.FORCED_OPEN)


class BreakerRegistry:
    """Named circuit breakers, made on first use and kept for the life of the process."""

    def __init__(
        self,
        defaults: BreakerConfig | None = None,
        overrides: Mapping[str, BreakerConfig] | None = None,
        *,
        clock: Clock = monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self.defaults = defaults if defaults is not None else BreakerConfig()
        self._overrides = dict(overrides or {})
        self._raw_overrides: dict[str, Mapping[str, Any]] = {}
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()
        self._on_create: list[Callable[[CircuitBreaker], None]] = []
        self.metrics = metrics
        """Where the registry's collector is registered (a fleet adds its counters there)."""
        if metrics is not None:
            metrics.register_collector(_Collector(self, metrics.full_name("breaker")))

    @classmethod
    def from_mapping(
        cls,
        mapping: Mapping[str, Mapping[str, Any]],
        *,
        base: BreakerConfig | None = None,
        clock: Clock = monotonic,
        metrics: Metrics | None = None,
        field: str = "breakers",
    ) -> BreakerRegistry:
        """A registry from settings: ``{"default": {...}, "database": {...}, ...}``.

        Values are JSON scalars named as :class:`BreakerConfig`'s fields; a bad one raises
        InvalidInputError naming it, e.g. ``breakers.database.failure_rate_threshold``.
        """
        if not isinstance(mapping, Mapping):
            raise InvalidInputError(f"{field}: must be an object", field=field, rule="object")
        for name, values in mapping.items():
            if not isinstance(values, Mapping):
                raise InvalidInputError(
                    f"{field}.{name}: must be an object", field=f"{field}.{name}", rule="object"
                )
        start = base if base is not None else BreakerConfig()
        defaults = start.with_mapping(
            mapping.get(DEFAULTS_KEY, {}), field_prefix=f"{field}.{DEFAULTS_KEY}."
        )
        overrides = {
            name: defaults.with_mapping(values, field_prefix=f"{field}.{name}.")
            for name, values in mapping.items()
            if name != DEFAULTS_KEY
        }
        return cls(defaults, overrides, clock=clock, metrics=metrics)

    def config_for(self, name: str) -> BreakerConfig:
        """The configuration ``get(name)`` uses: the override for ``name``, else defaults."""
        return self._overrides.get(name, self.defaults)

    def has_override(self, name: str) -> bool:
        """Whether settings configure ``name`` itself (not only the shared defaults)."""
        return name in self._overrides

    def get(self, name: str, config: BreakerConfig | None = None) -> CircuitBreaker:
        """The breaker named ``name``, made now if new (``config`` only applies then)."""
        breaker = self._breakers.get(name)
        if breaker is not None:
            return breaker
        with self._lock:
            breaker = self._breakers.get(name)
            if breaker is None:
                chosen = config if config is not None else self.config_for(name)
                breaker = CircuitBreaker(name, chosen, clock=self._clock)
                self._breakers[name] = breaker
                for hook in self._on_create:
                    hook(breaker)
        return breaker

    def on_create(self, hook: Callable[[CircuitBreaker], None], *, existing: bool = True) -> None:
        """Run ``hook(breaker)`` for each breaker made from now on (and those made already)."""
        with self._lock:
            self._on_create.append(hook)
            made = list(self._breakers.values()) if existing else []
        for breaker in made:
            hook(breaker)

    def remove_on_create(self, hook: Callable[[CircuitBreaker], None]) -> None:
        """Stop running ``hook`` for new breakers (a no-op if it is not registered)."""
        with self._lock:
            if hook in self._on_create:
                self._on_create.remove(hook)

    def add_listener(self, listener: Listener) -> None:
        """Listen to the state changes of every breaker, present and future."""
        self.on_create(lambda breaker: breaker.add_listener(listener))

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._breakers.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def snapshot(self) -> list[BreakerSnapshot]:
        """Every breaker's snapshot, sorted by name."""
        return [snapshot_of(b) for b in sorted(self, key=lambda b: b.name)]

    def as_json(self) -> dict[str, object]:
        """``{"breakers": [snapshot, …]}``: the body of ``GET /api/ops/breakers``."""
        return {"breakers": [s.as_json() for s in self.snapshot()]}

    def health_check(
        self, name: str, check: Callable[[], Awaitable[CheckResult | None]]
    ) -> Callable[[], Awaitable[CheckResult | None]]:
        """``check`` made aware of the breaker ``name``: not CLOSED turns a pass into ``warn``.

        The check runs as it is: if its I/O goes through a guarded client (the database
        ping does), it counts like any call, and while the breaker rejects it the result
        is ``warn`` with when the breaker will try again, not a failure of its own.
        """
        breaker = self.get(name)

        async def guarded_check() -> CheckResult | None:
            try:
                result = await check()
            except CircuitOpenError as error:
                return CheckResult(
                    HealthStatus.WARN,
                    output=f"circuit breaker {name!r} is open; retry in {error.retry_after}s",
                )
            state = breaker.state
            if state not in _NOT_CLOSED:
                return result
            note = f"circuit breaker {name!r} is {state.value}"
            if result is None:
                return CheckResult(HealthStatus.WARN, output=note)
            status = result.status
            if status is HealthStatus.PASS:
                status = HealthStatus.WARN
            output = f"{result.output}; {note}" if result.output else note
            return CheckResult(status, result.observed_value, result.observed_unit, output)

        return guarded_check


class _Collector:
    """Per-breaker metrics computed at scrape time, so calls pay nothing for them."""

    def __init__(self, registry: BreakerRegistry, prefix: str) -> None:
        self._registry = registry
        self._prefix = prefix

    def describe(self) -> list[Metric]:
        """The families, without samples: prometheus_client refuses a second registration."""
        return list(self._families(()))

    def collect(self) -> Iterator[Metric]:
        return self._families(self._registry.snapshot())

    def _families(self, snapshots: Iterable[BreakerSnapshot]) -> Iterator[Metric]:
        p = self._prefix
        calls = CounterMetricFamily(
            f"{p}_calls", "Calls through a breaker, by outcome.", labels=["name", "outcome"]
        )
        rejected = CounterMetricFamily(
            f"{p}_not_permitted_calls", "Calls a breaker rejected.", labels=["name"]
        )
        transitions = CounterMetricFamily(
            f"{p}_transitions", "State changes of a breaker.", labels=["name"]
        )
        state = GaugeMetricFamily(
            f"{p}_state", "1 for a breaker's current state.", labels=["name", "state"]
        )
        failure = GaugeMetricFamily(  # a ratio (0 to 1), Prometheus's base unit for a share
            f"{p}_failure_ratio", "Failed calls / calls in the window.", labels=["name"]
        )
        slow = GaugeMetricFamily(
            f"{p}_slow_call_ratio", "Slow calls / calls in the window.", labels=["name"]
        )
        for snap in snapshots:
            n = snap.name
            for outcome, value in (
                ("successful", snap.successful_calls),
                ("failed", snap.failed_calls),
                ("slow_successful", snap.slow_successful_calls),
                ("slow_failed", snap.slow_failed_calls),
                ("ignored", snap.ignored_calls),
            ):
                calls.add_metric([n, outcome], value)
            rejected.add_metric([n], snap.not_permitted_calls)
            transitions.add_metric([n], snap.transitions)
            for each in State:
                state.add_metric([n, each.value], 1.0 if each is snap.state else 0.0)
            failure.add_metric([n], snap.failure_rate_percent / 100.0)
            slow.add_metric([n], snap.slow_call_rate_percent / 100.0)
        yield from (calls, rejected, transitions, state, failure, slow)
