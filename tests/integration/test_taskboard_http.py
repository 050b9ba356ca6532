"""taskboard's HTTP edges on both databases: routing, methods, media types, field names."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from corestone import Infrastructure, Settings
from corestone.observability.health import HealthRegistry
from taskboard.app import create_app
from tests.integration.conftest import Board
from tests.integration.lifespan import lifespan_of

PROBLEM = "application/problem+json"


async def test_patch_on_bulk_is_405_listing_the_methods_of_the_path(board: Board) -> None:
    """``/tasks/bulk`` is not caught by ``{task_id}``: PATCH is 405, and Allow lists POST."""
    _, auth = await board.signup("Bo")
    ws = await board.workspace(auth)
    response = await board.client.patch(
        f"/api/workspaces/{ws}/tasks/bulk", json={"title": "x"}, headers=auth
    )
    assert response.status_code == 405, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.headers["allow"] == "POST"


async def test_a_405_allow_header_lists_every_method_of_the_path(board: Board) -> None:
    """PUT on a task answers 405 naming GET, HEAD, PATCH and DELETE, not only the first route."""
    _, auth = await board.signup("Al")
    ws = await board.workspace(auth)
    task = await board.task(auth, ws)
    response = await board.client.put(f"/api/workspaces/{ws}/tasks/{task['id']}", headers=auth)
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "PATCH", "DELETE"}
    listing = await board.client.delete(f"/api/workspaces/{ws}/tasks", headers=auth)
    assert set(listing.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}


async def test_a_non_utf8_body_is_the_same_problem_as_malformed_json(board: Board) -> None:
    """Bytes that are not UTF-8 are a 400 invalid_input naming the body, as bad JSON is."""
    _, auth = await board.signup("Ut")
    ws = await board.workspace(auth)
    url = f"/api/workspaces/{ws}/tasks"
    headers = auth | {"Content-Type": "application/json"}
    malformed = await board.client.post(url, content=b'{"title": ', headers=headers)
    not_utf8 = await board.client.post(url, content=b'{"title": "\xff\xfe"}', headers=headers)
    for response in (malformed, not_utf8):
        assert response.status_code == 400, response.text
        assert response.headers["content-type"].startswith(PROBLEM)
        body = response.json()
        assert (body["code"], body["field"]) == ("invalid_input", "body")
        assert body["errors"][0]["rule"] == "json_invalid"


@pytest.mark.parametrize(
    "body",
    [
        b'{"title": "t", "assignee_id": NaN}',
        b'{"title": "t", "assignee_id": Infinity}',
        b'{"title": "t", "assignee_id": -Infinity}',
        b'{"title": "t", "assignee_id": 1e400}',
    ],
)
async def test_nan_and_infinity_are_malformed_json_not_a_field_error(
    board: Board, body: bytes
) -> None:
    """NaN, Infinity and a number past a double's range are not JSON (RFC 8259): Python's
    parser reads them, so they used to reach the field and come back as a 422 blaming
    ``assignee_id``. The body is malformed: 400, rule json_invalid, and nothing stored."""
    _, auth = await board.signup("Nf")
    ws = await board.workspace(auth)
    url = f"/api/workspaces/{ws}/tasks"
    headers = auth | {"Content-Type": "application/json"}
    response = await board.client.post(url, content=body, headers=headers)
    assert response.status_code == 400, response.text
    problem = response.json()
    assert (problem["code"], problem["field"]) == ("invalid_input", "body")
    assert problem["errors"][0]["rule"] == "json_invalid"
    listing = await board.client.get(url, headers=auth)
    assert listing.json()["items"] == []
    fine = await board.client.post(
        url, content=b'{"title": "t", "description": "1.5e3"}', headers=headers
    )
    assert fine.status_code == 201, fine.text


async def test_a_204_carries_no_content_type(board: Board) -> None:
    """A deleted task's 204 has no body and so no content type."""
    _, auth = await board.signup("Nc")
    ws = await board.workspace(auth)
    task = await board.task(auth, ws)
    response = await board.client.delete(f"/api/workspaces/{ws}/tasks/{task['id']}", headers=auth)
    assert response.status_code == 204
    assert "content-type" not in response.headers
    assert response.content == b""


