"""Timing helpers of the cache suite: micro loops, round-trip samples, a Redis of our own.

Micro cases (nanoseconds: dict lookups, L1 hits, decorated hits) are timed as the best
(minimum) of several repeats of a tight loop, every case once per repeat, so machine
noise hits them alike. Round-trip cases (Redis) are timed call by call, interleaved
round-robin, and summarised by the median: a minimum over network calls says more
about luck than about the library.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

SyncGet = Callable[[Any], Any]
AsyncGet = Callable[[Any], Awaitable[Any]]
AsyncOp = Callable[[], Awaitable[Any]]


def _loop_sync(fn: SyncGet, key: Any, n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        fn(key)
    return (time.perf_counter_ns() - start) / n


async def _loop_async(fn: AsyncGet, key: Any, n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        await fn(key)
    return (time.perf_counter_ns() - start) / n


async def _once(kind: str, fn: Any, key: Any, n: int) -> float:
    gc.disable()
    try:
        return _loop_sync(fn, key, n) if kind == "sync" else await _loop_async(fn, key, n)
    finally:
        gc.enable()


async def best_ns(
    cases: dict[str, tuple[str, Any, Any]], n: int, repeats: int, budget_s: float = 0.05
) -> dict[str, float]:
    """Min-of-repeats ns per call; ``cases`` maps name -> ('sync'|'async', fn, key).

    Each case gets at most ``n`` calls per repeat, fewer when a probe shows that would
    take longer than ``budget_s`` (slow peers would otherwise dominate the run time).
    """
    calls: dict[str, int] = {}
    for name, (kind, fn, key) in cases.items():
        probe = await _once(kind, fn, key, 200)
        calls[name] = max(500, min(n, int(budget_s * 1e9 / max(probe, 1.0))))
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(repeats):
        for name, (kind, fn, key) in cases.items():
            best[name] = min(best[name], await _once(kind, fn, key, calls[name]))
    return best


async def samples_us(
    cases: dict[str, AsyncOp], rounds: int, prepare: dict[str, Callable[[], Any]] | None = None
) -> dict[str, list[float]]:
    """Per-call microseconds, every case once per round (round-robin), after a warm-up.

    ``prepare[name]()`` runs untimed before each call of that case (e.g. clearing L1 so
    a read has to go to Redis).
    """
    prepare = prepare or {}
    for name, op in cases.items():
        for _ in range(5):
            if name in prepare:
                prepare[name]()
            await op()
    out: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, op in cases.items():
            if name in prepare:
                prepare[name]()
            start = time.perf_counter_ns()
            await op()
            out[name].append((time.perf_counter_ns() - start) / 1000)
    return out


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; ``inf`` for no values."""
    if not values:
        return float("inf")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnRedis:
    """A redis-server of the benchmark's own on a spare port, so it may be killed."""

    def __init__(self, directory: str) -> None:
        self.port = free_port()
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", self.directory],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self.listening():
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.01)

    def listening(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@contextlib.contextmanager
def own_redis() -> Iterator[OwnRedis]:
    with tempfile.TemporaryDirectory() as directory:
        server = OwnRedis(directory)
        server.start()
        try:
            yield server
        finally:
            server.kill()


async def redis_reachable(url: str) -> bool:
    import redis.asyncio as redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        await client.ping()
    except Exception:  # noqa: BLE001 - reported as a note by the caller
        return False
    finally:
        await client.aclose()
    return True


@contextlib.asynccontextmanager
async def closing_all(*closers: Callable[[], Awaitable[Any]]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for close in closers:
            with contextlib.suppress(Exception):
                await close()


async def settle(seconds: float = 0.05) -> None:
    """Let background tasks (subscriptions, refreshes) run before timing starts."""
    await asyncio.sleep(seconds)
