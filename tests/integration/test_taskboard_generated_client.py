"""A client generated from /openapi.json round-trips every taskboard operation (issue 12).

openapi-python-client runs in its own environment (``uv tool run``): it pins typer below
the version the CLI uses, so it cannot join the dev group. The generated package goes to
the test's tmp_path and talks to the app in process, on both databases.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Board

GENERATOR = "openapi-python-client>=0.29,<0.30"
PACKAGE = "taskboard_client"


@pytest.fixture
def generated(tmp_path: Path) -> Iterator[Path]:
    """Where the package is generated; it is importable for this test only."""
    yield tmp_path
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


async def _generate(board: Board, into: Path) -> Any:
    """The schema read over HTTP, as any client would, and the package generated from it."""
    response = await board.client.get("/openapi.json")
    assert response.status_code == 200
    (into / "openapi.json").write_text(json.dumps(response.json()))
    uv = shutil.which("uv")
    assert uv is not None, "openapi-python-client runs through uv"
    done = subprocess.run(  # noqa: ASYNC221 - a one-off build step before any request
        [
            uv,
            "tool",
            "run",
            "--from",
            GENERATOR,
            "openapi-python-client",
            "generate",
            "--path",
            str(into / "openapi.json"),
            "--meta",
            "none",
            "--output-path",
            str(into / PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    sys.path.insert(0, str(into))
    return importlib.import_module(PACKAGE)


def _op(name: str) -> Any:
    """The generated module of the operation whose function is ``name``."""
    package = importlib.import_module(f"{PACKAGE}.api.default")
    folder = Path(package.__file__ or "").parent
    (module,) = [p.stem for p in folder.glob(f"{name}_api_*.py")]
    return importlib.import_module(f"{PACKAGE}.api.default.{module}")


@pytest.mark.timeout(240)
async def test_a_generated_client_round_trips_every_operation(
    board: Board, generated: Path
) -> None:
    """Sign-up, me, workspace, member, task create/bulk/list/get/patch/delete/restore, audit
    and ops through typed, generated code; an undocumented status would raise."""
    client_module = await _generate(board, generated)
    models = importlib.import_module(f"{PACKAGE}.models")
    transport = board.client._transport
    assert isinstance(transport, httpx.ASGITransport)
    anonymous = client_module.Client(
        base_url="http://taskboard",
        raise_on_unexpected_status=True,
        httpx_args={"transport": transport},
    )

    async def sign_up(name: str) -> tuple[int, Any]:
        body = models.UserIn(name=name, email=f"{name.lower()}-{id(object())}@example.com")
        created = await _op("create_user").asyncio_detailed(client=anonymous, body=body)
        assert created.status_code == 201, created.content
        user = created.parsed
        authed = client_module.AuthenticatedClient(
            base_url="http://taskboard",
            token=user.token,
            raise_on_unexpected_status=True,
            httpx_args={"transport": transport},
        )
        return user.user.id, authed

    owner_id, owner = await sign_up("Owner")
    member_id, _member = await sign_up("Member")

    me = await _op("me").asyncio(client=owner)
    assert me.user.id == owner_id
    ws = await _op("create_workspace").asyncio(client=owner, body=models.WorkspaceIn(name="Gen"))
    assert ws.role == models.WorkspaceOutRoleType0.OWNER
    added = await _op("add_member").asyncio(
        ws.id, client=owner, body=models.MemberIn(user_id=member_id)
    )
    assert added.user_id == member_id

    task = await _op("create_task").asyncio(
        ws.id, client=owner, body=models.TaskIn(title="typed", assignee_id=member_id)
    )
    assert (task.title, task.version, task.assignee_id) == ("typed", 1, member_id)
    bulk = await _op("create_tasks").asyncio(
        ws.id,
        client=owner,
        body=models.TaskBulkIn(items=[models.TaskIn(title="a"), models.TaskIn(title="b")]),
    )
    assert [t.title for t in bulk.items] == ["a", "b"]

    listing = await _op("list_tasks").asyncio(ws.id, client=owner, limit=2)
    assert len(listing.items) == 2
    assert listing.next_cursor
    got = await _op("get_task").asyncio_detailed(ws.id, task.id, client=owner)
    assert got.status_code == 200
    assert got.headers["etag"] == '"1"'

    patched = await _op("update_task").asyncio(
        ws.id,
        task.id,
        client=owner,
        body=models.TaskPatch(status=models.TaskPatchStatus.DONE),
        if_match=got.headers["etag"],
    )
    assert (patched.status.value, patched.version) == ("done", 2)
    stale = await _op("update_task").asyncio(
        ws.id, task.id, client=owner, body=models.TaskPatch(title="x"), if_match='"1"'
    )
    assert isinstance(stale, models.Problem)
    assert (stale.status, stale.code) == (412, "stale_version")
    assert (
        stale.additional_properties.get("current_version", stale.to_dict().get("current_version"))
        == 2
    )

    deleted = await _op("delete_task").asyncio_detailed(ws.id, task.id, client=owner)
    assert deleted.status_code == 204
    missing = await _op("get_task").asyncio(ws.id, task.id, client=owner)
    assert isinstance(missing, models.Problem)
    assert missing.status == 404
    restored = await _op("restore_task").asyncio(ws.id, task.id, client=owner)
    assert restored.id == task.id

    audit = await _op("audit_log").asyncio(ws.id, client=owner, limit=100)
    assert {entry.entity_id for entry in audit.items} >= {task.id}
    assert all(entry.actor_id == owner_id for entry in audit.items)

    breakers = await _op("breakers").asyncio_detailed(client=owner)
    cache = await _op("cache").asyncio_detailed(client=owner)
    assert (breakers.status_code, cache.status_code) == (200, 200)
    refused = await _op("me").asyncio(client=anonymous)  # type: ignore[arg-type]
    assert isinstance(refused, models.Problem)
    assert refused.status == 401
