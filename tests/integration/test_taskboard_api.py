"""taskboard's API end to end in process, on SQLite and on PostgreSQL."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Board


async def test_signup_me_workspace_and_tasks_round_trip(board: Board) -> None:
    """A new user creates a workspace and tasks and reads them back with ETags."""
    user_id, auth = await board.signup("Grace")
    ws = await board.workspace(auth, "Compilers")
    me = (await board.client.get("/api/me", headers=auth)).json()
    assert me["user"]["id"] == user_id
    assert me["workspaces"] == [
        {
            "id": ws,
            "name": "Compilers",
            "role": "owner",
            "created_at": me["workspaces"][0]["created_at"],
        }
    ]

    created = await board.task(
        auth, ws, title="  Parse  ", description="line 1\nline 2", assignee_id=user_id
    )
    assert created["title"] == "Parse"
    assert created["status"] == "open"
    assert created["version"] == 1
    assert created["workspace_id"] == ws
    assert created["assignee_id"] == user_id

    got = await board.client.get(f"/api/workspaces/{ws}/tasks/{created['id']}", headers=auth)
    assert got.status_code == 200
    assert got.headers["etag"] == '"1"'
    assert got.json() == created


async def test_list_pages_with_cursor_and_filters(board: Board) -> None:
    """Keyset pages return every task once, in order, and filters narrow the list."""
    _, auth = await board.signup("Lin")
    ws = await board.workspace(auth)
    ids = [
        (await board.task(auth, ws, title=f"t{i}", status="done" if i % 3 == 0 else "open"))["id"]
        for i in range(7)
    ]

    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = (
            await board.client.get(f"/api/workspaces/{ws}/tasks", params=params, headers=auth)
        ).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids

    done = (
        await board.client.get(
            f"/api/workspaces/{ws}/tasks", params={"status": "done"}, headers=auth
        )
    ).json()
    assert [t["id"] for t in done["items"]] == [ids[0], ids[3], ids[6]]


async def test_other_workspaces_answer_404_never_403_or_data(board: Board) -> None:
    """A non-member gets 404 for every path under a workspace, and foreign task ids 404 too."""
    _, alice = await board.signup("Alice")
    bob_id, bob = await board.signup("Bob")
    alice_ws = await board.workspace(alice, "Alice's")
    bob_ws = await board.workspace(bob, "Bob's")
    secret = await board.task(alice, alice_ws, title="secret")

    attempts = [
        board.client.get(f"/api/workspaces/{alice_ws}/tasks", headers=bob),
        board.client.get(f"/api/workspaces/{alice_ws}/tasks/{secret['id']}", headers=bob),
        board.client.post(f"/api/workspaces/{alice_ws}/tasks", json={"title": "x"}, headers=bob),
        board.client.post(
            f"/api/workspaces/{alice_ws}/members", json={"user_id": bob_id}, headers=bob
        ),
        board.client.get(f"/api/workspaces/{bob_ws}/tasks/{secret['id']}", headers=bob),
        board.client.get("/api/workspaces/999999/tasks", headers=bob),
    ]
    for attempt in attempts:
        response = await attempt
        assert response.status_code == 404, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert "secret" not in response.text
    listing = (await board.client.get(f"/api/workspaces/{bob_ws}/tasks", headers=bob)).json()
    assert listing["items"] == []


async def test_members_owner_only_and_assignment_needs_membership(board: Board) -> None:
    """Only owners add members; a member may work in the workspace; assignees must be members."""
    _, owner = await board.signup("Owner")
    member_id, member = await board.signup("Member")
    outsider_id, _ = await board.signup("Outsider")
    ws = await board.workspace(owner)

    not_member = await board.client.post(
        f"/api/workspaces/{ws}/tasks",
        json={"title": "x", "assignee_id": outsider_id},
        headers=owner,
    )
    assert not_member.status_code == 422
    assert not_member.json()["field"] == "assignee_id"

    added = await board.client.post(
        f"/api/workspaces/{ws}/members", json={"user_id": member_id}, headers=owner
    )
    assert added.status_code == 201
    assert added.json() == {"workspace_id": ws, "user_id": member_id, "role": "member"}
    again = await board.client.post(
        f"/api/workspaces/{ws}/members", json={"user_id": member_id}, headers=owner
    )
    assert again.status_code == 409

    forbidden = await board.client.post(
        f"/api/workspaces/{ws}/members", json={"user_id": outsider_id}, headers=member
    )
    assert forbidden.status_code == 403
    assert (await board.task(member, ws, assignee_id=member_id))["assignee_id"] == member_id
    ghost = await board.client.post(
        f"/api/workspaces/{ws}/members", json={"user_id": 10**12}, headers=owner
    )
    assert ghost.status_code == 422
    assert ghost.json()["field"] == "user_id"


async def test_duplicate_email_conflicts(board: Board) -> None:
    """Signing up twice with one email (in any case) is a 409, and no second user exists."""
    await board.signup("Ann", "ann@example.com")
    again = await board.client.post("/api/users", json={"name": "Ann", "email": "ANN@example.com"})
    assert again.status_code == 409
    assert again.json()["code"] == "conflict"


async def test_request_id_is_echoed_and_in_problems(board: Board) -> None:
    """X-Request-ID comes back on the response and as correlation_id in problem documents."""
    response = await board.client.get("/api/me", headers={"X-Request-ID": "req-123"})
    assert response.status_code == 401
    assert response.headers["x-request-id"] == "req-123"
    assert response.json()["correlation_id"] == "req-123"
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_health_and_metrics(board: Board) -> None:
    """Readiness passes with a database entry, and metrics label routes by template."""
    _, auth = await board.signup("Metric")
    ws = await board.workspace(auth)
    await board.task(auth, ws)
    await board.client.get(f"/api/workspaces/{ws}/tasks", headers=auth)

    ready = await board.client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.headers["content-type"] == "application/health+json"
    document = ready.json()
    assert document["status"] == "pass"
    assert document["checks"]["database:responseTime"][0]["componentType"] == "datastore"
    live = await board.client.get("/health/live")
    assert live.json()["status"] == "pass"

    text = (await board.client.get("/metrics")).text
    samples = [
        sample
        for family in text_string_to_metric_families(text)
        if family.name == "corestone_http_requests"
        for sample in family.samples
        if sample.name == "corestone_http_requests_total"
    ]
    routes = {s.labels["route"] for s in samples}
    assert "/api/workspaces/{ws}/tasks" in routes
    assert not any(str(ws) in route for route in routes)
    assert "corestone_db_pool_checked_out" in text
