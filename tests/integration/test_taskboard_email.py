"""taskboard's email over HTTP, on each database: welcome, assignment, webhooks, ops, unsubscribe.

The mail goes to a memory provider through the real outbox and sender, so each test sees
what a provider would have received.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from corestone import Infrastructure, Settings
from corestone.email import BulkMail, EmailService, EmailTemplates, ProviderRoute
from corestone.email.message import EmailMessage
from corestone.email.providers import MemoryProvider
from corestone.email.unsubscribe import ONE_CLICK, UnsubscribeTokens
from corestone.email.webhooks import SendGridWebhook
from corestone.events import DomainEvent
from corestone.events.inbox import InboxRecord
from taskboard.app import create_app
from taskboard.events import WorkspaceCreated
from taskboard.services.notifications import MAIL_GROUP
from tests.integration.conftest import Board
from tests.integration.lifespan import lifespan_of

PROBLEM = "application/problem+json"
MAILGUN_KEY = "key-for-the-tests-0123456789"


@dataclass
class MailBoard(Board):
    memory: MemoryProvider
    sendgrid_key: ec.EllipticCurvePrivateKey

    async def delivered(self, count: int) -> list[EmailMessage]:
        """The first ``count`` messages the provider received, waiting for the sender."""
        for _ in range(500):
            if len(self.memory.sent) >= count:
                break
            await asyncio.sleep(0.02)
        assert len(self.memory.sent) >= count, [o.message.subject for o in self.memory.sent]
        return [o.message for o in self.memory.sent]

    def sendgrid_headers(self, body: bytes) -> dict[str, str]:
        stamp = str(int(time.time()))
        signature = self.sendgrid_key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            SendGridWebhook.SIGNATURE_HEADER: base64.b64encode(signature).decode(),
            SendGridWebhook.TIMESTAMP_HEADER: stamp,
            "Content-Type": "application/json",
        }


def mailgun_body(event: dict[str, Any], *, token: str = "tok-1", key: str = MAILGUN_KEY) -> bytes:
    stamp = str(int(time.time()))
    signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps(
        {
            "signature": {"timestamp": stamp, "token": token, "signature": signature},
            "event-data": event,
        }
    ).encode()


@pytest.fixture
async def mail(database_url: str, taskboard_schema: None) -> AsyncIterator[MailBoard]:
    private = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(
        private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    memory = MemoryProvider()
    settings = Settings(
        database_url=database_url,
        env="test",
        http_max_body_bytes=64 * 1024,
        sendgrid_webhook_public_key=public,
        mailgun_webhook_signing_key=MAILGUN_KEY,
    )
    infra = Infrastructure(settings)
    app = create_app(infra, email_routes=[ProviderRoute(memory)])
    async with lifespan_of(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://taskboard") as client:
            yield MailBoard(client, infra, memory, private)


async def ops_email(mail: MailBoard, auth: dict[str, str], message_id: str) -> dict[str, Any]:
    response = await mail.client.get(f"/api/ops/emails/{message_id}", headers=auth)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def recorded_sent(mail: MailBoard, auth: dict[str, str], message_id: str) -> None:
    """Wait until the outbox says ``sent``: the provider has the message first, and the
    sender writes ``sent`` right after (a test reading at once may see ``sending``)."""
    for _ in range(200):
        if (await ops_email(mail, auth, message_id))["status"] == "sent":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{message_id} never recorded sent")


async def suppressed(mail: MailBoard, auth: dict[str, str], count: int) -> list[Any]:
    """The suppressed messages, once there are ``count`` (bounded: 10 s)."""
    for _ in range(200):
        listed = await mail.client.get("/api/ops/emails?status=suppressed", headers=auth)
        assert listed.status_code == 200, listed.text
        items: list[Any] = listed.json()["items"]
        if len(items) >= count:
            return items
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} suppressed messages: {items}")


async def test_a_new_workspace_welcomes_its_owner_with_the_requests_correlation_id(
    mail: MailBoard,
) -> None:
    """Creating a workspace queues one welcome, sent to the owner, carrying X-Correlation-Id."""
    _, auth = await mail.signup("Ada", "ada@example.com")
    response = await mail.client.post("/api/workspaces", json={"name": "Ops"}, headers=auth)
    assert response.status_code == 201
    [welcome] = await mail.delivered(1)
    assert [a.email for a in welcome.to] == ["ada@example.com"]
    assert welcome.subject == "Welcome to Ops"
    assert welcome.headers["X-Correlation-Id"] == response.headers["x-request-id"]
    assert welcome.idempotency_key == f"taskboard:welcome:{response.json()['id']}"


async def test_user_input_in_templates_is_data_never_code(mail: MailBoard) -> None:
    """Template code in a user's name and a workspace's name arrives as those characters."""
    _, auth = await mail.signup("{{ 7*7 }}", "sev@example.com")
    await mail.workspace(auth, name="{% for x in range(3) %}X{% endfor %}<b>")
    [welcome] = await mail.delivered(1)
    assert "49" not in (welcome.html or "")
    assert "XXX" not in welcome.subject
    assert "{{ 7*7 }}" in (welcome.html or "")
    assert "&lt;b&gt;" in (welcome.html or "")  # autoescaped in the HTML part
    assert welcome.subject == "Welcome to {% for x in range(3) %}X{% endfor %}<b>"


async def test_assigning_a_task_emails_the_assignee_once_per_assignment(mail: MailBoard) -> None:
    """Create with an assignee and a PATCH changing it each mail the new assignee; a PATCH
    leaving the assignee as it is (a retried request, another field) sends nothing."""
    _, owner = await mail.signup("Ada", "ada@example.com")
    bo_id, _ = await mail.signup("Bo", "bo@example.com")
    cy_id, _ = await mail.signup("Cy", "cy@example.com")
    ws = await mail.workspace(owner)
    for user_id in (bo_id, cy_id):
        added = await mail.client.post(
            f"/api/workspaces/{ws}/members", json={"user_id": user_id}, headers=owner
        )
        assert added.status_code == 201, added.text
    task = await mail.task(owner, ws, title="Ship it", assignee_id=bo_id)
    url = f"/api/workspaces/{ws}/tasks/{task['id']}"
    for body in ({"assignee_id": cy_id}, {"assignee_id": cy_id}, {"title": "Ship it now"}):
        patched = await mail.client.patch(url, json=body, headers=owner | {"If-Match": "*"})
        assert patched.status_code == 200, patched.text
    await mail.delivered(3)
    await asyncio.sleep(0.3)  # a fourth message, were one queued, would have gone by now
    notes = [m for m in (o.message for o in mail.memory.sent) if m.tags == ("assigned",)]
    assert [(m.subject, m.to[0].email) for m in notes] == [
        ("Assigned to you: Ship it", "bo@example.com"),
        ("Assigned to you: Ship it", "cy@example.com"),
    ]
    assert len(mail.memory.sent) == 3
    assert notes[0].headers["X-Correlation-Id"]


async def test_a_title_cannot_add_a_header(mail: MailBoard) -> None:
    """A Unicode line separator in a title is refused at the door (422 naming title), so no
    assignment mail with a header-shaped subject is ever queued; a plain title still mails."""
    _, owner = await mail.signup("Ada", "ada@example.com")
    bo_id, _ = await mail.signup("Bo", "bo@example.com")
    ws = await mail.workspace(owner)
    await mail.client.post(f"/api/workspaces/{ws}/members", json={"user_id": bo_id}, headers=owner)
    title = "Fix\u2028Bcc: evil@example.com\u2029X-Evil: 1"
    refused = await mail.client.post(
        f"/api/workspaces/{ws}/tasks", json={"title": title, "assignee_id": bo_id}, headers=owner
    )
    assert refused.status_code == 422
    assert refused.json()["field"] == "title"
    await mail.task(owner, ws, title="Fix: Bcc evil@example.com", assignee_id=bo_id)
    [assigned] = [m for m in await mail.delivered(2) if m.subject.startswith("Assigned")]
    wire = assigned.to_mime().as_bytes()
    assert b"\nBcc:" not in wire
    assert [a.email for a in assigned.recipients] == ["bo@example.com"]


async def test_one_click_unsubscribe_turns_the_assignment_email_off(mail: MailBoard) -> None:
    """The assignment mail's List-Unsubscribe URL, POSTed as RFC 8058 says, turns off Bo's
    email of assignments (a preference: nothing is suppressed, the next assignment mails
    nobody); a GET only shows a form (link scanners must not unsubscribe anyone)."""
    _, owner = await mail.signup("Ada", "ada@example.com")
    bo_id, bo = await mail.signup("Bo", "bo@example.com")
    ws = await mail.workspace(owner)
    await mail.client.post(f"/api/workspaces/{ws}/members", json={"user_id": bo_id}, headers=owner)
    await mail.task(owner, ws, assignee_id=bo_id)
    [assigned] = [m for m in await mail.delivered(2) if m.subject.startswith("Assigned")]
    assert assigned.headers["List-Unsubscribe-Post"] == ONE_CLICK
    link = urlsplit(assigned.headers["List-Unsubscribe"].strip("<>"))
    path = f"{link.path}?{link.query}"
    shown = await mail.client.get(path)
    assert shown.status_code == 200
    assert "bo@example.com" in shown.text
    await mail.task(owner, ws, assignee_id=bo_id)
    await mail.delivered(3)  # the GET turned nothing off
    done = await mail.client.post(
        path, content=ONE_CLICK, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert done.status_code == 200, done.text
    preferences = await mail.client.get("/api/me/notification-preferences", headers=bo)
    assert preferences.json()["preferences"]["task.assigned"]["email"] is False
    await mail.task(owner, ws, assignee_id=bo_id)
    await asyncio.sleep(0.5)  # a note, were one queued, would have gone by now
    assert len(mail.memory.sent) == 3
    listed = await mail.client.get("/api/ops/emails?status=suppressed", headers=owner)
    assert listed.json()["items"] == []


async def test_a_link_from_before_notifications_turns_off_the_users_assignment_email(
    mail: MailBoard,
) -> None:
    """An older note's link (list ``task-assignments``, no user in it) turns off the
    assignment email of the user with that address; a link of any other list still
    suppresses its address, as the generic endpoint does."""
    _, owner = await mail.signup("Ada", "ada@example.com")
    bo_id, bo = await mail.signup("Bo", "bo@example.com")
    tokens = UnsubscribeTokens(mail.infra.settings.signing_key)
    for address, list_id in (("bo@example.com", "task-assignments"), ("x@example.org", "news")):
        token = tokens.issue(address, list_id)
        done = await mail.client.post(f"/email/unsubscribe?token={token}", content=ONE_CLICK)
        assert done.status_code == 200, done.text
    preferences = await mail.client.get("/api/me/notification-preferences", headers=bo)
    assert preferences.json()["preferences"]["task.assigned"]["email"] is False
    ws = await mail.workspace(owner)
    await mail.client.post(f"/api/workspaces/{ws}/members", json={"user_id": bo_id}, headers=owner)
    await mail.task(owner, ws, assignee_id=bo_id)
    await mail.delivered(1)
    await asyncio.sleep(0.5)  # a note, were one queued, would have gone by now
    assert [o.message.subject for o in mail.memory.sent] == ["Welcome to Home"]
    await EmailService(mail.infra.db).send(
        EmailMessage.build(sender="news@example.com", to="x@example.org", subject="Hi", text="x"),
        workspace_id=ws,
    )
    assert len(await suppressed(mail, owner, 1)) == 1


@pytest.mark.parametrize("expired", [False, True], ids=["forged", "expired"])
async def test_a_forged_or_expired_unsubscribe_link_is_refused(
    mail: MailBoard, expired: bool
) -> None:
    """A token not signed by the app, or signed long ago, is a 422 problem and suppresses no one."""
    key = mail.infra.settings.signing_key if expired else b"not-the-apps-key-0123456789"
    clock = (lambda: time.time() - 400 * 86400) if expired else time.time
    token = UnsubscribeTokens(key, wall_clock=clock).issue("ada@example.com", "task-assignments")
    response = await mail.client.post(f"/email/unsubscribe?token={token}", content=ONE_CLICK)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["field"] == "token"
    _, auth = await mail.signup("Ada", "ada@example.com")
    await mail.workspace(auth)
    assert len(await mail.delivered(1)) == 1


async def test_sendgrid_events_move_the_status_and_a_replay_is_refused(mail: MailBoard) -> None:
    """A signed SendGrid batch marks the welcome delivered; the same call again is a 401."""
    _, auth = await mail.signup("Ada", "ada@example.com")
    await mail.workspace(auth)
    await mail.delivered(1)
    message_id = mail.memory.sent[0].message_id
    await recorded_sent(mail, auth, message_id)
    events = [
        {"email": "ada@example.com", "timestamp": int(time.time()), "event": "delivered",
         "sg_event_id": "ev-1", "sg_message_id": "x.y", "corestone_id": message_id},
    ]  # fmt: skip
    body = json.dumps(events).encode()
    headers = mail.sendgrid_headers(body)
    accepted = await mail.client.post("/webhooks/email/sendgrid", content=body, headers=headers)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["applied"] == 1
    shown = await ops_email(mail, auth, message_id)
    assert shown["status"] == "delivered"
    assert [h["status"] for h in shown["history"]][-1] == "delivered"
    replay = await mail.client.post("/webhooks/email/sendgrid", content=body, headers=headers)
    assert replay.status_code == 401
    assert replay.headers["content-type"].startswith(PROBLEM)


@pytest.mark.parametrize("forgery", ["bad signature", "no signature", "old timestamp"])
async def test_a_forged_sendgrid_call_is_refused(mail: MailBoard, forgery: str) -> None:
    """Signatures are checked on the raw body: any forgery is a 401 that changes nothing."""
    body = json.dumps([{"event": "bounce", "type": "bounce", "email": "ada@example.com",
                        "sg_event_id": "f", "timestamp": int(time.time())}]).encode()  # fmt: skip
    headers = mail.sendgrid_headers(body)
    if forgery == "bad signature":
        headers = mail.sendgrid_headers(body + b" ")
    elif forgery == "no signature":
        del headers[SendGridWebhook.SIGNATURE_HEADER]
    else:
        stamp = str(int(time.time()) - 3600)
        signature = mail.sendgrid_key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        headers[SendGridWebhook.SIGNATURE_HEADER] = base64.b64encode(signature).decode()
        headers[SendGridWebhook.TIMESTAMP_HEADER] = stamp
    response = await mail.client.post("/webhooks/email/sendgrid", content=body, headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith(PROBLEM)
    _, auth = await mail.signup("Ada", "ada@example.com")
    await mail.workspace(auth)  # the forged bounce suppressed nothing
    assert len(await mail.delivered(1)) == 1


async def test_an_oversized_webhook_body_is_a_413(mail: MailBoard) -> None:
    """A body over the endpoint's limit is refused before it is verified or parsed."""
    body = b"[" + b" " * (2 * 1024 * 1024) + b"]"
    response = await mail.client.post(
        "/webhooks/email/sendgrid", content=body, headers=mail.sendgrid_headers(body)
    )
    assert response.status_code == 413
    assert response.headers["content-type"].startswith(PROBLEM)


