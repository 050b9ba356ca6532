"""The dispatcher on SQLite and PostgreSQL: history, grouping, repeats, resolution, claims."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select

from corestone.observability.alerts.dispatcher import Dispatcher
from corestone.observability.alerts.grouping import Timing
from corestone.observability.alerts.model import AlertState
from corestone.observability.alerts.tables import (
    AlertHistoryRecord,
    AlertNotificationRecord,
    AlertSendRecord,
)
from corestone.observability.metrics import Metrics
from tests.integration.alerts.delivery_support import (
    Recorder,
    WallClock,
    alert,
    alert_database,
    evaluation,
)


async def _count(database: object, table: object) -> int:
    async with database.transaction() as tx:  # type: ignore[attr-defined]
        return int((await tx.session.execute(select(func.count()).select_from(table))).scalar())


async def test_group_waits_then_repeats_and_resolves(database_url: str) -> None:
    """A group is sent after group_wait, again only after repeat_interval, and once resolved."""
    wall, channel = WallClock(), Recorder()
    async with alert_database(database_url) as db:
        async with Dispatcher(db, [channel], now=wall) as dispatcher:
            high = alert()

            async def tick(seconds: float, *alerts: object, **kw: object) -> None:
                wall.advance(seconds)
                await dispatcher.accept(evaluation(wall(), *alerts, **kw))  # type: ignore[arg-type]
                await dispatcher.flush()

            firing = {high.fingerprint: AlertState.FIRING}
            await tick(0, high)
            assert channel.sent == []  # group_wait: 10 s
            await tick(10, high, previous=firing)
            assert [n.status for n in channel.sent] == ["firing"]
            await tick(3600, high, previous=firing)
            assert len(channel.sent) == 1  # unchanged: not before repeat_interval
            await tick(3 * 3600, high, previous=firing)
            assert [n.seq for n in channel.sent] == [1, 2]
            await tick(15, alert(state=AlertState.RESOLVED), previous=firing)
            assert len(channel.sent) == 2  # resolved: at the group's next interval
            await tick(60)
            assert [n.status for n in channel.sent] == ["firing", "firing", "resolved"]
            await tick(3600)
            assert len(channel.sent) == 3
        async with db.transaction() as tx:
            states = (
                await tx.session.execute(
                    select(AlertHistoryRecord.state).order_by(AlertHistoryRecord.id)
                )
            ).scalars()
            assert list(states) == ["firing", "resolved"]
            statuses = (await tx.session.execute(select(AlertNotificationRecord.status))).scalars()
            assert set(statuses) == {"sent"}


async def test_a_change_waits_for_group_interval(database_url: str) -> None:
    """A second alert joining a sent group goes out after group_interval, in one notification."""
    wall, channel = WallClock(), Recorder()
    timing = Timing(group_wait=timedelta(0))
    async with (
        alert_database(database_url) as db,
        Dispatcher(db, [channel], now=wall, timing=timing) as dispatcher,
    ):
        a, b = alert(instance="a"), alert(instance="b")
        await dispatcher.accept(evaluation(wall(), a))
        await dispatcher.flush()
        wall.advance(20)
        await dispatcher.accept(evaluation(wall(), a, b))
        await dispatcher.flush()
        assert len(channel.sent) == 1  # changed, but within group_interval (60 s)
        wall.advance(40)
        await dispatcher.accept(evaluation(wall(), a, b))
        await dispatcher.flush()
        assert [len(n.alerts) for n in channel.sent] == [1, 2]
        assert channel.sent[1].group_labels == {"alertname": "HighErrorRatio"}


async def test_groups_by_the_group_by_labels(database_url: str) -> None:
    """Alerts of different rules, or of different group_by values, go out separately."""
    wall, channel = WallClock(), Recorder()
    timing = Timing(group_by=("alertname", "route"), group_wait=timedelta(0))
    async with (
        alert_database(database_url) as db,
        Dispatcher(db, [channel], now=wall, timing=timing) as dispatcher,
    ):
        alerts = [
            alert(route="/a", instance="1"),
            alert(route="/a", instance="2"),
            alert(route="/b"),
            alert("P99Latency", route="/a"),
        ]
        await dispatcher.accept(evaluation(wall(), *alerts))
        await dispatcher.flush()
    groups = sorted((dict(n.group_labels)["alertname"], len(n.alerts)) for n in channel.sent)
    assert groups == [("HighErrorRatio", 1), ("HighErrorRatio", 2), ("P99Latency", 1)]


async def test_two_dispatchers_on_one_database_send_once(database_url: str) -> None:
    """Two processes evaluating the same rules: each notification is claimed and sent once."""
    wall = WallClock()
    first, second = Recorder(), Recorder()
    async with alert_database(database_url) as db:
        async with (
            Dispatcher(db, [first], now=wall) as one,
            Dispatcher(db, [second], now=wall, metrics=Metrics()) as two,
        ):
            high = alert()
            firing = {high.fingerprint: AlertState.FIRING}
            for step, seconds in enumerate([0, 10, 4 * 3600]):
                wall.advance(seconds)
                ev = evaluation(wall(), high, previous=firing if step else None)
                await asyncio.gather(one.accept(ev), two.accept(ev))
                await asyncio.gather(one.flush(), two.flush())
        assert len(first.sent) + len(second.sent) == 2
        assert sorted(n.seq for n in first.sent + second.sent) == [1, 2]
        assert await _count(db, AlertSendRecord.__table__) == 2


async def test_accept_returns_while_a_channel_hangs(database_url: str) -> None:
    """A hanging channel holds neither accept nor shutdown; its row stays 'sending'."""
    wall, hold = WallClock(), asyncio.Event()
    channel = Recorder(hold=hold)
    timing = Timing(group_wait=timedelta(0))
    async with alert_database(database_url) as db:
        dispatcher = Dispatcher(db, [channel], now=wall, timing=timing, drain_seconds=0.01)
        await dispatcher.start()
        for _ in range(50):  # more than the queue holds: the oldest are dropped
            await asyncio.wait_for(dispatcher.accept(evaluation(wall(), alert())), 1)
        await dispatcher._queue.join()
        await asyncio.wait_for(dispatcher.aclose(), 5)
        async with db.transaction() as tx:
            statuses = (await tx.session.execute(select(AlertNotificationRecord.status))).scalars()
            assert list(statuses) == ["sending"]
    assert channel.sent == []


async def test_a_failing_channel_is_recorded_and_counted(database_url: str) -> None:
    """A channel's final failure is a 'failed' row with its attempts and error, and counted."""
    wall, metrics = WallClock(), Metrics()
    timing = Timing(group_wait=timedelta(0))
    async with alert_database(database_url) as db:
        async with Dispatcher(
            db, [Recorder(fail=True), Recorder(name="ok")], now=wall, timing=timing, metrics=metrics
        ) as dispatcher:
            await dispatcher.accept(evaluation(wall(), alert()))
            await dispatcher.flush()
        async with db.transaction() as tx:
            rows = (
                await tx.session.execute(
                    select(AlertNotificationRecord).order_by(AlertNotificationRecord.channel)
                )
            ).scalars()
            seen = [(r.channel, r.status, r.attempts, r.error) for r in rows]
    assert seen == [("ok", "sent", 1, None), ("recorder", "failed", 2, "receiver said no")]
    sample = metrics.registry.get_sample_value(
        "corestone_alerts_notifications_total", {"channel": "recorder", "outcome": "failed"}
    )
    assert sample == 1


