"""`taskboard serve` as a real process: ready, serving, and stopping cleanly on signals."""

from __future__ import annotations

import contextlib
import re
import signal
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ROOT, free_port, taskboard_command

pytestmark = pytest.mark.e2e


def _demo_token(output: str) -> str:
    match = re.search(r"demo token:\s+(tb_\S+)", output)
    assert match, output
    return match.group(1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_on_each_database_then_stop_cleanly(
    start_server, database_url: str, sig: signal.Signals
) -> None:
    """taskboard serves health, metrics and the API, then exits 0 on a signal with no traceback."""
    port = free_port()
    server = start_server(taskboard_command(port), {"CORESTONE_DATABASE_URL": database_url}, port)
    server.wait_ready()
    token = _demo_token(server.output())
    auth = {"Authorization": f"Bearer {token}"}

    ready = httpx.get(f"{server.url}/health/ready").json()
    assert ready["status"] == "pass"
    me = httpx.get(f"{server.url}/api/me", headers=auth).json()
    ws = me["workspaces"][0]["id"]
    created = httpx.post(
        f"{server.url}/api/workspaces/{ws}/tasks", json={"title": "e2e"}, headers=auth
    )
    assert created.status_code == 201
    listing = httpx.get(f"{server.url}/api/workspaces/{ws}/tasks", headers=auth).json()
    assert "e2e" in [t["title"] for t in listing["items"]]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert (
        'corestone_http_requests_total{method="POST",route="/api/workspaces/{ws}/tasks",status="201"}'
        in metrics
    )

    started = time.monotonic()
    assert server.stop(sig) == 0
    assert time.monotonic() - started < 30
    output = server.output()
    assert "Traceback" not in output
    assert "readiness now failing" in output
    assert "component stopped" in output


def test_second_start_keeps_data_and_mints_a_new_demo_token(start_server, tmp_path: Path) -> None:
    """Restarting on the same SQLite file keeps the data; the old demo token stops working."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'board.db'}"
    port = free_port()
    first = start_server(taskboard_command(port), {"CORESTONE_DATABASE_URL": url}, port)
    first.wait_ready()
    old_token = _demo_token(first.output())
    assert first.stop() == 0

    port = free_port()
    second = start_server(taskboard_command(port), {"CORESTONE_DATABASE_URL": url}, port)
    second.wait_ready()
    new_token = _demo_token(second.output())
    assert new_token != old_token
    assert (
        httpx.get(
            f"{second.url}/api/me", headers={"Authorization": f"Bearer {old_token}"}
        ).status_code
        == 401
    )
    me = httpx.get(f"{second.url}/api/me", headers={"Authorization": f"Bearer {new_token}"}).json()
    assert len(me["workspaces"]) == 1
    assert second.stop() == 0


def test_in_flight_request_finishes_during_graceful_shutdown(start_server, tmp_path: Path) -> None:
    """A request in flight when SIGTERM arrives completes with 200 before the process exits."""
    port = free_port()
    env = {"CORESTONE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'slow.db'}"}
    server = start_server(
        [sys.executable, str(ROOT / "tests/e2e/slow_app.py"), str(port)], env, port
    )
    server.wait_ready()
    result: dict[str, object] = {}

    def call() -> None:
        result["response"] = httpx.get(f"{server.url}/slow", params={"seconds": 1.5}, timeout=30)

    caller = threading.Thread(target=call)
    caller.start()
    _wait_for(lambda: "slow request started" in server.output())
    assert server.stop(signal.SIGTERM) == 0
    caller.join(timeout=10)
    response = result["response"]
    assert isinstance(response, httpx.Response)
    assert response.status_code == 200
    output = server.output()
    assert output.index("readiness now failing") < output.index("slow request finished")
    assert output.index("slow request finished") < output.index("component stopped")
    assert "Traceback" not in output


def test_shutdown_deadline_cuts_off_requests_that_outlive_it(start_server, tmp_path: Path) -> None:
    """A request outliving the shutdown deadline is cancelled; the process still exits 0."""
    port = free_port()
    env = {
        "CORESTONE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'slow.db'}",
        "CORESTONE_SHUTDOWN_TIMEOUT_SECONDS": "1",
    }
    server = start_server(
        [sys.executable, str(ROOT / "tests/e2e/slow_app.py"), str(port)], env, port
    )
    server.wait_ready()

    def call() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"{server.url}/slow", params={"seconds": 60}, timeout=30)

    threading.Thread(target=call, daemon=True).start()
    _wait_for(lambda: "slow request started" in server.output())
    started = time.monotonic()
    assert server.stop(signal.SIGTERM, timeout=20) == 0
    assert time.monotonic() - started < 15
    output = server.output()
    assert "slow request finished" not in output
    assert "component stopped" in output


def test_configuration_error_is_one_line_and_exit_2(start_server, tmp_path: Path) -> None:
    """A wrong setting stops start-up with a line naming the variable, and no traceback."""
    port = free_port()
    server = start_server(
        taskboard_command(port), {"CORESTONE_DATABASE_URL": "mysql://root@localhost/x"}, port
    )
    assert server.process.wait(timeout=30) == 2
    output = server.output()
    assert "CORESTONE_DATABASE_URL" in output
    assert "expected" in output
    assert "Traceback" not in output


def test_unreachable_database_fails_start_with_a_reason(start_server) -> None:
    """A database that refuses connections stops start-up with the component and the cause."""
    port = free_port()
    dead = free_port()
    url = f"postgresql+asyncpg://postgres:hunter2@127.0.0.1:{dead}/x"
    server = start_server(taskboard_command(port), {"CORESTONE_DATABASE_URL": url}, port)
    assert server.process.wait(timeout=60) == 1
    output = server.output()
    assert "component 'database' failed to start" in output
    assert "hunter2" not in output
    assert "Traceback" not in output


def _wait_for(condition, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
