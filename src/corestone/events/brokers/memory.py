"""The memory broker: the embedded default, a broker in this process's memory.

It behaves like the real ones where consumers can tell: messages of a topic form one
ordered log; every consumer group reads all of it from the start; within a group a
message goes to one consumer, comes back after ``ack_wait_seconds`` if nobody acks it,
and after the given delay if it is naked; ``Delivery.attempt`` counts deliveries. A
message id seen within ``dedupe_window_seconds`` is stored once (JetStream's duplicate
window), so a relay that publishes a batch again does not double it. The log keeps the
last ``max_messages`` per topic (Redis ``MAXLEN``).

Not shared between processes, and not durable: what it holds is lost with the process.
The outbox keeps every event until the relay has published it, so nothing committed is
lost before publishing; after, an event published but not yet handled by a consumer is
lost in a crash. Use a real broker where that matters (docs/events.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from corestone.clock import Clock, monotonic
from corestone.errors import UnavailableError
from corestone.events.brokers.base import Delivery, OutgoingMessage
from corestone.observability.health import CheckResult, HealthStatus

__all__ = ["MemoryBroker"]


@dataclass(slots=True)
class _Pending:
    attempt: int
    due: float
    """When it may be delivered again (ack wait or nak delay ends)."""


@dataclass(slots=True)
class _Group:
    cursor: int
    pending: dict[int, _Pending] = field(default_factory=dict)


@dataclass(slots=True)
class _Topic:
    log: deque[OutgoingMessage] = field(default_factory=deque)
    base: int = 0
    """The offset of ``log[0]``."""
    groups: dict[str, _Group] = field(default_factory=dict)


class MemoryBroker:
    """An in-process :class:`~corestone.events.brokers.Broker` (see the module doc)."""

    name = "memory"

    def __init__(
        self,
        *,
        ack_wait_seconds: float = 30.0,
        dedupe_window_seconds: float = 120.0,
        max_messages: int = 100_000,
        clock: Clock = monotonic,
    ) -> None:
        if ack_wait_seconds <= 0 or dedupe_window_seconds < 0 or max_messages < 1:
            raise ValueError("ack_wait_seconds > 0, dedupe_window_seconds >= 0, max_messages >= 1")
        self.ack_wait = ack_wait_seconds
        self.dedupe_window = dedupe_window_seconds
        self.max_messages = max_messages
        self.clock = clock
        self._topics: dict[str, _Topic] = {}
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._changed: asyncio.Condition | None = None
        self._closed = False
        self.published = 0
        """Messages stored (duplicates within the window not counted)."""

    async def start(self) -> None:
        self._closed = False

    async def aclose(self) -> None:
        """Stop serving; waiting fetches return empty. What it held stays (a restart sees it)."""
        self._closed = True
        await self._notify()

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _notify(self) -> None:
        condition = self._condition()
        async with condition:
            condition.notify_all()

    def _require_open(self) -> None:
        if self._closed:
            raise UnavailableError("the memory broker is closed")

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        self._require_open()
        now = self.clock()
        while self._seen and next(iter(self._seen.values())) < now - self.dedupe_window:
            self._seen.popitem(last=False)
        for message in messages:
            if message.id in self._seen:
                continue
            self._seen[message.id] = now
            topic = self._topics.setdefault(message.topic, _Topic())
            topic.log.append(message)
            self.published += 1
            if len(topic.log) > self.max_messages:
                topic.log.popleft()
                topic.base += 1
        await self._notify()

    async def ensure_group(self, topic: str, group: str) -> None:
        self._require_open()
        state = self._topics.setdefault(topic, _Topic())
        state.groups.setdefault(group, _Group(cursor=state.base))

    async def fetch(
        self, topic: str, group: str, *, consumer: str, limit: int, wait_seconds: float
    ) -> Sequence[Delivery]:
        self._require_open()
        await self.ensure_group(topic, group)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait_seconds, 0.0)
        condition = self._condition()
        async with condition:
            while True:
                found = self._take(topic, group, limit)
                remaining = deadline - loop.time()
                if found or remaining <= 0 or self._closed:
                    return found
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(condition.wait(), min(remaining, 0.05))

    def _take(self, name: str, group_name: str, limit: int) -> list[Delivery]:
        topic = self._topics[name]
        group = topic.groups[group_name]
        now = self.clock()
        for offset in [o for o in group.pending if o < topic.base]:  # trimmed away
            del group.pending[offset]
        group.cursor = max(group.cursor, topic.base)
        offsets = sorted(o for o, p in group.pending.items() if p.due <= now)[:limit]
        while len(offsets) < limit and group.cursor < topic.base + len(topic.log):
            offsets.append(group.cursor)
            group.pending[group.cursor] = _Pending(attempt=0, due=0.0)
            group.cursor += 1
        deliveries = []
        for offset in offsets:
            pending = group.pending[offset]
            pending.attempt += 1
            pending.due = now + self.ack_wait
            message = topic.log[offset - topic.base]
            deliveries.append(
                Delivery(
                    id=message.id,
                    topic=name,
                    body=message.body,
                    group=group_name,
                    attempt=pending.attempt,
                    headers=message.headers,
                    handle=(offset, pending.attempt),
                )
            )
        return deliveries

    def _pending_of(self, delivery: Delivery) -> tuple[_Group, int] | None:
        offset, attempt = delivery.handle
        topic = self._topics.get(delivery.topic)
        group = None if topic is None else topic.groups.get(delivery.group)
        pending = None if group is None else group.pending.get(offset)
        if group is None or pending is None or pending.attempt != attempt:
            return None  # acked already, trimmed, or delivered again since (a late answer)
        return group, offset

    async def ack(self, delivery: Delivery) -> None:
        self._require_open()
        found = self._pending_of(delivery)
        if found is not None:
            group, offset = found
            del group.pending[offset]

    async def nak(self, delivery: Delivery, *, delay_seconds: float) -> None:
        self._require_open()
        found = self._pending_of(delivery)
        if found is not None:
            group, offset = found
            group.pending[offset].due = self.clock() + max(delay_seconds, 0.0)
            await self._notify()

    def pending(self, topic: str, group: str) -> int:
        """Deliveries of ``group`` handed out and not acked yet, plus those never handed out."""
        state = self._topics.get(topic)
        if state is None or group not in state.groups:
            return 0
        g = state.groups[group]
        return len(g.pending) + state.base + len(state.log) - g.cursor

    async def lag(self, topic: str, group: str) -> int | None:
        """Messages of ``topic`` not yet handed to ``group`` (None for an unknown group)."""
        state = self._topics.get(topic)
        if state is None or group not in state.groups:
            return None
        return state.base + len(state.log) - max(state.groups[group].cursor, state.base)

    async def ping(self) -> CheckResult:
        if self._closed:
            return CheckResult(HealthStatus.FAIL, output="closed")
        return CheckResult(HealthStatus.PASS, output=f"{len(self._topics)} topics")
