"""schemathesis, every check and phase, against a running taskboard (issue 12).

A real server (uvicorn on a loopback port, in a thread) seeded as ``taskboard serve``
seeds it, on its own database (SQLite file or fresh PostgreSQL database), so the runs are
isolated under pytest-xdist. The schemathesis CLI runs against it in a subprocess with
tests/integration/schemathesis.toml: all of schemathesis's checks (no 5xx; only
documented statuses, content types and headers; bodies matching their schema; valid
input accepted and invalid refused; a missing required header refused; 405 with a whole
``Allow``; no resource used after DELETE; created resources reachable; auth never
ignored) in the examples, coverage, fuzzing and stateful phases, following the
document's links so real ETags flow from create and read to PATCH. It runs as the demo
user, with no token and as a stranger (a user with a workspace of their own):
schemathesis_hooks.py sends calls into the other's workspace and fails any 2xx there
(and any 2xx without a token where one is needed). What
the hooks and the config change, and why, is next to the change.

Bounded for the suite (PHASES, and ``--max-examples``): ``TASKBOARD_ST_MAX_EXAMPLES``
(default 5), ``TASKBOARD_ST_SEED`` and ``TASKBOARD_ST_PHASES`` raise or vary it
(docs/contracts.md, "schemathesis").
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from corestone import Infrastructure, Settings
from corestone.push import VapidKeys
from taskboard.app import create_app, prepare
from taskboard.seed import ensure_demo

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = os.environ.get("TASKBOARD_ST_MAX_EXAMPLES", "5")
SEED = os.environ.get("TASKBOARD_ST_SEED", "1")
# Phases per identity, to bound the suite. The demo user runs them all. For the others
# every call under the demo workspace ends in a 401 or 404 before its input is read, so
# the coverage phase's boundary values and the stateful phase's chains (in the
# stranger's own workspace, the same code as the demo's) add time, not findings; the
# hooks send half their calls to the demo workspace and task.
PHASES = {
    "demo": ("examples", "coverage", "fuzzing", "stateful"),
    "stranger": ("examples", "fuzzing"),
    "none": ("examples", "fuzzing"),
}


@dataclass
class Live:
    """A running taskboard, its demo workspace, and who may call it."""

    url: str
    demo_workspace: int
    stranger_workspace: int
    tokens: dict[str, str | None]
    user_ids: dict[str, int]
    newcomer: int
    task: int


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


def _people(
    client: httpx.Client, token: str, workspace: int
) -> tuple[dict[str, str | None], dict[str, int], int, int, int]:
    """A stranger with a workspace of their own, a user in no workspace, and a task."""
    demo = {"Authorization": f"Bearer {token}"}
    me = client.get("/api/me", headers=demo)
    assert me.status_code == 200, me.text
    users = []
    for name in ("stranger", "newcomer", "colleague"):
        signup = client.post("/api/users", json={"name": name, "email": f"{name}@example.com"})
        assert signup.status_code == 201, signup.text
        users.append(signup.json())
    # Assigned to a colleague (an assignment of one's own notifies no one), so the demo
    # workspace has an email for /api/ops/emails/{message_id}.
    colleague = users[2]["user"]["id"]
    added = client.post(
        f"/api/workspaces/{workspace}/members", json={"user_id": colleague}, headers=demo
    )
    assert added.status_code == 201, added.text
    body = {"title": "t", "assignee_id": colleague}
    task = client.post(f"/api/workspaces/{workspace}/tasks", json=body, headers=demo)
    assert task.status_code == 201, task.text
    for _ in range(200):  # queued by the notifications consumer, after the request
        if client.get("/api/ops/emails", headers=demo).json()["items"]:
            break
        time.sleep(0.05)
    stranger = users[0]["token"]
    own = client.post(
        "/api/workspaces",
        json={"name": "elsewhere"},
        headers={"Authorization": f"Bearer {stranger}"},
    )
    assert own.status_code == 201, own.text
    tokens = {"demo": token, "none": None, "stranger": stranger}
    ids = {"demo": me.json()["user"]["id"], "stranger": users[0]["user"]["id"]}
    return tokens, ids, users[1]["user"]["id"], task.json()["id"], own.json()["id"]


@pytest.fixture
def live(database_url: str, taskboard_schema: None, tmp_path: Path) -> Iterator[Live]:
    token, workspace = asyncio.run(_seed(database_url))
    # Web Push configured, so every GET of the document answers (the public key is a 404
    # without it); subscriptions are refused (422) for want of a public https endpoint.
    vapid = VapidKeys.generate("mailto:ops@example.com")
    infra = Infrastructure(
        Settings(
            database_url=database_url,
            env="test",
            email_file_dir=str(tmp_path / "mail"),
            vapid_private_key=vapid.private_key_text(),
            vapid_subject="mailto:ops@example.com",
        )
    )
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
        with httpx.Client(base_url=url) as client:
            tokens, ids, newcomer, task, elsewhere = _people(client, token, workspace)
        yield Live(url, workspace, elsewhere, tokens, ids, newcomer, task)
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def _foreign(live: Live, identity: str) -> list[int]:
    """The workspaces ``identity`` is no member of: where it must never get a 2xx."""
    return {
        "demo": [live.stranger_workspace],
        "stranger": [live.demo_workspace],
        "none": [live.demo_workspace, live.stranger_workspace],
    }[identity]


def schemathesis_run(live: Live, identity: str) -> subprocess.CompletedProcess[str]:
    """The CLI run of docs/contracts.md, as ``identity``; its output for the report."""
    token = live.tokens[identity]
    environment = os.environ | {
        "TASKBOARD_ST_URL": live.url,
        "TASKBOARD_ST_IDENTITY": identity,
        "TASKBOARD_ST_WORKSPACE": str(live.demo_workspace),
        "TASKBOARD_ST_FOREIGN": ",".join(map(str, _foreign(live, identity))),
        "TASKBOARD_ST_ASSIGNEE": str(live.user_ids.get(identity, live.user_ids["demo"])),
        "TASKBOARD_ST_NEWCOMER": str(live.newcomer),
        "TASKBOARD_ST_TASK": str(live.task),
        "TASKBOARD_ST_TOKEN": token or "",
    }
    auth = ["-H", f"Authorization: Bearer {token}"] if token else []
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "--no-color"),
        *("run", f"{live.url}/openapi.json", *auth, "--max-examples", MAX_EXAMPLES),
        *("--seed", SEED, "--output-truncate", "false", "--output-sanitize", "false"),
        *("--phases", os.environ.get("TASKBOARD_ST_PHASES", ",".join(PHASES[identity]))),
    ]
    return subprocess.run(
        command,
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.timeout(600)
@pytest.mark.parametrize("identity", ["demo", "none", "stranger"])
def test_schemathesis_finds_nothing(live: Live, identity: str) -> None:
    """Every operation, every check, coverage + fuzzing + stateful, as ``identity``: clean.

    The run must also have run: each phase passed (not skipped), and it generated cases.
    """
    done = schemathesis_run(live, identity)
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    for phase in PHASES[identity]:
        assert re.search(rf"✅\s+{phase.title()} \(in", report), f"{phase} did not pass:\n{report}"
    generated = re.search(r"(\d+) generated, \1 passed", report)
    assert generated is not None, report
    assert int(generated.group(1)) >= 50, report


def test_head_answers_every_get_of_the_document(live: Live) -> None:
    """HEAD is left out of the document (docs/contracts.md), yet served for each GET in it:
    the GET's status and headers, no body. What the document omits still holds."""
    token = live.tokens["demo"]
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=live.url, headers=auth) as client:
        document = client.get("/openapi.json").json()
        task = client.get(f"/api/workspaces/{live.demo_workspace}/tasks").json()["items"][0]
        email = client.get("/api/ops/emails").json()["items"][0]
        values = {"ws": live.demo_workspace, "task_id": task["id"], "message_id": email["id"]}
        gets = [path for path, operations in document["paths"].items() if "get" in operations]
        assert len(gets) >= 6
        for template in gets:
            assert "head" not in document["paths"][template]
            path = template.format(**values)
            with client.stream("GET", path) as get:  # a live stream never ends: headers only
                pass
            head = client.head(path)
            assert get.status_code == 200, path
            assert head.status_code == 200, path
            assert head.content == b"", path
            assert head.headers["content-type"] == get.headers["content-type"], path
            if "etag" in get.headers:
                assert head.headers["etag"] == get.headers["etag"], path


