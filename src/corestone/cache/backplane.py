"""The backplane: how one instance tells the others which L1 entries to drop.

Every write and invalidation on a :class:`~corestone.cache.TieredCache` is announced as
an :class:`Invalidation` on one Redis pub/sub channel; every *other* instance drops the
affected entries from its L1. Pub/sub is fire-and-forget: a subscriber that is
disconnected misses what was said meanwhile, so after every re-subscribe the backplane
calls ``on_resync()`` and the tiered cache drops its whole L1 (anything may have been
invalidated while it was deaf). That is the documented consistency choice: an outage
costs a cold L1, never a stale read after the backplane is back. SUBSCRIBE and PUBLISH
use separate connections. Why not CLIENT TRACKING, and why two connections: see
docs/decisions (the cache design rationale).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import orjson

from corestone._extras import requires_extra
from corestone.clock import Clock, monotonic
from corestone.observability.logging import get_logger

if TYPE_CHECKING:
    from corestone.observability.metrics import Metrics

__all__ = [
    "Backplane",
    "Invalidation",
    "Kind",
    "LocalBackplane",
    "OnMessage",
    "OnResync",
    "RedisBackplane",
]

log = get_logger(__name__)

Kind = Literal["keys", "tags", "pattern", "clear"]
_KINDS: frozenset[str] = frozenset(("keys", "tags", "pattern", "clear"))

# Invalidation delays are sub-millisecond on a LAN; the default latency buckets start at 0.5 ms.
_DELAY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Invalidation:
    """One announcement: which L1 entries every other instance must drop.

    ``items`` are full entry keys (``keys``), full tag keys (``tags``), SCAN patterns
    from :class:`~corestone.cache.keys.KeyBuilder` (``pattern``) or scope prefixes
    (``clear``). ``sent_at`` is wall-clock time at send, so receivers can measure the
    delay (hosts need NTP-level clock agreement for the figure, nothing else).
    """

    kind: Kind
    items: tuple[str, ...]
    origin: str
    sent_at: float

    def encode(self) -> bytes:
        """Short keys on the wire: the channel carries one message per write."""
        return orjson.dumps({"k": self.kind, "i": self.items, "o": self.origin, "t": self.sent_at})

    @classmethod
    def decode(cls, data: bytes | str) -> Invalidation:
        """Parse and validate; anything else on the channel is a ``ValueError``.

        The channel is shared infrastructure: a foreign publisher or a truncated message
        must be dropped by the receiver, never crash its reader or drop wrong entries.
        """
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as error:
            raise ValueError(f"backplane message is not JSON: {error}") from None
        if not isinstance(raw, dict) or set(raw) != {"k", "i", "o", "t"}:
            raise ValueError("backplane message has the wrong shape")
        kind, items, origin, sent_at = raw["k"], raw["i"], raw["o"], raw["t"]
        if kind not in _KINDS:
            raise ValueError(f"backplane message has an unknown kind {kind!r}")
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ValueError("backplane message items must be a list of strings")
        if not isinstance(origin, str) or not origin:
            raise ValueError("backplane message has no origin")
        if isinstance(sent_at, bool) or not isinstance(sent_at, int | float):
            raise ValueError("backplane message has no send time")
        if not math.isfinite(sent_at):
            raise ValueError("backplane message has a non-finite send time")
        return cls(kind, tuple(items), origin, float(sent_at))


OnMessage = Callable[[Invalidation], None]
OnResync = Callable[[], None]


@runtime_checkable
class Backplane(Protocol):
    """What the tiered cache needs from a backplane (Redis pub/sub or nothing)."""

    instance_id: str

    @property
    def connected(self) -> bool:
        """Whether messages from peers can currently arrive."""
        ...

    async def start(self, on_message: OnMessage, on_resync: OnResync) -> None:
        """Begin delivering peers' messages; ``on_resync`` after every re-subscribe."""
        ...

    async def publish(self, message: Invalidation) -> bool:
        """Announce ``message``; ``False`` when it could not be sent (never raises)."""
        ...

    async def aclose(self) -> None:
        """Stop delivering and release connections."""
        ...


def _instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LocalBackplane:
    """The embedded default: one process, nothing to tell and nobody to hear from."""

    def __init__(self, *, instance_id: str | None = None) -> None:
        self.instance_id = instance_id or _instance_id()

    @property
    def connected(self) -> bool:
        return True

    async def start(self, on_message: OnMessage, on_resync: OnResync) -> None:
        """Nothing to subscribe to: no peer exists whose writes could reach this L1."""

    async def publish(self, message: Invalidation) -> bool:
        """Nobody to tell, so it always "succeeds" (the local L1 was already updated)."""
        return True

    async def aclose(self) -> None:
        """Nothing to release."""


