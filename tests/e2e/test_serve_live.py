"""Live streams across real processes: SIGTERM ends them within the drain deadline after
readiness fails, and an event committed through one server reaches a stream on another."""

from __future__ import annotations

import signal
import sys
import threading
import time
import uuid

import httpx
import pytest

from tests.e2e.conftest import free_port, taskboard_command

pytestmark = pytest.mark.e2e

DEADLINE = 10.0


def _signup(url: str, name: str) -> dict[str, str]:
    email = f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.com"
    response = httpx.post(f"{url}/api/users", json={"name": name, "email": email})
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def _collect(url: str, headers: dict[str, str], frames: list[bytes], done: threading.Event) -> None:
    """Read a stream into ``frames`` (raw frames) until the server ends it."""
    try:
        with httpx.stream("GET", url, headers=headers, timeout=60) as response:
            assert response.status_code == 200
            buffer = b""
            for chunk in response.iter_raw():
                buffer += chunk
                while b"\n\n" in buffer:
                    frame, buffer = buffer.split(b"\n\n", 1)
                    frames.append(frame)
    finally:
        done.set()


def _wait_for(frames: list[bytes], needle: bytes, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(needle in frame for frame in frames):
            return
        time.sleep(0.05)
    raise AssertionError(f"no frame with {needle!r} in {frames}")


def test_sigterm_ends_open_streams_within_the_deadline_after_readiness_fails(
    start_server, database_url: str
) -> None:
    """On SIGTERM the server fails readiness, then ends every open stream at once (the
    client sees the end of the stream well inside the drain deadline), and exits 0."""
    port = free_port()
    env = {
        "CORESTONE_DATABASE_URL": database_url,
        "CORESTONE_SHUTDOWN_TIMEOUT_SECONDS": str(DEADLINE),
        "CORESTONE_HEALTH_CACHE_SECONDS": "0",
    }
    server = start_server([*taskboard_command(port), "--no-seed"], env, port)
    server.wait_ready()
    ada = _signup(server.url, "Ada")
    ws = httpx.post(f"{server.url}/api/workspaces", json={"name": "W"}, headers=ada).json()["id"]
    frames: list[bytes] = []
    done = threading.Event()
    reader = threading.Thread(
        target=_collect,
        args=(f"{server.url}/api/workspaces/{ws}/events", ada, frames, done),
        daemon=True,
    )
    reader.start()
    _wait_for(frames, b"retry: 2000")
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert done.wait(DEADLINE), "the stream outlived the drain deadline"
    assert time.monotonic() - started < DEADLINE
    assert server.process.wait(timeout=DEADLINE + 10) == 0
    output = server.output()
    failing = output.index("readiness now failing")
    ended = output.index("live streams ended: shutting down")
    assert failing < ended


def test_an_event_committed_through_a_reaches_a_stream_on_b(
    start_server, postgres_url: str, redis_url: str
) -> None:
    """Two `serve --no-worker` processes and a `taskboard worker` on PostgreSQL + Redis:
    a task created through A reaches the stream open on B."""
    env = {
        "CORESTONE_DATABASE_URL": postgres_url,
        "CORESTONE_REDIS_URL": redis_url,
        "CORESTONE_CACHE_NAMESPACE": f"e2e{uuid.uuid4().hex[:10]}",
    }
    worker_port = free_port()
    worker = start_server([sys.executable, "-m", "taskboard.cli", "worker"], env, worker_port)
    a_port, b_port = free_port(), free_port()
    a = start_server([*taskboard_command(a_port), "--no-worker", "--no-seed"], env, a_port)
    a.wait_ready()  # the worker migrated the schema
    b = start_server([*taskboard_command(b_port), "--no-worker", "--no-seed"], env, b_port)
    b.wait_ready()
    ada = _signup(a.url, "Ada")
    ws = httpx.post(f"{a.url}/api/workspaces", json={"name": "W"}, headers=ada).json()["id"]
    frames: list[bytes] = []
    done = threading.Event()
    threading.Thread(
        target=_collect,
        args=(f"{b.url}/api/workspaces/{ws}/events", ada, frames, done),
        daemon=True,
    ).start()
    _wait_for(frames, b"retry: 2000")
    created = httpx.post(
        f"{a.url}/api/workspaces/{ws}/tasks", json={"title": "across"}, headers=ada
    )
    assert created.status_code == 201
    _wait_for(frames, b'"task_id":%d' % created.json()["id"])
    for server in (b, a, worker):
        assert server.stop() == 0
    assert done.wait(10)
