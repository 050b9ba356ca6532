"""The Redis parts of a TieredCache built from a URL: client, L2 store, backplane, breaker.

The cache builds itself from these (``TieredCache.from_url``); metrics are registered on
its core, so nothing here knows the cache class.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from corestone._extras import requires_extra
from corestone.cache._core import CacheCore
from corestone.cache.backplane import RedisBackplane
from corestone.cache.memory import MemoryStats
from corestone.cache.stats import CacheStats, StatsCollector
from corestone.observability.metrics import Metrics
from corestone.resilience.breaker import CircuitBreaker
from corestone.resilience.config import BreakerConfig
from corestone.resilience.registry import BreakerRegistry

if TYPE_CHECKING:
    from corestone.cache.redis import RedisCache

__all__ = ["CACHE_BREAKER", "RedisParts", "redis_parts", "register_metrics"]

CACHE_BREAKER = BreakerConfig(
    window_size=20,
    minimum_calls=5,
    failure_rate_threshold=50.0,
    wait_in_open_seconds=0.5,
    max_wait_in_open_seconds=5.0,
    permitted_calls_in_half_open=1,
)
"""The ``cache`` breaker unless settings say otherwise: quick to open, quick to retry."""


@dataclass(frozen=True, slots=True)
class RedisParts:
    """What a cache on Redis is made of, besides its L1."""

    store: RedisCache
    backplane: RedisBackplane
    breaker: CircuitBreaker
    close: Callable[[], Awaitable[None]]
    observe: Callable[[str, float], None] | None


def redis_parts(
    url: str,
    *,
    namespace: str,
    protocol: int | None,
    breakers: BreakerRegistry | None,
    metrics: Metrics | None,
    name: str,
) -> RedisParts:
    """See :meth:`TieredCache.from_url`."""
    # A Redis URL is configured: L2 needs the extra. The error names the public class the
    # user called (from_url / from_settings), not this private module.
    with requires_extra("corestone.cache.TieredCache", "redis"):
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        from corestone.cache.redis import RedisCache

    extra: dict[str, Any] = {} if protocol is None else {"protocol": protocol}
    client = redis.Redis.from_url(
        url,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 1),  # one retry: a pooled connection Redis dropped
        **extra,
    )
    registry = breakers if breakers is not None else BreakerRegistry()
    config = None if registry.has_override(name) else CACHE_BREAKER
    return RedisParts(
        store=RedisCache(client),
        backplane=RedisBackplane(
            url, channel=f"corestone:{namespace}:backplane", protocol=protocol, metrics=metrics
        ),
        breaker=registry.get(name, config),
        close=client.aclose,
        observe=_latency_observer(metrics),
    )


def register_metrics(cache: CacheCore, metrics: Metrics) -> None:
    """Expose the cache's counters as ``corestone_cache_*`` at scrape time."""
    memory, stats, name = cache.memory, cache.stats, cache.name

    def sources() -> Iterator[tuple[str, CacheStats, MemoryStats]]:
        yield name, stats, memory.stats

    metrics.register_collector(StatsCollector(metrics.full_name("cache"), sources))


def _latency_observer(metrics: Metrics | None) -> Callable[[str, float], None] | None:
    if metrics is None:
        return None
    histogram = metrics.histogram(
        "cache_operation_seconds", "Time of L2 operations and loader runs.", ["op"]
    )
    children: dict[str, Any] = {}

    def observe(op: str, seconds: float) -> None:
        child = children.get(op)
        if child is None:
            child = children[op] = histogram.labels(op=op)
        child.observe(seconds)

    return observe
