"""The webhook channel against a local receiver over real HTTP: body, signature, retries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from corestone.observability.alerts.channels import AlertNotification, DeliveryError
from corestone.observability.alerts.channels.webhook import (
    BREAKER,
    SIGNATURE_HEADER,
    WebhookChannel,
    verify_signature,
)
from corestone.observability.alerts.dispatcher import Dispatcher
from corestone.observability.alerts.grouping import Timing
from corestone.observability.alerts.tables import AlertNotificationRecord
from corestone.resilience import BreakerRegistry, State
from tests.integration.alerts.delivery_support import (
    START,
    WallClock,
    alert,
    alert_database,
    evaluation,
)
from tests.local_asgi import LocalAsgiServer

SECRET = b"a-webhook-secret-of-32-bytes-xxx"
NOW = Timing(group_wait=timedelta(0))


@dataclass
class Receiver:
    """An ASGI receiver: keeps each request; answers ``statuses`` in turn, then 200."""

    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    hang: asyncio.Event | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append((headers, body))
        if self.hang is not None:
            await self.hang.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"no" if status >= 400 else b""})


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    app = Receiver()
    server = LocalAsgiServer(app)
    url = await server.start()
    yield app, url + "/hook"
    if app.hang is not None:
        app.hang.set()
    await server.stop()


async def _no_wait(_seconds: float) -> None:
    return None


def _channel(url: str, **options: Any) -> WebhookChannel:
    return WebhookChannel(url, SECRET, breakers=BreakerRegistry(), sleep=_no_wait, **options)


async def test_the_body_is_alertmanagers_and_the_signature_verifies(
    database_url: str, receiver: tuple[Receiver, str]
) -> None:
    """The receiver gets a webhook v4 body whose signature verifies (and fails if altered)."""
    app, url = receiver
    wall = WallClock()
    async with (
        alert_database(database_url) as db,
        Dispatcher(db, [_channel(url)], now=wall, timing=NOW) as dispatcher,
    ):
        await dispatcher.accept(evaluation(wall(), alert(instance="a"), alert(instance="b")))
        await dispatcher.flush()
    ((headers, body),) = app.requests
    assert verify_signature(SECRET, headers[SIGNATURE_HEADER.lower()], body)
    assert not verify_signature(SECRET, headers[SIGNATURE_HEADER.lower()], body + b" ")
    assert not verify_signature(b"another-secret-xxxxxxx", headers[SIGNATURE_HEADER.lower()], body)
    stale = time.time() + 3600
    assert not verify_signature(SECRET, headers[SIGNATURE_HEADER.lower()], body, now=stale)
    payload = orjson.loads(body)
    assert payload["version"] == "4"
    assert payload["status"] == "firing"
    assert payload["groupLabels"] == {"alertname": "HighErrorRatio"}
    assert payload["commonLabels"] == {"alertname": "HighErrorRatio", "severity": "critical"}
    assert payload["commonAnnotations"] == {"summary": "HighErrorRatio is bad"}
    assert sorted(a["labels"]["instance"] for a in payload["alerts"]) == ["a", "b"]
    assert {a["endsAt"] for a in payload["alerts"]} == {"0001-01-01T00:00:00Z"}


async def test_a_failing_receiver_is_retried_then_recorded_failed(
    database_url: str, receiver: tuple[Receiver, str]
) -> None:
    """503s are retried up to the attempts, then the notification row says failed, and why."""
    app, url = receiver
    app.statuses = [503, 503, 503]
    wall = WallClock()
    async with (
        alert_database(database_url) as db,
        Dispatcher(db, [_channel(url, attempts=3)], now=wall, timing=NOW) as dispatcher,
    ):
        await dispatcher.accept(evaluation(wall(), alert()))
        await dispatcher.flush()
        async with db.transaction() as tx:
            row = (await tx.session.execute(select(AlertNotificationRecord))).scalar_one()
    assert len(app.requests) == 3
    assert (row.status, row.attempts) == ("failed", 3)
    assert row.error is not None
    assert "HTTP 503" in row.error


async def test_a_receiver_that_recovers_is_sent(
    database_url: str, receiver: tuple[Receiver, str]
) -> None:
    """A 500 then a 200: sent, in two attempts."""
    app, url = receiver
    app.statuses = [500]
    wall = WallClock()
    async with (
        alert_database(database_url) as db,
        Dispatcher(db, [_channel(url)], now=wall, timing=NOW) as dispatcher,
    ):
        await dispatcher.accept(evaluation(wall(), alert()))
        await dispatcher.flush()
        async with db.transaction() as tx:
            row = (await tx.session.execute(select(AlertNotificationRecord))).scalar_one()
    assert (row.status, row.attempts) == ("sent", 2)


async def test_a_4xx_is_final_and_the_breaker_opens(receiver: tuple[Receiver, str]) -> None:
    """A 400 is not retried; once the breaker is open nothing reaches the receiver."""
    app, url = receiver
    app.statuses = [400]
    channel = _channel(url)
    note = AlertNotification("g", 1, "firing", {"alertname": "X"}, [alert()], START)
    with pytest.raises(DeliveryError) as failed:
        await channel.send(note)
    assert failed.value.attempts == 1
    assert len(app.requests) == 1
    channel.breaker.transition_to(State.FORCED_OPEN)
    with pytest.raises(DeliveryError, match="circuit open"):
        await channel.send(note)
    assert len(app.requests) == 1
    assert channel.breaker.name == BREAKER
    await channel.aclose()


async def test_a_hanging_receiver_never_blocks_the_engine(
    database_url: str, receiver: tuple[Receiver, str]
) -> None:
    """While the receiver hangs, accept returns at once and shutdown cancels the send."""
    app, url = receiver
    app.hang = asyncio.Event()
    wall = WallClock()
    async with alert_database(database_url) as db:
        dispatcher = Dispatcher(db, [_channel(url)], now=wall, timing=NOW, drain_seconds=0.01)
        await dispatcher.start()
        await asyncio.wait_for(dispatcher.accept(evaluation(wall(), alert())), 0.5)
        await dispatcher._queue.join()
        wall.advance(15)  # the next evaluation: nothing new to send
        await asyncio.wait_for(dispatcher.accept(evaluation(wall(), alert())), 0.5)
        await asyncio.wait_for(dispatcher.aclose(), 5)
    assert len(app.requests) == 1
