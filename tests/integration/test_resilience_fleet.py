"""Fleet mode on a real Redis: peers open together, trials are fleet-wide, Redis loss is harmless.

Run as a script, this file is one fleet member (``python this.py ROLE URL PREFIX``), so
the two-process test uses real, separate interpreters.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from corestone.errors import CircuitOpenError
from corestone.resilience import BreakerConfig, BreakerRegistry, Fleet, State
from corestone.testing import ManualClock

ROOT = Path(__file__).resolve().parents[2]
CONFIG = BreakerConfig(window_size=10, minimum_calls=5, wait_in_open_seconds=60.0)


async def _member(role: str, url: str, prefix: str) -> None:
    """One process of the fleet: ``failer`` sees failures, ``watcher`` only watches."""
    registry = BreakerRegistry(CONFIG)
    breaker = registry.get("payments")
    fleet = Fleet(registry, url=url, prefix=prefix)
    await fleet.start()
    await asyncio.sleep(0.3)  # subscribed
    print("ready", flush=True)
    if role == "failer":

        async def broken() -> None:
            raise ConnectionError("payments down")

        for _ in range(5):
            with contextlib.suppress(ConnectionError):
                await breaker.acall(broken)
        for _ in range(100):
            if fleet.published:
                break
            await asyncio.sleep(0.05)
        print(f"opened {breaker.state.value} published={fleet.published}", flush=True)
    else:
        for _ in range(400):
            if breaker.state is State.OPEN:
                break
            await asyncio.sleep(0.05)
        calls = breaker.machine.counters
        print(
            f"state {breaker.state.value} retry_after={breaker.retry_after():.0f} "
            f"failed={calls.failed} applied={fleet.applied}",
            flush=True,
        )
    await fleet.aclose()


def _spawn(role: str, url: str, prefix: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, role, url, prefix],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )


def _line(process: subprocess.Popen[str], start: str) -> str:
    """The first line of the member's output that starts with ``start`` (logs interleave)."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(start):
            return line.strip()
    return ""


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = f"test:{uuid.uuid4().hex[:12]}:breakers"
    yield name

    async def clean() -> None:
        import redis.asyncio as redis

        client = redis.Redis.from_url(redis_url)
        try:
            keys = [key async for key in client.scan_iter(match=f"{name}:*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()

    asyncio.run(clean())


def test_failures_in_one_process_open_the_breaker_in_another(redis_url: str, prefix: str) -> None:
    """Process A trips the breaker; process B, which made no call, is OPEN with A's wait."""
    watcher = _spawn("watcher", redis_url, prefix)
    try:
        assert watcher.stdout is not None
        assert _line(watcher, "ready") == "ready"
        failer = _spawn("failer", redis_url, prefix)
        out, _ = failer.communicate(timeout=60)
        assert "opened open published=1" in out
        line = _line(watcher, "state ")
        watcher.wait(timeout=30)
    finally:
        watcher.kill()
        watcher.communicate()
    state, retry_after, failed, applied = line.split()[1:]
    assert state == "open"
    assert failed == "failed=0"  # it learned from the peer, without paying the failures
    assert applied == "applied=1"
    assert 50 <= int(retry_after.split("=")[1]) <= 60


@contextlib.asynccontextmanager
async def _fleet(url: str, prefix: str, clock: ManualClock) -> AsyncIterator[tuple[Any, Fleet]]:
    registry = BreakerRegistry(
        CONFIG.replace(permitted_calls_in_half_open=3, wait_in_open_seconds=5.0), clock=clock
    )
    breaker = registry.get("payments")
    fleet = Fleet(registry, url=url, prefix=prefix)
    await fleet.start()
    try:
        yield breaker, fleet
    finally:
        await fleet.aclose()


async def _until(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_half_open_trials_are_limited_across_the_fleet(redis_url: str, prefix: str) -> None:
    """Two members in HALF_OPEN with 3 permitted trials run 3 trial calls between them."""
    clock = ManualClock()
    async with (
        _fleet(redis_url, prefix, clock) as (a, fleet_a),
        _fleet(redis_url, prefix, clock) as (b, _),
    ):
        await asyncio.sleep(0.3)
        a.transition_to(State.OPEN)
        await _until(lambda: b.state is State.OPEN and fleet_a.published)
        clock.advance(10)
        release = asyncio.Event()
        ran = 0

        async def trial() -> str:
            nonlocal ran
            ran += 1
            await release.wait()
            return "ok"

        tasks = [asyncio.create_task(x.acall(trial)) for x in (a, b) for _ in range(3)]
        await _until(lambda: ran + sum(t.done() for t in tasks) == 6)
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert ran == 3
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 3


async def test_a_process_started_later_reads_the_open_state(redis_url: str, prefix: str) -> None:
    """A member that joins after the breaker opened elsewhere starts OPEN (from the key)."""
    clock = ManualClock()
    async with _fleet(redis_url, prefix, clock) as (a, fleet_a):
        a.transition_to(State.OPEN)
        await _until(lambda: fleet_a.published == 1)
        async with _fleet(redis_url, prefix, clock) as (late, _):
            await _until(lambda: late.state is State.OPEN)
            assert late.machine.counters.failed == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test's own, on a spare port, that the test may kill."""
    port = _free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", server
    finally:
        server.kill()
        server.wait(timeout=10)


async def test_redis_stopped_falls_back_to_local_state_without_failing_calls(
    own_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """With its Redis killed, a fleet breaker keeps serving, opening and probing locally."""
    url, server = own_redis
    clock = ManualClock()
    async with _fleet(url, "fallback", clock) as (breaker, fleet):

        async def fine() -> str:
            return "ok"

        assert await breaker.acall(fine) == "ok"
        breaker.transition_to(State.OPEN)
        await _until(lambda: fleet.published == 1)  # Redis up: the change was shared
        breaker.reset()
        server.kill()
        await asyncio.to_thread(server.wait, 10)
        results = [await breaker.acall(fine) for _ in range(200)]
        assert results == ["ok"] * 200
        breaker.transition_to(State.OPEN)  # a local open: publishing it fails quietly
        await _until(lambda: fleet.redis_errors > 0)
        clock.advance(10)
        trials = [await breaker.acall(fine) for _ in range(3)]  # trial permits: local
        assert trials == ["ok"] * 3
        assert breaker.state is State.CLOSED


async def test_infrastructure_runs_the_fleet_when_configured(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """CORESTONE_BREAKER_FLEET=true: infra.fleet links infra.breakers to Redis, and stops."""
    from corestone import Infrastructure, Settings

    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        redis_url=redis_url,
        breaker_fleet=True,
        breaker_fleet_prefix=prefix,
    )
    async with Infrastructure(settings) as infra:
        assert infra.fleet is not None
        infra.breakers.get("database").transition_to(State.OPEN)
        await _until(lambda: infra.fleet is not None and infra.fleet.published == 1)
        infra.breakers.get("database").reset()


if __name__ == "__main__":
    asyncio.run(_member(sys.argv[1], sys.argv[2], sys.argv[3]))
