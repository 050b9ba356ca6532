"""RabbitMQ behind the broker port (the ``rabbitmq`` extra, aio-pika).

A topic is a durable fanout exchange named ``topic``; a group is a durable **quorum
queue** ``{topic}.{group}`` bound to it. What each call does:

- ``publish``: persistent messages (``message_id`` = the event id) on a channel with
  **publisher confirms**, sent in order and confirmed together; ``mandatory``, so a topic
  with no queue bound yet refuses the batch (``UnavailableError``) and the events stay in
  the outbox instead of being dropped. Unlike Redis and JetStream, a queue holds only what
  was published after it was declared: declare the groups (start the consumers, or call
  :meth:`ensure_group` at deploy) before events flow.
- ``fetch`` consumes with a prefetch window into a local buffer; messages handed out and
  not acked are requeued by RabbitMQ when the channel or connection closes (a consumer
  that died), with ``x-delivery-count`` raised: ``Delivery.attempt`` counts from it.
  RabbitMQ has no ack wait for a consumer that lives on, so the broker keeps one: a
  delivery handed out more than ``ack_wait_seconds`` ago and neither acked nor naked (its
  consumer gave up on the batch: a failed pass, a breaker that refused the ack) is
  requeued at that consumer's next ``fetch``, as Redis and JetStream redeliver it after
  their ack wait. Without this it would wait on the open channel until the consumer
  restarts.
- ``nak(delay)``: RabbitMQ has no delayed redelivery, so the documented pattern is used:
  the message is republished (confirmed) to a delay queue ``{queue}.delay.{ms}`` whose
  message TTL is the delay rounded up to a power of two milliseconds, and whose
  dead-letter target is the group's queue again; then the original is acked. The copy
  carries ``x-corestone-attempts`` so the count goes on.
- Dead letters: the queue's dead-letter exchange ``{topic}.dead`` routes to
  ``{topic}.{group}.dead``. RabbitMQ moves a message there itself after
  ``x-delivery-limit`` redeliveries (consumers that died); a copy from a delay queue that
  arrives past ``max_deliver`` is rejected into it. :meth:`RabbitMQBroker.replay_dead_letters`
  sends them back to the group's queue only.

After a connection or channel failure the broker drops the connection, and the next
call connects again and re-declares what it uses (aio-pika's robust connection was
tried and found to leave the publishing channel closed after a server restart); calls
made while the server is down raise ``UnavailableError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Sequence
from typing import Any

from corestone._extras import requires_extra
from corestone.errors import UnavailableError
from corestone.events.brokers.base import Delivery, OutgoingMessage
from corestone.observability.health import CheckResult, HealthStatus
from corestone.observability.logging import get_logger

with requires_extra(__name__, "rabbitmq"):
    import aio_pika
    from aio_pika.exceptions import AMQPError, DeliveryError, PublishError

__all__ = ["RabbitMQBroker"]

log = get_logger(__name__)

_ATTEMPTS = "x-corestone-attempts"
_DELAY_MIN_MS, _DELAY_MAX_MS = 128, 2**23
"""Delay queues from 128 ms to about 2.3 hours (longer delays are capped)."""


def _delay_bucket(seconds: float) -> int:
    ms = max(_DELAY_MIN_MS, math.ceil(seconds * 1000))
    return min(_DELAY_MAX_MS, int(2 ** math.ceil(math.log2(ms))))


_Failures = (AMQPError, ConnectionError, OSError, asyncio.TimeoutError)


class _Consumer:
    """A consumer's channel, the buffer its deliveries arrive in, and what it was handed."""

    __slots__ = ("buffer", "channel", "handed")

    def __init__(self, channel: Any, buffer: asyncio.Queue[Any]) -> None:
        self.channel, self.buffer = channel, buffer
        self.handed: dict[int, tuple[Any, float]] = {}
        """Deliveries handed out by ``fetch``, by delivery tag, with when."""

    async def requeue_overdue(self, ack_wait: float) -> None:
        """Requeue what was handed out over ``ack_wait`` ago and never settled; forget the rest."""
        now = time.monotonic()
        for tag, (message, handed_at) in list(self.handed.items()):
            if message.locked:  # acked, naked or rejected
                del self.handed[tag]
            elif now - handed_at > ack_wait:
                del self.handed[tag]
                with contextlib.suppress(*_Failures):  # a closed channel requeued it already
                    await message.nack(requeue=True)


