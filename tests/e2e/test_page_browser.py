"""taskboard's page in real headless Chromium (Debian's), against real `taskboard serve` processes.

Under CI=true a missing chromium or playwright fails the run; elsewhere the tests skip
(tests/e2e/browser.py). Screenshots go to var/test-output/ (ignored by git), their paths
printed in the test log.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from corestone.push import VapidKeys
from corestone.testing import RedisServer
from tests.e2e.browser import (
    BOUND_MS,
    Chromium,
    Watch,
    embedded_server,
    post,
    require_browser,
    row,
    screenshot,
    sign_in,
    signup,
)
from tests.e2e.conftest import Server, free_port, taskboard_command

pytestmark = pytest.mark.e2e

HOSTILE_TITLE = "<img src=x onerror=alert(1)> {{7*7}}"


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Chromium]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browsers = Chromium(playwright, tmp_path)
        try:
            yield browsers
        finally:
            browsers.close()


@dataclass
class Deployment:
    """taskboard as the browser sees it (``page``) and as other users write to it (``api``)."""

    page: Server
    api: Server


def _vapid_env() -> dict[str, str]:
    keys = VapidKeys.generate("mailto:ops@example.com")
    return {
        "CORESTONE_VAPID_PRIVATE_KEY": keys.private_key_text(),
        "CORESTONE_VAPID_SUBJECT": keys.subject,
    }


@pytest.fixture(params=["embedded", "postgres-redis-two-instances"])
def deployment(request: pytest.FixtureRequest, start_server: Any, tmp_path: Path) -> Deployment:
    """One embedded process on SQLite, or two on PostgreSQL + Redis (the page on the first,
    other users writing through the second, so live events cross instances)."""
    if request.param == "embedded":
        server = embedded_server(start_server, tmp_path, _vapid_env())
        return Deployment(page=server, api=server)
    redis: RedisServer = request.getfixturevalue("redis_server")
    env = {
        "CORESTONE_DATABASE_URL": request.getfixturevalue("postgres_url"),
        "CORESTONE_REDIS_URL": redis.url,
        "CORESTONE_BROKER_URL": redis.url,
        **_vapid_env(),
    }
    page_port, api_port = free_port(), free_port()
    page_server: Server = start_server(taskboard_command(page_port), env, page_port)
    page_server.wait_ready()
    api_server: Server = start_server(taskboard_command(api_port), env, api_port)
    api_server.wait_ready()
    return Deployment(page=page_server, api=api_server)


def test_the_page_signs_in_shows_live_tasks_and_counts_unread_notifications(
    chromium: Chromium, deployment: Deployment, request: pytest.FixtureRequest
) -> None:
    """Signed in, the page shows tasks other users create elsewhere without a reload, as text;
    the bell counts their assignments; push opt-in fails gracefully; nothing logs an error."""
    api = deployment.api.url
    ada, bob = signup(api, "Ada"), signup(api, "Bob")
    ws = post(api, ada, "/api/workspaces", {"name": "Launch"})["id"]
    post(api, ada, f"/api/workspaces/{ws}/members", {"user_id": bob.id})
    post(api, bob, f"/api/workspaces/{ws}/tasks", {"title": "There before"})

    context = chromium.open(viewport={"width": 1280, "height": 800})
    context.grant_permissions(["notifications"], origin=deployment.page.url)
    page = context.pages[0]
    watch = Watch()
    watch.attach(page)
    sign_in(page, deployment.page.url, ada)
    assert page.locator("#workspace").input_value() == str(ws)
    row(page, "There before").wait_for(timeout=BOUND_MS)
    page.evaluate("window.__sameDocument = true")

    # Created through the API (through the other instance, when there are two): no reload.
    post(api, bob, f"/api/workspaces/{ws}/tasks", {"title": "Written elsewhere"})
    row(page, "Written elsewhere").wait_for(timeout=BOUND_MS)

    # Assigned to Ada by Bob: a notification, and its hostile title stays text.
    assert page.locator("#unread").is_hidden()
    assigned = post(
        api, bob, f"/api/workspaces/{ws}/tasks", {"title": HOSTILE_TITLE, "assignee_id": ada.id}
    )
    hostile = row(page, HOSTILE_TITLE)
    hostile.wait_for(timeout=BOUND_MS)
    assert hostile.locator("td.assignee").inner_text() == "you (Ada)"
    assert page.locator("#task-rows img").count() == 0
    page.locator("#unread").filter(has_text=re.compile(r"^1$")).wait_for(timeout=BOUND_MS)
    assert page.get_by_role("button", name="Notifications, 1 unread").is_visible()

    page.locator("#bell").click()
    item = page.locator("#notification-list li.unread")
    item.first.wait_for(timeout=BOUND_MS)
    assert item.count() == 1
    assert page.locator("#notification-list img").count() == 0
    screenshot(page, f"page-{request.node.callspec.id}")
    page.get_by_role("button", name="Mark all read").click()
    page.locator("#unread").wait_for(state="hidden", timeout=BOUND_MS)
    page.keyboard.press("Escape")

    # A task made on the page itself.
    page.get_by_label("Title", exact=True).fill("Made on the page")
    page.get_by_role("button", name="Add task").click()
    row(page, "Made on the page").wait_for(timeout=BOUND_MS)
    page.get_by_label("Status of Made on the page").select_option("done")
    row(page, "Made on the page").locator("select.status-done").wait_for(timeout=BOUND_MS)

    # Push opt-in: the service worker registers at /; headless Chromium has no push
    # service, so the outcome is a message on the page either way, never an error.
    page.get_by_role("button", name="Enable push notifications").click()
    page.locator("#push-status[data-ok]").wait_for(timeout=BOUND_MS)
    scope = page.evaluate(
        "navigator.serviceWorker.getRegistration('/').then((r) => r ? r.scope : null)"
    )
    assert scope == f"{deployment.page.url}/"
    assert page.locator("#push-status").inner_text()

    assert page.evaluate("window.__sameDocument") is True  # never reloaded
    assert watch.dialogs == []
    assert watch.errors == []
    origin = urlsplit(deployment.page.url).netloc
    assert {urlsplit(url).netloc for url in watch.requests} == {origin}

    # Another workspace: its own tasks, live too; then back.
    side = post(api, ada, "/api/workspaces", {"name": "Side"})["id"]
    page.reload()  # the picker lists the workspaces of /api/me, read at sign-in
    page.locator("#live[data-state=live]").wait_for(timeout=BOUND_MS)
    page.locator("#workspace").select_option(str(side))
    page.locator("#no-tasks").wait_for(timeout=BOUND_MS)
    assert page.locator("#task-rows tr").count() == 0
    page.locator("#live[data-state=live]").wait_for(timeout=BOUND_MS)
    post(api, ada, f"/api/workspaces/{side}/tasks", {"title": "On the side"})
    row(page, "On the side").wait_for(timeout=BOUND_MS)
    page.locator("#workspace").select_option(str(ws))
    row(page, "Written elsewhere").wait_for(timeout=BOUND_MS)
    assert row(page, "On the side").count() == 0

    # A push notification's link: the workspace and the task it names, after a reload.
    page.goto(f"{deployment.page.url}/?workspace={ws}&task={assigned['id']}")
    page.locator(f"#task-rows tr.highlight[data-task-id='{assigned['id']}']").wait_for(
        timeout=BOUND_MS
    )
    assert watch.errors == []

    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("API token").wait_for(timeout=BOUND_MS)
    assert page.evaluate("sessionStorage.getItem('taskboard.token')") is None


def test_the_stream_resumes_with_last_event_id_after_its_instance_restarts(
    chromium: Chromium, start_server: Any, redis_server: RedisServer, postgres_url: str
) -> None:
    """The instance serving the page stops; events written meanwhile through the other one
    arrive once it is back, by resuming from Last-Event-ID, without refetching the list."""
    env = {
        "CORESTONE_DATABASE_URL": postgres_url,
        "CORESTONE_REDIS_URL": redis_server.url,
        "CORESTONE_BROKER_URL": redis_server.url,
    }
    page_port, api_port = free_port(), free_port()
    first: Server = start_server(taskboard_command(page_port), env, page_port)
    first.wait_ready()
    other: Server = start_server(taskboard_command(api_port), env, api_port)
    other.wait_ready()
    ada, bob = signup(other.url, "Ada"), signup(other.url, "Bob")
    ws = post(other.url, ada, "/api/workspaces", {"name": "Launch"})["id"]
    post(other.url, ada, f"/api/workspaces/{ws}/members", {"user_id": bob.id})

    page = chromium.open().pages[0]
    streams: list[dict[str, str]] = []  # the headers of each request for the stream
    lists: list[str] = []  # each request for the whole task list

    def sent(request: Any) -> None:
        if request.url.endswith(f"/api/workspaces/{ws}/events"):
            streams.append(request.headers)
        elif f"/api/workspaces/{ws}/tasks?" in request.url:
            lists.append(request.url)

    page.on("request", sent)
    sign_in(page, first.url, ada)
    post(other.url, bob, f"/api/workspaces/{ws}/tasks", {"title": "Before the restart"})
    row(page, "Before the restart").wait_for(timeout=BOUND_MS)
    page.evaluate("window.__sameDocument = true")
    listed = len(lists)

    assert first.stop() == 0
    page.locator("#live[data-state=retrying]").wait_for(timeout=BOUND_MS)
    post(other.url, bob, f"/api/workspaces/{ws}/tasks", {"title": "While it was down"})
    start_server(taskboard_command(page_port), env, page_port).wait_ready()

    row(page, "While it was down").wait_for(timeout=90_000)
    assert page.evaluate("window.__sameDocument") is True
    assert "last-event-id" not in streams[0]
    assert streams[-1].get("last-event-id")  # resumed, not started afresh
    assert len(lists) == listed  # the missed event came from the stream, not a refetch


def test_the_event_stream_parser_reads_frames_split_anywhere(
    chromium: Chromium, start_server: Any, tmp_path: Path
) -> None:
    """The page's parser gives the same frames however the bytes are split, with CRLF, CR or
    LF line ends, comments, multi-line data, ids that persist and retry lines."""
    server = embedded_server(start_server, tmp_path)
    page = chromium.open().pages[0]
    watch = Watch()
    watch.attach(page)
    page.goto(f"{server.url}/")
    result = page.evaluate(
        """async () => {
          const { FrameParser } = await import("/static/stream.js");
          const text = "retry: 2000\\r\\n: ping\\r\\n\\r\\n"
            + "id: 7\\nevent: task.created\\ndata: {\\"a\\":1}\\n\\n"
            + "data: one\\rdata:two\\r\\r"
            + "event: reset\\r\\ndata: {}\\r\\n\\r\\n"
            + "id\\nevent: x\\n\\n"
            + "id: 9\\ndata\\n\\n";
          const read = (chunks) => {
            const frames = [];
            const parser = new FrameParser((frame) => frames.push(frame));
            for (const chunk of chunks) parser.push(chunk);
            return { frames, retry: parser.retry };
          };
          const whole = read([text]);
          const splits = [];
          for (let i = 1; i < text.length; i++) {
            splits.push(read([text.slice(0, i), text.slice(i)]));
          }
          const bytes = read([...text]);
          return { whole, same: [...splits, bytes].every(
            (r) => JSON.stringify(r) === JSON.stringify(whole)) };
        }"""
    )
    assert result["same"] is True
    assert result["whole"]["retry"] == 2000
    assert result["whole"]["frames"] == [
        {"id": "7", "event": "task.created", "data": '{"a":1}'},
        {"id": "7", "event": "message", "data": "one\ntwo"},
        {"id": "7", "event": "reset", "data": "{}"},
        {"id": "9", "event": "message", "data": ""},
    ]
    assert watch.errors == []


def test_streams_turned_away_with_503_come_back_spread_out_not_together(
    chromium: Chromium, start_server: Any, tmp_path: Path
) -> None:
    """Twenty streams refused with 503 and Retry-After: 1 each wait at least the second
    asked, plus a jittered, growing backoff, so they do not all reconnect in the same
    instant (the page waited exactly Retry-After: a cap's refusals came back at once)."""
    server = embedded_server(start_server, tmp_path)
    page = chromium.open().pages[0]
    watch = Watch()
    watch.attach(page)
    page.goto(f"{server.url}/")
    delays = page.evaluate(
        """async () => {
          const { LiveStream } = await import("/static/stream.js");
          const realFetch = window.fetch;
          window.fetch = async () =>
            new Response("", { status: 503, headers: { "Retry-After": "1" } });
          try {
            const first = [], second = [];
            for (let i = 0; i < 20; i++) {
              const stream = new LiveStream("/nowhere", { token: "t", onEvent: () => {} });
              first.push(await stream.connect());
              second.push(await stream.connect());
            }
            return { first, second };
          } finally {
            window.fetch = realFetch;
          }
        }"""
    )
    first, second = delays["first"], delays["second"]
    assert min(first) >= 1000
    assert len({round(d) for d in first}) > 10  # spread out
    assert sum(second) > sum(first)  # and growing
    assert watch.errors == []


def test_a_member_removed_while_watching_loses_the_workspace_on_the_page(
    chromium: Chromium, start_server: Any, tmp_path: Path
) -> None:
    """Removed from the workspace, the page's stream ends on `revoked`: its tasks leave the
    page, the workspace leaves the picker, the next one is shown live, a message says why,
    and nothing logs an error."""
    server = embedded_server(start_server, tmp_path)
    ada, bob = signup(server.url, "Ada"), signup(server.url, "Bob")
    ws = post(server.url, ada, "/api/workspaces", {"name": "Launch"})["id"]
    post(server.url, ada, f"/api/workspaces/{ws}/members", {"user_id": bob.id})
    post(server.url, ada, f"/api/workspaces/{ws}/tasks", {"title": "Secret plan"})
    own = post(server.url, bob, "/api/workspaces", {"name": "Own"})["id"]
    post(server.url, bob, f"/api/workspaces/{own}/tasks", {"title": "Bob's own"})

    page = chromium.open().pages[0]
    watch = Watch()
    watch.attach(page)
    sign_in(page, server.url, bob, path=f"/?workspace={ws}")
    row(page, "Secret plan").wait_for(timeout=BOUND_MS)

    removed = httpx.delete(f"{server.url}/api/workspaces/{ws}/members/{bob.id}", headers=ada.auth)
    assert removed.status_code == 204, removed.text
    page.locator("#message", has_text="no longer a member").wait_for(timeout=BOUND_MS)
    row(page, "Bob's own").wait_for(timeout=BOUND_MS)  # the workspace left is the next
    assert row(page, "Secret plan").count() == 0
    assert page.locator("#workspace option").all_inner_texts() == ["Own (owner)"]
    page.locator("#live[data-state=live]").wait_for(timeout=BOUND_MS)
    assert watch.errors == []


def test_the_service_worker_shows_push_messages_and_links_only_to_this_site(
    chromium: Chromium, start_server: Any, tmp_path: Path
) -> None:
    """A push message delivered to /sw.js (through the DevTools protocol: headless Chromium
    has no push service) becomes a notification with its title, body and url; a url to
    another site becomes the page's own, and a payload that is not JSON is shown as text."""
    server = embedded_server(start_server, tmp_path)
    context = chromium.open()
    context.grant_permissions(["notifications"], origin=server.url)
    page = context.pages[0]
    watch = Watch()
    watch.attach(page)
    page.goto(f"{server.url}/")
    devtools = context.new_cdp_session(page)
    registrations: list[dict[str, Any]] = []
    devtools.on(
        "ServiceWorker.workerRegistrationUpdated",
        lambda event: registrations.extend(event["registrations"]),
    )
    devtools.send("ServiceWorker.enable")
    scope = page.evaluate(
        "navigator.serviceWorker.register('/sw.js', {scope: '/'})"
        ".then(() => navigator.serviceWorker.ready).then((r) => r.scope)"
    )
    assert scope == f"{server.url}/"
    # A push reaches only an activated worker ("activating" drops it).
    page.wait_for_function(
        "navigator.serviceWorker.controller?.state === 'activated'", timeout=BOUND_MS
    )
    registration = next(r for r in registrations if r["scopeURL"] == scope)["registrationId"]

    messages = [
        {"title": HOSTILE_TITLE, "body": "Ada assigned it to you", "notification_id": "n1",
         "url": "/?workspace=1&task=2"},
        {"title": "Elsewhere", "body": "", "notification_id": "n2",
         "url": "https://attacker.example/phish"},
    ]  # fmt: skip
    shown_script = """navigator.serviceWorker.ready
        .then((r) => r.getNotifications())
        .then((all) => all.map((n) => ({ title: n.title, body: n.body, url: n.data.url })))"""
    shown: list[dict[str, str]] = []
    for data in [*(json.dumps(message) for message in messages), "plain words"]:
        devtools.send(
            "ServiceWorker.deliverPushMessage",
            {"origin": server.url, "registrationId": registration, "data": data},
        )
        # Delivery returns before the worker runs, and reading the notifications at once
        # loses the push in Chromium now and then: let it be handled first.
        page.wait_for_timeout(250)
        before, deadline = len(shown), time.monotonic() + BOUND_MS / 1000
        while len(shown := page.evaluate(shown_script)) == before and (time.monotonic() < deadline):
            page.wait_for_timeout(50)
    shown.sort(key=lambda n: n["title"])
    assert shown == sorted(
        [
            {"title": HOSTILE_TITLE, "body": "Ada assigned it to you",
             "url": f"{server.url}/?workspace=1&task=2"},
            {"title": "Elsewhere", "body": "", "url": f"{server.url}/"},
            {"title": "taskboard", "body": "plain words", "url": f"{server.url}/"},
        ],
        key=lambda n: n["title"],
    )  # fmt: skip
    assert watch.errors == []


def test_a_token_that_is_not_valid_is_refused_with_a_message(
    chromium: Chromium, start_server: Any, tmp_path: Path
) -> None:
    """A wrong token keeps the sign-in form, says so, and is not kept in the tab."""
    server = embedded_server(start_server, tmp_path)
    page = chromium.open().pages[0]
    page.goto(f"{server.url}/")
    page.get_by_label("API token").fill("tb_not-a-token")
    page.locator("#sign-in-form button[type=submit]").click()
    page.locator("#message", has_text="That token is not valid.").wait_for(timeout=BOUND_MS)
    assert page.get_by_label("API token").is_visible()
    assert page.locator("#board").is_hidden()
    assert page.evaluate("sessionStorage.getItem('taskboard.token')") is None


def test_a_missing_chromium_skips_locally_and_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without chromium the browser tests skip on a developer's machine but fail in CI."""
    absent = tmp_path / "no-chromium"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-chromium"):
        require_browser(absent)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-chromium"):
        require_browser(absent)
