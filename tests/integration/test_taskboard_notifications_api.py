"""taskboard's notification routes over HTTP, on each database: pages, read state,
preferences, Web Push keys and subscriptions, and every refusal as problem+json."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from corestone.push.subscriptions import PushSubscriptionRecord
from tests.integration.notifyboard import NotifyBoard, running
from tests.integration.push.push_service import PushService

PROBLEM = "application/problem+json"


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


def refused(response: httpx.Response, status: int, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    if field is not None:
        assert response.json()["field"] == field


async def assigned_five(board: NotifyBoard) -> tuple[dict[str, str], dict[str, str], int]:
    """Five tasks assigned to Bo by Ada (plus Bo's ``member_added``): (ada, bo, ws)."""
    ada, bo_id, bo, ws = await board.team()
    for n in range(5):
        await board.task(ada, ws, title=f"t{n}", assignee_id=bo_id)
    await board.settled()
    return ada, bo, ws


async def test_pages_unread_count_mark_read_and_read_all(board: NotifyBoard) -> None:
    """Pages of two walk all six newest first; marking one read drops it from the unread
    filter and the count (twice: no change); read-all marks the rest."""
    _, bo, _ = await assigned_five(board)
    titles: list[str] = []
    query = "?limit=2"
    while True:
        page = await board.feed(bo, query)
        assert len(page["items"]) <= 2
        titles += [n["title"] for n in page["items"]]
        if page["next_cursor"] is None:
            break
        query = f"?limit=2&cursor={page['next_cursor']}"
    assert titles == [f"Assigned to you: t{n}" for n in range(4, -1, -1)] + ["Added to Home"]
    first = (await board.feed(bo))["items"][0]
    assert set(first) == {
        "id", "kind", "workspace_id", "task_id", "event_id", "title", "body", "created_at",
        "read_at",
    }  # fmt: skip
    assert first["read_at"] is None
    for _ in range(2):
        marked = await board.client.post(f"/api/me/notifications/{first['id']}/read", headers=bo)
        assert marked.status_code == 204, marked.text
    count = await board.client.get("/api/me/notifications/unread-count", headers=bo)
    assert count.json() == {"unread": 5}
    unread = await board.feed(bo, "?unread=true")
    assert first["id"] not in [n["id"] for n in unread["items"]]
    assert len(unread["items"]) == 5
    done = await board.client.post("/api/me/notifications/read-all", headers=bo)
    assert done.json() == {"marked": 5}
    assert (await board.feed(bo, "?unread=true"))["items"] == []
    assert all(n["read_at"] for n in (await board.feed(bo))["items"])


async def test_another_users_notification_is_not_found(board: NotifyBoard) -> None:
    """Ada cannot mark Bo's notification (404, and it stays unread), nor a made-up id."""
    ada, bo, _ = await assigned_five(board)
    theirs = (await board.feed(bo))["items"][0]["id"]
    for notification in (theirs, "999999999", "abc"):
        response = await board.client.post(
            f"/api/me/notifications/{notification}/read", headers=ada
        )
        refused(response, 404)
    assert (await board.feed(ada))["items"] == []
    count = await board.client.get("/api/me/notifications/unread-count", headers=bo)
    assert count.json() == {"unread": 6}


async def test_bad_input_is_a_422_naming_the_field(board: NotifyBoard) -> None:
    """A tampered cursor, one of another user, a bad limit, an unknown kind or channel, a
    value that is not a boolean: each a 422 problem naming the field, nothing changed."""
    ada, bo, _ = await assigned_five(board)
    cursor = (await board.feed(bo, "?limit=1"))["next_cursor"]
    tampered = cursor[:-3] + ("xyz" if not cursor.endswith("xyz") else "abc")
    for auth, query, field in (
        (bo, f"?cursor={tampered}", "cursor"),
        (ada, f"?cursor={cursor}", "cursor"),
        (bo, f"?unread=true&cursor={cursor}", "cursor"),
        (bo, "?limit=0", "limit"),
        (bo, "?limit=101", "limit"),
        (bo, "?limit=ten", "limit"),
    ):
        response = await board.client.get(f"/api/me/notifications{query}", headers=auth)
        refused(response, 422, field)
    for preferences, field in (
        ({"task.bogus": {"email": True}}, "preferences.task.bogus"),
        ({"task.changed": {"sms": True}}, "preferences.task.changed.sms"),
        ({"task.changed": {"email": "yes"}}, "preferences.task.changed.email"),
    ):
        response = await board.client.patch(
            "/api/me/notification-preferences",
            json={"preferences": {"task.assigned": {"email": False}} | preferences},
            headers=bo,
        )
        refused(response, 422, field)
    shown = await board.client.get("/api/me/notification-preferences", headers=bo)
    assert shown.json() == {
        "preferences": {
            "task.assigned": {"in_app": True, "email": True, "push": True},
            "task.changed": {"in_app": True, "email": False, "push": True},
            "task.deleted": {"in_app": True, "email": False, "push": True},
            "workspace.member_added": {"in_app": True, "email": False, "push": True},
        }
    }


async def test_anonymous_callers_get_401_everywhere(board: NotifyBoard) -> None:
    """No token or a bad one: 401 problem on every route of the feature."""
    calls = [
        ("GET", "/api/me/notifications", None),
        ("GET", "/api/me/notifications/unread-count", None),
        ("POST", "/api/me/notifications/1/read", None),
        ("POST", "/api/me/notifications/read-all", None),
        ("GET", "/api/me/notification-preferences", None),
        ("PATCH", "/api/me/notification-preferences", {"preferences": {}}),
        ("GET", "/api/push/public-key", None),
        ("POST", "/api/me/push-subscriptions", {"endpoint": "x", "keys": {}}),
        ("DELETE", "/api/me/push-subscriptions", {"endpoint": "x"}),
    ]
    for headers in ({}, {"Authorization": "Bearer tb_not-a-token"}):
        for method, path, body in calls:
            response = await board.client.request(method, path, json=body, headers=headers)
            refused(response, 401)


async def test_without_vapid_keys_push_is_a_404(board: NotifyBoard) -> None:
    """No VAPID settings: the public key and the subscription routes are 404 problems."""
    _, bo = await board.signup("Bo", "bo@example.com")
    refused(await board.client.get("/api/push/public-key", headers=bo), 404)
    subscription = {"endpoint": "https://push.example.com/x", "keys": {"p256dh": "a", "auth": "b"}}
    response = await board.client.post("/api/me/push-subscriptions", json=subscription, headers=bo)
    refused(response, 404)


async def test_subscriptions_are_per_user_and_checked(
    database_url: str, push_service: PushService
) -> None:
    """The public key is the settings'; a browser's subscription is stored for its user,
    a private endpoint or a bad key is a 422 naming it, Eve's DELETE of Bo's endpoint
    leaves it, Bo's removes it."""
    async with running(database_url, push=push_service) as board:
        assert board.keys is not None
        _, bo = await board.signup("Bo", "bo@example.com")
        _, eve = await board.signup("Eve", "eve@example.com")
        key = await board.client.get("/api/push/public-key", headers=bo)
        assert key.json() == {"public_key": board.keys.application_server_key}
        browser = await push_service.browser(board.keys.application_server_key)
        good = browser.subscription
        for body, field in (
            (good | {"endpoint": "http://10.0.0.1/push"}, "endpoint"),
            (good | {"keys": {"p256dh": "AAAA", "auth": good["keys"]["auth"]}}, "keys.p256dh"),
            (good | {"keys": {"p256dh": good["keys"]["p256dh"]}}, "keys.auth"),
        ):
            response = await board.client.post("/api/me/push-subscriptions", json=body, headers=bo)
            refused(response, 422, field)
        made = await board.client.post("/api/me/push-subscriptions", json=good, headers=bo)
        assert made.status_code == 201, made.text
        assert made.json() == {"endpoint": browser.endpoint}
        endpoint = {"endpoint": browser.endpoint}
        for auth in (eve, bo, bo):
            gone = await board.client.request(
                "DELETE", "/api/me/push-subscriptions", json=endpoint, headers=auth
            )
            assert gone.status_code == 204, gone.text
            async with board.infra.db.transaction(read_only=True) as tx:
                left = list(await tx.session.scalars(select(PushSubscriptionRecord.endpoint)))
            assert left == ([browser.endpoint] if auth is eve else [])


async def test_the_start_says_whether_web_push_is_on(
    database_url: str, push_service: PushService
) -> None:
    """One log line at start: ``web push off`` without VAPID keys, ``web push on`` (with
    the public key, never the private one) with them."""
    for push in (None, push_service):
        with capture_logs() as events:
            async with running(database_url, push=push) as board:
                keys = board.keys
        said = [e for e in events if str(e["event"]).startswith("web push")]
        if keys is None:
            assert [e["event"] for e in said] == [
                "web push off: CORESTONE_VAPID_PRIVATE_KEY is not set"
            ]
        else:
            assert said == [
                {"event": "web push on", "public_key": keys.application_server_key,
                 "log_level": "info"}
            ]  # fmt: skip
            assert keys.private_key_text() not in repr(events)