async def test_aclose_finishes_what_was_queued(database_url: str) -> None:
    """Evaluations accepted just before shutdown are still recorded and sent."""
    wall, channel = WallClock(), Recorder()
    timing = Timing(group_wait=timedelta(0))
    async with alert_database(database_url) as db:
        async with Dispatcher(db, [channel], now=wall, timing=timing) as dispatcher:
            for name in ("A", "B", "C"):
                await dispatcher.accept(evaluation(wall(), alert(name)))
        assert await _count(db, AlertHistoryRecord.__table__) == 3
    assert len(channel.sent) == 3


async def test_rows_older_than_the_retention_are_pruned(database_url: str) -> None:
    """History, claims and notifications older than the retention go; newer ones stay."""
    wall, channel = WallClock(), Recorder()
    timing = Timing(group_wait=timedelta(0), repeat_interval=timedelta(hours=1))
    async with (
        alert_database(database_url) as db,
        Dispatcher(
            db, [channel], now=wall, timing=timing, retention=timedelta(hours=2)
        ) as dispatcher,
    ):
        await dispatcher.accept(evaluation(wall(), alert("Old")))
        await dispatcher.flush()
        wall.advance(3 * 3600)
        await dispatcher.accept(evaluation(wall(), alert("New")))
        await dispatcher.flush()
        async with db.transaction() as tx:
            rules = (await tx.session.execute(select(AlertHistoryRecord.rule))).scalars()
            assert list(rules) == ["New"]
        assert await _count(db, AlertSendRecord.__table__) == 1
        assert await _count(db, AlertNotificationRecord.__table__) == 1


async def test_shutdown_cancels_a_worker_waiting_for_a_send_slot(database_url: str) -> None:
    """With every slot held by a hanging send, aclose cancels the waiting worker cleanly."""
    wall, hold = WallClock(), asyncio.Event()
    channel = Recorder(hold=hold)
    timing = Timing(group_wait=timedelta(0))
    async with alert_database(database_url) as db:
        dispatcher = Dispatcher(
            db, [channel], now=wall, timing=timing, max_sends=1, drain_seconds=0.01
        )
        await dispatcher.accept(evaluation(wall(), alert("A"), alert("B")))
        for _ in range(200):  # until the worker waits for the slot "A" holds (bounded)
            if dispatcher._slots.locked() and await _count(db, AlertSendRecord.__table__) == 2:
                break
            await asyncio.sleep(0.01)
        await asyncio.wait_for(dispatcher.aclose(), 5)
        assert dispatcher._sends == set()
        async with db.transaction() as tx:
            statuses = (await tx.session.execute(select(AlertNotificationRecord.status))).scalars()
            assert sorted(statuses) == ["sending", "sending"]
    assert channel.sent == []