async def test_a_mailgun_hard_bounce_suppresses_and_a_replayed_token_is_refused(
    mail: MailBoard,
) -> None:
    """A signed permanent failure bounces the message and suppresses the address; the same
    token again is a 401, and a body signed with another key is a 401 too."""
    _, auth = await mail.signup("Ada", "ada@example.com")
    await mail.workspace(auth)
    await mail.delivered(1)
    message_id = mail.memory.sent[0].message_id
    await recorded_sent(mail, auth, message_id)  # a provider's webhook follows its acceptance
    event = {"event": "failed", "severity": "permanent", "id": "mg-1",
             "recipient": "ada@example.com", "timestamp": time.time(),
             "user-variables": {"corestone-id": message_id},
             "delivery-status": {"description": "mailbox does not exist"}}  # fmt: skip
    body = mailgun_body(event)
    accepted = await mail.client.post("/webhooks/email/mailgun", content=body)
    assert accepted.status_code == 200, accepted.text
    assert (await ops_email(mail, auth, message_id))["status"] == "bounced"
    assert (await mail.client.post("/webhooks/email/mailgun", content=body)).status_code == 401
    forged = mailgun_body(event, token="tok-2", key="key-of-someone-else")
    assert (await mail.client.post("/webhooks/email/mailgun", content=forged)).status_code == 401
    await mail.workspace(auth, name="Second")  # the welcome to a suppressed owner
    assert len(await suppressed(mail, auth, 1)) == 1


