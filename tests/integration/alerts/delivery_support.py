"""What the delivery tests share: a database with the alert tables, alerts made by hand,
a channel that records what it is given, and a wall clock driven by a ManualClock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from corestone.db import Base, Database
from corestone.observability.alerts.channels import AlertNotification, DeliveryError
from corestone.observability.alerts.model import Alert, AlertState, Evaluation, Transition
from corestone.observability.alerts.tables import (
    AlertHistoryRecord,
    AlertNotificationRecord,
    AlertSendRecord,
    AlertSilenceRecord,
)
from corestone.testing import ManualClock

START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
TABLES = [
    AlertHistoryRecord.__table__,
    AlertSendRecord.__table__,
    AlertNotificationRecord.__table__,
    AlertSilenceRecord.__table__,
]


@asynccontextmanager
async def alert_database(url: str) -> AsyncIterator[Database]:
    """A started database holding the delivery's tables."""
    database = Database(url)
    await database.start()
    try:
        async with database.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all, tables=TABLES)
        yield database
    finally:
        await database.aclose()


class WallClock:
    """``now()`` for the dispatcher: START plus a ManualClock's seconds."""

    def __init__(self) -> None:
        self.clock = ManualClock(0.0)

    def __call__(self) -> datetime:
        return START + timedelta(seconds=self.clock())

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


def alert(
    name: str = "HighErrorRatio",
    state: AlertState = AlertState.FIRING,
    *,
    since: datetime = START,
    **labels: str,
) -> Alert:
    """An alert of rule ``name`` with ``labels`` (plus alertname and severity)."""
    all_labels = {"alertname": name, "severity": "critical", **labels}
    return Alert(
        rule=name,
        labels=all_labels,
        annotations={"summary": f"{name} is bad"},
        state=state,
        value=0.5,
        active_since=since,
        fired_at=since if state is not AlertState.PENDING else None,
        resolved_at=since + timedelta(minutes=5) if state is AlertState.RESOLVED else None,
    )


def evaluation(
    at: datetime, *alerts: Alert, previous: Mapping[str, AlertState] | None = None
) -> Evaluation:
    """An evaluation of ``alerts``; each is a transition from ``previous`` (default pending)."""
    before = previous or {}
    transitions = [
        Transition(a, before.get(a.fingerprint, AlertState.PENDING))
        for a in alerts
        if before.get(a.fingerprint) is not a.state
    ]
    return Evaluation(at=at, alerts=list(alerts), transitions=transitions)


@dataclass
class Recorder:
    """A channel that keeps what it was given; ``fail`` makes it raise, ``hold`` wait."""

    name: str = "recorder"
    sent: list[AlertNotification] = field(default_factory=list)
    fail: bool = False
    hold: asyncio.Event | None = None

    async def send(self, notification: AlertNotification) -> int:
        if self.hold is not None:
            await self.hold.wait()
        if self.fail:
            raise DeliveryError("receiver said no", attempts=2)
        self.sent.append(notification)
        return 1