class RedisBackplane:
    """Invalidations over one Redis pub/sub channel, shared by every instance.

    A reader task dispatches peers' messages to ``on_message`` in arrival order (own
    messages are skipped by ``instance_id``). When the subscription connection drops it
    reconnects forever with capped, jittered backoff and calls ``on_resync()`` after
    each re-subscribe. ``publish`` uses its own client and never raises.

    Metrics (when ``metrics`` is given): ``corestone_cache_backplane_delay_seconds``
    (receipt time minus ``sent_at``) and ``corestone_cache_backplane_messages_total``
    by ``direction``: ``sent``, ``received`` (from peers), ``dropped`` (garbage on the
    channel, or a publish that could not be sent).
    """

    idle_ping_seconds = 5.0
    """With nothing received this long, PING the server; without even a PONG for as long
    again, reconnect. A server gone without a TCP reset is noticed within twice this."""

    def __init__(
        self,
        url: str,
        *,
        channel: str = "corestone:cache:backplane",
        protocol: int | None = None,
        instance_id: str | None = None,
        reconnect_max_seconds: float = 0.5,
        metrics: Metrics | None = None,
        clock: Clock = monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        if reconnect_max_seconds <= 0:
            raise ValueError("reconnect_max_seconds must be positive")
        self.url = url
        self.channel = channel
        self.protocol = protocol
        self.instance_id = instance_id or _instance_id()
        self.reconnect_max_seconds = reconnect_max_seconds
        self._clock = clock  # waits for the SUBSCRIBE confirmation
        self._wall_clock = wall_clock  # delays of peers' messages (their sent_at is wall time)
        self.sent = 0
        self.received = 0
        self.dropped = 0
        self.resyncs = 0
        self._sub_client: Any = None
        # One retry for publish: the first command after a Redis restart meets a dead
        # pooled connection; the retry reconnects instead of reporting a failure. Made
        # here (it connects lazily) so publishing works before start().
        self._pub_client: Any = self._client(retries=1)
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._subscribed = False
        self._closed = False
        self._on_message: OnMessage | None = None
        self._on_resync: OnResync | None = None
        self._delay: Any = None
        self._messages: Any = None
        if metrics is not None:
            self._delay = metrics.histogram(
                "cache_backplane_delay_seconds",
                "Time from an invalidation's send to its receipt by a peer.",
                buckets=_DELAY_BUCKETS,
            )
            self._messages = metrics.counter(
                "cache_backplane_messages_total",
                "Backplane messages by direction (sent, received, dropped).",
                ["direction"],
            )

    @property
    def connected(self) -> bool:
        return self._subscribed

    def _client(self, *, retries: int) -> Any:
        with requires_extra(__name__, "redis"):  # imported here: LocalBackplane needs no Redis
            import redis.asyncio as redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

        options: dict[str, Any] = {
            "socket_connect_timeout": 0.5,
            "socket_timeout": 0.5,  # publish, subscribe and PING writes; reads pass their own
            "retry": Retry(NoBackoff(), retries),
        }
        if self.protocol is not None:
            options["protocol"] = self.protocol
        return redis.Redis.from_url(self.url, **options)

    async def start(self, on_message: OnMessage, on_resync: OnResync) -> None:
        """Subscribe (one attempt here), then read in the background.

        If Redis is unreachable now, ``start`` still returns: the reader keeps trying and
        calls ``on_resync`` once it gets through, since L1 was filled while deaf.
        """
        if self._reader is not None:
            raise RuntimeError("RedisBackplane already started")
        self._on_message, self._on_resync = on_message, on_resync
        # The subscriber never retries inside redis-py: its silent re-subscribe would
        # hide the outage from us, and on_resync must run after every one of them.
        self._sub_client = self._client(retries=0)
        first = True
        try:
            await self._subscribe()
        except Exception as error:  # noqa: BLE001 - Redis is down at start; keep trying
            log.warning("cache backplane: cannot subscribe, retrying", error=repr(error))
            await self._drop_pubsub()
            first = False
        self._reader = asyncio.create_task(
            self._read_forever(resync_on_subscribe=not first), name="cache-backplane-reader"
        )

    async def _subscribe(self) -> None:
        """Subscribe and wait for the server's confirmation.

        redis-py's ``subscribe`` only sends the command. Until Redis confirms, messages
        are not delivered to us, so calling ``on_resync`` earlier would leave a window
        in which an invalidation is missed after the resync.
        """
        pubsub = self._sub_client.pubsub()
        self._pubsub = pubsub
        await pubsub.subscribe(self.channel)
        deadline = self._clock() + max(1.0, 2 * self.idle_ping_seconds)
        while True:
            left = deadline - self._clock()
            if left <= 0:
                raise ConnectionError("cache backplane: SUBSCRIBE was not confirmed")
            reply = await pubsub.get_message(timeout=left)
            if reply is not None and reply.get("type") == "subscribe":
                break
        self._subscribed = True

    async def _drop_pubsub(self) -> None:
        self._subscribed = False
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _read_forever(self, *, resync_on_subscribe: bool) -> None:
        attempt = 0
        while True:
            if not self._subscribed:
                try:
                    await self._subscribe()
                except Exception as error:  # noqa: BLE001 - back off and try again
                    await self._drop_pubsub()
                    attempt += 1
                    if attempt == 1:
                        log.warning("cache backplane: re-subscribe failed", error=repr(error))
                    await asyncio.sleep(self._backoff(attempt))
                    continue
                if resync_on_subscribe:
                    self._resync()
                attempt = 0
            resync_on_subscribe = True  # from here on, every subscribe is a re-subscribe
            try:
                await self._read_until_error()
            except Exception as error:  # noqa: BLE001 - connection lost; reconnect
                log.warning("cache backplane: subscription lost", error=repr(error))
                await self._drop_pubsub()
                await asyncio.sleep(self._backoff(1))

    async def _read_until_error(self) -> None:
        pubsub = self._pubsub
        pinged = False
        while True:
            # An idle subscription pings; if not even the PONG arrives within another idle
            # period, the server is gone without a TCP reset (a cut network, a paused VM):
            # reconnect rather than stay deaf for the kernel's retransmission timeout.
            message = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=self.idle_ping_seconds
            )
            if message is None:
                if pinged:
                    raise ConnectionError("cache backplane: no reply to PING")
                await pubsub.ping()
                pinged = True
                continue
            pinged = False
            if message.get("type") == "message":
                self._dispatch(message.get("data"))

    def _backoff(self, attempt: int) -> float:
        """Capped exponential backoff with jitter, so a fleet does not reconnect in step."""
        ceiling = min(self.reconnect_max_seconds, 0.01 * 2.0 ** min(attempt, 20))
        return ceiling / 2 + random.random() * ceiling / 2  # noqa: S311 - jitter, not crypto

    def _resync(self) -> None:
        self.resyncs += 1
        log.info("cache backplane: re-subscribed, resyncing", channel=self.channel)
        if self._on_resync is not None:
            try:
                self._on_resync()
            except Exception as error:  # noqa: BLE001 - a callback must not kill the reader
                log.error("cache backplane: on_resync failed", error=repr(error))

    def _dispatch(self, data: Any) -> None:
        now = self._wall_clock()
        try:
            message = Invalidation.decode(data)
        except (ValueError, TypeError) as error:
            self.dropped += 1
            if self._messages is not None:
                self._messages.labels("dropped").inc()
            log.warning("cache backplane: dropped a malformed message", error=str(error))
            return
        if message.origin == self.instance_id:
            return
        self.received += 1
        if self._messages is not None:
            self._messages.labels("received").inc()
        if self._delay is not None:
            self._delay.observe(max(now - message.sent_at, 0.0))
        if self._on_message is not None:
            try:
                self._on_message(message)
            except Exception as error:  # noqa: BLE001 - one bad message must not stop the rest
                log.error("cache backplane: on_message failed", error=repr(error))

    async def publish(self, message: Invalidation) -> bool:
        """Send ``message`` to every subscriber; ``False`` when Redis could not be reached.

        Never raises: a failed announcement is the caller's to weigh (peers that were
        cut off as well resync on reconnect; the local L1 is already correct).
        """
        client = self._pub_client
        if client is None or self._closed:
            return False
        try:
            await client.publish(self.channel, message.encode())
        except Exception as error:  # noqa: BLE001 - Redis is down; report, do not raise
            self.dropped += 1
            if self._messages is not None:
                self._messages.labels("dropped").inc()
            log.debug("cache backplane: publish failed", error=repr(error))
            return False
        self.sent += 1
        if self._messages is not None:
            self._messages.labels("sent").inc()
        return True

    async def aclose(self) -> None:
        """Cancel the reader and close both connections; safe to call twice."""
        self._closed = True
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        await self._drop_pubsub()
        for name in ("_sub_client", "_pub_client"):
            client = getattr(self, name)
            setattr(self, name, None)
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
