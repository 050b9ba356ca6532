"""taskboard's domain events, on each database: what its writes publish, and the mail they drive.

A running taskboard (relay and consumers in process) on the memory broker, and once on
Redis Streams. What was *published* is read from the broker itself by a consumer group
of the test's own ("probe"), which sees every event the relay published, in order.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from corestone import ConflictError, Infrastructure, Settings
from corestone.db import Database
from corestone.email import ProviderRoute
from corestone.email.providers import MemoryProvider
from corestone.email.tables import EmailOutboxRecord
from corestone.events import Broker, DomainEvent, MemoryBroker, OutgoingMessage
from corestone.events.inbox import InboxRecord
from corestone.events.outbox import EventOutboxRecord
from corestone.sagas import SagaOrchestrator
from taskboard.app import create_app
from taskboard.domain.models import User
from taskboard.events import REGISTRY, TOPIC, TaskAssigned
from taskboard.services import TaskService, WorkspaceService
from taskboard.services.notifications import MAIL_GROUP
from taskboard.services.notify import NOTIFY_GROUP
from taskboard.services.workspaces import SAGAS
from tests.integration.conftest import Board
from tests.integration.lifespan import lifespan_of

PROBE = "probe"


@dataclass
class EventBoard(Board):
    memory: MemoryProvider

    @property
    def db(self) -> Database:
        return self.infra.db

    @property
    def broker(self) -> Broker:
        assert self.infra.broker is not None
        return self.infra.broker

    async def published(self, count: int, *, settle: float = 0.5) -> list[DomainEvent]:
        """The next ``count`` events on the broker, and proof there is no further one.

        Waits up to 15 s for them, then ``settle`` seconds more for any extra event.
        """
        found: list[DomainEvent] = []
        for _ in range(30):
            batch = await self.broker.fetch(
                TOPIC, PROBE, consumer=PROBE, limit=count - len(found), wait_seconds=0.5
            )
            for delivery in batch:
                await self.broker.ack(delivery)
                found.append(REGISTRY.decode(delivery.body))
            if len(found) >= count:
                break
        assert len(found) == count, [e.type for e in found]
        extra = await self.broker.fetch(TOPIC, PROBE, consumer=PROBE, limit=10, wait_seconds=settle)
        assert [REGISTRY.decode(d.body).type for d in extra] == []
        return found

    async def sent(self, count: int) -> list[Any]:
        """The provider's messages once there are ``count`` (bounded: 10 s)."""
        for _ in range(500):
            if len(self.memory.sent) >= count:
                break
            await asyncio.sleep(0.02)
        assert len(self.memory.sent) >= count, [o.message.subject for o in self.memory.sent]
        return [o.message for o in self.memory.sent]

    async def handled(self, group: str, event_id: str) -> None:
        """Wait until ``group``'s inbox holds ``event_id`` (bounded: 10 s)."""
        for _ in range(200):
            async with self.db.transaction(read_only=True) as tx:
                found = await tx.session.scalar(
                    select(func.count())
                    .select_from(InboxRecord)
                    .where(InboxRecord.consumer == group, InboxRecord.event_id == event_id)
                )
            if found:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{group} never handled {event_id}")

    def consumed(self, outcome: str, group: str = NOTIFY_GROUP) -> float:
        value = self.infra.metrics.registry.get_sample_value(
            "corestone_events_consumed_total", {"group": group, "outcome": outcome}
        )
        return value or 0.0

    async def emails(self) -> list[tuple[int | None, str | None]]:
        """Every queued message as (workspace id, idempotency key), oldest first."""
        async with self.db.transaction(read_only=True) as tx:
            rows = await tx.session.execute(
                select(EmailOutboxRecord.workspace_id, EmailOutboxRecord.idempotency_key).order_by(
                    EmailOutboxRecord.created_at, EmailOutboxRecord.id
                )
            )
            return [(r.workspace_id, r.idempotency_key) for r in rows]

    async def member(self, owner: dict[str, str], ws: int, user_id: int) -> None:
        added = await self.client.post(
            f"/api/workspaces/{ws}/members", json={"user_id": user_id}, headers=owner
        )
        assert added.status_code == 201, added.text


