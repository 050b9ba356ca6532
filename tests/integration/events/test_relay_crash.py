"""A relay process SIGKILLed between publishing a batch and marking it sent (issue 14).

The child (``relay_crash_app.py``) runs a real :class:`OutboxRelay` against PostgreSQL and
a real broker and is killed right after the broker accepted its second batch. A relay
started again here (one lease later) publishes that batch again with the rest, and a
consumer whose handler writes an effect row applies every event exactly once: the broker
dropped the repeat (Redis's marker, JetStream's message id) or delivered it twice
(RabbitMQ) and the inbox absorbed it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from corestone.db import Database, Transaction, utc_now
from corestone.events import DomainEvent, EventBus, EventConsumer, OutboxRelay
from corestone.observability.metrics import Metrics
from tests.integration.crash import kill_when_ready

from . import relay_crash_app as app
from .brokers import KINDS, cleanup, make_broker, service_url, unique_topic
from .conftest import OUTBOX, create_tables, note, registry

HERE = Path(__file__).resolve().parent
GROUP = "effects"
EVENTS = 3 * app.BATCH  # one batch marked, one in the crash window, one never claimed


@pytest.fixture
async def db(postgres_url: str) -> AsyncIterator[Database]:
    database = Database(postgres_url)
    await database.start()
    await create_tables(database)
    async with database.engine.begin() as conn:  # no unique key: a second effect would show
        await conn.execute(text("CREATE TABLE effects (event_id VARCHAR(64) NOT NULL)"))
    yield database
    await database.aclose()


async def _effects(db: Database) -> Counter[str]:
    async with db.transaction(read_only=True) as tx:
        return Counter(r.event_id for r in await tx.session.execute(text("SELECT * FROM effects")))


async def _apply(event: DomainEvent, tx: Transaction) -> None:
    await tx.session.execute(text("INSERT INTO effects VALUES (:e)"), {"e": str(event.id)})


async def _outbox(db: Database) -> dict[str, Any]:
    async with db.transaction(read_only=True) as tx:
        return {r.id: r for r in await tx.session.execute(select(OUTBOX))}


@pytest.mark.parametrize("kind", KINDS)
async def test_a_relay_killed_between_publish_and_mark_applies_each_event_once(
    db: Database, postgres_url: str, kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """SIGKILL after the broker took batch 2 and before its mark; restart; 15 effects, once.

    Before the restart the outbox must show the crash window exactly (batch 1 sent, batch
    2 still pending and leased by the dead relay, batch 3 untouched), so the test cannot
    pass without the republish happening. The consumer's outcomes show where the repeat
    was absorbed: RabbitMQ delivers batch 2 twice (five duplicates for the inbox), Redis
    and JetStream store it once.
    """
    url = service_url(kind, request)
    topic = unique_topic()
    bus = EventBus(db, registry())
    recorded = [note(str(n % 3), n) for n in range(EVENTS)]
    for event in recorded:
        await bus.record(event)
    ids = [str(e.id) for e in recorded]
    broker = make_broker(kind, url)
    await broker.start()
    try:
        await broker.ensure_group(topic, GROUP)  # RabbitMQ groups see what comes after this
        args = [postgres_url, kind, url, topic, str(tmp_path)]
        crashed = await asyncio.to_thread(
            kill_when_ready, HERE / "relay_crash_app.py", args, tmp_path, {}
        )

        assert crashed.split(",") == ids[app.BATCH : 2 * app.BATCH]
        rows = await _outbox(db)
        assert [rows[i].status for i in ids] == ["sent"] * 5 + ["pending"] * 10
        assert [rows[i].lease_owner for i in ids[5:]] == [app.OWNER] * 5 + [None] * 5

        metrics = Metrics()
        later = utc_now() + timedelta(seconds=31)  # the dead relay's 30 s lease is over
        relay = OutboxRelay(db, broker, topic_for=lambda _type: topic, listen=False,
                            now=lambda: later)  # fmt: skip
        assert await relay.run_once() == 10  # batch 2 again, and batch 3
        assert {r.status for r in (await _outbox(db)).values()} == {"sent"}

        consumer = EventConsumer(db, broker, registry(), group=GROUP, topic=topic,
                                 handlers={"note.added": _apply}, wait_seconds=0.2,
                                 metrics=metrics)  # fmt: skip
        repeats = app.BATCH if kind == "rabbitmq" else 0

        def outcome(name: str) -> float:
            labels = {"group": GROUP, "outcome": name}
            value = metrics.registry.get_sample_value("corestone_events_consumed_total", labels)
            return value or 0.0

        await consumer.start()
        try:
            for _ in range(200):  # bounded: every delivery the broker holds is handled
                if outcome("handled") + outcome("duplicate") >= EVENTS + repeats:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # a late extra delivery would show in the counts
        finally:
            await consumer.aclose()
    finally:
        await broker.aclose()
        await cleanup(make_broker(kind, url), topic, [GROUP])

    assert await _effects(db) == Counter(ids)
    assert (outcome("handled"), outcome("duplicate")) == (EVENTS, repeats)