@pytest.fixture
async def steady_board(database_url: str, taskboard_schema: None) -> AsyncIterator[Board]:
    """A board whose health documents are the same bytes from one request to the next.

    ``/health/live`` reports the uptime and ``/health/ready`` each check's round trip,
    rounded to 3 decimals: their length changes between two requests (``0.51`` is one
    character shorter than ``0.512``), and readiness is only cached for a second. A
    clock that stands still freezes the uptime and keeps the first readiness report for
    good, so a GET and a HEAD can be compared byte for byte.
    """
    settings = Settings(database_url=database_url, env="test")
    health = HealthRegistry(cache_seconds=60.0, clock=lambda: 1000.0)
    infra = Infrastructure(settings, health=health)
    app = create_app(infra)
    async with lifespan_of(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://taskboard") as client:
            yield Board(client, infra)


async def test_head_answers_as_get_without_a_body(steady_board: Board) -> None:
    """HEAD on a GET route (readiness, /api/me, a task) has GET's status and headers, no body.

    On ``steady_board``: with the real clock, the health documents' timings made the two
    Content-Lengths differ now and then (the test was flaky under load, not the server).
    """
    board = steady_board
    _, auth = await board.signup("He")
    ws = await board.workspace(auth)
    task = await board.task(auth, ws)
    for url in (
        "/health/ready",
        "/health/live",
        "/api/me",
        f"/api/workspaces/{ws}/tasks/{task['id']}",
    ):
        got = await board.client.get(url, headers=auth)
        head = await board.client.head(url, headers=auth)
        assert head.status_code == got.status_code == 200, url
        assert head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"]
        assert head.headers["content-length"] == got.headers["content-length"]
    assert (await board.client.head("/api/me")).status_code == 401


async def test_a_bulk_items_non_member_assignee_is_named_with_its_index(board: Board) -> None:
    """The second item's stranger assignee is reported as ``items[1].assignee_id``."""
    owner_id, auth = await board.signup("Ow")
    stranger_id, _ = await board.signup("St")
    ws = await board.workspace(auth)
    response = await board.client.post(
        f"/api/workspaces/{ws}/tasks/bulk",
        json={
            "items": [
                {"title": "a", "assignee_id": owner_id},
                {"title": "b", "assignee_id": stranger_id},
            ]
        },
        headers=auth,
    )
    assert response.status_code == 422
    assert response.json()["field"] == "items[1].assignee_id"
    single = await board.client.post(
        f"/api/workspaces/{ws}/tasks", json={"title": "c", "assignee_id": stranger_id}, headers=auth
    )
    assert single.json()["field"] == "assignee_id"


async def test_a_null_title_in_patch_names_title(board: Board) -> None:
    """``{"title": null}`` is refused naming ``title``, not ``body``; a null assignee unassigns."""
    user_id, auth = await board.signup("Nu")
    ws = await board.workspace(auth)
    task = await board.task(auth, ws, assignee_id=user_id)
    url = f"/api/workspaces/{ws}/tasks/{task['id']}"
    for name in ("title", "description", "status"):
        refused = await board.client.patch(
            url, json={name: None}, headers=auth | {"If-Match": '"1"'}
        )
        assert refused.status_code == 422
        assert refused.json()["field"] == name
    cleared = await board.client.patch(
        url, json={"assignee_id": None}, headers=auth | {"If-Match": '"1"'}
    )
    assert cleared.status_code == 200
    assert cleared.json()["assignee_id"] is None


async def test_json_sent_as_text_plain_is_415(board: Board) -> None:
    """Valid JSON with a non-JSON content type is 415 saying it must be application/json."""
    _, auth = await board.signup("Tp")
    ws = await board.workspace(auth)
    url = f"/api/workspaces/{ws}/tasks"
    for content_type in ("text/plain", None):
        headers = auth | ({"Content-Type": content_type} if content_type else {})
        response = await board.client.post(url, content=b'{"title": "x"}', headers=headers)
        assert response.status_code == 415, (content_type, response.text)
        assert response.headers["content-type"].startswith(PROBLEM)
        assert "application/json" in response.json()["detail"]
    fine = await board.client.post(
        url,
        content=b'{"title": "x"}',
        headers=auth | {"Content-Type": "application/json; charset=utf-8"},
    )
    assert fine.status_code == 201


async def test_audit_entries_give_ids_as_integers(board: Board) -> None:
    """``entity_id`` and ``actor_id`` are integers, like every other id of the API."""
    user_id, auth = await board.signup("Au")
    ws = await board.workspace(auth)
    task = await board.task(auth, ws)
    entries = (await board.client.get(f"/api/workspaces/{ws}/audit", headers=auth)).json()["items"]
    created = next(e for e in entries if e["entity"] == "Task")
    assert created["entity_id"] == task["id"]
    assert created["actor_id"] == user_id


async def test_unknown_and_repeated_query_parameters_are_422_naming_them(board: Board) -> None:
    """``?foo=bar`` and ``?status=open&status=done`` are refused, not ignored or last-wins."""
    _, auth = await board.signup("Qp")
    ws = await board.workspace(auth)
    await board.task(auth, ws)
    url = f"/api/workspaces/{ws}/tasks"
    cases = [
        (url, "foo=bar", "foo", "unknown_parameter"),
        (url, "status=open&status=done", "status", "repeated_parameter"),
        (url, "limit=5&limit=5", "limit", "repeated_parameter"),
        ("/api/me", "verbose=1", "verbose", "unknown_parameter"),
        (f"/api/workspaces/{ws}/audit", "status=open", "status", "unknown_parameter"),
        ("/api/ops/breakers", "x=", "x", "unknown_parameter"),
    ]
    for path, query, field, rule in cases:
        response = await board.client.get(f"{path}?{query}", headers=auth)
        assert response.status_code == 422, (path, query, response.text)
        body = response.json()
        assert (body["code"], body["field"], body["rule"]) == ("invalid_input", field, rule)
        assert field in body["detail"]
    fine = await board.client.get(f"{url}?status=open&limit=5", headers=auth)
    assert fine.status_code == 200
    assert len(fine.json()["items"]) == 1


async def test_if_match_compares_strongly_and_refuses_what_is_no_etag(board: Board) -> None:
    """Weak and opaque tags are 412, unquoted or garbage values 422, ``*`` matches any
    version, a stale version is a 412 with the current version, a list may name one."""
    _, auth = await board.signup("Im")
    ws = await board.workspace(auth)
    task = await board.task(auth, ws, title="v1")
    url = f"/api/workspaces/{ws}/tasks/{task['id']}"

    async def patch(if_match: str, title: str = "new") -> tuple[int, dict[str, object]]:
        response = await board.client.patch(
            url, json={"title": title}, headers=auth | {"If-Match": if_match}
        )
        if response.status_code != 200:
            assert response.headers["content-type"].startswith(PROBLEM)
        return response.status_code, response.json()

    for weak_or_opaque in ('W/"1"', '"abc"', '"0"', 'W/"1", "x"'):
        status, body = await patch(weak_or_opaque)
        assert (status, body["code"], body["field"]) == (412, "precondition_failed", "If-Match")
    for malformed in ("1", "abc", '"1', "W/1", "1 OR 1", '"1" "2"', ""):
        status, body = await patch(malformed)
        assert (status, body["code"], body["field"]) == (422, "invalid_input", "If-Match"), (
            malformed
        )
    status, body = await patch('"1", "2"')
    assert (status, body["rule"]) == (422, "single_etag")

    status, body = await patch('W/"9", "1"', title="v2")
    assert (status, body["version"]) == (200, 2)
    status, body = await patch('"1"')
    assert (status, body["code"], body["current_version"]) == (412, "stale_version", 2)
    status, body = await patch("*", title="v3")
    assert (status, body["version"], body["title"]) == (200, 3, "v3")
    gone = await board.client.patch(
        f"/api/workspaces/{ws}/tasks/999999", json={"title": "x"}, headers=auth | {"If-Match": "*"}
    )
    assert gone.status_code == 404


async def test_probe_endpoints_ignore_query_strings_the_api_refuses(board: Board) -> None:
    """Health and metrics answer 200 with a monitor's cache-busting or repeated parameters
    (docs/contracts.md: strict probes would report an outage), while the API under the
    same parameters stays strict (422 naming it)."""
    _, auth = await board.signup("Qs")
    for url in ("/health/live", "/health/ready", "/metrics"):
        for query in ("_=1733212345", "nocache=1&nocache=2", "a%20b=&="):
            got = await board.client.get(f"{url}?{query}")
            assert got.status_code == 200, (url, query, got.text)
            head = await board.client.head(f"{url}?{query}")
            assert head.status_code == 200, (url, query)
    api = await board.client.get("/api/me?_=1733212345", headers=auth)
    assert (api.status_code, api.json()["field"]) == (422, "_")
