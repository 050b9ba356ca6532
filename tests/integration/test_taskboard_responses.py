"""taskboard's task responses, serialised once by orjson: the same bytes pydantic would write.

The task routes return the service's rows as JSON without validating them into response
models; these tests hold them to the documented models (DESIGN §5), byte for byte, and
keep the models in the OpenAPI schema.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from taskboard.api.schemas import TaskBulkOut, TaskListOut, TaskOut, TaskPageOut
from tests.integration.conftest import Board

pytestmark = pytest.mark.timeout(120)


def _as_pydantic_writes(model: type[BaseModel], response: httpx.Response) -> None:
    assert response.headers["content-type"] == "application/json"
    validated = model.model_validate_json(response.content, strict=False)
    assert response.content == validated.model_dump_json().encode()


async def test_task_bodies_are_the_bytes_the_response_models_would_write(board: Board) -> None:
    """Create, bulk, get, list, page, PATCH and restore answer exactly their models' JSON."""
    _, headers = await board.signup()
    ws = await board.workspace(headers)
    base = f"/api/workspaces/{ws}/tasks"
    created = await board.client.post(
        base, json={"title": "Ünïcode ✓", "description": "a\nb"}, headers=headers
    )
    assert created.status_code == 201
    _as_pydantic_writes(TaskOut, created)
    task: dict[str, Any] = created.json()
    assert created.headers["location"] == f"{base}/{task['id']}"
    assert created.headers["etag"] == '"1"'
    assert task["created_at"].endswith("Z")
    bulk = await board.client.post(
        f"{base}/bulk", json={"items": [{"title": "x"}, {"title": "y"}]}, headers=headers
    )
    assert bulk.status_code == 201
    _as_pydantic_writes(TaskBulkOut, bulk)
    for _ in range(2):  # a miss, then the cached row
        got = await board.client.get(f"{base}/{task['id']}", headers=headers)
        assert got.status_code == 200
        assert got.headers["etag"] == '"1"'
        _as_pydantic_writes(TaskOut, got)
        assert got.json() == task
    listed = await board.client.get(base, params={"limit": 2}, headers=headers)
    _as_pydantic_writes(TaskListOut, listed)
    assert listed.json()["next_cursor"]
    paged = await board.client.get(base, params={"page": 1, "limit": 2}, headers=headers)
    _as_pydantic_writes(TaskPageOut, paged)
    assert paged.json()["total"] == 3
    patched = await board.client.patch(
        f"{base}/{task['id']}", json={"status": "done"}, headers={**headers, "If-Match": '"1"'}
    )
    assert patched.status_code == 200
    assert patched.headers["etag"] == '"2"'
    _as_pydantic_writes(TaskOut, patched)
    assert (await board.client.delete(f"{base}/{task['id']}", headers=headers)).status_code == 204
    restored = await board.client.post(f"{base}/{task['id']}/restore", headers=headers)
    assert restored.status_code == 200
    _as_pydantic_writes(TaskOut, restored)


async def test_openapi_still_documents_the_task_response_models(board: Board) -> None:
    """The routes that skip response validation still name their models in the schema."""
    schema = (await board.client.get("/openapi.json")).json()
    paths = schema["paths"]

    def ref(path: str, method: str, status: str) -> str:
        content = paths[path][method]["responses"][status]["content"]["application/json"]
        return str(content["schema"])

    one = "/api/workspaces/{ws}/tasks/{task_id}"
    assert "TaskOut" in ref(one, "get", "200")
    assert "TaskOut" in ref(one, "patch", "200")
    assert "TaskOut" in ref(one + "/restore", "post", "200")
    assert "TaskOut" in ref("/api/workspaces/{ws}/tasks", "post", "201")
    assert "TaskBulkOut" in ref("/api/workspaces/{ws}/tasks/bulk", "post", "201")
    listing = ref("/api/workspaces/{ws}/tasks", "get", "200")
    assert "TaskListOut" in listing
    assert "TaskPageOut" in listing
