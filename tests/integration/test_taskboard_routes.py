"""taskboard's routes bind the workspace once, through one dependency, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from corestone import context
from taskboard.api import deps
from taskboard.api.routes import router
from taskboard.services import TaskService
from tests.integration.conftest import Board


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def test_every_workspace_route_takes_the_workspace_dependency() -> None:
    """A route under /workspaces/{ws} gets its workspace from the one binding dependency."""
    workspace_routes = [
        route for route in router.routes if isinstance(route, APIRoute) and "{ws}" in route.path
    ]
    assert len(workspace_routes) >= 9
    missing = [
        route.path
        for route in workspace_routes
        if deps._workspace not in set(_calls(route.dependant))
    ]
    assert missing == []


async def test_services_run_with_the_path_workspace_bound(
    board: Board, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service sees the path's workspace in the context, and nothing stays bound after."""
    _, auth = await board.signup("Bea")
    ws = await board.workspace(auth)
    task = await board.task(auth, ws)
    seen: list[str | None] = []
    original = TaskService.get

    async def spy(self: TaskService, *args: Any, **kwargs: Any) -> Any:
        seen.append(context.workspace_id())
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(TaskService, "get", spy)
    response = await board.client.get(f"/api/workspaces/{ws}/tasks/{task['id']}", headers=auth)
    assert response.status_code == 200
    assert seen == [str(ws)]
    assert context.workspace_id() is None
