"""`taskboard serve --host ::` answers IPv4 and IPv6 clients and prints a URL that works."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server, free_port, taskboard_command
from tests.unit.test_web_listen import needs_ipv6

pytestmark = [pytest.mark.e2e, needs_ipv6]


def test_serve_on_every_ipv6_interface_answers_both_loopbacks_and_brackets_its_url(
    start_server, tmp_path: Path
) -> None:
    """``--host ::`` is dual-stack (127.0.0.1 and ::1 both reach it) and the banner's URL
    is ``http://[::]:PORT``, with the brackets a URL needs around an IPv6 address."""
    if not socket.has_dualstack_ipv6():
        pytest.skip("this system has no dual-stack IPv6 sockets")
    port = free_port()
    env = {"CORESTONE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'v6.db'}"}
    server: Server = start_server([*taskboard_command(port), "--host", "::"], env, port)
    server.wait_ready()  # over 127.0.0.1: IPv4 reaches the IPv6 socket
    ready = httpx.get(f"http://[::1]:{port}/health/ready", timeout=10)
    assert ready.status_code == 200
    assert server.stop() == 0
    banner = re.search(r"taskboard on (\S+)", server.output())
    assert banner, server.output()
    assert banner.group(1) == f"http://[::]:{port}"


def test_a_taken_ipv6_port_is_named_as_in_a_url(tmp_path: Path) -> None:
    """The one-line error on a taken port writes ``[::1]:PORT``, not the ambiguous ``::1:PORT``."""
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "taskboard.cli", "serve", "--host", "::1", "--port", str(port)],
            env={**os.environ, "CORESTONE_ENV": "test"},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == f"error: cannot listen on [::1]:{port}: address already in use"
