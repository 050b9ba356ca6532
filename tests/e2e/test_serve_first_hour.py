"""`taskboard serve` on a taken port changes nothing; in prod no seed and no token in the log.

Issue 12, items 2 and 9 (docs/decisions/0028-demo-seed-and-banner-in-production.md).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server, free_port, taskboard_command

pytestmark = pytest.mark.e2e

_PROD = {"CORESTONE_ENV": "prod", "CORESTONE_SECRET_KEY": "k" * 40}


def _demo_token(output: str) -> str:
    match = re.search(r"demo token:\s+(tb_\S+)", output)
    assert match, output
    return match.group(1)


def _serve_once(port: int, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        taskboard_command(port),
        env={**os.environ, "CORESTONE_ENV": "test", **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_taken_port_fails_before_any_migration(tmp_path: Path) -> None:
    """On a port some other socket holds, serve exits 1 with one line and creates no database."""
    database = tmp_path / "never.db"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = _serve_once(
            port, {"CORESTONE_DATABASE_URL": f"sqlite+aiosqlite:///{database}"}, tmp_path
        )

    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: address already in use"
    ]
    assert done.stdout == ""
    assert not database.exists()


def test_a_second_serve_on_the_same_port_keeps_the_running_servers_token(
    start_server, database_url: str, tmp_path: Path
) -> None:
    """The second serve fails without minting a demo token: the first one's token still works."""
    port = free_port()
    env = {"CORESTONE_DATABASE_URL": database_url}
    first: Server = start_server(taskboard_command(port), env, port)
    first.wait_ready()
    token = _demo_token(first.output())

    second = _serve_once(port, env, tmp_path)

    assert second.returncode == 1
    assert "address already in use" in second.stderr
    assert "demo token" not in second.stdout
    me = httpx.get(f"{first.url}/api/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert first.stop() == 0


def _json_lines(server: Server) -> list[dict[str, object]]:
    """Every line the server wrote, each required to be a JSON object."""
    return [json.loads(line) for line in server.output().splitlines() if line.strip()]


def _users(database: Path) -> int:
    with sqlite3.connect(database) as conn:
        return int(conn.execute("SELECT count(*) FROM users").fetchone()[0])


def test_prod_serves_without_a_seed_and_writes_only_json(start_server, tmp_path: Path) -> None:
    """CORESTONE_ENV=prod: no demo user, and the start-up banner is a structured log line."""
    database = tmp_path / "prod.db"
    port = free_port()
    env = {**_PROD, "CORESTONE_DATABASE_URL": f"sqlite+aiosqlite:///{database}"}
    server: Server = start_server(taskboard_command(port), env, port)
    server.wait_ready()
    assert server.stop() == 0

    lines = _json_lines(server)  # raises on a plain-text line among the JSON
    serving = [line for line in lines if line["event"] == "taskboard serving"]
    assert len(serving) == 1
    assert serving[0]["url"] == f"http://127.0.0.1:{port}"
    assert serving[0]["demo_workspace_id"] is None
    assert _users(database) == 0


def test_prod_seed_on_request_never_writes_the_token_when_not_a_terminal(
    start_server, tmp_path: Path
) -> None:
    """--seed in prod creates the demo, but the token goes to no pipe or log, only a warning."""
    database = tmp_path / "prod.db"
    port = free_port()
    env = {**_PROD, "CORESTONE_DATABASE_URL": f"sqlite+aiosqlite:///{database}"}
    server: Server = start_server([*taskboard_command(port), "--seed"], env, port)
    server.wait_ready()
    assert server.stop() == 0

    lines = _json_lines(server)
    assert "tb_" not in server.output()
    serving = next(line for line in lines if line["event"] == "taskboard serving")
    assert isinstance(serving["demo_workspace_id"], int)
    assert any(str(line["event"]).startswith("demo token not shown") for line in lines)
    assert _users(database) == 1
