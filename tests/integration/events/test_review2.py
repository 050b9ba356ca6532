"""Hostile review 2 of the consumer: whose context a handler runs in."""

from __future__ import annotations

from corestone import context
from corestone.db import Database, Transaction
from corestone.events import DomainEvent, EventConsumer, MemoryBroker
from corestone.events.brokers import OutgoingMessage

from .conftest import NoteAdded, registry

TOPIC = "corestone.events"


async def test_a_consumer_handler_runs_in_its_events_workspace_not_the_callers(
    db: Database,
) -> None:
    """An event of workspace 7 handled by a consumer whose task was started with
    workspace 3 bound (or none): the handler's follow-up writes (an email, another
    event, both of which default to the context's workspace) must belong to workspace 7.
    The consumer bound nothing, so they went to whatever the ambient context held."""
    with context.bind(workspace=7, actor="u-9", correlation="corr-1"):
        event = DomainEvent.create(NoteAdded(text="x"), aggregate_type="note", aggregate_id="1")
    seen: list[tuple[str | None, str | None, str | None]] = []

    async def handler(got: DomainEvent, tx: Transaction) -> None:
        seen.append((context.workspace_id(), context.actor_id(), context.correlation_id()))

    broker = MemoryBroker()
    await broker.publish([OutgoingMessage(id=str(event.id), topic=TOPIC, body=event.to_json())])
    consumer = EventConsumer(
        db, broker, registry(), group="g", wait_seconds=0, handlers={"note.added": handler}
    )
    with context.bind(workspace=3, actor="someone-else", correlation="other"):
        await consumer.run_once()
    assert seen == [("7", "u-9", "corr-1")]
