"""`taskboard serve --no-worker` and a separate `taskboard worker`: events cross through the outbox.

With the memory broker (nothing configured), the serving process only records events;
the worker's relay publishes them from the shared database into its own memory broker,
where its mail consumer takes them. The serving process says so when it starts.
"""

from __future__ import annotations

import signal
import sys
import time
from email import message_from_bytes
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import free_port, taskboard_command

pytestmark = pytest.mark.e2e


def _subjects(folder: Path, count: int, timeout: float = 90.0) -> list[str]:
    """The subjects of the .eml files in ``folder`` once there are ``count`` (bounded)."""
    deadline = time.monotonic() + timeout
    subjects: list[str] = []
    while time.monotonic() < deadline:
        files = sorted(folder.glob("*.eml")) if folder.exists() else []
        subjects = sorted(str(message_from_bytes(f.read_bytes())["Subject"]) for f in files)
        if len(subjects) >= count:
            return subjects
        time.sleep(0.1)
    raise AssertionError(f"mail after {timeout}s: {subjects}")


def _backlog(url: str, wanted: int, timeout: float = 60.0) -> int:
    """The outbox backlog readiness reports, once it is ``wanted`` (bounded)."""
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        checks = httpx.get(f"{url}/health/ready").json()["checks"]
        seen = checks["events-relay:responseTime"][0]["observedValue"]
        if seen == wanted:
            return int(seen)
        time.sleep(0.2)
    raise AssertionError(f"backlog {seen}, wanted {wanted}")


def test_a_worker_delivers_what_a_serve_without_worker_recorded(
    start_server, database_url: str, tmp_path: Path
) -> None:
    """serve --no-worker warns about the memory broker and leaves events in the outbox
    (readiness shows the backlog); a `taskboard worker` started later relays them and
    sends the welcome and the assignment note; both exit 0 on SIGTERM."""
    mail = tmp_path / "mail"
    env = {
        "CORESTONE_DATABASE_URL": database_url,
        "CORESTONE_EMAIL_FILE_DIR": str(mail),
        "CORESTONE_HEALTH_CACHE_SECONDS": "0",
    }
    port = free_port()
    server = start_server([*taskboard_command(port), "--no-worker", "--no-seed"], env, port)
    server.wait_ready()
    assert "serve --no-worker with the memory broker" in server.output()
    ada = httpx.post(f"{server.url}/api/users", json={"name": "Ada", "email": "ada@example.com"})
    bo = httpx.post(f"{server.url}/api/users", json={"name": "Bo", "email": "bo@example.com"})
    auth = {"Authorization": f"Bearer {ada.json()['token']}"}
    ws = httpx.post(f"{server.url}/api/workspaces", json={"name": "Ops"}, headers=auth).json()
    bo_id = bo.json()["user"]["id"]
    added = httpx.post(
        f"{server.url}/api/workspaces/{ws['id']}/members", json={"user_id": bo_id}, headers=auth
    )
    assert added.status_code == 201
    task = httpx.post(
        f"{server.url}/api/workspaces/{ws['id']}/tasks",
        json={"title": "Ship", "assignee_id": bo_id},
        headers=auth,
    )
    assert task.status_code == 201
    # workspace.created, member.added, task.created, task.assigned: waiting, unpublished.
    assert _backlog(server.url, 4) == 4

    worker_args = [sys.executable, "-m", "taskboard.cli", "worker", "--interval", "1"]
    worker = start_server(worker_args, env, free_port())

    assert _subjects(mail, 2) == ["Assigned to you: Ship", "Welcome to Ops"]
    assert _backlog(server.url, 0) == 0
    assert worker.stop(signal.SIGTERM) == 0
    assert server.stop(signal.SIGTERM) == 0
    assert "broker: memory" in worker.output()
    assert "Traceback" not in server.output() + worker.output()
