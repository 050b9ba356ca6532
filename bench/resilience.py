"""Circuit breakers side by side: corestone vs pybreaker, aiobreaker, purgatory and a bare call.

``python -m bench resilience [--quick]``. Per-call overhead is the best (minimum) of N
repeats of a tight ``perf_counter_ns`` loop, minus the same loop over the bare call; the
implementations are interleaved within each repeat so machine noise hits them alike.
corestone runs with a count window and slow-call tracking on (its defaults). Then the
three behaviour checks of issue 4, which measure what happens, not how fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import aiobreaker
import purgatory
import pybreaker
import tenacity

from bench._report import Report
from corestone.errors import CircuitOpenError
from corestone.resilience import (
    BreakerConfig,
    BreakerRegistry,
    CircuitBreaker,
    Fleet,
    Retry,
    State,
)
from corestone.testing import ManualClock

SyncCall = Callable[[], Any]
AsyncCall = Callable[[], Awaitable[Any]]


def _f() -> int:
    return 1


async def _af() -> int:
    return 1


def _time_sync(fn: SyncCall, n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - start) / n


def _time_reject(fn: SyncCall, n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        try:
            fn()
        except Exception:  # noqa: BLE001 - the rejection is what is timed
            continue
    return (time.perf_counter_ns() - start) / n


async def _time_async(fn: AsyncCall, n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        await fn()
    return (time.perf_counter_ns() - start) / n


async def _time_areject(fn: AsyncCall, n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        try:
            await fn()
        except Exception:  # noqa: BLE001
            continue
    return (time.perf_counter_ns() - start) / n


async def _best(cases: dict[str, tuple[str, Any]], n: int, repeats: int) -> dict[str, float]:
    """Min-of-repeats ns per call for each case: ('sync'|'async'|'reject'|'areject', fn)."""
    best = dict.fromkeys(cases, float("inf"))
    timers = {"sync": _time_sync, "reject": _time_reject}
    atimers = {"async": _time_async, "areject": _time_areject}
    for _ in range(repeats):
        for name, (kind, fn) in cases.items():
            gc.disable()
            try:
                took = timers[kind](fn, n) if kind in timers else await atimers[kind](fn, n)
            finally:
                gc.enable()
            best[name] = min(best[name], took)
    return best


def _raise_plain() -> None:
    raise RuntimeError("open")


def _raise_circuit_open() -> None:
    raise CircuitOpenError("bare", retry_after=1.0)


async def _purgatory(threshold: int = 5) -> tuple[Any, Any, Any, Any]:
    afactory = purgatory.AsyncCircuitBreakerFactory(default_threshold=threshold, default_ttl=60)
    await afactory.initialize()
    sfactory = purgatory.SyncCircuitBreakerFactory(default_threshold=threshold, default_ttl=60)
    sfactory.initialize()
    return afactory, afactory(circuit="bench")(_af), sfactory, sfactory(circuit="bench")(_f)


async def _fleet_breaker() -> tuple[CircuitBreaker | None, Fleet | None]:
    url = os.environ.get("CORESTONE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    registry = BreakerRegistry()
    fleet = Fleet(registry, url=url, prefix=f"bench:{os.getpid()}:breakers")
    try:
        await fleet.start()
        await asyncio.sleep(0.2)
        if fleet.redis_errors:
            raise ConnectionError("Redis unreachable")
    except Exception:  # noqa: BLE001 - reported as a note
        await fleet.aclose()
        return None, None
    return registry.get("fleet"), fleet


async def _overheads(report: Report, n: int, repeats: int) -> None:
    ours = CircuitBreaker("bench")  # count window of 100, slow calls at 60 s: tracked
    ours_sync, ours_async = ours(_f), ours(_af)
    pyb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)
    aio = aiobreaker.CircuitBreaker(fail_max=5, timeout_duration=timedelta(seconds=60))
    pfactory, purg_async, sfactory, purg_sync = await _purgatory()
    fleet_breaker, fleet = await _fleet_breaker()
    retried = functools.partial(Retry().call, _af)

    tenacity_async = tenacity.retry(stop=tenacity.stop_after_attempt(3))(_af)
    cases: dict[str, tuple[str, Any]] = {
        "bare_sync": ("sync", _f),
        "corestone_sync": ("sync", ours_sync),
        "corestone_call_sync": ("sync", lambda: ours.call(_f)),
        "pybreaker_sync": ("sync", lambda: pyb.call(_f)),
        "purgatory_sync": ("sync", purg_sync),
        "bare_async": ("async", _af),
        "corestone_async": ("async", ours_async),
        "aiobreaker_async": ("async", lambda: aio.call_async(_af)),
        "purgatory_async": ("async", purg_async),
        "retry_async": ("async", retried),
    }
    if fleet_breaker is not None:
        cases["corestone_fleet_async"] = ("async", fleet_breaker(_af))
    best = await _best(cases, n, repeats)
    # tenacity's own success path is ~100x slower: fewer calls, same method.
    best |= await _best({"tenacity_async": ("async", tenacity_async)}, max(n // 100, 200), repeats)
    cases["tenacity_async"] = ("async", tenacity_async)
    if fleet is not None:
        await fleet.aclose()

    # OPEN: every call is rejected.
    ours.transition_to(State.FORCED_OPEN)
    pyb.open()
    aio.open()
    for _ in range(5):
        with contextlib.suppress(Exception):
            await pfactory(circuit="open")(_raise_async)()
        with contextlib.suppress(Exception):
            sfactory(circuit="open")(_raise_plain)()
    purg_open_async = pfactory(circuit="open")(_af)
    purg_open_sync = sfactory(circuit="open")(_f)
    rejects: dict[str, tuple[str, Any]] = {
        "raise_plain": ("reject", _raise_plain),
        "raise_circuit_open": ("reject", _raise_circuit_open),
        "corestone_open_sync": ("reject", ours_sync),
        "corestone_open_async": ("areject", ours_async),
        "pybreaker_open_sync": ("reject", lambda: pyb.call(_f)),
        "aiobreaker_open_async": ("areject", lambda: aio.call_async(_af)),
        "purgatory_open_async": ("areject", purg_open_async),
        "purgatory_open_sync": ("reject", purg_open_sync),
    }
    best |= await _best(rejects, max(n // 4, 1000), repeats)

    bare = {"sync": best["bare_sync"], "async": best["bare_async"]}
    for name, (kind, _) in cases.items():
        if name.startswith("bare"):
            continue
        base = bare["sync" if kind == "sync" else "async"]
        overhead = best[name] - base
        report.rows.append((name, kind, best[name], overhead))
        report.results[f"{name}_overhead_ns"] = overhead
    for name, (kind, _) in rejects.items():
        report.rows.append((name, "open" if kind != "reject" or "open" in name else "baseline",
                            best[name], best[name] - best["raise_plain"]))  # fmt: skip
        report.results[f"{name}_ns"] = best[name]
    report.results["bare_sync_ns"] = bare["sync"]
    report.results["bare_async_ns"] = bare["async"]
    report.results["_fleet_measured"] = 1.0 if fleet_breaker is not None else 0.0


async def _raise_async() -> None:
    raise RuntimeError("down")


async def _memory_per_rejection(count: int) -> dict[str, float]:
    """Bytes still allocated per rejected call after the rejections (and a gc) are done."""
    ours = CircuitBreaker("memory")
    ours.transition_to(State.FORCED_OPEN)
    guarded = ours(_af)
    pfactory, _, _, _ = await _purgatory(threshold=1)
    with contextlib.suppress(Exception):
        await pfactory(circuit="m")(_raise_async)()
    purg = pfactory(circuit="m")(_af)
    aio = aiobreaker.CircuitBreaker(fail_max=1)
    aio.open()
    out = {}
    for name, fn in (
        ("corestone", guarded),
        ("purgatory", purg),
        ("aiobreaker", lambda: aio.call_async(_af)),
    ):
        for _ in range(50):  # warm caches before measuring
            with contextlib.suppress(Exception):
                await fn()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(count):
            with contextlib.suppress(Exception):
                await fn()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        out[name] = max(after - before, 0) / count
    return out


async def _half_open_trials() -> dict[str, float]:
    """1,000 concurrent callers against a half-open breaker permitting 3 trials."""
    clock = ManualClock()
    ours = CircuitBreaker(
        "trials", BreakerConfig(permitted_calls_in_half_open=3, minimum_calls=1), clock=clock
    )
    ours.transition_to(State.OPEN)
    clock.advance(ours.retry_after())
    aio = aiobreaker.CircuitBreaker(fail_max=1, timeout_duration=timedelta(milliseconds=20))
    aio.open()
    pfactory, _, _, _ = await _purgatory(threshold=1)
    pfactory.default_ttl = 0.02
    with contextlib.suppress(Exception):
        await pfactory(circuit="half", ttl=0.02)(_raise_async)()
    await asyncio.sleep(0.05)
    out = {}
    for name, call in (
        ("corestone", ours.acall),
        ("aiobreaker", aio.call_async),
        ("purgatory", lambda fn: pfactory(circuit="half", ttl=0.02)(fn)()),
    ):
        gate = asyncio.Event()
        ran = 0

        async def trial(gate: asyncio.Event = gate) -> None:
            nonlocal ran
            ran += 1
            await gate.wait()

        tasks = [asyncio.create_task(call(trial)) for _ in range(1000)]
        for _ in range(5):
            await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        out[name] = float(ran)
    return out


async def _sync_breaker_on_async_def() -> dict[str, float]:
    """Failures of an ``async def`` called through each library's sync ``call``."""
    ours = CircuitBreaker("sync-on-async", BreakerConfig(minimum_calls=100))
    pyb = pybreaker.CircuitBreaker(fail_max=100)
    for _ in range(5):
        with contextlib.suppress(Exception):
            await ours.call(_raise_async)
        with contextlib.suppress(Exception):
            await pyb.call(_raise_async)
    failed = ours.machine.counters.failed  # failures are recorded at once, never batched
    return {"corestone": float(failed), "pybreaker": float(pyb.fail_counter)}


