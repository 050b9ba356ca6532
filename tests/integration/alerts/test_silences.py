"""Silences on SQLite and PostgreSQL: matching, muting, expiry, and hostile input."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from corestone.errors import ConflictError, InvalidInputError, NotFoundError
from corestone.observability.alerts.dispatcher import Dispatcher
from corestone.observability.alerts.grouping import Timing
from corestone.observability.alerts.model import AlertState
from corestone.observability.alerts.silences import SilenceStore, matchers_of, parse_matcher
from corestone.observability.alerts.tables import AlertHistoryRecord, AlertNotificationRecord
from tests.integration.alerts.delivery_support import (
    START,
    Recorder,
    WallClock,
    alert,
    alert_database,
    evaluation,
)

NOW = Timing(group_wait=timedelta(0), group_interval=timedelta(0))


def test_matchers_follow_alertmanagers_four_kinds() -> None:
    """=, !=, =~ (anchored) and !~ match as Alertmanager's do; a missing label is empty."""
    labels = {"alertname": "HighErrorRatio", "route": "/api/tasks"}
    assert parse_matcher("alertname=HighErrorRatio").matches(labels)
    assert parse_matcher("route!=/health").matches(labels)
    assert parse_matcher("alertname=~High.*").matches(labels)
    assert not parse_matcher("alertname=~High").matches(labels)  # anchored
    assert parse_matcher("severity!~critical|warning").matches(labels)
    assert parse_matcher("severity=").matches(labels)


@pytest.mark.parametrize(
    "pattern",
    ["(.*)*y", "(a|ab)*y", "(?:a+){2,}y", ".*.*.*.*.*.*y", "a?a?a?a?aaaa", "(a)\\1", "(?>(.*)*y)"],
)
def test_regexes_that_backtrack_without_bound_are_refused(pattern: str) -> None:
    """A silence regex that would block the loop for minutes on a short label is a 422."""
    with pytest.raises(InvalidInputError) as bad:
        matchers_of([{"name": "alertname", "op": "=~", "value": pattern}])
    assert bad.value.field == "matchers[0].value"
    assert bad.value.rule == "regex"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ([], "matchers"),
        ("alertname=x", "matchers"),
        ([{"name": "alertname", "op": "=~", "value": "(unclosed"}], "matchers[0].value"),
        ([{"name": "1bad", "op": "=", "value": "x"}], "matchers[0].name"),
        ([{"name": "a", "op": "==", "value": "x"}], "matchers[0].op"),
        ([{"name": "a", "op": "=", "value": 5}], "matchers[0].value"),
        ([{"name": "a", "op": "=~", "value": "x" * 300}], "matchers[0].value"),
        (["alertname=x", 7], "matchers[1]"),
        (["nothing at all"], "matchers[0]"),
        ([{"name": "a", "op": "=~", "value": ".*"}], "matchers"),
        ([f"a{i}=x" for i in range(21)], "matchers"),
    ],
)
def test_hostile_matchers_name_the_field(raw: object, field: str) -> None:
    """Every bad matcher list is InvalidInputError naming where; none silences everything."""
    with pytest.raises(InvalidInputError) as bad:
        matchers_of(raw)
    assert bad.value.field == field


async def test_silences_in_force_are_capped(database_url: str) -> None:
    """Beyond max_silences not yet ended, a new silence is refused; expiring one makes room."""
    store = SilenceStore(max_silences=2)
    ends = START + timedelta(hours=1)
    async with alert_database(database_url) as db:
        async with db.transaction() as tx:
            first = await store.create(
                tx.session, matchers=["a=1"], ends_at=ends, created_by="ada", now=START
            )
            await store.create(
                tx.session, matchers=["a=2"], ends_at=ends, created_by="ada", now=START
            )
        with pytest.raises(ConflictError):
            async with db.transaction() as tx:
                await store.create(
                    tx.session, matchers=["a=3"], ends_at=ends, created_by="ada", now=START
                )
        async with db.transaction() as tx:
            await store.expire(tx.session, first.id, now=START)
            await store.create(
                tx.session, matchers=["a=3"], ends_at=ends, created_by="ada", now=START
            )


