"""Hostile input to taskboard: each bad request is a 4xx problem naming the field."""

from __future__ import annotations

import pytest

from tests.integration.conftest import Board


async def _task_count(board: Board, auth: dict[str, str], ws: int) -> int:
    listing = await board.client.get(
        f"/api/workspaces/{ws}/tasks", params={"limit": 100}, headers=auth
    )
    return len(listing.json()["items"])


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "missing Authorization"),
        ({"Authorization": "Bearer "}, "Bearer <token>"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "Bearer <token>"),
        ({"Authorization": "Bearer tb_not-a-real-token"}, "invalid bearer token"),
        ({"Authorization": "Bearer ' OR 1=1 --"}, "invalid bearer token"),
        ({"Authorization": "Bearer tb_" + "x" * 5000}, "invalid bearer token"),
    ],
)
async def test_bad_credentials_are_401_problems(
    board: Board, headers: dict[str, str], detail: str
) -> None:
    """Missing, malformed and unknown tokens are 401 problem+json with a reason."""
    response = await board.client.get("/api/me", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert detail in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({"title": 123}, "title", 422),
        ({"title": ["a"]}, "title", 422),
        ({"title": ""}, "title", 422),
        ({"title": "   "}, "title", 422),
        ({"title": "x" * 201}, "title", 422),
        ({"title": "bad\x00byte"}, "title", 422),
        ({"title": "line\r\nInjected: header"}, "title", 422),
        ({"title": "ok", "description": "y" * 10_001}, "description", 422),
        ({"title": "ok", "status": "archived"}, "status", 422),
        ({"title": "ok", "assignee_id": "5"}, "assignee_id", 422),
        ({"title": "ok", "assignee_id": True}, "assignee_id", 422),
        ({"title": "ok", "assignee_id": 2**70}, "assignee_id", 422),
        ({"title": "ok", "assignee_id": -1}, "assignee_id", 422),
        ({"title": "ok", "workspace_id": 1}, "workspace_id", 422),
        ({"description": "no title"}, "title", 422),
    ],
)
async def test_invalid_task_bodies_name_the_field(
    board: Board, body: dict[str, object], field: str, status: int
) -> None:
    """Wrong types, lengths, control characters and unknown fields are refused by field."""
    _, auth = await board.signup("Hostile")
    ws = await board.workspace(auth)
    response = await board.client.post(f"/api/workspaces/{ws}/tasks", json=body, headers=auth)
    assert response.status_code == status, response.text
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["code"] == "invalid_input"
    assert problem["field"] == field
    assert problem["errors"][0]["rule"]
    assert await _task_count(board, auth, ws) == 0


async def test_malformed_json_is_400_naming_the_body(board: Board) -> None:
    """A body that is not JSON is a 400 problem about the body, not a 500."""
    _, auth = await board.signup("Json")
    ws = await board.workspace(auth)
    response = await board.client.post(
        f"/api/workspaces/{ws}/tasks",
        content=b'{"title": "unterminated',
        headers={**auth, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["field"] == "body"


async def test_oversized_body_is_413_and_nothing_written(board: Board) -> None:
    """A body over the configured limit is refused before it is parsed."""
    _, auth = await board.signup("Big")
    ws = await board.workspace(auth)
    response = await board.client.post(
        f"/api/workspaces/{ws}/tasks",
        json={"title": "x", "description": "y" * 100_000},
        headers=auth,
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert await _task_count(board, auth, ws) == 0


async def test_streamed_oversized_body_is_413(board: Board) -> None:
    """A chunked body without Content-Length is counted and cut off at the limit."""
    _, auth = await board.signup("Chunky")
    ws = await board.workspace(auth)

    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"title": "x", "description": "'
        for _ in range(100):
            yield b"z" * 1024
        yield b'"}'

    response = await board.client.post(
        f"/api/workspaces/{ws}/tasks",
        content=chunks(),
        headers={**auth, "Content-Type": "application/json"},
    )
    assert response.status_code == 413


async def test_sql_and_markup_in_text_are_stored_verbatim(board: Board) -> None:
    """Text that looks like SQL or template code is data: stored and returned unchanged."""
    _, auth = await board.signup("Bobby")
    ws = await board.workspace(auth)
    title = "Robert'); DROP TABLE tasks;-- {{ 7*7 }} <script>"
    task = await board.task(auth, ws, title=title, description="%s %(x)s ${x}")
    fetched = (
        await board.client.get(f"/api/workspaces/{ws}/tasks/{task['id']}", headers=auth)
    ).json()
    assert fetched["title"] == title
    assert fetched["description"] == "%s %(x)s ${x}"
    assert await _task_count(board, auth, ws) == 1


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 10**9}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "eyJhZnRlciI6ICIxOyBEUk9QIFRBQkxFIHRhc2tzIn0"}, "cursor"),
        ({"cursor": "A" * 500}, "cursor"),
        ({"status": "open' OR '1'='1"}, "status"),
        ({"assignee_id": "1 OR 1=1"}, "assignee_id"),
    ],
)
async def test_hostile_list_parameters(board: Board, params: dict[str, object], field: str) -> None:
    """Bad limits, forged cursors and injection in filters are 422 naming the parameter."""
    _, auth = await board.signup("Lister")
    ws = await board.workspace(auth)
    response = await board.client.get(f"/api/workspaces/{ws}/tasks", params=params, headers=auth)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


