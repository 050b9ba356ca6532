"""The cache backplane on a real Redis: peers hear each other in order, never themselves,
survive garbage on the channel and a Redis restart, on RESP2 and RESP3 alike."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from corestone.cache.backplane import Backplane, Invalidation, LocalBackplane, RedisBackplane
from corestone.observability.metrics import Metrics

PROTOCOLS = [pytest.param(2, id="resp2"), pytest.param(3, id="resp3")]


class Inbox:
    """What one backplane delivered: messages in arrival order, and resync calls."""

    def __init__(self) -> None:
        self.messages: list[Invalidation] = []
        self.delays: list[float] = []
        self.resyncs = 0

    def on_message(self, message: Invalidation) -> None:
        self.delays.append(time.time() - message.sent_at)
        self.messages.append(message)

    def on_resync(self) -> None:
        self.resyncs += 1


async def _until(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@asynccontextmanager
async def _started(
    url: str, channel: str, protocol: int | None, **options: object
) -> AsyncIterator[tuple[RedisBackplane, Inbox]]:
    backplane = RedisBackplane(url, channel=channel, protocol=protocol, **options)  # type: ignore[arg-type]
    inbox = Inbox()
    await backplane.start(inbox.on_message, inbox.on_resync)
    try:
        yield backplane, inbox
    finally:
        await backplane.aclose()


def _message(backplane: RedisBackplane, n: int, kind: str = "keys") -> Invalidation:
    return Invalidation(kind, (f"corestone:t:global:k{n}",), backplane.instance_id, time.time())  # type: ignore[arg-type]


@pytest.fixture
def channel() -> str:
    return f"corestone:test:backplane:{uuid.uuid4().hex}"


def test_invalidation_round_trips_and_rejects_garbage() -> None:
    """An Invalidation survives encode/decode; malformed or extra-field payloads are ValueErrors."""
    message = Invalidation("tags", ("corestone:ns:global#tag:a", "ü"), "me", 1.5)
    assert Invalidation.decode(message.encode()) == message
    for garbage in [
        b"",
        b"\xff\xfe",
        b"[]",
        b'{"k":"keys","i":["a"],"o":"x"}',
        b'{"k":"drop","i":["a"],"o":"x","t":1}',
        b'{"k":"keys","i":"a","o":"x","t":1}',
        b'{"k":"keys","i":[1],"o":"x","t":1}',
        b'{"k":"keys","i":["a"],"o":"","t":1}',
        b'{"k":"keys","i":["a"],"o":"x","t":true}',
        b'{"k":"keys","i":["a"],"o":"x","t":"now"}',
        b'{"k":"keys","i":["a"],"o":"x","t":1,"extra":1}',
    ]:
        with pytest.raises(ValueError, match="backplane message"):
            Invalidation.decode(garbage)


async def test_local_backplane_is_a_silent_no_op() -> None:
    """The local backplane is connected and takes a publish, but delivers nothing, not a resync."""
    local = LocalBackplane()
    inbox = Inbox()
    await local.start(inbox.on_message, inbox.on_resync)
    backplane: Backplane = local  # structurally a Backplane (mypy checks it)
    assert backplane.connected
    assert await local.publish(Invalidation("clear", ("x",), local.instance_id, time.time()))
    await local.aclose()
    assert inbox.messages == []
    assert inbox.resyncs == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_peers_hear_each_other_in_order_and_never_themselves(
    redis_url: str, channel: str, protocol: int
) -> None:
    """Peers get each other's messages in send order, never their own, and metrics count them."""
    metrics = Metrics()
    async with (
        _started(redis_url, channel, protocol, metrics=metrics) as (a, inbox_a),
        _started(redis_url, channel, protocol) as (b, inbox_b),
    ):
        assert a.connected
        assert b.connected
        assert a.instance_id != b.instance_id
        sent_a = [_message(a, n) for n in range(200)]
        sent_b = [_message(b, n, "tags") for n in range(50)]
        for message in sent_a:
            assert await a.publish(message)
        for message in sent_b:
            assert await b.publish(message)
        await _until(lambda: len(inbox_b.messages) == 200 and len(inbox_a.messages) == 50)
        await asyncio.sleep(0.05)  # nothing else (no echo of their own) arrives
        assert inbox_b.messages == sent_a
        assert inbox_a.messages == sent_b
        assert inbox_a.resyncs == inbox_b.resyncs == 0
    text = metrics.render().decode()
    assert 'corestone_cache_backplane_messages_total{direction="sent"} 200.0' in text
    assert 'corestone_cache_backplane_messages_total{direction="received"} 50.0' in text
    assert "corestone_cache_backplane_delay_seconds_count 50.0" in text


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_garbage_on_the_channel_is_dropped_and_counted(
    redis_url: str, channel: str, protocol: int
) -> None:
    """Undecodable messages are dropped and counted, and the reader goes on to deliver the next."""
    import redis.asyncio as redis

    metrics = Metrics()
    raw = redis.Redis.from_url(redis_url, protocol=protocol)
    try:
        async with (
            _started(redis_url, channel, protocol, metrics=metrics) as (a, inbox_a),
            _started(redis_url, channel, protocol) as (b, _),
        ):
            for garbage in [b"not json", b"{}", b"\x00\xff", b'{"k":"keys"}']:
                await raw.publish(channel, garbage)
            after = _message(b, 1)
            assert await b.publish(after)
            await _until(lambda: len(inbox_a.messages) == 1)
            assert inbox_a.messages == [after]  # the reader survived the garbage
            assert a.dropped == 4
            assert a.connected
    finally:
        await raw.aclose()
    assert 'corestone_cache_backplane_messages_total{direction="dropped"} 4.0' in (
        metrics.render().decode()
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_failing_callback_does_not_stop_delivery(
    redis_url: str, channel: str, protocol: int
) -> None:
    """A callback that raises on one message still receives the messages that follow it."""
    seen: list[Invalidation] = []

    def flaky(message: Invalidation) -> None:
        seen.append(message)
        if len(seen) == 1:
            raise RuntimeError("handler bug")

    receiver = RedisBackplane(redis_url, channel=channel, protocol=protocol)
    await receiver.start(flaky, lambda: None)
    try:
        async with _started(redis_url, channel, protocol) as (sender, _):
            first, second = _message(sender, 1), _message(sender, 2)
            assert await sender.publish(first)
            assert await sender.publish(second)
            await _until(lambda: len(seen) == 2)
            assert seen == [first, second]
    finally:
        await receiver.aclose()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_delivery_delay_over_500_messages(
    redis_url: str, channel: str, protocol: int
) -> None:
    """Prints the one-way delay (measured, not asserted: timings depend on the machine)."""
    async with (
        _started(redis_url, channel, protocol) as (sender, _),
        _started(redis_url, channel, protocol) as (_, inbox),
    ):
        for n in range(500):
            assert await sender.publish(_message(sender, n))
            if n % 50 == 0:
                await asyncio.sleep(0)
        await _until(lambda: len(inbox.messages) == 500)
    delays = sorted(inbox.delays)
    p50, p99 = delays[len(delays) // 2], delays[int(len(delays) * 0.99)]
    print(f"\nRESP{protocol} backplane delay p50={p50 * 1e3:.3f} ms p99={p99 * 1e3:.3f} ms")
    assert [m.items for m in inbox.messages] == [(f"corestone:t:global:k{n}",) for n in range(500)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_redis(port: int, directory: Path) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return server
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[int, list[subprocess.Popen[bytes]]]]:
    """A redis-server of this test's own on a spare port; the test may kill and restart it."""
    port = _free_port()
    servers = [_start_redis(port, tmp_path)]
    try:
        yield port, servers
    finally:
        for server in servers:
            server.kill()
            server.wait(timeout=10)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_redis_restart_publish_fails_quietly_then_resubscribes_and_resyncs(
    own_redis: tuple[int, list[subprocess.Popen[bytes]]],
    tmp_path: Path,
    channel: str,
    protocol: int,
) -> None:
    """With Redis down publish is False; back up, peers resubscribe, resync once, replay nothing."""
    port, servers = own_redis
    url = f"redis://127.0.0.1:{port}/0"
    async with (
        _started(url, channel, protocol, reconnect_max_seconds=0.2) as (a, inbox_a),
        _started(url, channel, protocol, reconnect_max_seconds=0.2) as (b, inbox_b),
    ):
        assert await a.publish(_message(a, 0))
        await _until(lambda: len(inbox_b.messages) == 1)

        servers[0].kill()
        await asyncio.to_thread(servers[0].wait, 10)
        await _until(lambda: not a.connected and not b.connected)
        for n in range(5):
            assert await a.publish(_message(a, n)) is False  # no exception while down
        assert inbox_a.resyncs == inbox_b.resyncs == 0

        servers.append(await asyncio.to_thread(_start_redis, port, tmp_path))
        await _until(lambda: a.connected and b.connected)  # re-subscribed by themselves
        assert inbox_a.resyncs == 1
        assert inbox_b.resyncs == 1

        after_a, after_b = _message(a, 99), _message(b, 98, "clear")
        assert await a.publish(after_a)
        assert await b.publish(after_b)
        await _until(lambda: inbox_b.messages[-1:] == [after_a] and inbox_a.messages == [after_b])
        assert len(inbox_b.messages) == 2  # nothing from the outage was queued and replayed


async def test_start_while_redis_is_down_resyncs_once_it_comes_up(
    tmp_path: Path, channel: str
) -> None:
    """Started with Redis down, publish is False; once Redis is up it connects and resyncs once."""
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    async with _started(url, channel, None, reconnect_max_seconds=0.1) as (a, inbox):
        assert not a.connected
        assert await a.publish(_message(a, 0)) is False
        server = await asyncio.to_thread(_start_redis, port, tmp_path)
        try:
            await _until(lambda: a.connected)
            assert inbox.resyncs == 1  # L1 may have been filled while deaf
        finally:
            server.kill()
            await asyncio.to_thread(server.wait, 10)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_idle_pings_keep_a_live_subscription(
    redis_url: str, channel: str, protocol: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PONGs count as signs of life: an idle but healthy subscription is never dropped."""
    monkeypatch.setattr(RedisBackplane, "idle_ping_seconds", 0.02)
    async with (
        _started(redis_url, channel, protocol) as (a, _),
        _started(redis_url, channel, protocol) as (b, inbox_b),
    ):
        await asyncio.sleep(0.4)  # ~20 idle periods
        assert a.connected
        assert inbox_b.resyncs == 0
        message = _message(a, 1)
        assert await a.publish(message)
        await _until(lambda: inbox_b.messages == [message])
        assert b.resyncs == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_server_that_stops_answering_is_left_and_rejoined(
    own_redis: tuple[int, list[subprocess.Popen[bytes]]],
    channel: str,
    protocol: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No TCP reset, just silence (CLIENT PAUSE): the missing PONG triggers a re-subscribe."""
    import redis.asyncio as redis

    monkeypatch.setattr(RedisBackplane, "idle_ping_seconds", 0.05)
    port, _ = own_redis
    url = f"redis://127.0.0.1:{port}/0"
    admin = redis.Redis.from_url(url)
    try:
        async with (
            _started(url, channel, protocol, reconnect_max_seconds=0.1) as (a, _),
            _started(url, channel, protocol, reconnect_max_seconds=0.1) as (b, inbox_b),
        ):
            await admin.client_pause(1000, all=True)
            await _until(lambda: not b.connected, within=3.0)
            await _until(lambda: b.connected and inbox_b.resyncs == 1, within=5.0)
            message = _message(a, 1)
            assert await a.publish(message)
            await _until(lambda: inbox_b.messages == [message])
    finally:
        await admin.aclose()


def test_reconnect_backoff_is_jittered_and_capped() -> None:
    """Reconnect delays start at 20 ms or less, stay under the cap, and are jittered."""
    backplane = RedisBackplane("redis://127.0.0.1:1/0", reconnect_max_seconds=0.3)
    delays = [backplane._backoff(attempt) for attempt in range(1, 40) for _ in range(20)]
    assert max(delays) <= 0.3
    assert min(delays) > 0
    assert len({round(d, 6) for d in delays[-20:]}) > 1  # jittered, not in lock step
    assert backplane._backoff(1) <= 0.02  # starts fast: a blip costs milliseconds


async def test_publish_before_start_and_after_close(redis_url: str, channel: str) -> None:
    """Publishing needs no subscription; after aclose it reports False instead of raising."""
    async with _started(redis_url, channel, None) as (_, inbox):
        early = RedisBackplane(redis_url, channel=channel)
        message = _message(early, 1)
        assert await early.publish(message)
        await _until(lambda: inbox.messages == [message])
        await early.aclose()
        assert await early.publish(message) is False
        await early.aclose()  # twice is fine
