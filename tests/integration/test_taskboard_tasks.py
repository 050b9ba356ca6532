"""taskboard tasks over HTTP on both databases: list modes, bulk, PATCH, delete, audit."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import Board

PROBLEM = "application/problem+json"


async def _list(board: Board, auth: dict[str, str], ws: int, **params: Any) -> Any:
    response = await board.client.get(f"/api/workspaces/{ws}/tasks", params=params, headers=auth)
    assert response.status_code == 200, response.text
    return response.json()


async def _count(board: Board, auth: dict[str, str], ws: int) -> int:
    return int((await _list(board, auth, ws, page=1, limit=1))["total"])


async def test_filters_sort_and_both_pagination_modes(board: Board) -> None:
    """Listing filters by status, assignee and case-blind q, sorts both ways, and pages by number
    (with a total) or by cursor (without) over every task once."""
    user_id, auth = await board.signup("Ana")
    ws = await board.workspace(auth)
    titles = ["banana bread", "apple pie", "cherry tart", "apple crumble", "date loaf"]
    for index, title in enumerate(titles):
        await board.task(
            auth,
            ws,
            title=title,
            status="done" if index % 2 else "open",
            assignee_id=user_id if index < 2 else None,
        )

    by_title = await _list(board, auth, ws, sort="title")
    assert [t["title"] for t in by_title["items"]] == sorted(titles)
    by_title_desc = await _list(board, auth, ws, sort="-title")
    assert [t["title"] for t in by_title_desc["items"]] == sorted(titles, reverse=True)

    done = await _list(board, auth, ws, status="done")
    assert {t["title"] for t in done["items"]} == {"apple pie", "apple crumble"}
    mine = await _list(board, auth, ws, assignee_id=user_id)
    assert {t["title"] for t in mine["items"]} == {"banana bread", "apple pie"}
    apples = await _list(board, auth, ws, q="APPLE")
    assert {t["title"] for t in apples["items"]} == {"apple pie", "apple crumble"}

    page = await _list(board, auth, ws, page=2, limit=2, sort="title")
    assert page["total"] == 5
    assert page["page"] == 2
    assert [t["title"] for t in page["items"]] == sorted(titles)[2:4]
    assert "total" not in await _list(board, auth, ws, limit=2)

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "sort": "-title"}
        if cursor:
            params["cursor"] = cursor
        body = await _list(board, auth, ws, **params)
        seen += [t["title"] for t in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(titles, reverse=True)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"sort": "title; DROP TABLE tasks"}, "sort"),
        ({"sort": "workspace_id"}, "sort"),
        ({"sort": "password"}, "sort"),
        ({"limit": 10_000}, "limit"),
        ({"limit": 0}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "x" * 5000}, "cursor"),
        ({"page": 0}, "page"),
        ({"page": 1, "cursor": "abc"}, "cursor"),
        ({"status": "open' OR '1'='1"}, "status"),
    ],
)
async def test_hostile_list_parameters_are_named_422s(
    board: Board, params: dict[str, Any], field: str
) -> None:
    """A bad or injected list parameter is a problem+json 422 that names the parameter."""
    _, auth = await board.signup("Eve")
    ws = await board.workspace(auth)
    response = await board.client.get(f"/api/workspaces/{ws}/tasks", params=params, headers=auth)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert field in response.text


async def test_wildcards_and_sql_in_q_are_plain_text(board: Board) -> None:
    """%, _ and SQL in the q search match only themselves, literally."""
    _, auth = await board.signup("Wil")
    ws = await board.workspace(auth)
    await board.task(auth, ws, title="100% done")
    await board.task(auth, ws, title="1000 things")
    await board.task(auth, ws, title="a_b")
    await board.task(auth, ws, title="axb")
    assert [t["title"] for t in (await _list(board, auth, ws, q="100%"))["items"]] == ["100% done"]
    assert [t["title"] for t in (await _list(board, auth, ws, q="a_b"))["items"]] == ["a_b"]
    assert (await _list(board, auth, ws, q="' OR 1=1 --"))["items"] == []


async def test_cursor_from_another_sort_is_refused(board: Board) -> None:
    """A cursor issued for sort=title is a 422 naming the cursor when used with sort=-title."""
    _, auth = await board.signup("Cur")
    ws = await board.workspace(auth)
    for index in range(3):
        await board.task(auth, ws, title=f"t{index}")
    cursor = (await _list(board, auth, ws, limit=1, sort="title"))["next_cursor"]
    response = await board.client.get(
        f"/api/workspaces/{ws}/tasks", params={"cursor": cursor, "sort": "-title"}, headers=auth
    )
    assert response.status_code == 422
    assert "cursor" in response.text


async def test_bulk_create_is_all_or_nothing(board: Board) -> None:
    """Bulk create makes 20 tasks in order; a bad assignee, empty title or 501 items make none."""
    user_id, auth = await board.signup("Bob")
    ws = await board.workspace(auth)
    url = f"/api/workspaces/{ws}/tasks/bulk"
    items = [{"title": f"bulk {i}", "assignee_id": user_id} for i in range(20)]
    created = await board.client.post(url, json={"items": items}, headers=auth)
    assert created.status_code == 201, created.text
    body = created.json()["items"]
    assert [t["title"] for t in body] == [f"bulk {i}" for i in range(20)]
    assert all(t["version"] == 1 and t["workspace_id"] == ws for t in body)

    stranger_id, _ = await board.signup("Stranger")
    bad_assignee = [{"title": "ok"}, {"title": "nope", "assignee_id": stranger_id}]
    refused = await board.client.post(url, json={"items": bad_assignee}, headers=auth)
    assert refused.status_code == 422
    assert "assignee_id" in refused.text
    invalid = await board.client.post(
        url, json={"items": [{"title": "ok"}, {"title": ""}]}, headers=auth
    )
    assert invalid.status_code == 422
    too_many = await board.client.post(url, json={"items": [{"title": "x"}] * 501}, headers=auth)
    assert too_many.status_code in (413, 422)
    assert await _count(board, auth, ws) == 20


async def test_patch_needs_a_current_if_match_and_refuses_read_only_fields(board: Board) -> None:
    """PATCH without If-Match is a 428, with a stale one a 412 with the current version, and
    read-only fields, an empty title or a malformed If-Match are 422s that change nothing."""
    _, auth = await board.signup("Pat")
    ws = await board.workspace(auth)
    task = await board.task(auth, ws, title="draft")
    url = f"/api/workspaces/{ws}/tasks/{task['id']}"

    missing = await board.client.patch(url, json={"title": "x"}, headers=auth)
    assert missing.status_code == 428
    assert "If-Match" in missing.text

    updated = await board.client.patch(
        url, json={"title": "final", "status": "done"}, headers=auth | {"If-Match": '"1"'}
    )
    assert updated.status_code == 200, updated.text
    assert updated.headers["etag"] == '"2"'
    assert updated.json()["title"] == "final"
    assert updated.json()["status"] == "done"
    assert updated.json()["description"] == task["description"]

    stale = await board.client.patch(
        url, json={"title": "lost update"}, headers=auth | {"If-Match": '"1"'}
    )
    assert stale.status_code == 412
    assert stale.headers["content-type"].startswith(PROBLEM)
    assert stale.json()["current_version"] == 2
    got = await board.client.get(url, headers=auth)
    assert got.json()["title"] == "final"

    for bad in ({"version": 7}, {"workspace_id": 999}, {"id": 5}, {"title": ""}):
        response = await board.client.patch(url, json=bad, headers=auth | {"If-Match": '"2"'})
        assert response.status_code == 422, bad
    garbage = await board.client.patch(
        url, json={"title": "y"}, headers=auth | {"If-Match": "2 OR 1"}
    )
    assert garbage.status_code == 422
    assert (await board.client.get(url, headers=auth)).json()["version"] == 2


async def test_a_soft_deleted_task_is_out_of_reach_until_restored(board: Board) -> None:
    """A deleted task is a 404 to get, list, delete and patch, and is back after a restore."""
    _, auth = await board.signup("Del")
    ws = await board.workspace(auth)
    keep = await board.task(auth, ws, title="keep")
    gone = await board.task(auth, ws, title="gone")
    url = f"/api/workspaces/{ws}/tasks/{gone['id']}"

    deleted = await board.client.delete(url, headers=auth)
    assert deleted.status_code == 204
    assert (await board.client.get(url, headers=auth)).status_code == 404
    assert [t["id"] for t in (await _list(board, auth, ws))["items"]] == [keep["id"]]
    assert (await board.client.delete(url, headers=auth)).status_code == 404
    patch = await board.client.patch(url, json={"title": "x"}, headers=auth | {"If-Match": '"1"'})
    assert patch.status_code == 404

    restored = await board.client.post(f"{url}/restore", headers=auth)
    assert restored.status_code == 200, restored.text
    assert restored.json()["title"] == "gone"
    assert (await board.client.get(url, headers=auth)).status_code == 200
    assert await _count(board, auth, ws) == 2


async def test_another_workspaces_task_is_out_of_reach(board: Board) -> None:
    """A member of workspace B addressing A's task through B's path changes nothing."""
    _, alice = await board.signup("Alice")
    _, mallory = await board.signup("Mallory")
    ws_a = await board.workspace(alice, "A")
    ws_b = await board.workspace(mallory, "B")
    secret = await board.task(alice, ws_a, title="secret")
    through_b = f"/api/workspaces/{ws_b}/tasks/{secret['id']}"
    direct = f"/api/workspaces/{ws_a}/tasks/{secret['id']}"

    assert (await board.client.get(through_b, headers=mallory)).status_code == 404
    patched = await board.client.patch(
        through_b, json={"title": "pwned"}, headers=mallory | {"If-Match": '"1"'}
    )
    assert patched.status_code == 404
    assert (await board.client.delete(through_b, headers=mallory)).status_code == 404
    assert (await board.client.post(f"{through_b}/restore", headers=mallory)).status_code == 404
    assert (await board.client.get(direct, headers=mallory)).status_code == 404
    assert (
        await board.client.get(f"/api/workspaces/{ws_a}/audit", headers=mallory)
    ).status_code == 404
    audit_b = (await board.client.get(f"/api/workspaces/{ws_b}/audit", headers=mallory)).json()
    assert all(entry["entity_id"] != secret["id"] for entry in audit_b["items"])

    unchanged = (await board.client.get(direct, headers=alice)).json()
    assert unchanged["title"] == "secret"
    assert unchanged["version"] == 1


async def test_audit_log_records_who_changed_what(board: Board) -> None:
    """Create, update, delete and restore are audited newest first with actor, request id and the
    title's before/after, and the audit pages by cursor without repeats."""
    user_id, auth = await board.signup("Aud")
    ws = await board.workspace(auth)
    task = await board.task(auth, ws, title="before")
    url = f"/api/workspaces/{ws}/tasks/{task['id']}"
    request_id = "audit-trail-0001"
    patched = await board.client.patch(
        url, json={"title": "after"}, headers=auth | {"If-Match": '"1"', "X-Request-ID": request_id}
    )
    assert patched.status_code == 200
    assert (await board.client.delete(url, headers=auth)).status_code == 204
    assert (await board.client.post(f"{url}/restore", headers=auth)).status_code == 200

    response = await board.client.get(f"/api/workspaces/{ws}/audit", headers=auth)
    assert response.status_code == 200, response.text
    entries = [e for e in response.json()["items"] if e["entity_id"] == task["id"]]
    assert [e["action"] for e in entries] == ["restore", "delete", "update", "create"]
    update = entries[2]
    assert update["entity"] == "Task"
    assert update["actor_id"] == user_id
    assert update["correlation_id"] == request_id
    assert update["changes"]["title"] == {"before": "before", "after": "after"}
    assert set(update) >= {
        "action",
        "entity",
        "entity_id",
        "actor_id",
        "changes",
        "correlation_id",
        "at",
    }

    first = await board.client.get(f"/api/workspaces/{ws}/audit", params={"limit": 2}, headers=auth)
    second = await board.client.get(
        f"/api/workspaces/{ws}/audit",
        params={"limit": 2, "cursor": first.json()["next_cursor"]},
        headers=auth,
    )
    ids = [e["id"] for e in first.json()["items"] + second.json()["items"]]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == 4