@pytest.mark.parametrize(
    ("identity", "path"),
    [("stranger", "/api/workspaces/{ws}/tasks"), ("none", "/api/me")],
)
def test_the_stranger_check_fails_a_2xx(
    live: Live, identity: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hooks' stranger_gets_nothing fails on the very 2xx it exists to catch: a 200
    under the demo workspace, or without a token (sent here with the demo's, to get one)."""
    import schemathesis

    from tests.integration import schemathesis_hooks

    monkeypatch.setenv("TASKBOARD_ST_IDENTITY", identity)
    monkeypatch.setenv("TASKBOARD_ST_FOREIGN", str(live.demo_workspace))
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operation = schema[path]["GET"]
    parameters = {"ws": live.demo_workspace} if "{ws}" in path else {}
    case = operation.Case(path_parameters=parameters)
    response = case.call(
        base_url=live.url, headers={"Authorization": f"Bearer {live.tokens['demo']}"}
    )
    assert response.status_code == 200
    with pytest.raises(AssertionError, match=f"{identity}|no token"):
        schemathesis_hooks.stranger_gets_nothing(None, response, case)  # type: ignore[arg-type]
    monkeypatch.setenv("TASKBOARD_ST_IDENTITY", "demo")
    monkeypatch.setenv("TASKBOARD_ST_FOREIGN", str(live.stranger_workspace))
    assert schemathesis_hooks.stranger_gets_nothing(None, response, case) is None  # type: ignore[arg-type]