def _threads_inside(threads: int = 8) -> dict[str, float]:
    """The most threads inside one breaker's guarded call at the same time."""
    ours = CircuitBreaker("threads")
    pyb = pybreaker.CircuitBreaker()
    out = {}
    for name, call in (("corestone", ours.call), ("pybreaker", pyb.call)):
        inside = peak = 0
        lock = threading.Lock()

        def work(lock: threading.Lock = lock) -> None:
            nonlocal inside, peak
            with lock:
                inside += 1
                peak = max(peak, inside)
            time.sleep(0.05)
            with lock:
                inside -= 1

        workers = [threading.Thread(target=call, args=(work,)) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        out[name] = float(peak)
    return out


async def run(quick: bool) -> Report:
    n, repeats = (20_000, 5) if quick else (100_000, 15)
    report = Report("resilience", ("case", "kind", "ns_per_call", "overhead_ns"))
    await _overheads(report, n, repeats)
    r = report.results
    memory = await _memory_per_rejection(2_000 if quick else 10_000)
    trials = await _half_open_trials()
    sync_async = await _sync_breaker_on_async_def()
    threads = _threads_inside()
    for name, value in memory.items():
        r[f"{name}_open_retained_bytes_per_call"] = value
    for name, value in trials.items():
        r[f"{name}_half_open_trials_of_3"] = value
    for name, value in sync_async.items():
        r[f"{name}_sync_on_async_failures_of_5"] = value
    for name, value in threads.items():
        r[f"{name}_threads_inside_of_8"] = value

    closed_async, closed_sync = r["corestone_async_overhead_ns"], r["corestone_sync_overhead_ns"]
    report.check("closed_async_overhead_ns", closed_async, "<=", 400)
    report.check("closed_sync_overhead_ns", closed_sync, "<=", 350)
    peers_async = min(r["aiobreaker_async_overhead_ns"], r["purgatory_async_overhead_ns"])
    peers_sync = min(r["pybreaker_sync_overhead_ns"], r["purgatory_sync_overhead_ns"])
    report.check("closed_async_peer_ratio", peers_async / max(closed_async, 1.0), ">=", 2.5)
    report.check("closed_sync_peer_ratio", peers_sync / max(closed_sync, 1.0), ">=", 2.5)
    report.check(
        "open_rejection_vs_bare_raise", r["corestone_open_sync_ns"] / r["raise_plain_ns"], "<=", 2.0
    )
    r["open_rejection_vs_raising_circuit_open_ratio"] = (
        r["corestone_open_sync_ns"] / r["raise_circuit_open_ns"]
    )
    report.check(
        "open_retained_bytes_per_call", r["corestone_open_retained_bytes_per_call"], "<=", 1.0
    )
    report.check("retry_success_overhead_ns", r["retry_async_overhead_ns"], "<=", 1000)
    if r.pop("_fleet_measured"):
        report.check("fleet_closed_overhead_ns", r["corestone_fleet_async_overhead_ns"], "<=", 2000)
    else:
        report.notes.append("fleet: Redis unreachable, fleet overhead not measured")
        report.check("fleet_closed_overhead_ns", float("inf"), "<=", 2000)
    report.check("half_open_trials_of_3", r["corestone_half_open_trials_of_3"], "==", 3)
    report.check("sync_on_async_failures_of_5", r["corestone_sync_on_async_failures_of_5"], "==", 5)
    report.check("threads_inside_of_8", r["corestone_threads_inside_of_8"], "==", 8)
    report.notes.append(
        f"{n:,} calls x {repeats} repeats, min taken; overhead = case - bare call "
        "(rejections: minus a bare `raise RuntimeError`)"
    )
    report.notes.append(
        "open_rejection_vs_bare_raise: a rejection through the breaker / raising and "
        "catching a bare RuntimeError (raise_circuit_open: the same with CircuitOpenError)"
    )
    return report
