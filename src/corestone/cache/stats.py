"""Cache statistics: plain integer counters on the hot path, Prometheus at scrape time.

A hit must not pay for a labelled Prometheus counter (a dict lookup and a lock each), so
the cache counts in slots of one object and a collector turns them into
``corestone_cache_*`` metrics when ``/metrics`` is scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from corestone.cache.memory import MemoryStats

__all__ = ["CacheStats", "StatsCollector"]


@dataclass(slots=True)
class CacheStats:
    """What one TieredCache has done since it was built."""

    l1_hits: int = 0
    l1_misses: int = 0
    l2_hits: int = 0
    l2_misses: int = 0
    l2_errors: int = 0
    l2_skipped: int = 0
    stale_served: int = 0
    loads: int = 0
    load_errors: int = 0
    load_timeouts: int = 0
    eager_refreshes: int = 0
    sets: int = 0
    stores_refused: int = 0
    invalidations_sent: int = 0
    invalidations_received: int = 0
    invalidations_pending: int = 0
    invalidations_dropped: int = 0
    resyncs: int = 0
    lock_waits: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class StatsCollector:
    """Exposes every cache of the process, by namespace, at scrape time."""

    def __init__(
        self, prefix: str, sources: Callable[[], Iterator[tuple[str, CacheStats, MemoryStats]]]
    ) -> None:
        self._prefix = prefix
        self._sources = sources

    def describe(self) -> list[Metric]:
        """The families, without samples: prometheus_client refuses a second registration."""
        return list(self._families(iter(())))

    def collect(self) -> Iterator[Metric]:
        return self._families(self._sources())

    def _families(self, sources: Iterator[tuple[str, CacheStats, MemoryStats]]) -> Iterator[Metric]:
        p = self._prefix
        requests = CounterMetricFamily(
            f"{p}_requests", "Cache lookups by tier and result.", labels=["cache", "tier", "result"]
        )
        loads = CounterMetricFamily(
            f"{p}_loads", "Loader runs by outcome.", labels=["cache", "outcome"]
        )
        stale = CounterMetricFamily(
            f"{p}_stale_served", "Stale values served by fail-safe.", labels=["cache"]
        )
        invalidations = CounterMetricFamily(
            f"{p}_invalidations", "Invalidations sent and received.", labels=["cache", "direction"]
        )
        evictions = CounterMetricFamily(
            f"{p}_l1_evictions", "L1 entries evicted, by reason.", labels=["cache", "reason"]
        )
        entries = GaugeMetricFamily(f"{p}_l1_entries", "Entries in L1.", labels=["cache"])
        weight = GaugeMetricFamily(
            f"{p}_l1_weight_bytes", "Approximate bytes held by L1.", labels=["cache"]
        )
        dropped = CounterMetricFamily(
            f"{p}_invalidations_dropped",
            "Invalidations Redis refused for good, replaced by a namespace flush.",
            labels=["cache"],
        )
        pending = GaugeMetricFamily(
            f"{p}_invalidations_pending",
            "Invalidations waiting for Redis to come back.",
            labels=["cache"],
        )
        for name, stats, memory in sources:
            requests.add_metric([name, "l1", "hit"], stats.l1_hits)
            requests.add_metric([name, "l1", "miss"], stats.l1_misses)
            requests.add_metric([name, "l2", "hit"], stats.l2_hits)
            requests.add_metric([name, "l2", "miss"], stats.l2_misses)
            requests.add_metric([name, "l2", "error"], stats.l2_errors)
            requests.add_metric([name, "l2", "skipped"], stats.l2_skipped)
            loads.add_metric([name, "ok"], stats.loads - stats.load_errors - stats.load_timeouts)
            loads.add_metric([name, "error"], stats.load_errors)
            loads.add_metric([name, "timeout"], stats.load_timeouts)
            stale.add_metric([name], stats.stale_served)
            invalidations.add_metric([name, "sent"], stats.invalidations_sent)
            invalidations.add_metric([name, "received"], stats.invalidations_received)
            evictions.add_metric([name, "size"], memory.evictions)
            evictions.add_metric([name, "expired"], memory.expirations)
            entries.add_metric([name], memory.entries)
            weight.add_metric([name], memory.weight_bytes)
            pending.add_metric([name], stats.invalidations_pending)
            dropped.add_metric([name], stats.invalidations_dropped)
        yield from (
            requests, loads, stale, invalidations, evictions, entries, weight, pending, dropped
        )  # fmt: skip
