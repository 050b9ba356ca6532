"""NATS JetStream behind the broker port (the ``nats`` extra).

A topic is a subject prefix with a stream of its own: stream ``{topic}`` (dots made
underscores) holding the subjects ``topic`` and ``topic.>``, on file storage, bounded to
``max_messages`` (oldest discarded), with a duplicate window of
``dedupe_window_seconds``. A group is a durable pull consumer of that stream, delivering
from the stream's start, with explicit acks and an ack wait of ``ack_wait_seconds``.

- ``publish`` sends the batch in order without waiting between messages
  (``publish_async``), each with ``Nats-Msg-Id`` = the event id, then waits for every
  acknowledgement: JetStream stores a repeated id within the window once, so the relay's
  republish after a crash is absorbed by the broker itself.
- ``fetch`` pulls up to ``limit``; ``Delivery.attempt`` is JetStream's delivery count.
- ``ack``/``nak(delay)`` are JetStream's ``+ACK`` and ``-NAK`` with a delay.
- Dead letters: the consumer's server-side ``max_deliver`` is left unlimited, because
  JetStream answers the last delivery only with an advisory on core NATS (lost if
  nobody listens) and leaves the message where it is. Instead a delivery found beyond
  ``max_deliver`` at fetch is copied, with the reason, to the dead-letter stream
  (``{stream}_DEAD``, subject ``corestone-dead.{topic}.{group}``, published with an
  acknowledgement) and then terminated (``+TERM``): it is never lost between the two.
  :meth:`NatsJetStreamBroker.replay_dead_letters` publishes them to the topic again
  (every group sees them; the others' inboxes drop them).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from typing import Any

from corestone._extras import requires_extra
from corestone.errors import UnavailableError
from corestone.events.brokers.base import Delivery, OutgoingMessage
from corestone.observability.health import CheckResult, HealthStatus
from corestone.observability.logging import get_logger

with requires_extra(__name__, "nats"):
    from nats.aio.client import Client as NatsClient
    from nats.errors import Error as NatsError
    from nats.errors import TimeoutError as NatsTimeoutError
    from nats.js import api
    from nats.js.errors import NotFoundError

__all__ = ["NatsJetStreamBroker"]

log = get_logger(__name__)

_ID_HEADER = "Corestone-Id"
"""The event id; ``Nats-Msg-Id`` equals it except on a replay (a new id, past the window)."""

_DEAD_PREFIX = "corestone-dead"


def _name(text: str) -> str:
    """A stream or consumer name: JetStream refuses ``.``, ``*``, ``>``, spaces and slashes."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


