"""The events benchmark's building blocks, run once on a few events (nothing is timed).

``python -m bench events`` takes minutes; this proves in seconds that each part really
does what its figure claims: the write shapes commit what they say, the relay drains the
outbox into each real broker exactly once and the peer's client stores as many, and the
latency run's writer process and consumer see every event. A broken suite is found by
the tests rather than by the next benchmark run. Brokers whose server is not running
are skipped here (and left out by the suite itself).
"""

from __future__ import annotations

import pytest
from bench._events_latency import GROUP, steady_latency
from bench._events_relay import broker_holds, fill_outbox, peer_publish, relay_drain
from bench._events_setup import (
    BROKER_KINDS,
    CHANGES,
    close_broker,
    events_database,
    open_broker,
    topic,
)
from bench._events_write import write_overhead
from sqlalchemy import func, select

from corestone.events import MemoryBroker
from corestone.events.outbox import EventOutboxRecord

pytestmark = pytest.mark.timeout(120)

_OUTBOX = EventOutboxRecord.__table__


async def test_the_write_shapes_commit_one_row_each_and_one_event_for_the_event_shape() -> None:
    """4 timed transactions of each shape (after 20 to warm up): rows and events as promised."""
    async with events_database() as db:
        result = await write_overhead(db, 4)
        async with db.transaction(read_only=True) as tx:
            changes = (await tx.session.execute(select(func.count()).select_from(CHANGES))).scalar()
            events = (await tx.session.execute(select(func.count()).select_from(_OUTBOX))).scalar()

    assert result.transactions == 4
    assert min(result.write_us, result.write_event_us, result.write_select_us) > 0
    assert changes == 3 * (20 + 4)
    assert events == 20 + 4


@pytest.mark.parametrize("kind", ["memory", *BROKER_KINDS])
async def test_the_relay_drains_every_event_once_and_the_peer_stores_as_many(kind: str) -> None:
    """1,200 events (three batches): all published, the broker holds each once, none pending."""
    async with events_database() as db:
        bodies = await fill_outbox(db, 1200)
        if kind == "memory":
            result = await relay_drain(db, MemoryBroker(), "bench", 1200)
            assert (result.published, result.passes, result.pending) == (1200, 3, 0)
            return
        broker = await open_broker(kind)
        if broker is None:
            pytest.skip(f"{kind} is not running here")
        relayed, peered = topic(f"t-relay-{kind}"), topic(f"t-peer-{kind}")
        try:
            for name in (relayed, peered):
                await broker.ensure_group(name, "bench")
            result = await relay_drain(db, broker, relayed, 1200)
            seconds = await peer_publish(kind, broker, peered, bodies)
            peer_held = await broker_holds(broker, peered, "bench")
        finally:
            await close_broker(broker, [relayed, peered], ["bench"])

    assert (result.published, result.held, result.pending) == (1200, 1200, 0)
    assert seconds > 0
    assert peer_held == 1200


async def test_the_latency_run_sees_every_event_from_the_writer_process() -> None:
    """30 events at 100/s through Redis Streams, 5 to warm up: the 25 timed ones all handled."""
    async with events_database() as db:
        broker = await open_broker("redis")
        if broker is None:
            pytest.skip("redis is not running here")
        name = topic("t-latency")
        try:
            result = await steady_latency(db, broker, name, rate=100, count=25, warm=5)
        finally:
            await close_broker(broker, [name], [GROUP])

    assert (result.sent, result.handled) == (25, 25)
    assert result.p50_ms is not None
    assert result.p99_ms is not None
    assert 0 < result.p50_ms <= result.p99_ms
    assert result.rate > 0
