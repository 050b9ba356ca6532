"""Removing a member: DELETE /api/workspaces/{ws}/members/{user_id}, owners only."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from corestone.events.outbox import EventOutboxRecord
from taskboard.domain.models import Membership
from tests.integration.conftest import Board


async def _member_removed_events(board: Board) -> list[str]:
    async with board.infra.db.transaction(read_only=True) as tx:
        rows = await tx.session.execute(
            select(EventOutboxRecord.body).where(EventOutboxRecord.type == "member.removed")
        )
        return [row[0] for row in rows]


async def test_an_owner_removes_a_member_with_an_event_and_an_audit_entry(board: Board) -> None:
    """204; the member then gets 404 for the workspace; one member.removed event and one
    audit entry (before: the user and role) were written with it."""
    _, ada = await board.signup("Ada")
    bo_id, bo = await board.signup("Bo")
    ws = await board.workspace(ada)
    added = await board.client.post(
        f"/api/workspaces/{ws}/members", json={"user_id": bo_id}, headers=ada
    )
    assert added.status_code == 201
    assert (await board.client.get(f"/api/workspaces/{ws}/tasks", headers=bo)).status_code == 200
    removed = await board.client.delete(f"/api/workspaces/{ws}/members/{bo_id}", headers=ada)
    assert removed.status_code == 204
    assert removed.content == b""
    assert (await board.client.get(f"/api/workspaces/{ws}/tasks", headers=bo)).status_code == 404
    (body,) = await _member_removed_events(board)
    assert f'"user_id":{bo_id}' in body
    audit = (await board.client.get(f"/api/workspaces/{ws}/audit", headers=ada)).json()
    entry = next(e for e in audit["items"] if e["entity"] == "Membership")
    assert entry["action"] == "delete"
    assert entry["changes"]["user_id"] == {"before": bo_id, "after": None}
    assert entry["changes"]["role"] == {"before": "member", "after": None}


async def test_only_owners_remove_and_the_last_owner_stays(board: Board) -> None:
    """A member gets 403, a stranger 404, an unknown member 404, the last owner removing
    themselves 409, no token 401; none of them writes an event."""
    ada_id, ada = await board.signup("Ada")
    bo_id, bo = await board.signup("Bo")
    _, eve = await board.signup("Eve")
    ws = await board.workspace(ada)
    await board.client.post(f"/api/workspaces/{ws}/members", json={"user_id": bo_id}, headers=ada)
    path = f"/api/workspaces/{ws}/members"
    by_member = await board.client.delete(f"{path}/{ada_id}", headers=bo)
    assert by_member.status_code == 403
    by_stranger = await board.client.delete(f"{path}/{bo_id}", headers=eve)
    assert by_stranger.status_code == 404
    unknown = await board.client.delete(f"{path}/999999", headers=ada)
    assert unknown.status_code == 404
    last_owner = await board.client.delete(f"{path}/{ada_id}", headers=ada)
    assert last_owner.status_code == 409
    assert last_owner.headers["content-type"].startswith("application/problem+json")
    anonymous = await board.client.delete(f"{path}/{bo_id}")
    assert anonymous.status_code == 401
    bad = await board.client.delete(f"{path}/abc", headers=ada)
    assert bad.status_code in (404, 422)
    assert await _member_removed_events(board) == []


async def test_an_owner_may_leave_when_another_owner_stays(board: Board) -> None:
    """With a second owner, an owner removes themselves (204) and loses access."""
    _, ada = await board.signup("Ada")
    bo_id, bo = await board.signup("Bo")
    ws = await board.workspace(ada)
    me = (await board.client.get("/api/me", headers=ada)).json()["user"]["id"]
    await board.client.post(
        f"/api/workspaces/{ws}/members", json={"user_id": bo_id, "role": "owner"}, headers=ada
    )
    left = await board.client.delete(f"/api/workspaces/{ws}/members/{me}", headers=ada)
    assert left.status_code == 204
    assert (await board.client.get(f"/api/workspaces/{ws}/tasks", headers=ada)).status_code == 404
    assert (await board.client.get(f"/api/workspaces/{ws}/tasks", headers=bo)).status_code == 200


async def test_two_owners_removing_each_other_at_once_leave_an_owner(board: Board) -> None:
    """Ada and Bo, the two owners, remove each other at the same moment (five times, in
    five workspaces). Each removal counted two owners before the other committed, so
    both went through and the workspace had none. Now one removal waits for the other:
    one is 204, the other refused (its caller is no longer an owner), and an owner
    stays."""
    ada_id, ada = await board.signup("Ada")
    bo_id, bo = await board.signup("Bo")
    for _ in range(5):
        ws = await board.workspace(ada)
        added = await board.client.post(
            f"/api/workspaces/{ws}/members", json={"user_id": bo_id, "role": "owner"}, headers=ada
        )
        assert added.status_code == 201, added.text
        answers = await asyncio.gather(
            board.client.delete(f"/api/workspaces/{ws}/members/{bo_id}", headers=ada),
            board.client.delete(f"/api/workspaces/{ws}/members/{ada_id}", headers=bo),
        )
        statuses = sorted(a.status_code for a in answers)
        assert statuses[0] == 204, statuses
        assert statuses[1] in (403, 404, 409), statuses
        async with board.infra.db.transaction(read_only=True) as tx:
            owners = await tx.session.scalar(
                select(func.count())
                .select_from(Membership)
                .where(Membership.workspace_id == ws, Membership.role == "owner")
            )
        assert owners == 1