class NatsJetStreamBroker:
    """A :class:`~corestone.events.brokers.Broker` on NATS JetStream (see the module doc)."""

    name = "nats"

    def __init__(
        self,
        url: str,
        *,
        ack_wait_seconds: float = 30.0,
        max_deliver: int = 20,
        dedupe_window_seconds: float = 120.0,
        max_messages: int = 1_000_000,
        publish_timeout_seconds: float = 10.0,
        connect_timeout_seconds: float = 5.0,
    ) -> None:
        if ack_wait_seconds <= 0 or max_deliver < 1 or max_messages < 1:
            raise ValueError("ack_wait_seconds > 0, max_deliver >= 1, max_messages >= 1")
        if dedupe_window_seconds <= 0 or publish_timeout_seconds <= 0:
            raise ValueError("dedupe_window_seconds and publish_timeout_seconds must be > 0")
        self.url = url
        self.ack_wait = ack_wait_seconds
        self.max_deliver = max_deliver
        self.dedupe_window = dedupe_window_seconds
        self.max_messages = max_messages
        self.publish_timeout = publish_timeout_seconds
        self.connect_timeout = connect_timeout_seconds
        self._started = False
        self._nc: Any = None
        self._js: Any = None
        self._streams: set[str] = set()
        self._subscriptions: dict[tuple[str, str], Any] = {}

    def stream_name(self, topic: str) -> str:
        return _name(topic)

    def _dead_subject(self, topic: str, group: str) -> str:
        return f"{_DEAD_PREFIX}.{topic}.{_name(group)}"

    # -- the component ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, if the server answers; if not, the first call connects (the outbox waits).

        Once connected, the client reconnects by itself, for ever, when the server drops.
        """
        self._started = True
        try:
            await self._jetstream()
        except UnavailableError as error:
            log.warning("events broker not reachable at start", broker=self.name, error=str(error))

    async def _connect(self) -> None:
        """Connect within ``connect_timeout`` (nats-py alone retries a refused first connect
        for ever), then let the client reconnect by itself."""
        nc = NatsClient()
        try:
            async with asyncio.timeout(self.connect_timeout):
                await nc.connect(
                    self.url,
                    connect_timeout=max(1, round(self.connect_timeout)),
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    allow_reconnect=True,
                    error_cb=self._client_error,
                )
        except (NatsError, OSError, TimeoutError) as error:
            with contextlib.suppress(Exception):
                await nc.close()
            raise UnavailableError(f"NATS broker: cannot connect ({error!r})") from error
        self._nc = nc
        self._js = nc.jetstream(timeout=self.publish_timeout)

    async def _client_error(self, error: Exception) -> None:
        log.debug("nats client error", error=repr(error))

    async def aclose(self) -> None:
        self._started = False
        nc, self._nc, self._js = self._nc, None, None
        self._subscriptions.clear()
        self._streams.clear()
        if nc is not None:
            await nc.close()

    async def _jetstream(self) -> Any:
        if not self._started:
            raise UnavailableError("the NATS broker is not started")
        if self._js is None:
            await self._connect()
        return self._js

    async def _ensure_stream(self, topic: str) -> str:
        name = self.stream_name(topic)
        if name in self._streams:
            return name
        js = await self._jetstream()
        config = {"storage": api.StorageType.FILE, "discard": api.DiscardPolicy.OLD}
        try:
            await js.add_stream(name=name, subjects=[topic, f"{topic}.>"],
                                max_msgs=self.max_messages,
                                duplicate_window=self.dedupe_window, **config)  # fmt: skip
            await js.add_stream(name=f"{name}_DEAD", subjects=[f"{_DEAD_PREFIX}.{topic}.>"],
                                max_msgs=self.max_messages, **config)  # fmt: skip
        except (TimeoutError, NatsError, OSError) as error:
            raise UnavailableError(f"NATS broker: {error!r}") from error
        self._streams.add(name)
        return name

    # -- the port --------------------------------------------------------------------------

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        js = await self._jetstream()
        for topic in {m.topic for m in messages}:
            await self._ensure_stream(topic)
        try:
            acks = []
            for message in messages:
                headers = {**message.headers, "Nats-Msg-Id": message.id, _ID_HEADER: message.id}
                if message.key:
                    headers["Corestone-Key"] = message.key
                acks.append(await js.publish_async(message.topic, message.body, headers=headers))
            async with asyncio.timeout(self.publish_timeout):
                await asyncio.gather(*acks)
        except (NatsError, OSError, TimeoutError) as error:
            raise UnavailableError(f"NATS broker: {error!r}") from error

    async def ensure_group(self, topic: str, group: str) -> None:
        key = (topic, group)
        if key in self._subscriptions:
            return
        stream = await self._ensure_stream(topic)
        js = await self._jetstream()
        config = api.ConsumerConfig(
            durable_name=_name(group),
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=-1,
            max_ack_pending=10_000,
        )
        try:
            await js.add_consumer(stream, config)
            self._subscriptions[key] = await js.pull_subscribe_bind(_name(group), stream)
        except (TimeoutError, NatsError, OSError) as error:
            raise UnavailableError(f"NATS broker: {error!r}") from error

    async def fetch(
        self, topic: str, group: str, *, consumer: str, limit: int, wait_seconds: float
    ) -> Sequence[Delivery]:
        """Up to ``limit`` deliveries; ``consumer`` is not used (a pull consumer shares out)."""
        await self.ensure_group(topic, group)
        subscription = self._subscriptions[(topic, group)]
        try:
            messages = await subscription.fetch(batch=limit, timeout=max(wait_seconds, 0.05))
        except (TimeoutError, NatsTimeoutError):
            return []
        except (NatsError, OSError) as error:
            raise UnavailableError(f"NATS broker: {error!r}") from error
        found = []
        for message in messages:
            delivery = self._delivery(topic, group, message)
            if delivery.attempt > self.max_deliver:
                await self._dead_letter(delivery, message)
            else:
                found.append(delivery)
        return found

    def _delivery(self, topic: str, group: str, message: Any) -> Delivery:
        headers = dict(message.headers or {})
        event_id = headers.pop(_ID_HEADER, None) or headers.get("Nats-Msg-Id", "")
        headers.pop("Nats-Msg-Id", None)
        headers.pop("Corestone-Key", None)
        return Delivery(
            id=event_id,
            topic=topic,
            body=message.data,
            group=group,
            attempt=int(message.metadata.num_delivered),
            headers=headers,
            handle=message,
        )

    async def _dead_letter(self, delivery: Delivery, message: Any) -> None:
        reason = f"delivered {delivery.attempt - 1} times without an ack"
        headers = {**delivery.headers, _ID_HEADER: delivery.id, "x-dead-reason": reason,
                   "x-dead-attempts": str(delivery.attempt - 1)}  # fmt: skip
        try:
            subject = self._dead_subject(delivery.topic, delivery.group)
            await (await self._jetstream()).publish(subject, delivery.body, headers=headers)
            await message.term()
        except (TimeoutError, NatsError, OSError) as error:
            raise UnavailableError(f"NATS broker: {error!r}") from error

    async def ack(self, delivery: Delivery) -> None:
        try:
            await delivery.handle.ack()
        except (NatsError, OSError) as error:
            raise UnavailableError(f"NATS broker: {error!r}") from error

    async def nak(self, delivery: Delivery, *, delay_seconds: float) -> None:
        try:
            await delivery.handle.nak(delay=max(delay_seconds, 0.0) or None)
        except (NatsError, OSError) as error:
            raise UnavailableError(f"NATS broker: {error!r}") from error

    async def ping(self) -> CheckResult:
        await self._jetstream()
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise UnavailableError("the NATS broker is not connected")
        try:
            await nc.flush(timeout=self.connect_timeout)
        except (TimeoutError, NatsError, OSError) as error:
            raise UnavailableError(f"NATS broker: {error!r}") from error
        return CheckResult(HealthStatus.PASS, output="nats jetstream")

    # -- dead letters ----------------------------------------------------------------------

    async def _dead_messages(self, topic: str, group: str, limit: int) -> list[Any]:
        js = await self._jetstream()
        stream = f"{await self._ensure_stream(topic)}_DEAD"
        subject = self._dead_subject(topic, group)
        found: list[Any] = []
        seq = 1
        try:
            while len(found) < limit:
                try:
                    raw = await js.get_msg(stream, seq=seq, subject=subject, next=True)
                except NotFoundError:
                    break
                found.append(raw)
                seq = raw.seq + 1
        except (TimeoutError, NatsError, OSError) as error:
            raise UnavailableError(f"NATS broker: {error!r}") from error
        return found

    async def dead_letters(self, topic: str, group: str, *, limit: int = 100) -> list[Delivery]:
        """What ``group`` gave up on after ``max_deliver`` deliveries, oldest first."""
        letters = []
        for raw in await self._dead_messages(topic, group, limit):
            headers = dict(raw.headers or {})
            letters.append(
                Delivery(
                    id=headers.pop(_ID_HEADER, ""),
                    topic=topic,
                    body=raw.data or b"",
                    group=group,
                    attempt=int(headers.get("x-dead-attempts", "0")),
                    headers=headers,
                    handle=raw.seq,
                )
            )
        return letters

    async def replay_dead_letters(self, topic: str, group: str, *, limit: int = 100) -> int:
        """Publish up to ``limit`` dead letters to the topic again (a new ``Nats-Msg-Id``)."""
        js = await self._jetstream()
        stream = f"{self.stream_name(topic)}_DEAD"
        letters = await self.dead_letters(topic, group, limit=limit)
        try:
            for letter in letters:
                headers = {k: v for k, v in letter.headers.items() if not k.startswith("x-dead-")}
                headers |= {
                    _ID_HEADER: letter.id,
                    "Nats-Msg-Id": f"{letter.id}:replay:{letter.handle}",
                }
                await js.publish(topic, letter.body, headers=headers)
                await js.delete_msg(stream, letter.handle)
        except (TimeoutError, NatsError, OSError) as error:
            raise UnavailableError(f"NATS broker: {error!r}") from error
        return len(letters)

    async def lag(self, topic: str, group: str) -> int | None:
        """Messages of the stream ``group`` has not been delivered yet (``num_pending``)."""
        try:
            js = await self._jetstream()
            info = await js.consumer_info(self.stream_name(topic), _name(group))
        except NotFoundError:
            return None
        except (TimeoutError, NatsError, OSError) as error:
            raise UnavailableError(f"NATS broker: {error!r}") from error
        return int(info.num_pending or 0)

    async def delete_topic(self, topic: str, groups: Sequence[str] = ()) -> None:
        """Delete the topic's stream and its dead-letter stream (tests, teardown)."""
        js = await self._jetstream()
        name = self.stream_name(topic)
        for stream in (name, f"{name}_DEAD"):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(stream)
        self._streams.discard(name)
