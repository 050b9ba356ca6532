"""A small facade over prometheus_client with its own registry.

Why a facade: components register their metrics when the composition root builds them,
possibly more than once in one process (tests, several Infrastructure instances sharing
one ``Metrics``), and prometheus_client refuses a second registration of a name. Here
asking again for the same metric returns the one already made, and a name that breaks
the naming contract (``corestone_<component>_…`` with the unit in the name) is refused at
once.

Scrape-time collectors (the cache's and the breakers' counters) are shared the same way:
collectors that describe the same families are grouped, and the group exposes each family
once, merging the series of every member. When two members report the very same series
(same name and labels: two Infrastructures each with a breaker called ``database``), the
one registered last is exposed, whole, so the values of a series never clash. A collector
whose families only partly overlap another's is refused (``ValueError``).

Several worker processes on one port (``taskboard serve --workers N``): when the process
runs in prometheus_client's multiprocess mode (see :mod:`corestone.observability.
multiprocess`), ``render`` merges the files of every worker, so counters and histograms
count the requests of all of them, and gauges carry a ``pid`` label (``liveall`` by
default: a finished worker's values go with it). Scrape-time values (collectors, function
gauges) are published by each worker with :meth:`Metrics.publish` and exposed per ``pid``.
One ``Metrics`` per worker process: two in one process would write the same files.

Every labelled metric has a cap on its series (``max_series``, 1,000 unless the facade or
the metric says otherwise; :mod:`corestone.observability._cardinality` says how it folds
the excess into ``other``), and :meth:`Metrics.timer` times blocks and calls
(:mod:`corestone.observability.timers`).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Literal, TypeVar, cast

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from corestone.observability._cardinality import DEFAULT_MAX_SERIES, SeriesCap, capped
from corestone.observability._recording import FastCounter, FastHistogram
from corestone.observability.logging import get_logger
from corestone.observability.multiprocess import ScrapeTimeAcrossWorkers, multiprocess_dir
from corestone.observability.timers import Timer

__all__ = ["LATENCY_BUCKETS", "Metrics", "MultiprocessMode"]

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_M = TypeVar("_M", bound=MetricWrapperBase)

MultiprocessMode = Literal[
    "all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum",
    "mostrecent", "livemostrecent",
]  # fmt: skip


_Counter = capped(FastCounter)
_Gauge = capped(Gauge)
_Histogram = capped(FastHistogram)


class Metrics:
    """Get-or-create access to counters, gauges, histograms and timers in one registry.

    ``prefix`` (default ``corestone``) is prepended to every name, so components write
    ``metrics.counter("http_requests_total", …)``. ``max_series`` caps the series of each
    labelled metric (``CORESTONE_METRICS_MAX_SERIES``; a metric may ask for another cap);
    ``clock`` is what timers read (``time.perf_counter``; tests pass a ``ManualClock``).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        prefix: str = "corestone",
        max_series: int = DEFAULT_MAX_SERIES,
        clock: Callable[[], float] = time.perf_counter,
    ):
        if max_series < 1:
            raise ValueError(f"max_series must be at least 1, got {max_series}")
        self.registry = registry if registry is not None else CollectorRegistry()
        self._prefix = prefix
        self._max_series = max_series
        self._clock = clock
        self._metrics: dict[str, MetricWrapperBase] = {}
        self._timers: dict[str, Timer] = {}
        self._groups: dict[frozenset[str], _CollectorGroup] = {}
        self._collectors: list[Collector] = []
        self._lock = threading.Lock()
        self._multiprocess_dir = multiprocess_dir()
        self._function_gauges: list[tuple[Gauge, Callable[[], float]]] = []
        self._refreshers: list[Callable[[], Awaitable[object]]] = []
        self._gauge_class: type[Gauge] = (
            _Gauge
            if self._multiprocess_dir is None
            else _published_function_gauge(self._function_gauges)
        )

    @property
    def multiprocess(self) -> bool:
        """Whether this process shares its metrics with other workers (see the module doc)."""
        return self._multiprocess_dir is not None

    def counter(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        *,
        max_series: int | None = None,
    ) -> Counter:
        """A monotonically growing count; ``name`` must end in ``_total``."""
        if not name.endswith("_total"):
            raise ValueError(f"counter {name!r} must end in _total")
        return self._get(_Counter, name, documentation, labels, max_series)

    def gauge(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        multiprocess_mode: MultiprocessMode = "liveall",
        *,
        max_series: int | None = None,
    ) -> Gauge:
        """A value that goes up and down.

        ``multiprocess_mode`` says how the values of several workers combine (one series
        per live worker, with a ``pid`` label, by default); one process ignores it.
        """
        return self._get(
            self._gauge_class,
            name,
            documentation,
            labels,
            max_series,
            multiprocess_mode=multiprocess_mode,
        )

    def histogram(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
        *,
        max_series: int | None = None,
    ) -> Histogram:
        """A distribution; latency histograms end in ``_seconds``."""
        return self._get(
            _Histogram, name, documentation, labels, max_series, buckets=tuple(buckets)
        )

    def timer(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
        *,
        max_series: int | None = None,
    ) -> Timer:
        """A :class:`~corestone.observability.timers.Timer` over a histogram in seconds.

        ``name`` must end in ``_seconds``. Asking again returns the same timer.
        """
        if not name.endswith("_seconds"):
            raise ValueError(f"timer {name!r} must end in _seconds")
        histogram = self.histogram(name, documentation, labels, buckets, max_series=max_series)
        with self._lock:
            timer = self._timers.get(name)
            if timer is None:
                timer = self._timers[name] = Timer(histogram, self._clock)
            return timer

    def register_collector(self, collector: Collector) -> None:
        """Add a custom collector (values computed at scrape time).

        The collector's ``describe()`` must name its families: a second collector with the
        same families joins the first one's group (see the module docstring).
        """
        describe = getattr(collector, "describe", None)
        names = frozenset(family.name for family in describe()) if describe else frozenset()
        if not names:
            self.registry.register(collector)  # prometheus_client's own rules
            with self._lock:
                self._collectors.append(collector)
            return
        with self._lock:
            group = self._groups.get(names)
            if group is None:
                group = _CollectorGroup(collector)
                self.registry.register(group)  # raises on a partial overlap
                self._groups[names] = group
                self._collectors.append(group)
            else:
                group.add(collector)

    def add_refresher(self, refresh: Callable[[], Awaitable[object]]) -> None:
        """An async function :meth:`refresh` awaits before a scrape renders.

        For scrape-time values that need I/O (a collector's ``collect`` is sync): the
        function updates what its collector yields. It must bound its own time and cost
        (cache its sample, time out) and not raise; a failure is logged and skipped.
        """
        with self._lock:
            self._refreshers.append(refresh)

    async def refresh(self) -> None:
        """Await every refresher (``/metrics`` does, before :meth:`render`)."""
        with self._lock:
            refreshers = list(self._refreshers)
        for refresh in refreshers:
            try:
                await refresh()
            except Exception as error:  # noqa: BLE001 - a scrape shows what it has
                _log_refresh_failure(refresh, error)

    def full_name(self, name: str) -> str:
        """``name`` with the prefix, as it appears in the exposition."""
        return f"{self._prefix}_{name}"

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format (every worker's, if shared)."""
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        return generate_latest(self._merged(self._multiprocess_dir))

    def collect(self, names: Iterable[str]) -> Iterable[Metric]:
        """The families ``render`` shows, without the text: at least those holding ``names``.

        For the in-process metric history, which samples a few families every few seconds:
        in one process only their collectors are asked; with several workers every file is
        merged (prometheus_client cannot merge a part), but formatting the text and parsing
        it back, more than half of the cost, is skipped.
        """
        if self._multiprocess_dir is None:
            return self.registry.restricted_registry(names).collect()
        return self._merged(self._multiprocess_dir).collect()

    def publish(self) -> None:
        """Share this worker's scrape-time values with the other workers; one process: no-op.

        A server calls it periodically (``corestone.web.serve`` does, every second), so a
        scrape answered by another worker sees values at most that old.
        """
        if self._multiprocess_dir is None:
            return
        self._write_function_gauges()
        self._across_workers(self._multiprocess_dir).publish()

    content_type = CONTENT_TYPE_LATEST

    def _get(
        self,
        kind: type[_M],
        name: str,
        documentation: str,
        labels: Sequence[str],
        max_series: int | None,
        **kwargs: object,
    ) -> _M:
        if not _NAME.fullmatch(name):
            raise ValueError(f"metric name {name!r} must be lower_snake_case")
        full = self.full_name(name)
        with self._lock:
            existing = self._metrics.get(full)
            if existing is not None:
                if not isinstance(existing, kind) or tuple(existing._labelnames) != tuple(labels):
                    raise ValueError(f"metric {full!r} already exists with another type or labels")
                return existing
            metric = kind(
                full,
                documentation,
                labelnames=tuple(labels),
                registry=self.registry,
                **kwargs,  # type: ignore[arg-type]
            )
            if labels:
                cap = max_series if max_series is not None else self._max_series
                metric._series_cap = SeriesCap(full, cap, self._folded)  # type: ignore[attr-defined]
            self._metrics[full] = metric
            return metric

    def _folded(self) -> Counter:
        """The count of folds, registered at the first one (uncapped: one series per metric)."""
        name = self.full_name("metrics_series_folded_total")
        with self._lock:
            folded = self._metrics.get(name)
            if folded is None:
                folded = self._metrics[name] = _Counter(
                    name,
                    "Label lookups folded into the 'other' series because the metric hit its cap",
                    labelnames=("metric",),
                    registry=self.registry,
                )
            return cast("Counter", folded)

    def _write_function_gauges(self) -> None:
        with self._lock:
            gauges = list(self._function_gauges)
        for gauge, function in gauges:
            gauge.set(function())

    def _merged(self, directory: str) -> CollectorRegistry:
        """Every worker's metrics, merged from their files and published snapshots."""
        self._write_function_gauges()
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry, directory)  # type: ignore[no-untyped-call]
        registry.register(self._across_workers(directory))
        return registry

    def _across_workers(self, directory: str) -> ScrapeTimeAcrossWorkers:
        with self._lock:
            collectors = list(self._collectors)
        return ScrapeTimeAcrossWorkers(collectors, directory, os.getpid())


