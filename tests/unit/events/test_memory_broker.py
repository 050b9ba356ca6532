"""The memory broker: groups read everything, one consumer per message, redelivery, dedupe."""

from __future__ import annotations

import pytest

from corestone.errors import CircuitOpenError, UnavailableError
from corestone.events import MemoryBroker, OutgoingMessage
from corestone.events.brokers import GuardedBroker
from corestone.resilience import BreakerConfig, CircuitBreaker
from corestone.testing import ManualClock


def _messages(*ids: str) -> list[OutgoingMessage]:
    return [OutgoingMessage(id=i, topic="t", body=i.encode()) for i in ids]


async def _fetch(broker: MemoryBroker, group: str = "g", limit: int = 10) -> list[str]:
    found = await broker.fetch("t", group, consumer="c", limit=limit, wait_seconds=0)
    return [d.id for d in found]


async def test_every_group_reads_every_message_in_order_once() -> None:
    """Two groups each get the whole log; a fetched message is not handed out again."""
    broker = MemoryBroker()
    await broker.publish(_messages("a", "b", "c"))

    assert await _fetch(broker, "g1") == ["a", "b", "c"]
    assert await _fetch(broker, "g2", limit=2) == ["a", "b"]
    assert await _fetch(broker, "g1") == []
    assert await _fetch(broker, "g2") == ["c"]


async def test_a_repeated_message_id_is_stored_once_within_the_window() -> None:
    """Publishing a batch again (a relay's retry) does not double it; after the window it would."""
    clock = ManualClock()
    broker = MemoryBroker(clock=clock, dedupe_window_seconds=10)
    await broker.publish(_messages("a", "b"))
    await broker.publish(_messages("a", "b", "c"))
    clock.advance(11)
    await broker.publish(_messages("a"))

    assert await _fetch(broker) == ["a", "b", "c", "a"]


async def test_unacked_deliveries_come_back_after_the_ack_wait_with_a_higher_attempt() -> None:
    """A consumer that died holding a message: it is redelivered, attempt 2; acked ones are not."""
    clock = ManualClock()
    broker = MemoryBroker(clock=clock, ack_wait_seconds=5)
    await broker.publish(_messages("a", "b"))
    first = await broker.fetch("t", "g", consumer="c", limit=10, wait_seconds=0)
    await broker.ack(first[0])

    clock.advance(4)
    assert await _fetch(broker) == []
    clock.advance(2)
    again = await broker.fetch("t", "g", consumer="c2", limit=10, wait_seconds=0)

    assert [(d.id, d.attempt) for d in again] == [("b", 2)]


async def test_nak_delays_the_redelivery_and_a_late_ack_of_an_old_attempt_is_ignored() -> None:
    """A naked delivery waits its delay; a late ack of the first attempt changes nothing."""
    clock = ManualClock()
    broker = MemoryBroker(clock=clock, ack_wait_seconds=5)
    await broker.publish(_messages("a"))
    [first] = await broker.fetch("t", "g", consumer="c", limit=1, wait_seconds=0)
    await broker.nak(first, delay_seconds=3)
    assert await _fetch(broker) == []
    clock.advance(3)
    [second] = await broker.fetch("t", "g", consumer="c", limit=1, wait_seconds=0)
    await broker.ack(first)  # late, from the first attempt

    assert second.attempt == 2
    assert broker.pending("t", "g") == 1
    await broker.ack(second)
    assert broker.pending("t", "g") == 0


async def test_the_log_is_bounded() -> None:
    """Past max_messages the oldest go; a group behind them moves on."""
    broker = MemoryBroker(max_messages=2)
    await broker.ensure_group("t", "g")
    await broker.publish(_messages("a", "b", "c"))

    assert await _fetch(broker) == ["b", "c"]


async def test_a_closed_broker_is_unavailable() -> None:
    """Calls on a closed broker raise UnavailableError (what the breaker counts)."""
    broker = MemoryBroker()
    await broker.aclose()

    with pytest.raises(UnavailableError):
        await broker.publish(_messages("a"))
    assert (await broker.ping()).status == "fail"


async def test_the_guard_opens_its_breaker_on_failures_and_then_refuses_at_once() -> None:
    """Every broker call goes through the breaker: failures open it; then no call is made."""
    broker = MemoryBroker()
    breaker = CircuitBreaker(
        "broker:memory", BreakerConfig(window_size=2, minimum_calls=2), clock=ManualClock()
    )
    guarded = GuardedBroker(broker, breaker)
    await broker.aclose()
    for _ in range(2):
        with pytest.raises(UnavailableError):
            await guarded.publish(_messages("a"))
    await broker.start()

    with pytest.raises(CircuitOpenError):
        await guarded.publish(_messages("a"))
    assert broker.published == 0
