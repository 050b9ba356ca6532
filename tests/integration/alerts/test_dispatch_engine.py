"""The real alert engine, over the real metric history, into the dispatcher, on each database."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from corestone.observability.alerts import AlertEngine, Rule
from corestone.observability.alerts.dispatcher import Dispatcher
from corestone.observability.alerts.tables import AlertHistoryRecord
from corestone.observability.history import MetricsHistory
from corestone.observability.metrics import Metrics
from corestone.testing import ManualClock
from tests.integration.alerts.delivery_support import Recorder, alert_database

RULE = Rule(
    name="QueueDeep",
    expr="corestone_queue_depth > 10",
    for_seconds=60,
    labels={"severity": "critical"},
    annotations={"summary": "{{ $labels.queue }} holds {{ $value }}"},
)


async def test_the_engine_notifies_through_the_dispatcher(database_url: str) -> None:
    """pending → firing → resolved: recorded, sent once firing (after group_wait), once resolved."""
    wall, mono = ManualClock(1_700_000_000.0), ManualClock(0.0)
    metrics = Metrics()
    depth = metrics.gauge("queue_depth", "Messages waiting.", ["queue"]).labels(queue="mail")
    history = MetricsHistory(metrics, clock=wall)
    history.watch(RULE.expr)
    channel = Recorder()
    async with alert_database(database_url) as db:
        dispatcher = Dispatcher(
            db, [channel], now=lambda: datetime.fromtimestamp(wall(), UTC), metrics=metrics
        )
        engine = AlertEngine(
            history, dispatcher, [RULE], metrics=metrics, interval=3600, wall=wall, monotonic=mono
        )
        async with dispatcher:
            await engine.start()
            try:

                async def step(seconds: float, value: float) -> None:
                    wall.advance(seconds)
                    mono.advance(seconds)
                    depth.set(value)
                    history.sample()
                    await engine.evaluate()
                    await engine.flush()
                    await dispatcher.flush()

                await step(0, 42)  # pending
                await step(60, 42)  # firing; the group waits 10 s
                assert channel.sent == []
                await step(15, 42)
                assert [(n.status, len(n.alerts)) for n in channel.sent] == [("firing", 1)]
                assert channel.sent[0].alerts[0].annotations["summary"] == "mail holds 42"
                await step(15, 0)  # resolved; told at the group's next interval
                await step(60, 0)
                assert [n.status for n in channel.sent] == ["firing", "resolved"]
            finally:
                await engine.aclose()
        async with db.transaction() as tx:
            rows = await tx.session.execute(
                select(AlertHistoryRecord.previous, AlertHistoryRecord.state).order_by(
                    AlertHistoryRecord.id
                )
            )
            changes = [tuple(row) for row in rows]
    assert changes == [("inactive", "pending"), ("pending", "firing"), ("firing", "resolved")]