class RabbitMQBroker:
    """A :class:`~corestone.events.brokers.Broker` on RabbitMQ (see the module doc)."""

    name = "rabbitmq"

    def __init__(
        self,
        url: str,
        *,
        max_deliver: int = 20,
        queue_type: str = "quorum",
        prefetch: int = 100,
        timeout_seconds: float = 10.0,
        ack_wait_seconds: float = 30.0,
    ) -> None:
        if max_deliver < 2 or prefetch < 1 or queue_type not in ("quorum", "classic"):
            raise ValueError("max_deliver >= 2, prefetch >= 1, queue_type quorum or classic")
        if ack_wait_seconds <= 0:
            raise ValueError("ack_wait_seconds > 0")
        self.ack_wait = ack_wait_seconds
        self.url = url
        self.max_deliver = max_deliver
        self.queue_type = queue_type
        self.prefetch = prefetch
        self.timeout = timeout_seconds
        self._started = False
        self._connection: Any = None
        self._publisher: Any = None
        self._exchanges: dict[str, Any] = {}
        self._groups: set[tuple[str, str]] = set()
        self._consumers: dict[tuple[str, str], _Consumer] = {}

    @staticmethod
    def queue_name(topic: str, group: str) -> str:
        return f"{topic}.{group}"

    # -- the component ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, if the server answers; if not, the first call connects (the outbox waits)."""
        self._started = True
        try:
            await self._connect()
        except UnavailableError as error:
            log.warning("events broker not reachable at start", broker=self.name, error=str(error))

    async def _connect(self) -> Any:
        """The open connection, connecting (again) if there is none or it broke."""
        if not self._started:
            raise UnavailableError("the RabbitMQ broker is not started")
        connection, publisher = self._connection, self._publisher
        if connection is not None and publisher is not None:  # noqa: SIM102
            if not connection.is_closed and not publisher.is_closed:
                return connection
        await self._drop()
        try:
            connection = await aio_pika.connect(self.url, timeout=self.timeout)
            self._connection = connection
            self._publisher = await connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
        except _Failures as error:
            await self._drop()
            raise UnavailableError(f"RabbitMQ broker: {error!r}") from error
        return connection

    async def _drop(self) -> None:
        connection, self._connection, self._publisher = self._connection, None, None
        self._exchanges.clear()
        self._groups.clear()
        self._consumers.clear()
        if connection is not None:
            with contextlib.suppress(*_Failures):
                await asyncio.wait_for(connection.close(), self.timeout)

    async def _failed(self, error: BaseException) -> UnavailableError:
        """Drop a broken connection (the next call reconnects); the error to raise."""
        if (
            self._connection is None
            or self._connection.is_closed
            or (self._publisher is None or self._publisher.is_closed)
        ):
            await self._drop()
        return UnavailableError(f"RabbitMQ broker: {error!r}")

    async def aclose(self) -> None:
        """Close the connection: whatever was fetched and not acked goes back to its queue."""
        self._started = False
        await self._drop()

    def _channel(self) -> Any:
        if self._publisher is None:
            raise UnavailableError("the RabbitMQ broker is not connected")
        return self._publisher

    async def _exchange(self, topic: str) -> Any:
        exchange = self._exchanges.get(topic)
        if exchange is None:
            exchange = await self._channel().declare_exchange(
                topic, aio_pika.ExchangeType.FANOUT, durable=True
            )
            self._exchanges[topic] = exchange
        return exchange

    # -- the port --------------------------------------------------------------------------

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        await self._connect()
        try:
            exchanges = {
                topic: await self._exchange(topic) for topic in {m.topic for m in messages}
            }
            confirms = [
                exchanges[m.topic].publish(
                    aio_pika.Message(
                        m.body,
                        message_id=m.id,
                        headers=dict(m.headers),
                        correlation_id=m.key or None,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key="",
                    mandatory=True,
                    timeout=self.timeout,
                )
                for m in messages
            ]
            await asyncio.gather(*confirms)
        except (DeliveryError, PublishError) as error:
            raise UnavailableError(
                f"RabbitMQ refused the batch (no group's queue bound yet?): {error!r}"
            ) from error
        except _Failures as error:
            raise await self._failed(error) from error

    async def ensure_group(self, topic: str, group: str) -> None:
        if (topic, group) in self._groups:
            return
        name = self.queue_name(topic, group)
        await self._connect()
        channel = self._channel()
        arguments: dict[str, Any] = {
            "x-dead-letter-exchange": f"{topic}.dead",
            "x-dead-letter-routing-key": name,
        }
        if self.queue_type == "quorum":
            arguments |= {"x-queue-type": "quorum", "x-delivery-limit": self.max_deliver - 1}
        try:
            exchange = await self._exchange(topic)
            dead = await channel.declare_exchange(
                f"{topic}.dead", aio_pika.ExchangeType.DIRECT, durable=True
            )
            dead_queue = await channel.declare_queue(f"{name}.dead", durable=True)
            await dead_queue.bind(dead, routing_key=name)
            queue = await channel.declare_queue(name, durable=True, arguments=arguments)
            await queue.bind(exchange)
        except _Failures as error:
            raise await self._failed(error) from error
        self._groups.add((topic, group))

    async def _consumer(self, topic: str, group: str, consumer: str) -> _Consumer:
        key = (self.queue_name(topic, group), consumer)
        found = self._consumers.get(key)
        if found is not None and not found.channel.is_closed:
            return found
        connection = await self._connect()
        buffer: asyncio.Queue[Any] = asyncio.Queue()
        channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=self.prefetch)
        queue = await channel.get_queue(key[0], ensure=False)
        await queue.consume(buffer.put, no_ack=False)
        self._consumers[key] = found = _Consumer(channel, buffer)
        return found

    async def fetch(
        self, topic: str, group: str, *, consumer: str, limit: int, wait_seconds: float
    ) -> Sequence[Delivery]:
        await self.ensure_group(topic, group)
        try:
            mine = await self._consumer(topic, group, consumer)
        except _Failures as error:
            raise await self._failed(error) from error
        await mine.requeue_overdue(self.ack_wait)
        buffer = mine.buffer
        found: list[Delivery] = []
        taken: list[Any] = []
        if buffer.empty() and wait_seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_seconds):
                    taken.append(await buffer.get())
        while len(taken) < limit and not buffer.empty():
            taken.append(buffer.get_nowait())
        for message in taken:
            delivery = self._delivery(topic, group, message)
            if delivery.attempt > self.max_deliver:
                with contextlib.suppress(*_Failures):
                    await message.reject(requeue=False)  # into the dead-letter exchange
            else:
                found.append(delivery)
                mine.handed[message.delivery_tag] = (message, time.monotonic())
        return found

    def _delivery(self, topic: str, group: str, message: Any) -> Delivery:
        headers = dict(message.headers or {})
        before = _count(headers.pop(_ATTEMPTS, 0))
        returned = _count(headers.get("x-delivery-count", 0))
        return Delivery(
            id=message.message_id or "",
            topic=topic,
            body=message.body,
            group=group,
            attempt=before + returned + 1,
            headers={k: str(v) for k, v in headers.items() if not k.startswith("x-")},
            handle=message,
        )

    async def ack(self, delivery: Delivery) -> None:
        try:
            await delivery.handle.ack()
        except _Failures as error:  # its channel is gone: RabbitMQ redelivers it
            raise UnavailableError(f"RabbitMQ broker: {error!r}") from error

    async def nak(self, delivery: Delivery, *, delay_seconds: float) -> None:
        """Republish to the delay queue for ``delay_seconds`` (rounded up), then ack."""
        target = self.queue_name(delivery.topic, delivery.group)
        message = delivery.handle
        await self._connect()
        try:
            if delay_seconds <= 0:
                await message.nack(requeue=True)
                return
            bucket = _delay_bucket(delay_seconds)
            delay_queue = f"{target}.delay.{bucket}"
            channel = self._channel()
            await channel.declare_queue(
                delay_queue,
                durable=True,
                arguments={
                    "x-message-ttl": bucket,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": target,
                },
            )
            headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith("x-")}
            headers[_ATTEMPTS] = delivery.attempt
            await channel.default_exchange.publish(
                aio_pika.Message(
                    message.body,
                    message_id=message.message_id,
                    headers=headers,
                    correlation_id=message.correlation_id,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=delay_queue,
                timeout=self.timeout,
            )
            await message.ack()
        except _Failures as error:
            raise await self._failed(error) from error

    async def ping(self) -> CheckResult:
        await self._connect()
        try:
            await self._channel().get_exchange("amq.fanout", ensure=True)
        except _Failures as error:
            raise await self._failed(error) from error
        return CheckResult(HealthStatus.PASS, output="rabbitmq")

    # -- dead letters ----------------------------------------------------------------------

    async def _take_dead(self, topic: str, group: str, limit: int, *, replay: bool) -> Any:
        await self.ensure_group(topic, group)
        connection = await self._connect()
        name = self.queue_name(topic, group)
        letters: list[Delivery] = []
        channel = await connection.channel(publisher_confirms=True)
        try:
            dead_queue = await channel.get_queue(f"{name}.dead", ensure=False)
            while len(letters) < limit:
                message = await dead_queue.get(no_ack=False, fail=False, timeout=self.timeout)
                if message is None:
                    break
                letters.append(self._dead_letter(topic, group, message))
                if replay:
                    headers = {
                        k: v for k, v in (message.headers or {}).items() if not k.startswith("x-")
                    }
                    await channel.default_exchange.publish(
                        aio_pika.Message(
                            message.body,
                            message_id=message.message_id,
                            headers=headers,
                            correlation_id=message.correlation_id,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=name,
                        timeout=self.timeout,
                    )
                    await message.ack()
        except _Failures as error:
            raise UnavailableError(f"RabbitMQ broker: {error!r}") from error
        finally:
            with contextlib.suppress(*_Failures):
                await channel.close()  # what was only listed goes back, in order
        return letters

    def _dead_letter(self, topic: str, group: str, message: Any) -> Delivery:
        delivery = self._delivery(topic, group, message)
        deaths = (message.headers or {}).get("x-death") or [{}]
        reason = str(deaths[0].get("reason", "dead-lettered"))
        attempts = delivery.attempt - 1
        if reason == "delivery_limit":
            attempts = self.max_deliver
        headers = {**delivery.headers, "x-dead-reason": f"{reason} after {attempts} deliveries",
                   "x-dead-attempts": str(attempts)}  # fmt: skip
        return Delivery(
            id=delivery.id,
            topic=topic,
            body=delivery.body,
            group=group,
            attempt=attempts,
            headers=headers,
        )

    async def dead_letters(self, topic: str, group: str, *, limit: int = 100) -> list[Delivery]:
        """What ``group`` gave up on, oldest first (left in the dead-letter queue)."""
        letters: list[Delivery] = await self._take_dead(topic, group, limit, replay=False)
        return letters

    async def replay_dead_letters(self, topic: str, group: str, *, limit: int = 100) -> int:
        """Send up to ``limit`` dead letters back to the group's queue, with a fresh count."""
        return len(await self._take_dead(topic, group, limit, replay=True))

    async def lag(self, topic: str, group: str) -> int | None:
        """Messages ready in the group's queue (not yet handed to a consumer).

        Asked on a channel of its own: the passive declare of a queue that does not
        exist (yet) closes its channel, and on the publisher's that also took the
        consumers' channels down with the reconnect that followed.
        """
        connection = await self._connect()
        try:
            channel = await connection.channel()
        except _Failures as error:
            raise await self._failed(error) from error
        try:
            queue = await channel.declare_queue(self.queue_name(topic, group), passive=True)
        except _Failures:
            return None  # no such queue: the group does not exist yet
        finally:
            with contextlib.suppress(*_Failures, RuntimeError):  # closed by the 404 already
                await channel.close()
        count = queue.declaration_result.message_count
        return None if count is None else int(count)

    async def delete_topic(self, topic: str, groups: Sequence[str] = ()) -> None:
        """Delete the exchanges and the groups' queues, dead and delay ones (tests, teardown)."""
        connection = await self._connect()
        for group in groups:
            name = self.queue_name(topic, group)
            buckets = [2**n for n in range(7, 24)]
            for queue in (name, f"{name}.dead", *(f"{name}.delay.{b}" for b in buckets)):
                channel = await connection.channel()
                with contextlib.suppress(*_Failures):
                    await channel.queue_delete(queue)
                with contextlib.suppress(*_Failures):
                    await channel.close()
        channel = await connection.channel()
        for exchange in (topic, f"{topic}.dead"):
            with contextlib.suppress(*_Failures):
                await channel.exchange_delete(exchange)
        with contextlib.suppress(*_Failures):
            await channel.close()


def _count(value: Any) -> int:
    """A count from a message header; 0 if it is not a whole number from 0 to 2**31.

    Anyone who can publish to the exchange sets headers: ``int()`` of a forged
    ``x-corestone-attempts`` ("abc", a list, 5,000 digits) raised in ``fetch``, after the
    batch was taken from the buffer, so the batch's other messages were neither handed
    out nor requeued: held unacked until the process restarted.
    """
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, bool) or not isinstance(value, int | str):
        return 0
    try:
        count = int(value)
    except ValueError:
        return 0
    return count if 0 <= count <= 2**31 else 0
