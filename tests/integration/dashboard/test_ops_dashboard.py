"""GET /api/ops/dashboard and /ops: every panel for operators, a clear refusal for others."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from sqlalchemy import text

from taskboard.api.dashboard import OPS_ASSETS
from taskboard.domain.models import TokenRole
from taskboard.services import UserService
from tests.integration.conftest import Board

PANELS = {"traffic", "health", "breakers", "cache", "queries", "backlogs", "live", "alerts"}
OPERATOR_ONLY = ["/api/ops/dashboard", "/api/ops/breakers", "/api/ops/cache", "/api/ops/queries"]


async def _owner(board: Board) -> dict[str, str]:
    _, auth = await board.signup("Owner")
    ws = await board.workspace(auth)
    await board.task(auth, ws)
    return auth


async def _dashboard(board: Board, auth: dict[str, str]) -> dict[str, Any]:
    response = await board.client.get("/api/ops/dashboard", headers=auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_an_owner_gets_every_panel_with_its_data(board: Board) -> None:
    """Each panel is in the answer; those whose sources this process has answer ok."""
    body = await _dashboard(board, await _owner(board))
    assert set(body["panels"]) >= PANELS
    panels = body["panels"]
    for name in PANELS - {"traffic"}:
        assert panels[name]["ok"] is True, (name, panels[name])
    assert panels["health"]["data"]["status"] in ("pass", "warn")
    assert any(b["name"] == "database" for b in panels["breakers"]["data"]["breakers"])
    assert [t["tier"] for t in panels["cache"]["data"]["tiers"]] == ["l1", "l2"]
    assert {"top", "suggestions", "sources"} <= set(panels["queries"]["data"])
    backlogs = panels["backlogs"]["data"]
    assert {"email", "events", "consumers"} <= set(backlogs)
    assert panels["live"]["data"]["open"] == 0


async def test_recent_deliveries_carry_no_workspace_content(board: Board) -> None:
    """Recent deliveries show status and provider, never recipients, subjects or errors."""
    auth = await _owner(board)  # the workspace's welcome email is queued by its saga
    body = await _dashboard(board, auth)
    for message in body["panels"]["backlogs"]["data"]["email"]["recent"]:
        assert set(message) == {"id", "status", "provider", "attempts", "updated_at"}
    assert "@example.com" not in str(body)


async def test_an_operator_token_is_allowed_without_a_workspace(board: Board) -> None:
    """A token minted with the operator role reads operations data; the user's other
    token, without it, is refused."""
    user_id, user_auth = await board.signup("Operator")
    token = await UserService(board.infra.db).create_token(user_id, role=TokenRole.OPERATOR)
    operator = {"Authorization": f"Bearer {token}"}
    for path in OPERATOR_ONLY:
        assert (await board.client.get(path, headers=operator)).status_code == 200, path
        assert (await board.client.get(path, headers=user_auth)).status_code == 403, path


async def test_a_member_and_a_stranger_get_403_and_anonymous_401(board: Board) -> None:
    """Owning nothing (member of another's workspace, or of none) is 403 problem+json;
    no token is 401. The member still reads their workspace's emails."""
    owner = await _owner(board)
    ws = await board.workspace(owner, "Shared")
    member_id, member = await board.signup("Member")
    added = await board.client.post(
        f"/api/workspaces/{ws}/members",
        json={"user_id": member_id, "role": "member"},
        headers=owner,
    )
    assert added.status_code == 201, added.text
    _, stranger = await board.signup("Stranger")
    for path in OPERATOR_ONLY:
        for auth in (member, stranger):
            refused = await board.client.get(path, headers=auth)
            assert refused.status_code == 403, path
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert refused.json()["code"] == "forbidden"
        assert (await board.client.get(path)).status_code == 401, path
    assert (await board.client.get("/api/ops/emails", headers=member)).status_code == 200


async def test_a_failing_source_costs_its_panel_only(board: Board) -> None:
    """With the email outbox table gone, the backlogs panel answers its error, and the
    answer is still 200 with every other panel."""
    auth = await _owner(board)
    async with board.infra.db.engine.begin() as connection:
        await connection.execute(
            text("ALTER TABLE corestone_email_outbox RENAME TO corestone_email_outbox_gone")
        )
    # A load that outlives a caller's wait goes on, and a later poll shows its outcome
    # (on a busy machine SQLite's first answer may be "still loading").
    for _ in range(40):
        panels = (await _dashboard(board, auth))["panels"]
        if not panels["backlogs"].get("error", "").startswith("still loading"):
            break
        await asyncio.sleep(0.25)
    assert panels["backlogs"]["ok"] is False
    assert "corestone_email_outbox" in panels["backlogs"]["error"]
    for name in ("health", "breakers", "cache", "live"):
        assert panels[name]["ok"] is True, (name, panels[name])


async def test_the_page_is_a_shell_served_like_the_main_page(board: Board) -> None:
    """/ops and its named files answer with the strict CSP and an ETag; others are 404."""
    page = await board.client.get("/ops")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    again = await board.client.get("/ops", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304
    for name in ("ops.js", "panels.js", "charts.js", "ops.css"):
        assert (await board.client.get(f"/ops/static/{name}")).status_code == 200, name
    assert (await board.client.get("/ops/static/index.html")).status_code == 404
    assert (await board.client.get("/ops/static/..%2Fapp.js")).status_code == 404


async def test_the_page_names_no_other_host_and_runs_no_inline_code(board: Board) -> None:
    """No file of /ops names an http(s) URL or imports from outside this origin's files,
    and the HTML has no inline script, style or handler (the CSP would refuse them)."""
    files = ["/ops", *(f"/ops/static/{name}" for name in OPS_ASSETS)]
    for path in files:
        body = (await board.client.get(path)).text
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", body), path
        for specifier in re.findall(r"""\bfrom\s+["']([^"']+)["']""", body):
            assert specifier.startswith("./") or specifier == "/static/api.js", (path, specifier)
    html = (await board.client.get("/ops")).text
    assert "<style" not in html
    assert not re.search(r"\sstyle=", html)
    assert not re.search(r"\son[a-z]+=", html)
    assert all('src="/ops/static/' in tag for tag in re.findall(r"<script\b[^>]*>", html))
