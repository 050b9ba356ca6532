"""The alert routes of taskboard over HTTP, on SQLite and PostgreSQL: silences, access, and
the email and in-app channels end to end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from corestone import Infrastructure, Settings
from corestone.email.providers import MemoryProvider
from corestone.email.routing import ProviderRoute
from corestone.email.tables import EmailOutboxRecord
from taskboard.alerting import alerting_for
from taskboard.app import create_app
from taskboard.domain.models import TokenRole
from taskboard.services.tokens import issue_token
from tests.integration.alerts.delivery_support import alert, evaluation
from tests.integration.conftest import Board
from tests.integration.lifespan import lifespan_of


@pytest.fixture
def memory() -> MemoryProvider:
    return MemoryProvider()


@pytest.fixture
async def board(
    database_url: str, taskboard_schema: None, tmp_path: Path, memory: MemoryProvider
) -> AsyncIterator[Board]:
    """taskboard with every alert channel but the webhook on, no group wait, email in memory."""
    settings = Settings(
        database_url=database_url,
        env="test",
        email_file_dir=str(tmp_path / "mail"),
        alerts_email_to=["oncall@example.com"],
        alerts_email_from="alerts@example.com",
        alerts_inapp=True,
        alerts_group_wait_seconds=0,
    )
    infra = Infrastructure(settings)
    app = create_app(infra, email_routes=[ProviderRoute(memory)])
    async with lifespan_of(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://taskboard") as client:
            yield Board(client, infra)


async def _operator(board: Board, name: str = "Ada", email: str | None = None) -> dict[str, str]:
    """A user who owns a workspace, calling with an operator token of theirs."""
    user_id, owner = await board.signup(name, email)
    await board.workspace(owner)
    async with board.infra.db.transaction() as tx:
        token = await issue_token(tx, user_id, label="ops", role=TokenRole.OPERATOR)
    return {"Authorization": f"Bearer {token}"}


def _in(minutes: int) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


async def test_an_operator_creates_lists_and_expires_a_silence(board: Board) -> None:
    """Create (author from the token), list, expire: the silence then shows as expired."""
    owner = await _operator(board)
    body = {"matchers": [{"name": "alertname", "op": "=~", "value": "High.*"}], "ends_at": _in(60)}
    created = await board.client.post("/api/ops/silences", json=body, headers=owner)
    assert created.status_code == 201, created.text
    silence = created.json()
    assert silence["state"] == "active"
    assert silence["created_by"].startswith("Ada <")
    listed = (await board.client.get("/api/ops/silences", headers=owner)).json()["items"]
    assert [s["id"] for s in listed] == [silence["id"]]
    gone = await board.client.delete(f"/api/ops/silences/{silence['id']}", headers=owner)
    assert gone.json()["state"] == "expired"
    assert (await board.client.get("/api/ops/silences", headers=owner)).json()["items"] == []
    everything = await board.client.get("/api/ops/silences?expired=true", headers=owner)
    assert [s["state"] for s in everything.json()["items"]] == ["expired"]


async def test_an_operator_with_a_long_name_and_email_may_create_a_silence(board: Board) -> None:
    """The author the route writes (name and email) never exceeds what a silence stores."""
    email = f"{'a' * 64}@{'b' * 63}.example.com"
    owner = await _operator(board, "N" * 100, email)
    body = {"matchers": [{"name": "alertname", "value": "X"}], "ends_at": _in(60)}
    created = await board.client.post("/api/ops/silences", json=body, headers=owner)
    assert created.status_code == 201, created.text
    assert created.json()["created_by"].endswith(f"<{email}>")


HOSTILE = [
    ({"matchers": [{"name": "alertname", "op": "=~", "value": "(oops"}]}, "matchers[0].value"),
    ({"matchers": [{"name": "a", "op": "=~", "value": ".*"}]}, "matchers"),
    ({"matchers": [{"name": "a", "op": "==", "value": "x"}]}, "op"),
    ({"ends_at": "2000-01-01T00:00:00Z"}, "ends_at"),
    ({"ends_at": _in(60 * 24 * 400)}, "ends_at"),
    ({"ends_at": "2030-01-01T00:00:00"}, "ends_at"),
    ({"matchers": []}, "matchers"),
    ({"created_by": "someone else"}, "created_by"),
]


async def test_hostile_silences_are_422_naming_the_field(board: Board) -> None:
    """A bad regex, a silence of everything, a bad window, an author field: 422, the field named."""
    owner = await _operator(board)
    for change, field in HOSTILE:
        body = {"matchers": [{"name": "alertname", "value": "X"}], "ends_at": _in(60), **change}
        response = await board.client.post("/api/ops/silences", json=body, headers=owner)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert field in response.text, (field, response.text)
    listed = await board.client.get("/api/ops/silences?expired=true", headers=owner)
    assert listed.json()["items"] == []


async def test_an_owner_reads_alerts_and_silences_but_cannot_change_them(board: Board) -> None:
    """Anyone may sign up and own a workspace: ownership shows alerts, never mutes them."""
    _, owner = await board.signup("Mallory")
    await board.workspace(owner)
    assert (await board.client.get("/api/ops/alerts", headers=owner)).status_code == 200
    assert (await board.client.get("/api/ops/silences", headers=owner)).status_code == 200
    body = {"matchers": [{"name": "alertname", "op": "=~", "value": ".+"}], "ends_at": _in(60)}
    refused = await board.client.post("/api/ops/silences", json=body, headers=owner)
    assert refused.status_code == 403, refused.text
    assert "operator token" in refused.json()["detail"]
    silence = (
        await board.client.post(
            "/api/ops/silences", json=body, headers=await _operator(board, "Op")
        )
    ).json()
    gone = await board.client.delete(f"/api/ops/silences/{silence['id']}", headers=owner)
    assert gone.status_code == 403
    listed = (await board.client.get("/api/ops/silences", headers=owner)).json()["items"]
    assert [s["state"] for s in listed] == ["active"]


async def test_a_user_who_owns_nothing_is_refused(board: Board) -> None:
    """A signed-in user who owns no workspace gets 403 on every alert route; no token, 401."""
    _, stranger = await board.signup("Eve")
    body = {"matchers": ["alertname=X"], "ends_at": _in(60)}
    for method, path in [
        ("GET", "/api/ops/alerts"),
        ("GET", "/api/ops/silences"),
        ("POST", "/api/ops/silences"),
        ("DELETE", "/api/ops/silences/00000000-0000-0000-0000-000000000000"),
    ]:
        json = body if method == "POST" else None
        refused = await board.client.request(method, path, json=json, headers=stranger)
        assert refused.status_code == 403, (path, refused.text)
        anonymous = await board.client.request(method, path, json=json)
        assert anonymous.status_code == 401, path


async def test_email_and_inapp_channels_end_to_end(board: Board, memory: MemoryProvider) -> None:
    """A firing alert: one email delivered, headers intact; a notification for owners only."""
    owner_id, owner = await board.signup("Ada")
    ws = await board.workspace(owner)
    member_id, member = await board.signup("Bob")
    added = await board.client.post(
        f"/api/workspaces/{ws}/members",
        json={"user_id": member_id, "role": "member"},
        headers=owner,
    )
    assert added.status_code == 201, added.text
    dispatcher = alerting_for(board.infra.db)
    hostile = alert(route="/x\r\nBcc: evil@example.com", instance="{{ 7 * 7 }}")
    await dispatcher.accept(evaluation(datetime.now(UTC), hostile))
    await dispatcher.flush()

    shown = (await board.client.get("/api/ops/alerts", headers=owner)).json()
    assert [a["rule"] for a in shown["alerts"]] == ["HighErrorRatio"]
    assert shown["silences"] == []
    assert sorted(n["channel"] for n in shown["notifications"]) == ["email", "inapp", "log"]
    assert {n["status"] for n in shown["notifications"]} == {"sent"}

    async with board.infra.db.transaction() as tx:
        alerts = select(EmailOutboxRecord).where(EmailOutboxRecord.idempotency_key.like("alert:%"))
        (stored,) = (await tx.session.execute(alerts)).scalars()
    message = stored.message
    assert message["subject"] == "[FIRING:1] HighErrorRatio"
    assert "route=/x  Bcc: evil@example.com" in message["text"]
    assert "{{ 7 * 7 }}" in message["text"]  # shown as written, never evaluated
    for _ in range(500):  # the in-process sender delivers it (bounded: 10 s)
        if any("alert" in o.message.tags for o in memory.sent):
            break
        await asyncio.sleep(0.02)
    (delivered,) = [o.message for o in memory.sent if "alert" in o.message.tags]
    assert [a.email for a in delivered.to] == ["oncall@example.com"]
    mime = delivered.to_mime()
    assert mime["Subject"] == "[FIRING:1] HighErrorRatio"
    assert mime["Bcc"] is None

    mine = (await board.client.get("/api/me/notifications", headers=owner)).json()["items"]
    assert [(n["kind"], n["title"]) for n in mine] == [("alert", "[FIRING:1] HighErrorRatio")]
    theirs = (await board.client.get("/api/me/notifications", headers=member)).json()["items"]
    assert [n["kind"] for n in theirs] != ["alert"]
    assert owner_id != member_id
