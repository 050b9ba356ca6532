"""A relay process for the crash test: it dies between publishing a batch and marking it.

Run as ``python relay_crash_app.py DATABASE_URL KIND BROKER_URL TOPIC WORKDIR``. It runs
an :class:`~corestone.events.OutboxRelay` (batches of :data:`BATCH`) against the real
broker ``KIND`` at ``BROKER_URL``. The broker is the real one, wrapped so that once its
:data:`CRASH_AFTER`-th ``publish`` has *returned* (the broker has the batch: Lua reply,
JetStream acks, publisher confirms) the process writes ``WORKDIR/ready`` with the ids of
that batch and waits to be SIGKILLed — before the relay can mark the batch sent.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from corestone.db import Database
from corestone.events import OutboxRelay
from corestone.events.brokers.base import Broker, Delivery, OutgoingMessage
from corestone.observability.health import CheckResult

BATCH = 5
CRASH_AFTER = 2
OWNER = "relay-that-dies"


class DieAfterPublish:
    """``inner``, except that its ``CRASH_AFTER``-th publish stops the process after returning."""

    def __init__(self, inner: Broker, ready: Path) -> None:
        self.inner, self.ready, self.name = inner, ready, inner.name
        self.published = 0

    async def start(self) -> None:
        await self.inner.start()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        await self.inner.publish(messages)
        self.published += 1
        if self.published == CRASH_AFTER:
            partial = self.ready.with_suffix(".partial")  # ready appears whole, never empty
            partial.write_text(",".join(m.id for m in messages))
            partial.rename(self.ready)
            await asyncio.sleep(3600)  # the test SIGKILLs the process here

    async def ensure_group(self, topic: str, group: str) -> None:
        await self.inner.ensure_group(topic, group)

    async def fetch(
        self, topic: str, group: str, *, consumer: str, limit: int, wait_seconds: float
    ) -> Sequence[Delivery]:
        return await self.inner.fetch(
            topic, group, consumer=consumer, limit=limit, wait_seconds=wait_seconds
        )

    async def ack(self, delivery: Delivery) -> None:
        await self.inner.ack(delivery)

    async def nak(self, delivery: Delivery, *, delay_seconds: float) -> None:
        await self.inner.nak(delivery, delay_seconds=delay_seconds)

    async def ping(self) -> CheckResult:
        return await self.inner.ping()


async def main(database_url: str, kind: str, broker_url: str, topic: str, workdir: str) -> None:
    from tests.integration.events.brokers import make_broker

    database = Database(database_url)
    await database.start()
    broker = DieAfterPublish(make_broker(kind, broker_url), Path(workdir) / "ready")
    await broker.start()
    relay = OutboxRelay(database, broker, topic_for=lambda _type: topic, batch=BATCH,
                        listen=False, poll_seconds=0.05, owner=OWNER)  # fmt: skip
    await relay.start()
    await asyncio.sleep(3600)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    asyncio.run(main(*sys.argv[1:6]))
