"""Hostile review of the events (issue 14): each defect found, against the real servers.

Every test here failed before its fix.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from corestone import cli as corestone_cli
from corestone.db import Database
from corestone.events import DomainEvent, EventBus, EventConsumer, OutboxRelay
from corestone.events.brokers import MemoryBroker, OutgoingMessage
from corestone.events.outbox import OutboxStore

from .brokers import cleanup, make_broker, service_url, unique_topic
from .conftest import note, registry
from .test_dead_letters_cli import url  # noqa: F401 - the fixture


@pytest.fixture
async def redis_broker(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, str]]:
    topic = unique_topic()
    broker: Any = make_broker("redis", service_url("redis", request))
    await broker.start()
    yield broker, topic
    await cleanup(broker, topic, ["g"])


@pytest.fixture
async def rabbit_broker(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, str]]:
    topic = unique_topic()
    broker: Any = make_broker("rabbitmq", service_url("rabbitmq", request))
    await broker.start()
    yield broker, topic
    await cleanup(broker, topic, ["g"])


def _message(topic: str, **headers: str) -> OutgoingMessage:
    return OutgoingMessage(id=str(uuid.uuid4()), topic=topic, body=b"{}", key="k", headers=headers)


async def test_redis_entry_that_is_not_utf8_does_not_stall_the_group(
    redis_broker: tuple[Any, str],
) -> None:
    """An entry XADDed by someone else with an ``id`` that is not UTF-8 reaches the
    consumer (to be dead-lettered) and the entry beside it is delivered: a strict decode
    made every fetch raise, holding both in the pending list, again at each redelivery."""
    broker, topic = redis_broker
    await broker.ensure_group(topic, "g")
    await broker._redis().xadd(broker.stream_key(topic), {"id": b"\xff\xfe", "body": b"\xff"})
    good = _message(topic)
    await broker.publish([good])
    found = await broker.fetch(topic, "g", consumer="c", limit=10, wait_seconds=0.5)
    assert [d.id for d in found] == ["\ufffd\ufffd", good.id]
    assert found[0].body == b"\xff"  # the body as sent, for the dead letter


async def test_rabbitmq_forged_attempts_header_does_not_hold_the_batch(
    rabbit_broker: tuple[Any, str],
) -> None:
    """A message published with a forged ``x-corestone-attempts`` ("abc") is delivered as
    a first attempt, and so is the message behind it: ``int()`` raised in ``fetch`` after
    the batch left the buffer, and the batch stayed unacked until the process restarted."""
    broker, topic = rabbit_broker
    await broker.ensure_group(topic, "g")
    forged, good = _message(topic, **{"x-corestone-attempts": "abc"}), _message(topic)
    await broker.publish([forged])
    await broker.publish([good])
    found: list[Any] = []
    for _ in range(20):
        found += await broker.fetch(topic, "g", consumer="c", limit=10, wait_seconds=0.5)
        if len(found) >= 2:
            break
        await asyncio.sleep(0.1)
    assert [(d.id, d.attempt) for d in found] == [(forged.id, 1), (good.id, 1)]
    for delivery in found:
        await broker.ack(delivery)


async def test_positions_never_go_back_after_the_outbox_was_pruned_empty(db: Database) -> None:
    """An outbox idle past the retention keeps its newest sent row: the next positions
    follow it, so a replay reader resuming after position 2 sees the new event. Pruning
    every sent row numbered the next ones from 1 again, below the reader's position."""
    now = [datetime.now(UTC)]
    bus = EventBus(db, registry(), store=OutboxStore(now=lambda: now[0]))
    relay = OutboxRelay(db, MemoryBroker(), listen=False, now=lambda: now[0], retention_seconds=60)
    await bus.record(note("1", 0), note("1", 1))
    await relay.run_once()
    now[0] += timedelta(hours=1)
    assert await relay.prune() == 1
    await bus.record(note("1", 2))
    await relay.run_once()
    async with db.transaction(read_only=True) as tx:
        window = await relay.store.sent_after(tx.session, 2, limit=10)
    assert [(s.position, DomainEvent.from_json(s.body).payload["n"]) for s in window] == [(3, 2)]


@pytest.mark.usefixtures("url")
@pytest.mark.parametrize(
    "args",
    [
        ["replay", str(2**63)],
        ["drop", str(2**70)],
        ["list", "--consumer", "\x00"],
        ["replay", "--consumer", "mail\x1b[2J", "--all"],
        ["drop", "1", "--consumer", "x" * 101],
    ],
)
def test_dead_letters_cli_refuses_impossible_ids_and_groups_as_usage_errors(
    args: list[str],
) -> None:
    """An id past BIGINT or a group no consumer can have (NUL, escapes, over 100
    characters) is a usage error, exit 2: they reached the database and came back as exit
    1 "are the events tables migrated?" (PostgreSQL) or an OverflowError traceback (SQLite)."""
    result = CliRunner().invoke(corestone_cli.app, ["events", "dead-letters", *args])
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output


async def _slow_to_unwind(entered: asyncio.Event) -> None:
    """Block until cancelled, then take half a second to unwind (a rollback on a slow
    network), shielded as such cleanup is."""
    entered.set()
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        await asyncio.shield(asyncio.sleep(0.5))
        raise


async def _cancel_the_stop(aclose: Any, task: asyncio.Task[None]) -> None:
    """Cancel ``aclose()`` (a stop timeout) once the drain is over and the loop unwinds:
    the cancellation must come out of it, and only once the loop has ended."""
    stopping = asyncio.create_task(aclose())
    await asyncio.sleep(0.2)  # drain (0.05 s) over: the loop is cancelled and unwinding
    assert not task.done()
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert task.done()


async def test_a_cancelled_consumer_stop_waits_for_its_loop_and_propagates(db: Database) -> None:
    """The runtime cancels a component's ``aclose`` at its stop timeout, then closes the
    database: the consumer's stop must not return (swallowing the cancellation) while
    its handler's transaction is still unwinding."""
    entered = asyncio.Event()

    async def handler(_event: DomainEvent, _tx: Any) -> None:
        await _slow_to_unwind(entered)

    broker = MemoryBroker()
    event = note()
    await broker.publish([OutgoingMessage(id=str(event.id), topic="t", body=event.to_json())])
    consumer = EventConsumer(
        db, broker, registry(), group="g", topic="t", handlers={"note.added": handler},
        wait_seconds=0.05, drain_seconds=0.05,
    )  # fmt: skip
    await consumer.start()
    await asyncio.wait_for(entered.wait(), 30)
    assert consumer._task is not None
    await _cancel_the_stop(consumer.aclose, consumer._task)


async def test_a_cancelled_relay_stop_waits_for_its_pass_and_propagates(db: Database) -> None:
    """The same for the relay: a stop cancelled while a pass unwinds from its publish
    returns only when the pass has ended, and raises the cancellation."""
    entered = asyncio.Event()

    class SlowBroker(MemoryBroker):
        async def publish(self, messages: Any) -> None:
            await _slow_to_unwind(entered)

    await EventBus(db, registry()).record(note())
    relay = OutboxRelay(db, SlowBroker(), listen=False, poll_seconds=0.05, drain_seconds=0.05)
    await relay.start()
    await asyncio.wait_for(entered.wait(), 30)
    assert relay._task is not None
    await _cancel_the_stop(relay.aclose, relay._task)
