"""schemathesis against a running taskboard, on SQLite and PostgreSQL (issue 12).

A real server (uvicorn on a loopback port, in a thread) seeded as ``taskboard serve``
seeds it: the demo user, its token and its workspace. Every operation of /openapi.json
is fuzzed with valid and with invalid data, with the demo token, with none and as a
stranger (a user of another workspace), and each response must pass schemathesis's
checks: no 5xx, only documented statuses, content types and headers, bodies matching
their schema, invalid input refused. A write is sent with the task's real ETag (read just
before), so PATCH reaches the service rather than stopping at 412. A stranger must never
get a 2xx under the demo workspace. Examples per operation are bounded so both databases
together stay within about a minute on two cores.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation.meta import TestPhase

from corestone import Infrastructure, Settings
from taskboard.app import create_app, prepare
from taskboard.seed import ensure_demo

EXAMPLES = 5  # per operation, identity and mode
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@dataclass
class Live:
    """A running taskboard and the identities that call it."""

    url: str
    demo_workspace: int
    task_id: int
    identities: dict[str, dict[str, str]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _seed(database_url: str) -> tuple[str, int]:
    """Migrate and seed the demo as ``taskboard serve`` does; its token and workspace."""
    async with Infrastructure(Settings(database_url=database_url, env="test")) as infra:
        await prepare(infra)
        demo = await ensure_demo(infra.db)
        return demo.token, demo.workspace_id


@pytest.fixture
def live(database_url: str) -> Iterator[Live]:
    token, workspace = asyncio.run(_seed(database_url))
    infra = Infrastructure(Settings(database_url=database_url, env="test"))
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(infra),
            host="127.0.0.1",
            port=port,
            loop="asyncio",
            log_level="warning",
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive(), "taskboard did not start"
        assert time.monotonic() < deadline, "taskboard did not start in time"
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    try:
        demo = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url) as client:
            task = client.post(
                f"/api/workspaces/{workspace}/tasks", json={"title": "fuzzed"}, headers=demo
            )
            assert task.status_code == 201, task.text
            signup = client.post(
                "/api/users", json={"name": "Stranger", "email": "stranger@example.com"}
            )
            assert signup.status_code == 201, signup.text
            stranger = {"Authorization": f"Bearer {signup.json()['token']}"}
            own = client.post("/api/workspaces", json={"name": "elsewhere"}, headers=stranger)
            assert own.status_code == 201
        yield Live(
            url, workspace, task.json()["id"], {"demo": demo, "none": {}, "stranger": stranger}
        )
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def _stranger_never_succeeds(live: Live, identity: str, case: Any, response: Any) -> None:
    prefix = f"/api/workspaces/{live.demo_workspace}/"
    path = case.formatted_path
    if identity != "demo" and (path + "/").startswith(prefix) and 200 <= response.status_code < 300:
        raise AssertionError(f"{identity} got {response.status_code} on {case.method} {path}")


def _with_real_etag(live: Live, case: Any, headers: dict[str, str]) -> None:
    """The If-Match a client would send: the ETag of the task as it is now."""
    if case.method.upper() != "PATCH" or not isinstance(case.path_parameters, dict):
        return
    ws, task_id = case.path_parameters.get("ws"), case.path_parameters.get("task_id")
    current = httpx.get(
        f"{live.url}/api/workspaces/{ws}/tasks/{task_id}", headers=live.identities["demo"]
    )
    if current.status_code == 200 and case.headers is not None:
        case.headers["If-Match"] = current.headers["etag"]
    elif current.status_code == 200:
        case.headers = {"If-Match": current.headers["etag"]}


def _fuzz(live: Live, operation: Any, mode: GenerationMode, identity: str, fixed: bool) -> None:
    headers = live.identities[identity]
    parameters = {"ws": live.demo_workspace, "task_id": live.task_id} if fixed else None
    names = (
        {p.name for p in operation.path_parameters}
        if hasattr(operation, "path_parameters")
        else set()
    )
    if parameters is not None:
        parameters = {k: v for k, v in parameters.items() if k in names}
        if not parameters:
            return
    strategy = operation.as_strategy(mode, path_parameters=parameters, phase=TestPhase.FUZZING)
    checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        if mode is GenerationMode.POSITIVE and identity == "demo":
            _with_real_etag(live, case, headers)
        response = case.call(base_url=live.url, headers=headers)
        case.validate_response(response, checks=checks, headers=headers)
        _stranger_never_succeeds(live, identity, case, response)

    run()


@pytest.mark.timeout(170)
def test_schemathesis_finds_nothing(live: Live) -> None:
    """Every operation, valid and invalid input, as demo, anonymous and stranger: all checks."""
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 14
    for operation in operations:
        for identity in live.identities:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                for fixed in (True, False):
                    _fuzz(live, operation, mode, identity, fixed)
