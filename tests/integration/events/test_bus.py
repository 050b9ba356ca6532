"""The in-process bus: in-transaction handlers roll back with it, after-commit ones never hurt."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from corestone.db import Database, Transaction
from corestone.events import DomainEvent, EventBus
from corestone.observability.metrics import Metrics
from corestone.resilience import Retry

from .conftest import note, outbox_rows, registry

FAST = Retry(attempts=3, initial_wait_seconds=0.0, max_wait_seconds=0.0)


async def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(f"corestone_{name}", labels) or 0.0


async def test_an_in_transaction_handler_runs_in_the_transaction_and_its_failure_rolls_back(
    db: Database,
) -> None:
    """A handler's writes share the transaction; when one raises, the change and events go."""
    async with db.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE seen (id VARCHAR(36) PRIMARY KEY)"))
    metrics = Metrics()
    bus = EventBus(db, registry(), metrics=metrics)

    async def remember(event: DomainEvent, tx: Transaction) -> None:
        await tx.session.execute(text("INSERT INTO seen VALUES (:id)"), {"id": str(event.id)})
        if event.payload["n"] == 13:
            raise ValueError("unlucky")

    bus.subscribe("note.added", remember, name="remember")
    await bus.record(note(n=1))
    with pytest.raises(ValueError, match="unlucky"):
        async with db.transaction():
            await bus.record(note(n=2))
            await bus.record(note(n=13))

    async with db.transaction(read_only=True) as tx:
        seen = (await tx.session.execute(text("SELECT count(*) FROM seen"))).scalar()
    assert seen == 1
    assert len(await outbox_rows(db)) == 1
    labels = {"handler": "remember", "phase": "in_transaction"}
    assert await _sample(metrics, "events_handler_failures_total", **labels) == 1
    assert await _sample(metrics, "events_handler_seconds_count", **labels) == 3


async def test_after_commit_handlers_are_retried_never_break_the_request_and_are_counted(
    db: Database,
) -> None:
    """A flaky handler succeeds on retry; a broken one is counted; the commit holds."""
    metrics = Metrics()
    bus = EventBus(db, registry(), metrics=metrics, retry=FAST)
    calls: list[str] = []

    async def flaky(event: DomainEvent) -> None:
        calls.append("flaky")
        if calls.count("flaky") < 2:
            raise ConnectionError("blip")

    async def broken(event: DomainEvent) -> None:
        calls.append("broken")
        raise RuntimeError("always")

    bus.subscribe_after_commit("note.added", flaky, name="flaky")
    bus.subscribe_after_commit("note.added", broken, name="broken")
    async with db.transaction():
        await bus.record(note())
        assert calls == []  # nothing before the commit
    await bus.drain()

    assert calls == ["flaky", "flaky", "broken", "broken", "broken"]
    assert len(await outbox_rows(db)) == 1
    assert await _sample(metrics, "events_handler_retries_total", handler="flaky") == 1
    failures = "events_handler_failures_total"
    assert await _sample(metrics, failures, handler="broken", phase="after_commit") == 1
    assert await _sample(metrics, failures, handler="flaky", phase="after_commit") == 0


async def test_after_commit_handlers_do_not_run_after_a_rollback(db: Database) -> None:
    """A rolled-back transaction's events reach no after-commit handler."""
    bus = EventBus(db, registry(), retry=FAST)
    calls: list[DomainEvent] = []

    async def handler(event: DomainEvent) -> None:
        calls.append(event)

    bus.subscribe_after_commit("note.added", handler)
    with pytest.raises(RuntimeError):
        async with db.transaction():
            await bus.record(note())
            raise RuntimeError("undo")
    await bus.drain()

    assert calls == []


async def test_subscribing_to_an_unregistered_type_fails_at_once(db: Database) -> None:
    """A typo in a subscription is an error when subscribing, not a handler that never runs."""
    bus = EventBus(db, registry())

    async def handler(event: DomainEvent) -> None: ...

    with pytest.raises(Exception, match="nope"):
        bus.subscribe_after_commit("nope", handler)
