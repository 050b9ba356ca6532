"""A broker restarted in the middle of a run loses no committed event.

Each test starts a broker server of its own on a spare port (never the shared one), runs
the whole path — transactions recording events, the outbox relay, the broker, a consumer
applying each event in the database — and stops the server in the middle (SIGKILL for
redis-server and nats-server; SIGTERM for RabbitMQ, see :class:`RabbitMQServer`), while
transactions keep committing. After it comes back, every committed event has been applied
exactly once: the outbox held what could not be published, the broker kept what it had
acknowledged, and the inbox absorbed what was delivered twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from sqlalchemy import text

from corestone.db import Database, Transaction
from corestone.events import DomainEvent, EventBus, EventConsumer, OutboxRelay
from corestone.resilience import BreakerConfig
from corestone.resilience.registry import BreakerRegistry
from corestone.testing import RedisServer

from .brokers import KINDS, make_broker
from .conftest import note, registry
from .servers import NatsServer, RabbitMQServer


class Server(Protocol):
    url: str

    def start(self) -> None: ...

    def kill(self) -> None: ...


@pytest.fixture(params=KINDS)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Server]]:
    kind = str(request.param)
    own: Any
    if kind == "redis":
        own = RedisServer(tmp_path, appendonly=True)
    elif kind == "nats":
        own = NatsServer(tmp_path)
    else:
        own = RabbitMQServer(tmp_path)
    own.start()
    try:
        yield kind, own
    finally:
        own.kill()


async def _effects(db: Database, group: str) -> list[str]:
    async with db.transaction(read_only=True) as tx:
        rows = await tx.session.execute(
            text("SELECT event_id FROM effects WHERE grp = :g"), {"g": group}
        )
        return [r.event_id for r in rows]


def _applier(group: str) -> Any:
    async def apply(event: DomainEvent, tx: Transaction) -> None:
        await tx.session.execute(
            text("INSERT INTO effects (grp, event_id) VALUES (:g, :e)"),
            {"g": group, "e": str(event.id)},
        )

    return apply


async def test_a_broker_restart_mid_run_loses_no_committed_event(
    db: Database, server: tuple[str, Server]
) -> None:
    """60 events committed in three waves: before, during and after the broker is down.
    Group ``early`` consumes all along; group ``late`` starts only after the restart, so
    the first wave must have survived in the broker. Each group applies all 60 once."""
    kind, own = server
    async with db.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE effects (grp VARCHAR(10), event_id VARCHAR(64),"
                                " PRIMARY KEY (grp, event_id))"))  # fmt: skip
    breakers = BreakerRegistry(BreakerConfig(wait_in_open_seconds=0.5))
    broker = make_broker(kind, own.url, max_deliver=50)
    bus = EventBus(db, registry())
    relay = OutboxRelay(db, broker, breakers=breakers, listen=False, poll_seconds=0.05,
                        backoff_initial_seconds=0.1, backoff_max_seconds=0.5)  # fmt: skip

    def consumer(group: str) -> EventConsumer:
        return EventConsumer(db, broker, registry(), group=group, breakers=breakers,
                             handlers={"note.added": _applier(group)}, wait_seconds=0.2,
                             max_attempts=50, backoff_initial_seconds=0.1,
                             backoff_max_seconds=0.5)  # fmt: skip

    early, late = consumer("early"), consumer("late")
    committed: list[str] = []

    async def wave(start: int) -> None:
        for n in range(start, start + 20):
            event = note(str(n % 4), n)
            await bus.record(event)
            committed.append(str(event.id))
            await asyncio.sleep(0.01)

    await broker.start()
    # Both groups exist before the first event: a RabbitMQ group gets only what is
    # published after its queue is bound, and the early consumer's own first pass may
    # come after the relay's (it did: two events never reached group early).
    await broker.ensure_group("corestone.events", "early")
    await broker.ensure_group("corestone.events", "late")  # it exists; nobody reads it yet
    await relay.start()
    await early.start()
    try:
        await wave(0)
        for _ in range(100):  # the first wave is in the broker, marked sent in the outbox
            if (await relay.refresh_stats())[0] == 0:
                break
            await asyncio.sleep(0.1)
        own.kill()
        await wave(20)
        await asyncio.sleep(0.5)  # the relay and the consumer find it down
        await asyncio.to_thread(own.start)
        await late.start()
        await wave(40)
        for _ in range(240):
            done = [len(await _effects(db, group)) for group in ("early", "late")]
            if min(done) >= len(committed):
                break
            await asyncio.sleep(0.25)
    finally:
        await late.aclose()
        await early.aclose()
        await relay.aclose()
        await broker.aclose()

    assert len(set(committed)) == 60
    assert sorted(await _effects(db, "early")) == sorted(committed)
    assert sorted(await _effects(db, "late")) == sorted(committed)
