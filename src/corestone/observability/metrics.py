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
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from typing import TypeVar

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
from prometheus_client.registry import Collector

__all__ = ["LATENCY_BUCKETS", "Metrics"]

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_M = TypeVar("_M", bound=MetricWrapperBase)


class Metrics:
    """Get-or-create access to counters, gauges and histograms in one registry.

    ``prefix`` (default ``corestone``) is prepended to every name, so components write
    ``metrics.counter("http_requests_total", …)``.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, prefix: str = "corestone"):
        self.registry = registry if registry is not None else CollectorRegistry()
        self._prefix = prefix
        self._metrics: dict[str, MetricWrapperBase] = {}
        self._groups: dict[frozenset[str], _CollectorGroup] = {}
        self._lock = threading.Lock()

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        """A monotonically growing count; ``name`` must end in ``_total``."""
        if not name.endswith("_total"):
            raise ValueError(f"counter {name!r} must end in _total")
        return self._get(Counter, name, documentation, labels)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        """A value that goes up and down."""
        return self._get(Gauge, name, documentation, labels)

    def histogram(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        """A distribution; latency histograms end in ``_seconds``."""
        return self._get(Histogram, name, documentation, labels, buckets=tuple(buckets))

    def register_collector(self, collector: Collector) -> None:
        """Add a custom collector (values computed at scrape time).

        The collector's ``describe()`` must name its families: a second collector with the
        same families joins the first one's group (see the module docstring).
        """
        describe = getattr(collector, "describe", None)
        names = frozenset(family.name for family in describe()) if describe else frozenset()
        if not names:
            self.registry.register(collector)  # prometheus_client's own rules
            return
        with self._lock:
            group = self._groups.get(names)
            if group is None:
                group = _CollectorGroup(collector)
                self.registry.register(group)  # raises on a partial overlap
                self._groups[names] = group
            else:
                group.add(collector)

    def full_name(self, name: str) -> str:
        """``name`` with the prefix, as it appears in the exposition."""
        return f"{self._prefix}_{name}"

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)

    content_type = CONTENT_TYPE_LATEST

    def _get(
        self,
        kind: type[_M],
        name: str,
        documentation: str,
        labels: Sequence[str],
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
            self._metrics[full] = metric
            return metric


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
