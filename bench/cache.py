"""The cache side by side: corestone vs a dict, cachetools, cashews, aiocache and raw redis-py.

``python -m bench cache [--quick]``. In-process hits (ns) are the best of N repeats of a
tight loop, every case once per repeat; Redis round trips (µs) are timed call by call,
round-robin, and reported by their median. Then the behaviour figures of issue 5: hit
ratios on Zipf traces (against an LRU and an LFU of the same capacity), loader calls
under a 1,000-way stampede, the cross-instance invalidation delay on RESP2 and RESP3,
and stale serving with Redis killed (a redis-server of the run's own) and the time back
to L2 once it returns. Redis: ``CORESTONE_TEST_REDIS_URL`` (default localhost:6379).
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
from typing import Any

from bench import _cache_coherence, _cache_corestone, _cache_peers
from bench._cache_timing import best_ns, percentile, redis_reachable, samples_us
from bench._report import Report
from corestone.observability.logging import configure_logging

MISSING = float("inf")  # a figure that could not be measured fails its check
_OUTAGE_ROWS = {
    "outage_stale_p50_ms": ("stale_served_p50", "ms"),
    "outage_stale_p99_ms": ("stale_served_p99", "ms"),
    "outage_stale_first_p99_ms": ("stale_served_first_per_key_p99", "ms"),
    "outage_stale_max_ms": ("stale_served_max", "ms"),
    "outage_exceptions": ("exceptions", "count"),
    "outage_wrong_values": ("wrong_values", "count"),
    "outage_l1_kept_pct": ("l1_entries_kept", "%"),
    "outage_back_to_l2_s": ("back_to_l2_after_restart", "s"),
}


async def run(quick: bool) -> Report:
    n, repeats = (20_000, 5) if quick else (100_000, 15)
    rounds = 300 if quick else 2_000
    invalidations = 200 if quick else 1_000
    batch, stampede = 100, 1_000
    # As a service runs: JSON warnings to stderr (their cost is part of the outage figures),
    # the table and the JSON result alone on stdout.
    configure_logging(format="json", level="warning")
    url = os.environ.get("CORESTONE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"bench:cache:{os.getpid()}"
    report = Report("cache", ("case", "kind", "value", "unit"))
    r = report.results
    has_memory, has_tiered = _cache_corestone.available()
    redis_up = await redis_reachable(url)
    if not redis_up:
        report.notes.append(f"Redis unreachable at {url}: Redis rows left out")
    if not has_memory:
        report.notes.append("corestone.cache.memory missing: corestone L1 rows left out")
    if not has_tiered:
        report.notes.append("TieredCache/@cached missing: tiered rows left out")

    async with contextlib.AsyncExitStack() as stack:
        cache = None
        if has_tiered:
            cache = await _cache_corestone.tiered(url if redis_up else None, stack)

        micro = _cache_peers.micro_cases()
        micro |= await _cache_peers.cashews_memory(stack)
        micro |= await _cache_peers.aiocache_memory(stack)
        if has_memory:
            micro |= _cache_corestone.memory_cases()
        if cache is not None:
            micro |= await _cache_corestone.tiered_micro_cases(cache)
        for name, ns in (await best_ns(micro, n, repeats)).items():
            report.rows.append((name, micro[name][0], ns, "ns"))
            r[f"{name}_ns"] = ns

        if redis_up:
            trips = await _cache_peers.redis_cases(url, prefix, stack)
            prepare: dict[str, Any] = {}
            if cache is not None:
                ours, prepare, fulls = await _cache_corestone.tiered_redis_cases(cache, batch)
                trips[f"redis_mget{batch}_raw"] = _cache_peers.raw_mget(url, fulls, stack)
                trips |= ours
            for name, took in (await samples_us(trips, rounds, prepare)).items():
                median = percentile(took, 0.5)
                report.rows.append((name, "redis p50", median, "µs"))
                report.rows.append((name, "redis p99", percentile(took, 0.99), "µs"))
                r[f"{name}_p50_us"] = median

        stampedes = await _cache_peers.peer_stampedes(stampede, stack)
        if cache is not None:
            ours_stampede = await _cache_corestone.stampedes(cache, stampede)
            if redis_up:
                ours_stampede |= await _cache_corestone.two_instance_stampedes(url, stampede, stack)
            stampedes |= {f"corestone_{name}": calls for name, calls in ours_stampede.items()}
        for name, calls in stampedes.items():
            report.rows.append((f"{name}_stampede", f"{stampede} callers", calls, "loader calls"))
            r[f"{name}_stampede_loader_calls"] = calls

    _hit_ratios(report, quick)
    # The latency percentiles below are about the cache, not about the garbage this run
    # left behind (peers, traces): move what exists now out of the collector's way, as a
    # service does after start-up (gc.freeze); what the phases allocate is still collected.
    gc.collect()
    gc.freeze()
    if has_tiered and redis_up:
        for protocol in (2, 3):
            delays, fresh = await _cache_coherence.invalidation_delays_ms(
                url, protocol, invalidations
            )
            for case, values in (("invalidation", delays), ("write_to_fresh_read", fresh)):
                for q, label in ((0.5, "p50"), (0.99, "p99")):
                    value = percentile(values, q)
                    report.rows.append((f"corestone_{case}_resp{protocol}", label, value, "ms"))
                    r[f"{case}_resp{protocol}_{label}_ms"] = value
    if has_tiered:
        try:
            figures = await _cache_coherence.outage(100 if quick else 500)
        except RuntimeError as error:
            report.notes.append(f"outage not measured: {error}")
        else:
            r |= figures
            for name, value in figures.items():
                label, unit = _OUTAGE_ROWS[name]
                report.rows.append((f"corestone_outage_{label}", "redis down", value, unit))
    gc.unfreeze()
    _checks(report, batch)
    report.notes.append(
        f"{n:,} calls x {repeats} repeats (fewer for slow cases), min taken; Redis: "
        f"{rounds} round-robin rounds, median; invalidation: {invalidations} writes per protocol"
    )
    return report


def _hit_ratios(report: Report, quick: bool) -> None:
    try:
        from bench._cache_hitratio import hit_ratios
    except ImportError:
        report.notes.append("bench/_cache_hitratio.py missing: hit ratios not measured")
        return
    for name, pct in hit_ratios(quick).items():
        report.rows.append((name.removesuffix("_pct"), "hit ratio", pct, "%"))
        report.results[name] = pct


def _checks(report: Report, batch: int) -> None:
    """The issue's targets (DESIGN §7), each from this run's figures; missing ones fail."""
    r = report.results

    def get(name: str) -> float:
        return r.get(name, MISSING)

    def ratio(ours: str, peer: str) -> float:
        value = get(ours) / get(peer)
        return MISSING if math.isnan(value) else value

    report.check(
        "async_l1_hit_vs_cashews", ratio("corestone_memory_aget_ns", "cashews_memory_get_ns"),
        "<=", round(1 / 7, 4),
    )  # fmt: skip
    report.check(
        "async_l1_hit_vs_aiocache", ratio("corestone_memory_aget_ns", "aiocache_memory_get_ns"),
        "<=", 1 / 20,
    )  # fmt: skip
    report.check(
        "sync_l1_get_vs_cachetools",
        ratio("corestone_memory_get_ns", "cachetools_ttlcache_getitem_ns"), "<=", 1.0,
    )  # fmt: skip
    report.check(
        "cached_hit_vs_cashews_decorated",
        ratio("corestone_cached_hit_ns", "cashews_decorated_hit_ns"), "<=", 1 / 10,
    )  # fmt: skip
    report.check(
        f"get_many{batch}_l2_vs_raw_mget",
        ratio(f"corestone_get_many{batch}_l2_p50_us", f"redis_mget{batch}_raw_p50_us"), "<=", 1.2,
    )  # fmt: skip
    lru, lru_scan = r.get("zipf_lru_pct", MISSING), r.get("zipf_scan_lru_pct", MISSING)
    report.check(
        "zipf_hit_ratio_gain_over_lru_points", r.get("zipf_memory_pct", -MISSING) - lru, ">=", 8
    )
    report.check(
        "zipf_scan_hit_ratio_gain_over_lru_points",
        r.get("zipf_scan_memory_pct", -MISSING) - lru_scan, ">=", 7,
    )  # fmt: skip
    for name, calls in (
        ("get_or_load", 1),
        ("get_or_load_locked", 1),
        ("cached", 1),
        ("two_instances_get_or_load", 2),  # no lock: one load per instance
        ("two_instances_get_or_load_locked_short_lease", 1),
    ):
        report.check(
            f"stampede_loader_calls_{name}",
            get(f"corestone_{name}_stampede_loader_calls"), "==", calls,
        )  # fmt: skip
    for protocol in (2, 3):
        report.check(
            f"invalidation_p99_ms_resp{protocol}", get(f"invalidation_resp{protocol}_p99_ms"),
            "<=", 5,
        )  # fmt: skip
    report.check("outage_exceptions", get("outage_exceptions"), "==", 0)
    report.check("outage_wrong_values", get("outage_wrong_values"), "==", 0)
    report.check("outage_l1_kept_pct", r.get("outage_l1_kept_pct", -MISSING), "==", 100)
    report.check("outage_stale_p99_ms", get("outage_stale_p99_ms"), "<=", 1)
    report.check("outage_back_to_l2_s", get("outage_back_to_l2_s"), "<=", 1)