async def test_hostile_windows_and_texts_are_refused(database_url: str) -> None:
    """No expiry in the past, none beyond the cap, no naive times, no empty author."""
    store = SilenceStore(max_duration=timedelta(days=1))
    ok = ["alertname=x"]
    cases = [
        ({"ends_at": START - timedelta(seconds=1)}, "ends_at"),
        ({"ends_at": START + timedelta(days=2)}, "ends_at"),
        ({"ends_at": (START + timedelta(hours=1)).replace(tzinfo=None)}, "ends_at"),
        ({"ends_at": START + timedelta(hours=1), "created_by": " "}, "created_by"),
        ({"ends_at": START + timedelta(hours=1), "comment": "x" * 5000}, "comment"),
    ]
    async with alert_database(database_url) as db:
        for options, field in cases:
            values = {"created_by": "ada", **options}
            with pytest.raises(InvalidInputError) as bad:
                async with db.transaction() as tx:
                    await store.create(tx.session, matchers=ok, now=START, **values)  # type: ignore[arg-type]
            assert bad.value.field == field
        async with db.transaction() as tx:
            assert await store.all(tx.session, now=START, include_expired=True) == []
            with pytest.raises(NotFoundError):
                await store.expire(tx.session, "no-such-id", now=START)


async def test_a_silenced_alert_is_recorded_not_sent_until_the_silence_expires(
    database_url: str,
) -> None:
    """While silenced: history and a 'silenced' row, nothing sent; once expired, it is sent."""
    wall, channel = WallClock(), Recorder()
    store = SilenceStore()
    async with alert_database(database_url) as db:
        async with db.transaction() as tx:
            silence = await store.create(
                tx.session,
                matchers=[{"name": "alertname", "op": "=", "value": "HighErrorRatio"}],
                ends_at=START + timedelta(hours=1),
                created_by="ada",
                comment="deploying",
                now=START,
            )
        async with Dispatcher(db, [channel], now=wall, timing=NOW) as dispatcher:
            high, other = alert(), alert("DiskFull")
            firing = {a.fingerprint: AlertState.FIRING for a in (high, other)}
            await dispatcher.accept(evaluation(wall(), high, other))
            await dispatcher.flush()
            assert [n.group_labels["alertname"] for n in channel.sent] == ["DiskFull"]
            shown = {a["rule"]: a["silenced"] for a in dispatcher.snapshot()["alerts"]}
            assert shown == {"HighErrorRatio": True, "DiskFull": False}
            wall.advance(1800)
            async with db.transaction() as tx:
                await store.expire(tx.session, silence.id, now=wall())
            await dispatcher.accept(evaluation(wall(), high, other, previous=firing))
            await dispatcher.flush()
            assert [n.group_labels["alertname"] for n in channel.sent] == [
                "DiskFull",
                "HighErrorRatio",
            ]
        async with db.transaction() as tx:
            rows = (
                await tx.session.execute(
                    select(AlertNotificationRecord.status).order_by(AlertNotificationRecord.id)
                )
            ).scalars()
            assert sorted(rows) == ["sent", "sent", "silenced"]
            history = (await tx.session.execute(select(AlertHistoryRecord.rule))).scalars()
            assert sorted(history) == ["DiskFull", "HighErrorRatio"]
            listed = await store.all(tx.session, now=wall())
            assert listed == []
            (expired,) = await store.all(tx.session, now=wall(), include_expired=True)
    assert expired.as_json(wall())["state"] == "expired"
    assert expired.ends_at == START + timedelta(seconds=1800)


async def test_a_silence_that_ends_stops_applying(database_url: str) -> None:
    """A silence is in force only between starts_at and ends_at."""
    store = SilenceStore()
    async with alert_database(database_url) as db:
        async with db.transaction() as tx:
            await store.create(
                tx.session,
                matchers=["severity=~crit.*"],
                starts_at=START + timedelta(minutes=10),
                ends_at=START + timedelta(minutes=20),
                created_by="ada",
                now=START,
            )
        async with db.transaction() as tx:
            counts = [
                len(await store.active(tx.session, now=START + timedelta(minutes=m)))
                for m in (0, 10, 19, 20)
            ]
    assert counts == [0, 1, 1, 0]
