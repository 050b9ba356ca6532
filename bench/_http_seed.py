"""Seed a server through its HTTP API and describe the operations to load it with.

taskboard gets a user (and its token), a workspace and ``TASKS`` tasks by the bulk
endpoint, then a list's second-page cursor; the minimal app seeds its own rows at
start-up (ids 1..``TASKS``). Both get the same task shape: a title and a 200-byte
description. The task ids are split so that loads never disturb each other: reads use
the first ``READ_IDS``, each PATCH run (warm-up and timed) its own slice after them.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

import httpx

from bench._http_load import Operation

__all__ = [
    "TASKS",
    "Seeded",
    "minimal_operations",
    "seed_minimal",
    "seed_taskboard",
    "taskboard_operations",
]

TASKS = 500
READ_IDS = 100
PATCH_IDS = 150
LIST_LIMIT = 20
_DESCRIPTION = "x" * 200
_TASK_BODY = json.dumps({"title": "bench task", "description": _DESCRIPTION})


@dataclass(frozen=True, slots=True)
class Seeded:
    """What a server holds after seeding: who to be, where, which tasks, a list cursor."""

    token: str | None
    workspace_id: int | None
    task_ids: list[int]
    cursor: str


async def seed_taskboard(url: str) -> Seeded:
    """A user, a workspace and ``TASKS`` tasks, through taskboard's API."""
    async with httpx.AsyncClient(base_url=url, timeout=60.0) as client:
        made = await client.post(
            "/api/users",
            json={"name": "bench", "email": f"bench-{secrets.token_hex(6)}@example.com"},
        )
        made.raise_for_status()
        token = made.json()["token"]
        client.headers["Authorization"] = f"Bearer {token}"
        space = await client.post("/api/workspaces", json={"name": "bench"})
        space.raise_for_status()
        workspace_id = int(space.json()["id"])
        items = [{"title": f"task {n}", "description": _DESCRIPTION} for n in range(TASKS)]
        bulk = await client.post(
            f"/api/workspaces/{workspace_id}/tasks/bulk", json={"items": items}
        )
        bulk.raise_for_status()
        task_ids = sorted(int(task["id"]) for task in bulk.json()["items"])
        first = await client.get(
            f"/api/workspaces/{workspace_id}/tasks", params={"limit": LIST_LIMIT}
        )
        first.raise_for_status()
        cursor = first.json()["next_cursor"]
        if not cursor:
            raise RuntimeError("taskboard's first page of tasks has no next_cursor")
    return Seeded(token, workspace_id, task_ids, cursor)


def seed_minimal() -> Seeded:
    """The minimal app's rows, which it made at start-up."""
    return Seeded(None, None, list(range(1, TASKS + 1)), str(LIST_LIMIT))


def taskboard_operations(seeded: Seeded) -> dict[str, Operation]:
    """get (a task by id), list20 (the page after a cursor), create, patch."""
    tasks = f"/api/workspaces/{seeded.workspace_id}/tasks"
    reads, warm_patches, patches = _slices(seeded.task_ids)
    return {
        "get": Operation("get", tasks + "/{id}", seeded.token, reads),
        "list20": Operation(
            "get", f"{tasks}?limit={LIST_LIMIT}&cursor={seeded.cursor}", seeded.token, [0]
        ),
        "create": Operation("post", tasks, seeded.token, body=_TASK_BODY),
        "patch": Operation(
            "patch",
            tasks + "/{id}",
            seeded.token,
            patches,
            warm_ids=warm_patches,
            body=json.dumps({"title": "bench task, patched"}),
        ),
    }


def minimal_operations(seeded: Seeded) -> dict[str, Operation]:
    """The minimal app's get, list20 and create (it has no PATCH)."""
    reads, _, _ = _slices(seeded.task_ids)
    return {
        "get": Operation("get", "/tasks/{id}", ids=reads),
        "list20": Operation("get", f"/tasks?after={seeded.cursor}&limit={LIST_LIMIT}", ids=[0]),
        "create": Operation("post", "/tasks", body=_TASK_BODY),
    }


def _slices(ids: list[int]) -> tuple[list[int], list[int], list[int]]:
    reads = ids[:READ_IDS]
    warm = ids[READ_IDS : READ_IDS + PATCH_IDS]
    timed = ids[READ_IDS + PATCH_IDS : READ_IDS + 2 * PATCH_IDS]
    return reads, warm, timed
