"""taskboard's notifications, on each database: who is notified of what, once, on which
channels (the feed, email through the memory provider, Web Push to the local push
service), and what an email's unsubscribe link turns off."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from corestone.email.unsubscribe import ONE_CLICK
from corestone.events import DomainEvent, OutgoingMessage
from corestone.events.inbox import InboxRecord
from corestone.events.outbox import EventOutboxRecord
from taskboard.events import REGISTRY, TOPIC, TaskAssigned
from taskboard.services.notify import NOTIFY_GROUP
from tests.integration.notifyboard import NotifyBoard, running
from tests.integration.push.push_service import PushService


@pytest.fixture
async def board(database_url: str, taskboard_schema: None) -> AsyncIterator[NotifyBoard]:
    async with running(database_url) as started:
        yield started


@pytest.fixture
async def push_service() -> AsyncIterator[PushService]:
    service = PushService()
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
async def push_board(
    database_url: str, taskboard_schema: None, push_service: PushService
) -> AsyncIterator[NotifyBoard]:
    async with running(database_url, push=push_service) as started:
        yield started


async def redeliver(board: NotifyBoard, event_type: str) -> None:
    """Publish the recorded ``event_type`` event again (the relay died before marking it)."""
    async with board.infra.db.transaction(read_only=True) as tx:
        body = await tx.session.scalar(
            select(EventOutboxRecord.body).where(EventOutboxRecord.type == event_type)
        )
    assert body is not None
    event = REGISTRY.decode(body)
    assert board.infra.broker is not None
    await board.infra.broker.publish(
        [OutgoingMessage(id=str(event.id), topic=TOPIC, body=event.to_json())]
    )


def consumed(board: NotifyBoard, outcome: str) -> float:
    value = board.infra.metrics.registry.get_sample_value(
        "corestone_events_consumed_total", {"group": NOTIFY_GROUP, "outcome": outcome}
    )
    return value or 0.0


async def check_one_notification_per_assignment(board: NotifyBoard) -> None:
    ada, bo_id, bo, ws = await board.team()
    task = await board.task(ada, ws, title="Ship", assignee_id=bo_id)
    await board.settled()
    duplicates = consumed(board, "duplicate")
    await redeliver(board, "task.assigned")
    for _ in range(200):
        if consumed(board, "duplicate") > duplicates:
            break
        await asyncio.sleep(0.05)
    assert consumed(board, "duplicate") == duplicates + 1
    mine = (await board.feed(bo))["items"]
    assigned = [n for n in mine if n["kind"] == "task.assigned"]
    assert len(assigned) == 1
    assert assigned[0]["task_id"] == task["id"]
    assert assigned[0]["workspace_id"] == ws
    assert assigned[0]["title"] == "Assigned to you: Ship"
    mails = await board.mails(2)  # the welcome and one assignment email, not two
    [note] = [m for m in mails if m.subject.startswith("Assigned")]
    assert note.subject == "Assigned to you: Ship"
    assert [a.email for a in note.to] == ["bo@example.com"]


async def test_an_assignment_notifies_the_assignee_once_when_delivered_twice(
    board: NotifyBoard,
) -> None:
    """The event published again reaches the group as a duplicate: one feed row, one email."""
    await check_one_notification_per_assignment(board)


async def test_on_redis_streams_an_assignment_notifies_once(
    postgres_url: str, redis_url: str
) -> None:
    """The same on PostgreSQL with Redis Streams (no de-duplication window)."""
    from corestone.events.brokers.redis_streams import RedisStreamsBroker
    from taskboard.services.notifications import MAIL_GROUP
    from tests.integration.events.brokers import cleanup

    prefix = f"corestone:test:notify:{uuid.uuid4().hex[:10]}:"
    broker = RedisStreamsBroker(redis_url, key_prefix=prefix, dedupe_window_seconds=0)
    try:
        async with running(postgres_url, broker) as started:
            await check_one_notification_per_assignment(started)
    finally:
        await cleanup(broker, TOPIC, [NOTIFY_GROUP, MAIL_GROUP])


async def test_who_is_told_of_what_and_never_the_actor(board: NotifyBoard) -> None:
    """Bo hears of being added, assigned, of a change and of the delete; Ada, who did it
    all, and assigned herself a task, hears of nothing; a reassignment to Bo is one
    ``task.assigned``, not a ``task.changed`` too."""
    _, ada = await board.signup("Ada", "ada@example.com")
    bo_id, bo = await board.signup("Bo", "bo@example.com")
    ada_id = (await board.client.get("/api/me", headers=ada)).json()["user"]["id"]
    ws = await board.workspace(ada, name="Ops")
    await board.member(ada, ws, bo_id)
    mine = await board.task(ada, ws, title="Mine", assignee_id=ada_id)
    task = await board.task(ada, ws, title="Theirs")
    url = f"/api/workspaces/{ws}/tasks/{task['id']}"
    for body in ({"assignee_id": bo_id}, {"status": "done"}):
        patched = await board.client.patch(url, json=body, headers=ada | {"If-Match": "*"})
        assert patched.status_code == 200, patched.text
    assert (await board.client.delete(url, headers=ada)).status_code == 204
    await board.client.patch(
        f"/api/workspaces/{ws}/tasks/{mine['id']}",
        json={"title": "Still mine"},
        headers=ada | {"If-Match": "*"},
    )
    await board.settled()

    told = (await board.feed(bo))["items"]
    assert [(n["kind"], n["title"]) for n in told] == [
        ("task.deleted", "Deleted: Theirs"),
        ("task.changed", "Changed: Theirs"),
        ("task.assigned", "Assigned to you: Theirs"),
        ("workspace.member_added", "Added to Ops"),
    ]
    assert told[1]["body"] == "Ada changed the status of “Theirs” in Ops"
    assert told[3]["task_id"] is None
    assert (await board.feed(ada))["items"] == []


async def test_template_code_in_a_title_arrives_as_text(board: NotifyBoard) -> None:
    """Jinja and HTML in a task title are the feed's text as typed, and the email's data."""
    ada, bo_id, bo, ws = await board.team()
    title = "{{ 7*7 }} <b>{% raw %}"
    await board.task(ada, ws, title=title, assignee_id=bo_id)
    await board.settled()
    [told] = (await board.feed(bo))["items"][:1]
    assert told["title"] == f"Assigned to you: {title}"
    assert title in told["body"]
    [note] = [m for m in await board.mails(2) if m.subject.startswith("Assigned")]
    assert note.subject == f"Assigned to you: {title}"
    assert "49" not in (note.html or "")
    assert "&lt;b&gt;" in (note.html or "")


async def set_preferences(board: NotifyBoard, auth: dict[str, str], **channels: bool) -> None:
    response = await board.client.patch(
        "/api/me/notification-preferences",
        json={"preferences": {"task.assigned": channels}},
        headers=auth,
    )
    assert response.status_code == 200, response.text
    assert response.json()["preferences"]["task.assigned"] == {
        "in_app": True, "email": True, "push": True
    } | channels  # fmt: skip


@pytest.mark.parametrize(
    "channels",
    [
        {"in_app": True, "email": True, "push": True},
        {"in_app": False, "email": True, "push": False},
        {"in_app": True, "email": False, "push": False},
        {"in_app": False, "email": False, "push": True},
        {"in_app": False, "email": False, "push": False},
    ],
    ids=["all", "email-only", "in-app-only", "push-only", "none"],
)
async def test_preferences_route_an_assignment_to_the_chosen_channels_only(
    push_board: NotifyBoard, push_service: PushService, channels: dict[str, bool]
) -> None:
    """Each channel carries the notification exactly when Bo's preference says so: a feed
    row, a queued and sent email, a push the local service decrypts."""
    board = push_board
    ada, bo_id, bo, ws = await board.team()
    assert board.keys is not None
    browser = await push_service.browser(board.keys.application_server_key)
    subscribed = await board.client.post(
        "/api/me/push-subscriptions", json=browser.subscription, headers=bo
    )
    assert subscribed.status_code == 201, subscribed.text
    assert subscribed.json() == {"endpoint": browser.endpoint}
    await set_preferences(board, bo, **channels)
    task = await board.task(ada, ws, title="Ship", assignee_id=bo_id)
    await board.settled()

    told = [n for n in (await board.feed(bo))["items"] if n["kind"] == "task.assigned"]
    assert len(told) == (1 if channels["in_app"] else 0)
    # The welcome (taskboard-mail) and the note (taskboard-notify) come from two consumers
    # that run side by side: either may be sent first.
    mails = await board.mails(2 if channels["email"] else 1)
    assert sorted(m.subject for m in mails) == sorted(
        ["Welcome to Home", *(["Assigned to you: Ship"] if channels["email"] else [])]
    )
    pushed = [json.loads(d.plaintext) for d in push_service.delivered]
    assigned = [p for p in pushed if p["kind"] == "task.assigned"]
    if not channels["push"]:
        assert assigned == []
        return
    [payload] = assigned
    assert payload == {
        "title": "Assigned to you: Ship",
        "body": "Ada assigned you “Ship” in Home",
        "kind": "task.assigned",
        "workspace_id": ws,
        "task_id": task["id"],
        "notification_id": told[0]["id"] if told else None,
        "url": f"/?workspace={ws}&task={task['id']}",
    }


async def test_a_push_service_410_removes_the_subscription(
    push_board: NotifyBoard, push_service: PushService
) -> None:
    """A browser gone at the push service is forgotten; the feed still gets the row."""
    board = push_board
    ada, bo_id, bo, ws = await board.team()
    assert board.keys is not None
    browser = await push_service.browser(board.keys.application_server_key)
    await board.client.post("/api/me/push-subscriptions", json=browser.subscription, headers=bo)
    push_service.gone(browser)
    await board.task(ada, ws, assignee_id=bo_id)
    await board.settled()
    from corestone.push.subscriptions import PushSubscriptionRecord

    async with board.infra.db.transaction(read_only=True) as tx:
        left = list(await tx.session.scalars(select(PushSubscriptionRecord.endpoint)))
    assert left == []
    assert len((await board.feed(bo))["items"]) == 2  # added, assigned


async def test_the_unsubscribe_link_turns_off_that_kinds_email_only(board: NotifyBoard) -> None:
    """One click on the assignment note's link turns off Bo's ``task.assigned`` email: the
    next assignment sends no mail but still notifies in-app; the address is not
    suppressed (the email preference of another kind, turned on, still mails)."""
    ada, bo_id, bo, ws = await board.team()
    await board.task(ada, ws, title="First", assignee_id=bo_id)
    [note] = [m for m in await board.mails(2) if m.subject.startswith("Assigned")]
    assert note.headers["List-Unsubscribe-Post"] == ONE_CLICK
    link = urlsplit(note.headers["List-Unsubscribe"].strip("<>"))
    done = await board.client.post(
        f"{link.path}?{link.query}",
        content=ONE_CLICK,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 200, done.text
    shown = await board.client.get("/api/me/notification-preferences", headers=bo)
    assert shown.json()["preferences"]["task.assigned"] == {
        "in_app": True, "email": False, "push": True
    }  # fmt: skip
    on = await board.client.patch(
        "/api/me/notification-preferences",
        json={"preferences": {"task.changed": {"email": True}}},
        headers=bo,
    )
    assert on.status_code == 200
    second = await board.task(ada, ws, title="Second", assignee_id=bo_id)
    patched = await board.client.patch(
        f"/api/workspaces/{ws}/tasks/{second['id']}",
        json={"status": "done"},
        headers=ada | {"If-Match": "*"},
    )
    assert patched.status_code == 200
    await board.settled()
    mails = await board.mails(3)  # welcome, first note, and the change note: no second note
    notes = [m.subject for m in mails if not m.subject.startswith("Welcome")]
    assert notes == ["Assigned to you: First", "Changed: Second"]
    titles = [n["title"] for n in (await board.feed(bo))["items"]]
    assert titles[:2] == ["Changed: Second", "Assigned to you: Second"]


async def test_an_event_older_than_a_day_notifies_no_one(board: NotifyBoard) -> None:
    """A day-old ``task.assigned`` (a new group replaying the stream's history) is
    handled (its inbox row) without a notification or an email."""
    ada, bo_id, bo, ws = await board.team()
    task = await board.task(ada, ws, title="Fresh")
    await board.settled()
    ada_id = (await board.client.get("/api/me", headers=ada)).json()["user"]["id"]
    old = DomainEvent.create(
        TaskAssigned(task_id=task["id"], version=1, title="Old", assignee_id=bo_id,
                     previous_assignee_id=None),
        aggregate_type="task", aggregate_id=task["id"], workspace_id=ws, actor=ada_id,
        occurred_at=datetime.now(UTC) - timedelta(hours=25),
    )  # fmt: skip
    assert board.infra.broker is not None
    await board.infra.broker.publish(
        [OutgoingMessage(id=str(old.id), topic=TOPIC, body=old.to_json())]
    )
    for _ in range(200):
        async with board.infra.db.transaction(read_only=True) as tx:
            handled = await tx.session.scalar(
                select(InboxRecord.event_id).where(
                    InboxRecord.consumer == NOTIFY_GROUP, InboxRecord.event_id == str(old.id)
                )
            )
        if handled:
            break
        await asyncio.sleep(0.05)
    assert handled == str(old.id)
    assert [n["kind"] for n in (await board.feed(bo))["items"]] == ["workspace.member_added"]
    assert len(await board.mails(1)) == 1  # the welcome only
