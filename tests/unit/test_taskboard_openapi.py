"""taskboard's OpenAPI document says what the server does (issue 12)."""

from __future__ import annotations

from typing import Any

import pytest

from corestone import Infrastructure, Settings
from taskboard.app import create_app

MAX_ID = 2**63 - 1


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("openapi") / "t.db"
    app: Any = create_app(Infrastructure(Settings(database_url=f"sqlite+aiosqlite:///{path}")))
    while not hasattr(app, "openapi"):
        app = app.app
    result: dict[str, Any] = app.openapi()
    return result


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    ]


def test_every_error_is_a_problem_and_no_validation_error_schema_is_left(
    document: dict[str, Any],
) -> None:
    """Every 4xx/5xx is application/problem+json with the Problem schema; 422 everywhere."""
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert {"type", "title", "status", "code", "detail"} <= set(
        document["components"]["schemas"]["Problem"]["properties"]
    )
    for method, path, operation in _operations(document):
        responses = operation["responses"]
        assert {"422", "503"} <= set(responses), (method, path)
        for status, response in responses.items():
            if status[0] in "45":
                assert list(response["content"]) == ["application/problem+json"], (path, status)


def test_authenticated_operations_name_the_bearer_scheme(document: dict[str, Any]) -> None:
    """Only sign-up is anonymous; everything else needs the bearer token and may be 401."""
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for method, path, operation in _operations(document):
        if (method, path) == ("post", "/api/users"):
            assert "security" not in operation
            continue
        assert operation["security"] == [{"bearer": []}], path
        assert "401" in operation["responses"]


def test_patch_requires_if_match_and_declares_its_outcomes(document: dict[str, Any]) -> None:
    """If-Match is a required header; 412, 428, 415 and 413 are declared; fields not nullable;
    an empty PATCH (a 422, "nothing to change") is outside the document."""
    patch = document["paths"]["/api/workspaces/{ws}/tasks/{task_id}"]["patch"]
    if_match = next(p for p in patch["parameters"] if p["name"] == "If-Match")
    assert (if_match["in"], if_match["required"]) == ("header", True)
    assert {"400", "404", "412", "413", "415", "428"} <= set(patch["responses"])
    fields = document["components"]["schemas"]["TaskPatch"]["properties"]
    for name in ("title", "description", "status"):
        assert "anyOf" not in fields[name]
        assert "default" not in fields[name]
    assert {"type": "null"} in fields["assignee_id"]["anyOf"]
    assert document["components"]["schemas"]["TaskPatch"]["minProperties"] == 1


def test_ids_have_exact_integer_bounds(document: dict[str, Any]) -> None:
    """Ids are 1..2**63-1 as inclusive integers, never a float exclusiveMaximum."""
    text = str(document)
    assert "exclusiveMaximum" not in text
    assert "exclusiveMinimum" not in text
    get = document["paths"]["/api/workspaces/{ws}/tasks/{task_id}"]["get"]
    for parameter in get["parameters"]:
        assert parameter["schema"]["minimum"] == 1
        assert parameter["schema"]["maximum"] == MAX_ID
        assert isinstance(parameter["schema"]["maximum"], int)


def test_list_parameters_state_their_rules(document: dict[str, Any]) -> None:
    """The status enum, the limits, and the cursor/page exclusion are in the document."""
    listing = document["paths"]["/api/workspaces/{ws}/tasks"]["get"]
    params = {p["name"]: p for p in listing["parameters"]}
    status = params["status"]["schema"]["anyOf"][0]
    assert status["enum"] == ["open", "in_progress", "done"]
    assert (params["limit"]["schema"]["minimum"], params["limit"]["schema"]["maximum"]) == (1, 100)
    assert params["page"]["schema"]["anyOf"][0]["maximum"] == 1_000_000
    assert "not with page" in params["cursor"]["description"]
    assert "not with cursor" in params["page"]["description"]
    assert params["q"]["schema"]["anyOf"][0]["maxLength"] == 200


def test_body_ids_have_exact_integer_bounds(document: dict[str, Any]) -> None:
    """Ids in bodies are 1..2**63-1 too, in JSON Schema's words (no pydantic ``gt``/``lt``)."""
    schemas = document["components"]["schemas"]
    user_id = schemas["MemberIn"]["properties"]["user_id"]
    assignee = schemas["TaskIn"]["properties"]["assignee_id"]["anyOf"][0]
    for bounds in (user_id, assignee):
        assert (bounds["minimum"], bounds["maximum"]) == (1, MAX_ID)
        assert not {"gt", "lt", "ge", "le"} & set(bounds)


def test_problem_statuses_declare_their_headers_and_500(document: dict[str, Any]) -> None:
    """Every operation may be a 500; a 401 names WWW-Authenticate, a 415 Accept, a 503
    Retry-After: schemathesis's header check holds the server to them."""
    for method, path, operation in _operations(document):
        responses = operation["responses"]
        assert "500" in responses, (method, path)
        assert "Retry-After" in responses["503"]["headers"]
        if "401" in responses:
            assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True
        if "415" in responses:
            assert responses["415"]["headers"]["Accept"]["required"] is True


def test_task_responses_link_to_what_a_client_does_next(document: dict[str, Any]) -> None:
    """Create and read link to get, delete, restore and PATCH, the ETag sent as If-Match."""
    task = document["paths"]["/api/workspaces/{ws}/tasks/{task_id}"]
    created = document["paths"]["/api/workspaces/{ws}/tasks"]["post"]["responses"]["201"]
    for links in (created["links"], task["get"]["responses"]["200"]["links"]):
        assert set(links) == {"GetTask", "UpdateTask", "DeleteTask", "RestoreTask"}
        update = links["UpdateTask"]
        assert update["parameters"]["header.If-Match"] == "$response.header.ETag"
        pointer = update["operationRef"].removeprefix("#/paths/").rsplit("/", 1)
        path = pointer[0].replace("~1", "/").replace("~0", "~")
        assert pointer[1] in document["paths"][path]
    deleted = task["delete"]["responses"]["204"]["links"]
    assert deleted["RestoreTask"]["parameters"]["path.task_id"] == "$request.path.task_id"
