"""A running taskboard for the notification tests: worker in process, memory email
provider, a memory broker that keeps repeats, and (optionally) Web Push to the local
push service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import func, select

from corestone import Infrastructure, Settings
from corestone.email import ProviderRoute
from corestone.email.message import EmailMessage
from corestone.email.providers import MemoryProvider
from corestone.events import Broker, MemoryBroker
from corestone.events.inbox import InboxRecord
from corestone.push import EndpointPolicy, VapidKeys
from corestone.push.notifications import NotificationRecord
from taskboard.app import create_app
from taskboard.notify import notify_wiring_for
from taskboard.services.notify import NOTIFY_GROUP
from tests.integration.conftest import Board
from tests.integration.lifespan import lifespan_of
from tests.integration.push.push_service import PushService

SUBJECT = "mailto:ops@example.com"
HANDLED = ("task.assigned", "task.updated", "task.deleted", "member.added")


@dataclass
class NotifyBoard(Board):
    memory: MemoryProvider
    keys: VapidKeys | None = None

    async def member(self, owner: dict[str, str], ws: int, user_id: int) -> None:
        added = await self.client.post(
            f"/api/workspaces/{ws}/members", json={"user_id": user_id}, headers=owner
        )
        assert added.status_code == 201, added.text

    async def team(self) -> tuple[dict[str, str], int, dict[str, str], int]:
        """Ada (owner) and Bo (member) in a workspace: (ada, bo_id, bo, ws)."""
        _, ada = await self.signup("Ada", "ada@example.com")
        bo_id, bo = await self.signup("Bo", "bo@example.com")
        ws = await self.workspace(ada)
        await self.member(ada, ws, bo_id)
        return ada, bo_id, bo, ws

    async def settled(self) -> None:
        """Wait until the notify consumer has handled every event in the outbox so far,
        then until its pushes are out (bounded: 15 s)."""
        from corestone.events.outbox import EventOutboxRecord

        for _ in range(300):
            async with self.infra.db.transaction(read_only=True) as tx:
                recorded = await tx.session.scalar(
                    select(func.count())
                    .select_from(EventOutboxRecord)
                    .where(EventOutboxRecord.type.in_(HANDLED))
                )
                handled = await tx.session.scalar(
                    select(func.count())
                    .select_from(InboxRecord)
                    .where(InboxRecord.consumer == NOTIFY_GROUP)
                )
            if handled is not None and recorded is not None and handled >= recorded:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"notify consumer handled {handled} of {recorded} events")
        await notify_wiring_for(self.infra.db).notifier.drain()

    async def rows(self) -> list[NotificationRecord]:
        async with self.infra.db.transaction(read_only=True) as tx:
            found = await tx.session.scalars(
                select(NotificationRecord).order_by(NotificationRecord.id)
            )
            return list(found)

    async def mails(self, count: int) -> list[EmailMessage]:
        """The provider's messages once there are ``count`` (bounded: 10 s), and no more
        after a short settle."""
        for _ in range(500):
            if len(self.memory.sent) >= count:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # one more, were it queued, would have gone by now
        messages = [o.message for o in self.memory.sent]
        assert len(messages) == count, [m.subject for m in messages]
        return messages

    async def feed(self, auth: dict[str, str], query: str = "") -> dict[str, Any]:
        response = await self.client.get(f"/api/me/notifications{query}", headers=auth)
        assert response.status_code == 200, response.text
        return dict(response.json())


@asynccontextmanager
async def running(
    database_url: str,
    broker: Broker | None = None,
    *,
    push: PushService | None = None,
) -> AsyncIterator[NotifyBoard]:
    """taskboard with its worker in process (and VAPID keys when ``push`` is given)."""
    memory = MemoryProvider()
    keys = VapidKeys.generate(SUBJECT) if push is not None else None
    vapid: dict[str, Any] = (
        {"vapid_private_key": keys.private_key_text(), "vapid_subject": SUBJECT}
        if keys is not None
        else {}
    )
    settings = Settings(
        database_url=database_url, env="test", http_max_body_bytes=64 * 1024, **vapid
    )
    infra = Infrastructure(settings, broker=broker or MemoryBroker(dedupe_window_seconds=0))
    policy = EndpointPolicy.allowing(push.url) if push is not None else None
    app = create_app(infra, email_routes=[ProviderRoute(memory)], push_policy=policy)
    async with lifespan_of(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://taskboard") as client:
            yield NotifyBoard(client, infra, memory, keys)