@asynccontextmanager
async def running(database_url: str, broker: Broker | None = None) -> AsyncIterator[EventBoard]:
    """taskboard with its worker in process; a memory broker that keeps repeats by default."""
    memory = MemoryProvider()
    settings = Settings(database_url=database_url, env="test", http_max_body_bytes=64 * 1024)
    # No de-duplication window: a test that publishes an event twice sees it twice.
    infra = Infrastructure(settings, broker=broker or MemoryBroker(dedupe_window_seconds=0))
    app = create_app(infra, email_routes=[ProviderRoute(memory)])
    async with lifespan_of(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://taskboard") as client:
            board = EventBoard(client, infra, memory)
            await board.broker.ensure_group(TOPIC, PROBE)
            yield board


@pytest.fixture
async def board(database_url: str, taskboard_schema: None) -> AsyncIterator[EventBoard]:
    async with running(database_url) as started:
        yield started


def by_aggregate(events: list[DomainEvent]) -> dict[tuple[str, str], list[str]]:
    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    for event in events:
        grouped[(event.aggregate_type, event.aggregate_id)].append(event.type)
    return dict(grouped)


async def test_a_tasks_life_publishes_exactly_its_events_in_order(board: EventBoard) -> None:
    """Workspace, member, then create (assigned), update, reassign, delete, restore: each
    write publishes its events, in order per aggregate, bound to the workspace, the actor
    and the request; a restore of a live task publishes nothing."""
    owner_id, owner = await board.signup("Ada", "ada@example.com")
    bo_id, _ = await board.signup("Bo", "bo@example.com")
    ws = await board.workspace(owner)
    await board.member(owner, ws, bo_id)
    task = await board.task(owner, ws, title="Ship", assignee_id=bo_id)
    url = f"/api/workspaces/{ws}/tasks/{task['id']}"
    requests: list[str] = []
    for body in ({"title": "Ship it"}, {"assignee_id": None, "status": "done"}):
        patched = await board.client.patch(url, json=body, headers=owner | {"If-Match": "*"})
        assert patched.status_code == 200, patched.text
        requests.append(patched.headers["x-request-id"])
    deleted = await board.client.delete(url, headers=owner)
    assert deleted.status_code == 204
    restored = await board.client.post(f"{url}/restore", headers=owner)
    assert restored.status_code == 200
    again = await board.client.post(f"{url}/restore", headers=owner)  # live already
    assert again.status_code == 200

    events = await board.published(9)

    assert by_aggregate(events) == {
        ("workspace", str(ws)): ["workspace.created", "member.added"],
        ("task", str(task["id"])): [
            "task.created", "task.assigned", "task.updated", "task.updated", "task.assigned",
            "task.deleted", "task.restored",
        ],
    }  # fmt: skip
    assert {(e.workspace_id, e.actor) for e in events} == {(str(ws), str(owner_id))}
    payloads = [dict(e.payload) for e in events if e.aggregate_type == "task"]
    assert payloads[1] == {
        "task_id": task["id"], "version": 1, "title": "Ship", "assignee_id": bo_id,
        "previous_assignee_id": None,
    }  # fmt: skip
    assert payloads[2]["fields"] == ["title"]
    assert payloads[3]["fields"] == ["assignee_id", "status"]
    assert payloads[4]["assignee_id"] is None
    assert payloads[4]["previous_assignee_id"] == bo_id
    assert [p["version"] for p in payloads] == [1, 1, 2, 3, 3, 4, 5]
    assert restored.json()["version"] == 5
    assert [e.correlation_id for e in events[4:7]] == [requests[0], requests[1], requests[1]]
    assert dict(events[1].payload) == {"workspace_id": ws, "user_id": bo_id, "role": "member"}


async def test_a_bulk_create_publishes_each_tasks_events(board: EventBoard) -> None:
    """One bulk request: a ``task.created`` per task, and ``task.assigned`` for the assigned."""
    _, owner = await board.signup("Ada", "ada@example.com")
    bo_id, _ = await board.signup("Bo", "bo@example.com")
    ws = await board.workspace(owner)
    await board.member(owner, ws, bo_id)
    items = [{"title": "a"}, {"title": "b", "assignee_id": bo_id}]
    response = await board.client.post(
        f"/api/workspaces/{ws}/tasks/bulk", json={"items": items}, headers=owner
    )
    assert response.status_code == 201, response.text
    a, b = (item["id"] for item in response.json()["items"])

    grouped = by_aggregate(await board.published(5))

    assert grouped[("task", str(a))] == ["task.created"]
    assert grouped[("task", str(b))] == ["task.created", "task.assigned"]


async def test_a_rolled_back_write_publishes_nothing(board: EventBoard) -> None:
    """A task created in a transaction that then rolls back, a stale update, and a workspace
    saga compensated for a missing owner publish nothing; the next write publishes only
    its own event."""
    owner_id, owner = await board.signup("Ada", "ada@example.com")
    ws = await board.workspace(owner)
    assert [e.type for e in await board.published(1)] == ["workspace.created"]
    task = await board.task(owner, ws)
    assert [e.type for e in await board.published(1)] == ["task.created"]
    service = TaskService(board.db, signing_key=board.infra.settings.signing_key)
    async with board.db.transaction(read_only=True) as tx:
        ada = await tx.session.get(User, owner_id)
    assert ada is not None

    with pytest.raises(RuntimeError, match="changed my mind"):
        async with board.db.transaction():
            await service.create(ada, ws, {"title": "never"})
            await service.update(ada, ws, int(task["id"]), {"title": "nor"}, expected_version=1)
            raise RuntimeError("changed my mind")
    stale = await board.client.patch(
        f"/api/workspaces/{ws}/tasks/{task['id']}",
        json={"title": "late"},
        headers=owner | {"If-Match": '"7"'},
    )
    assert stale.status_code in (409, 412)
    ghost = User(id=987654, name="Ghost", email="ghost@example.com")  # never stored
    with pytest.raises(ConflictError):
        await WorkspaceService(board.db, SagaOrchestrator(board.db, SAGAS)).create(
            ghost, name="Haunted"
        )
    await board.task(owner, ws, title="after")

    [after] = await board.published(1)

    assert after.type == "task.created"
    async with board.db.transaction(read_only=True) as tx:
        recorded = await tx.session.scalars(select(EventOutboxRecord.type))
        assert sorted(recorded) == ["task.created", "task.created", "workspace.created"]


async def test_the_assignment_email_is_queued_once_when_its_event_comes_twice(
    board: EventBoard,
) -> None:
    """The relay republishing ``task.assigned`` (it died between publishing and marking):
    the notifications consumer's inbox absorbs the second delivery (the assignment note
    is that notification's email), one message is queued and sent."""
    await check_assignment_mailed_once(board)


async def test_on_redis_streams_the_assignment_email_is_queued_once(
    postgres_url: str, redis_url: str
) -> None:
    """The same on PostgreSQL with the Redis Streams broker (no de-duplication window, so
    the repeat reaches the group): delivered twice, queued once."""
    from corestone.events.brokers.redis_streams import RedisStreamsBroker
    from tests.integration.events.brokers import cleanup

    prefix = f"corestone:test:taskboard:{uuid.uuid4().hex[:10]}:"
    broker = RedisStreamsBroker(redis_url, key_prefix=prefix, dedupe_window_seconds=0)
    try:
        async with running(postgres_url, broker) as started:
            await check_assignment_mailed_once(started)
    finally:
        await cleanup(broker, TOPIC, [PROBE, MAIL_GROUP, NOTIFY_GROUP])


async def check_assignment_mailed_once(board: EventBoard) -> None:
    _, owner = await board.signup("Ada", "ada@example.com")
    bo_id, _ = await board.signup("Bo", "bo@example.com")
    ws = await board.workspace(owner)
    await board.member(owner, ws, bo_id)
    task = await board.task(owner, ws, title="Ship", assignee_id=bo_id)
    events = await board.published(4)
    [assigned] = [e for e in events if e.type == "task.assigned"]
    sent = await board.sent(2)  # the welcome and the note (two consumers: either first)
    assert sorted(m.subject for m in sent) == ["Assigned to you: Ship", "Welcome to Home"]
    duplicates = board.consumed("duplicate")

    message = OutgoingMessage(id=str(assigned.id), topic=TOPIC, body=assigned.to_json())
    await board.broker.publish([message])

    for _ in range(200):  # the consumer takes the repeat and finds it in its inbox
        if board.consumed("duplicate") > duplicates:
            break
        await asyncio.sleep(0.05)
    assert board.consumed("duplicate") == duplicates + 1
    key = f"notification:{assigned.id}:{bo_id}:task.assigned"
    assert [k for _, k in await board.emails() if k and k.startswith("notification:")] == [key]
    assert task["assignee_id"] == bo_id
    await asyncio.sleep(0.3)  # a second note, were one queued, would have gone by now
    assert len(board.memory.sent) == 2


async def test_events_and_mail_stay_in_their_own_workspace(board: EventBoard) -> None:
    """Two workspaces writing at once: every event names its task's workspace, every note
    is queued for it; an event that names another workspace than its task's mails no one."""
    _, ada = await board.signup("Ada", "ada@example.com")
    _, eve = await board.signup("Eve", "eve@example.com")
    bo_id, _ = await board.signup("Bo", "bo@example.com")
    cy_id, _ = await board.signup("Cy", "cy@example.com")
    ws_a = await board.workspace(ada, name="A")
    ws_e = await board.workspace(eve, name="E")
    await board.member(ada, ws_a, bo_id)
    await board.member(eve, ws_e, cy_id)
    created = await asyncio.gather(
        *(board.task(ada, ws_a, title=f"a{n}", assignee_id=bo_id) for n in range(4)),
        *(board.task(eve, ws_e, title=f"e{n}", assignee_id=cy_id) for n in range(4)),
    )
    home = {str(t["id"]): str(t["workspace_id"]) for t in created}

    events = await board.published(4 + 8 * 2)

    for event in events:
        if event.aggregate_type == "task":
            assert event.workspace_id == home[event.aggregate_id], event
    await board.sent(2 + 8)
    emails = await board.emails()
    notes = {k.split(":")[1]: str(w) for w, k in emails if k and k.startswith("notification:")}
    assigned = {str(e.id): home[e.aggregate_id] for e in events if e.type == "task.assigned"}
    assert notes == assigned

    # Ada's task, announced as Eve's workspace's event: the consumer does not find the
    # task in Eve's workspace, so nobody is mailed anything.
    forged = DomainEvent.create(
        TaskAssigned(task_id=created[0]["id"], version=1, title="a0", assignee_id=cy_id,
                     previous_assignee_id=None),
        aggregate_type="task", aggregate_id=created[0]["id"], workspace_id=ws_e,
    )  # fmt: skip
    await board.broker.publish(
        [OutgoingMessage(id=str(forged.id), topic=TOPIC, body=forged.to_json())]
    )
    await board.handled(NOTIFY_GROUP, str(forged.id))
    assert len(await board.emails()) == len(emails)


async def test_on_a_first_start_the_background_work_waits_for_the_schema(
    database_url: str,
) -> None:
    """A fresh database: the email sender and the events' relay start once the migrations
    have made their tables, so readiness passes at once instead of warning about a pass
    that ran against missing tables."""
    async with running(database_url) as started:
        report = await started.infra.health.ready()
    failing = {name: c[0].get("output") for name, c in report.checks.items()}
    assert report.status.value == "pass", failing