def _published_function_gauge(sink: list[tuple[Gauge, Callable[[], float]]]) -> type[Gauge]:
    """A Gauge class whose ``set_function`` values reach the shared files.

    prometheus_client documents that ``set_function`` does not work in multiprocess mode:
    the function is only read by this process's registry, while the files hold 0. The
    facade records each function and writes its value at every publish and scrape.
    """

    class PublishedFunctionGauge(_Gauge):  # type: ignore[valid-type,misc]
        def set_function(self, f: Callable[[], float]) -> None:
            super().set_function(f)
            sink.append((self, f))

    return PublishedFunctionGauge


class _CollectorGroup:
    """Collectors of the same families, exposed as one: each family once, series merged."""

    def __init__(self, first: Collector) -> None:
        self._members = [first]
        self._lock = threading.Lock()

    def add(self, collector: Collector) -> None:
        with self._lock:
            self._members.append(collector)

    def describe(self) -> list[Metric]:
        describe = getattr(self._members[0], "describe")  # noqa: B009 - checked on register
        return list(describe())

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            members = list(self._members)
        families: dict[str, Metric] = {}
        owner: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        for index, member in enumerate(reversed(members)):  # the newest wins a shared series
            for family in member.collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = Metric(family.name, family.documentation, family.type, family.unit)
                    families[family.name] = merged
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    if owner.setdefault(key, index) == index:
                        merged.samples.append(sample)
        yield from families.values()


def _log_refresh_failure(refresh: object, error: Exception) -> None:
    get_logger(__name__).warning(
        "metrics refresher failed", refresher=repr(refresh), error=repr(error)
    )
