"""What a TieredCache tells readiness and ``GET /api/ops/cache``."""

from __future__ import annotations

from typing import Any

from corestone.cache._core import CacheCore
from corestone.cache._remote import UNAVAILABLE
from corestone.observability.health import CheckResult, HealthStatus
from corestone.resilience.events import State

__all__ = ["check", "snapshot"]

_AWAY = "Redis unavailable: serving L1 + loader"


async def check(cache: CacheCore) -> CheckResult:
    """``pass`` with Redis answering (or none configured); ``warn`` when L2 is away.

    Never ``fail``: without Redis the cache still serves (docs/contracts.md, Health).
    """
    remote = cache.remote
    if remote is None:
        return CheckResult(output="L1 only (no Redis configured)")
    if remote.breaker.state is State.OPEN:
        return CheckResult(HealthStatus.WARN, output=_AWAY)
    latency = await remote.call("ping", remote.store.ping)
    if latency is UNAVAILABLE:
        return CheckResult(HealthStatus.WARN, output=_AWAY)
    observed = round(latency * 1000, 3)
    if not cache.backplane.connected:
        return CheckResult(
            HealthStatus.WARN,
            observed_value=observed,
            observed_unit="ms",
            output="backplane reconnecting: L1 will be dropped when it is back",
        )
    return CheckResult(observed_value=observed, observed_unit="ms")


def snapshot(cache: CacheCore) -> dict[str, Any]:
    """Counters and states, never keys or values (a key names a workspace's data)."""
    memory = cache.memory.stats
    remote = cache.remote
    return {
        "name": cache.name,
        "namespace": cache.keys.namespace,
        "l2": None
        if remote is None
        else {
            "breaker": remote.breaker.state.name.lower(),
            "pending_invalidations": remote.pending,
        },
        "backplane": {
            "instance_id": cache.backplane.instance_id,
            "connected": cache.backplane.connected,
        },
        "stats": cache.stats.as_dict(),
        "l1": {
            "entries": memory.entries,
            "weight_bytes": memory.weight_bytes,
            "hits": memory.hits,
            "misses": memory.misses,
            "evictions": memory.evictions,
            "expirations": memory.expirations,
            "rejections": memory.rejections,
        },
    }
