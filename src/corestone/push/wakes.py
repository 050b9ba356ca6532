"""Wakes: "the outbox has new sent events", told to every process that serves live streams.

The relay (in whichever process runs it) calls :meth:`Wakes.notify` after each pass
that marked events sent. Each process's feed (:mod:`corestone.push.feed`) then reads
the new events from the outbox once. A wake carries nothing the feed needs: the events
are in the database, so a lost wake costs only latency (the feed also polls).

- :class:`LocalWakes`: in this process only (no Redis: the embedded default, where the
  relay and the streams share a process; other processes fall back on polling).
- :class:`RedisWakes`: also PUBLISHed on one Redis pub/sub channel (the application's
  ``corestone:{namespace}:live``), so a ``taskboard worker``'s relay wakes every
  ``serve --no-worker`` process. Wakes are coalesced: however many passes end while a
  PUBLISH is in flight, one more follows. A subscriber that loses Redis logs it, reports
  itself down (health warns), re-subscribes with a backoff, and wakes its listeners
  once back, for whatever it missed meanwhile. A subscription silent for
  ``ping_seconds`` is PINGed, and one that stays silent as long again counts as lost:
  a connection cut without a reset (a partition, a dead host) would otherwise wait for
  ever while health said the wakes were up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import uuid
from collections.abc import Callable
from typing import Any

from corestone._extras import requires_extra
from corestone.observability.logging import get_logger

__all__ = ["LocalWakes", "RedisWakes", "Wakes"]

log = get_logger(__name__)


class LocalWakes:
    """Wakes within this process: :meth:`notify` calls every listener (a component)."""

    name = "live-wakes"
    shared = False
    """Whether other processes hear these wakes (no: they poll)."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[], None]] = []

    @property
    def connected(self) -> bool:
        return True

    def listen(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` (sync, quick) on every wake; returns its remover."""
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    def notify(self, _count: int = 1) -> None:
        """Wake every listener (the relay's ``on_sent``)."""
        self._wake_listeners()

    def _wake_listeners(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception as error:  # noqa: BLE001 - one listener's bug stops no other
                log.warning("live wake listener failed", error=repr(error))

    async def start(self) -> None:
        """Nothing to start."""

    async def aclose(self) -> None:
        """Nothing to stop."""


class RedisWakes(LocalWakes):
    """Wakes over Redis pub/sub as well as within this process (see the module doc)."""

    shared = True

    def __init__(
        self,
        url: str,
        *,
        channel: str,
        protocol: int | None = None,
        retry_max_seconds: float = 5.0,
        ping_seconds: float = 5.0,
    ) -> None:
        super().__init__()
        if ping_seconds <= 0:
            raise ValueError("ping_seconds must be > 0")
        self.url, self.channel, self.protocol = url, channel, protocol
        self.retry_max_seconds, self.ping_seconds = retry_max_seconds, ping_seconds
        self._me = f"{os.getpid()}-{uuid.uuid4().hex[:12]}".encode()
        self._pending = asyncio.Event()
        self._subscribed = False
        self._publisher: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pub: Any = None
        self._sub: Any = None

    @property
    def connected(self) -> bool:
        """Whether the subscription is up (else this process hears only its own wakes)."""
        return self._subscribed

    def _client(self, *, timeout: float | None) -> Any:
        with requires_extra(__name__, "redis"):
            import redis.asyncio as redis

        options: dict[str, Any] = {"socket_connect_timeout": 1.0, "socket_timeout": timeout}
        if self.protocol is not None:
            options["protocol"] = self.protocol
        return redis.Redis.from_url(self.url, **options)

    def notify(self, _count: int = 1) -> None:
        """Wake this process's listeners now, and the other processes' through Redis."""
        self._wake_listeners()
        self._pending.set()

    async def start(self) -> None:
        """Publish and subscribe in the background (Redis may be away: they retry)."""
        self._pub = self._client(timeout=1.0)
        self._sub = self._client(timeout=None)
        self._publisher = asyncio.create_task(self._publish_loop(), name="corestone-live-wakes-pub")
        self._reader = asyncio.create_task(self._read_loop(), name="corestone-live-wakes-sub")

    async def aclose(self) -> None:
        """Stop both loops and close the connections. Idempotent."""
        from corestone.background import cancel_and_wait

        tasks = [t for t in (self._publisher, self._reader) if t is not None]
        self._publisher = self._reader = None
        try:
            for task in tasks:
                await cancel_and_wait(task, "live-wakes")
        finally:
            self._subscribed = False
            for client in (self._pub, self._sub):
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.aclose()
            self._pub = self._sub = None

    async def _publish_loop(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            try:
                await self._pub.publish(self.channel, self._me)
            except Exception as error:  # noqa: BLE001 - the others poll meanwhile
                log.warning("live wakes: cannot publish", error=repr(error))
                await asyncio.sleep(0.5)

    async def _read_loop(self) -> None:
        failures = 0
        while True:
            pubsub = self._sub.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                async for message in self._messages(pubsub):
                    if message.get("type") == "subscribe":
                        if not self._subscribed:
                            self._subscribed, failures = True, 0
                            self._wake_listeners()  # whatever was said while deaf
                        continue
                    if message.get("type") == "message" and message.get("data") != self._me:
                        self._wake_listeners()
            except Exception as error:  # noqa: BLE001 - keep trying; the feed polls meanwhile
                if self._subscribed or failures == 0:
                    log.warning(
                        "live wakes: Redis subscription lost; polling until it is back",
                        error=repr(error),
                    )
                self._subscribed = False
                failures += 1
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            delay = min(self.retry_max_seconds, 0.1 * 2 ** min(failures, 10))
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311

    async def _messages(self, pubsub: Any) -> Any:
        """The subscription's messages; ConnectionError once it stays silent after a PING."""
        loop = asyncio.get_running_loop()
        heard, pinged = loop.time(), False
        while True:
            message = await pubsub.get_message(timeout=self.ping_seconds)
            if message is not None:
                heard, pinged = loop.time(), False
                yield message
                continue
            if loop.time() - heard < self.ping_seconds:
                continue
            if pinged:
                raise ConnectionError("the Redis subscription went silent (no PONG)")
            await pubsub.ping()
            pinged = True


Wakes = LocalWakes
"""The type every wakes source has (:class:`RedisWakes` is one)."""
