"""Start real server processes on free loopback ports and wait until they are ready."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A server process, its base URL and its captured output."""

    process: subprocess.Popen[bytes]
    url: str
    stdout: Path
    stderr: Path

    def output(self) -> str:
        return self.stdout.read_text() + self.stderr.read_text()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"server exited with {self.process.returncode}:\n{self.output()}"
                )
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.output()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 40.0) -> int:
        """Send ``sig`` and wait for the exit code (kill and fail if it does not come)."""
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(
                f"server ignored {sig.name} for {timeout}s:\n{self.output()}"
            ) from None


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[object]:
    """A factory: start_server(args, env) -> Server; every server is killed at teardown."""
    servers: list[Server] = []

    def start(args: list[str], env: dict[str, str], port: int) -> Server:
        out, err = tmp_path / f"{port}.out", tmp_path / f"{port}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                args,
                cwd=tmp_path,
                env={**os.environ, "CORESTONE_ENV": "test", **env},
                stdout=stdout,
                stderr=stderr,
            )
        server = Server(process, f"http://127.0.0.1:{port}", out, err)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def taskboard_command(port: int) -> list[str]:
    return [sys.executable, "-m", "taskboard.cli", "serve", "--port", str(port)]
