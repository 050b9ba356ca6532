"""THE relay test: writers commit in an order unlike their insert order, and nothing is skipped.

A sequence value is taken when an outbox row is inserted but becomes visible only at
commit. A relay that reads "rows after the last position it saw" skips a row whose
writer took an early value and committed late. Here 32 writers on PostgreSQL each insert
their events and then hold their transaction open until the test lets them go, in a
random order, some rolling back; two relays and a replay reader run between every
release and throughout. Every committed event must come out exactly once, in order per
aggregate; no rolled-back event may; and the replay window by position must see them all.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from corestone.db import Database, PoolOptions
from corestone.events import DomainEvent, EventBus, MemoryBroker, OutboxRelay

from .conftest import create_tables, note, registry

WRITERS = 32


class Rollback(Exception):
    pass


async def test_out_of_order_commits_skip_nothing_and_invent_nothing(
    make_postgres_database: Callable[[], str],
) -> None:
    """32 writers released in random order, some rolling back: every committed event, once."""
    db = Database(make_postgres_database(), pool=PoolOptions(size=WRITERS + 6))
    await db.start()
    await create_tables(db)
    rng = random.Random(1409)
    bus = EventBus(db, registry())
    broker = MemoryBroker(dedupe_window_seconds=0)  # a repeat would show, not be hidden
    relays = [OutboxRelay(db, broker, listen=False, batch=b) for b in (3, 5)]
    inserted = 0
    all_in = asyncio.Event()
    gates = [asyncio.Event() for _ in range(WRITERS)]
    rolls_back = {i for i in range(WRITERS) if rng.random() < 0.25}
    committed: list[DomainEvent] = []

    async def writer(i: int) -> None:
        nonlocal inserted
        events = [note(f"w{i}", n) for n in range(1 + i % 3)]
        try:
            async with db.transaction():
                await bus.record(*events)
                inserted += 1
                if inserted == WRITERS:
                    all_in.set()
                await gates[i].wait()  # the transaction stays open, its seqs taken
                if i in rolls_back:
                    raise Rollback
        except Rollback:
            return
        committed.extend(events)

    replayed: list[str] = []
    last_position = 0

    async def read_replay() -> None:
        nonlocal last_position
        async with db.transaction(read_only=True) as tx:
            window = await relays[0].store.sent_after(tx.session, last_position, limit=1000)
        for sent in window:
            assert sent.position > last_position
            last_position = sent.position
            replayed.append(str(DomainEvent.from_json(sent.body).id))

    stop = asyncio.Event()

    async def relay_loop(relay: OutboxRelay) -> None:
        for _ in range(10_000):  # bounded: the test ends long before
            if stop.is_set():
                return
            await relay.run_once()
            await asyncio.sleep(0)

    try:
        tasks = [asyncio.create_task(writer(i)) for i in range(WRITERS)]
        await asyncio.wait_for(all_in.wait(), 60)
        background = [asyncio.create_task(relay_loop(r)) for r in relays]
        order = list(range(WRITERS))
        rng.shuffle(order)
        assert order != sorted(order)
        for i in order:
            gates[i].set()
            await tasks[i]
            await relays[rng.randrange(2)].run_once()
            await read_replay()
        stop.set()
        await asyncio.gather(*background)
        for _ in range(100):
            if not sum([await r.run_once() for r in relays]):
                break
        await read_replay()
    finally:
        for gate in gates:
            gate.set()
        await db.aclose()

    deliveries = await broker.fetch(
        "corestone.events", "check", consumer="c", limit=100_000, wait_seconds=0
    )
    published = [DomainEvent.from_json(d.body) for d in deliveries]
    assert sorted(str(e.id) for e in published) == sorted(str(e.id) for e in committed)
    assert sorted(replayed) == sorted(str(e.id) for e in committed)
    assert len(committed) < sum(1 + i % 3 for i in range(WRITERS))  # some rolled back
    for i in range(WRITERS):
        mine = [e.payload["n"] for e in published if e.aggregate_id == f"w{i}"]
        assert mine == sorted(mine)
