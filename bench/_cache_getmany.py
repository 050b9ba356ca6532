"""The get_many(100) check of the cache suite on its own: ``python -m bench._cache_getmany``.

The full suite takes a minute and measures everything; this runs only the three round
trips the ``get_many100_l2_vs_raw_mget`` check and its diagnosis need (raw MGET, the
tiered ``get_many`` from L2, the L2 store alone), with the suite's own cases and method
(round-robin, L1 cleared untimed before each ``get_many``, medians), for A/B runs while
working on that path. ``--rounds`` (default 2,000) and ``--runs`` (default 3).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os

from bench import _cache_corestone, _cache_peers
from bench._cache_timing import percentile, samples_us

BATCH = 100


async def one_run(url: str, rounds: int) -> dict[str, float]:
    """Median µs of each case over ``rounds`` round-robin rounds."""
    async with contextlib.AsyncExitStack() as stack:
        cache = await _cache_corestone.tiered(url, stack)
        ours, prepare, fulls = await _cache_corestone.tiered_redis_cases(cache, BATCH)
        trips = {
            "raw_mget": _cache_peers.raw_mget(url, fulls, stack),
            "get_many_l2": ours[f"corestone_get_many{BATCH}_l2"],
            "store_get_many": ours[f"corestone_redis_store_get_many{BATCH}"],
        }
        gc.collect()
        took = await samples_us(
            trips, rounds, {"get_many_l2": prepare[f"corestone_get_many{BATCH}_l2"]}
        )
        return {name: percentile(values, 0.5) for name, values in took.items()}


async def main(rounds: int, runs: int) -> None:
    url = os.environ.get("CORESTONE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    for _ in range(runs):
        p50 = await one_run(url, rounds)
        ratio = p50["get_many_l2"] / p50["raw_mget"]
        load = os.getloadavg()[0]
        figures = "  ".join(f"{name} {us:,.0f} µs" for name, us in p50.items())
        print(f"{figures}  ratio {ratio:.3f}  (load {load:.1f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench._cache_getmany")
    parser.add_argument("--rounds", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.runs))