async def test_ops_emails_shows_only_the_callers_workspaces(mail: MailBoard) -> None:
    """Another workspace's message is absent from the list and a 404 by id; bad filters
    are a 422 problem naming ``status``."""
    _, ada = await mail.signup("Ada", "ada@example.com")
    _, eve = await mail.signup("Eve", "eve@example.com")
    await mail.workspace(ada)
    await mail.delivered(1)
    ada_message = mail.memory.sent[0].message_id
    await recorded_sent(mail, ada, ada_message)
    mine = await mail.client.get("/api/ops/emails", headers=ada)
    assert [m["id"] for m in mine.json()["items"]] == [ada_message]
    assert mine.json()["counts"] == {"sent": 1}
    theirs = await mail.client.get("/api/ops/emails", headers=eve)
    assert theirs.json() == {"items": [], "counts": {}}
    peek = await mail.client.get(f"/api/ops/emails/{ada_message}", headers=eve)
    assert peek.status_code == 404
    assert peek.headers["content-type"].startswith(PROBLEM)
    bad = await mail.client.get("/api/ops/emails?status=sent,bogus", headers=ada)
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith(PROBLEM)
    assert bad.json()["field"] == "status"
    anonymous = await mail.client.get("/api/ops/emails")
    assert anonymous.status_code == 401