@pytest.mark.parametrize(
    "path",
    ["/api/workspaces/abc/tasks", f"/api/workspaces/{2**70}/tasks", "/api/workspaces/-1/tasks"],
)
async def test_bad_ids_in_paths_are_422_not_500(board: Board, path: str) -> None:
    """Ids that are not positive 64-bit integers are refused before reaching the database."""
    _, auth = await board.signup("Paths")
    response = await board.client.get(path, headers=auth)
    assert response.status_code == 422
    assert response.json()["field"] == "ws"


@pytest.mark.parametrize("spelling", ["0_{n}", "+{n}", "%20{n}", "{n}.0", "{n}%20", "{n}.00"])
async def test_an_integer_in_a_path_or_query_is_digits_only(board: Board, spelling: str) -> None:
    """The document says integer; ``1_0``, ``+10``, `` 10``, ``10.0`` are no spelling of one
    in a URL, yet lax parsing read them all as 10, so one workspace answered at many URLs
    (a cache or a log keyed by URL sees strangers) and ``limit=1_0`` listed ten. Each is
    the 422 naming the parameter a word gets; a task id is already digits (its route)."""
    n = 1
    _, auth = await board.signup("Digits")
    ws = await board.workspace(auth)
    response = await board.client.get(
        f"/api/workspaces/{spelling.format(n=ws)}/tasks", headers=auth
    )
    assert (response.status_code, response.json()["field"]) == (422, "ws"), response.text
    for name in ("limit", "page", "assignee_id"):
        listed = await board.client.get(
            f"/api/workspaces/{ws}/tasks?{name}={spelling.format(n=n)}", headers=auth
        )
        assert (listed.status_code, listed.json()["field"]) == (422, name), listed.text
    audit = await board.client.get(
        f"/api/workspaces/{ws}/audit?limit={spelling.format(n=n)}", headers=auth
    )
    assert (audit.status_code, audit.json()["field"]) == (422, "limit"), audit.text
    plain = await board.client.get(
        f"/api/workspaces/{ws}/tasks?limit=10&assignee_id=1", headers=auth
    )
    assert plain.status_code == 200, plain.text


@pytest.mark.parametrize("suffix", ["", "/restore"])
async def test_a_task_id_of_thousands_of_digits_is_422_not_500(board: Board, suffix: str) -> None:
    """Python refuses to parse an integer of more than 4,300 digits (a guard against
    quadratic parsing), and the task id's route convertor called ``int`` while routing:
    a long id was a 500 with a traceback. It is the 422 of any id past 2**63 - 1; with
    leading zeros it is still the number they pad."""
    _, auth = await board.signup("Long")
    ws = await board.workspace(auth)
    task = await board.task(auth, ws)
    for digits in ("9" * 5000, "1" + "0" * 19):
        url = f"/api/workspaces/{ws}/tasks/{digits}{suffix}"
        response = await board.client.request("GET" if not suffix else "POST", url, headers=auth)
        assert response.status_code == 422, response.text
        assert response.json()["field"] == "task_id"
    padded = f"/api/workspaces/{ws}/tasks/{'0' * 5000}{task['id']}{suffix}"
    response = await board.client.request("GET" if not suffix else "POST", padded, headers=auth)
    assert response.status_code == 200, response.text


async def test_unknown_route_and_method_are_problems(board: Board) -> None:
    """Unknown paths and methods answer with problem+json too."""
    missing = await board.client.get("/api/nope")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    wrong = await board.client.delete("/api/users")
    assert wrong.status_code == 405
    assert wrong.json()["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "email": "not-an-email"},
        {"name": "x", "email": "a@b.c\r\nBcc: victim@example.com"},
        {"name": "x" * 101, "email": "long@example.com"},
        {"name": "x", "email": "x" * 250 + "@example.com"},
    ],
)
async def test_bad_signups_are_refused(board: Board, body: dict[str, object]) -> None:
    """Invalid emails (including header injection) and over-long names are 422."""
    response = await board.client.post("/api/users", json=body)
    assert response.status_code == 422
    assert response.json()["field"] in ("email", "name")