async def test_the_welcome_event_handled_again_queues_no_second_message(mail: MailBoard) -> None:
    """A second ``workspace.created`` for the same workspace (a new event id: the inbox lets
    it through, as it would a dead letter replayed by hand) runs the welcome handler
    again; its idempotency key answers with the stored message and nothing more goes out."""
    user_id, auth = await mail.signup("Ada", "ada@example.com")
    ws = await mail.workspace(auth)
    [first] = await mail.delivered(1)
    again = DomainEvent.create(
        WorkspaceCreated(workspace_id=ws, owner_id=user_id),
        aggregate_type="workspace", aggregate_id=ws, workspace_id=ws,
    )  # fmt: skip
    await mail.infra.events.record(again)
    for _ in range(200):  # relayed, then handled by the mail consumer (its inbox row)
        async with mail.infra.db.transaction(read_only=True) as tx:
            handled = await tx.session.scalar(
                select(InboxRecord.event_id).where(
                    InboxRecord.consumer == MAIL_GROUP, InboxRecord.event_id == str(again.id)
                )
            )
        if handled:
            break
        await asyncio.sleep(0.05)
    assert handled == str(again.id)
    await asyncio.sleep(0.3)  # a second message, were one queued, would have gone by now
    assert [o.message for o in mail.memory.sent] == [first]


async def test_ops_emails_shows_a_bulk_sends_progress_to_its_workspace_only(
    mail: MailBoard,
) -> None:
    """``?bulk=`` lists only that bulk's messages with its counts, total and done; a user
    of another workspace sees an empty bulk, and a malformed id is a 422."""
    _, ada = await mail.signup("Ada", "ada@example.com")
    _, bo = await mail.signup("Bo", "bo@example.com")
    ws = await mail.workspace(ada)
    await mail.workspace(bo)
    await mail.delivered(2)  # the two welcomes
    templates = EmailTemplates(strings={"n.subject.txt": "Hi {{ n }}", "n.txt": "Number {{ n }}"})
    bulk_id = await EmailService(mail.infra.db).send_bulk(
        templates, "n", [(f"r{i}@example.org", {"n": i}) for i in range(3)],
        mail=BulkMail(sender="news@example.com"), workspace_id=ws,
    )  # fmt: skip
    await mail.delivered(5)
    for _ in range(200):  # the sender writes ``sent`` just after the provider took them
        shown = await mail.client.get(f"/api/ops/emails?bulk={bulk_id}", headers=ada)
        assert shown.status_code == 200, shown.text
        if shown.json()["bulk"]["done"]:
            break
        await asyncio.sleep(0.02)
    body = shown.json()
    assert body["bulk"] == {
        "id": bulk_id, "total": 3, "pending": 0, "done": True, "counts": {"sent": 3}
    }  # fmt: skip
    assert body["counts"] == {"sent": 3}
    assert sorted(item["subject"] for item in body["items"]) == ["Hi 0", "Hi 1", "Hi 2"]
    hidden = await mail.client.get(f"/api/ops/emails?bulk={bulk_id}", headers=bo)
    assert hidden.status_code == 200
    assert hidden.json() == {
        "items": [], "counts": {},
        "bulk": {"id": bulk_id, "total": 0, "pending": 0, "done": True, "counts": {}},
    }  # fmt: skip
    bad = await mail.client.get("/api/ops/emails?bulk=x'or'1", headers=ada)
    assert bad.status_code == 422
