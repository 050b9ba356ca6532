"""The http suite's servers: start taskboard and the minimal app, wait for them, stop them.

Each server is its own process group (``start_new_session``), so a stop reaches every
process it forked (``--workers``): SIGTERM to the group, then SIGKILL if it has not ended
within the grace period. The suite registers every :meth:`Server.stop` on its exit stack
as soon as the process exists, so servers stop whatever happens.
Output goes to a log file, never a pipe that could fill up and stall the server; a server
that fails to come up raises with the tail of that log. If the suite itself is killed,
the kernel sends each server SIGTERM (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import httpx

__all__ = [
    "TASK_CACHE_OFF",
    "Server",
    "ServerSpec",
    "launch",
    "minimal_spec",
    "spare_port",
    "taskboard_spec",
    "wait_ready",
    "workers_supported",
]

REPO = Path(__file__).resolve().parents[1]
_TASKBOARD = Path(sys.executable).with_name("taskboard")  # `uv run taskboard`, minus uv
_READY_TIMEOUT_S = 90.0
_STOP_GRACE_S = 15.0
_PR_SET_PDEATHSIG = 1
_GIVEN_PORTS: set[int] = set()

TASK_CACHE_OFF: Mapping[str, str] | None = {"TASKBOARD_TASK_CACHE": "off"}
"""The environment that makes taskboard read tasks uncached (principal and membership
still cached), or None while taskboard has no such switch: the "GET, task cache off" rows
are then reported missing."""


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """How to start one server: its command, environment, directory and readiness path."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path
    ready_path: str
    port: int


@dataclass(slots=True)
class Server:
    """A started server process group and the URL it answers on."""

    spec: ServerSpec
    process: subprocess.Popen[bytes]
    log: Path
    stopped: bool = field(default=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.spec.port}"

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after the grace period; idempotent."""
        if self.stopped:
            return
        self.stopped = True
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self.process.wait, _STOP_GRACE_S)
        # Children (workers) may outlive a parent that exited: the group gets SIGKILL too.
        _signal_group(self.process.pid, signal.SIGKILL)
        if self.process.poll() is None:
            await asyncio.to_thread(self.process.wait)


def spare_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel's choice), never one this
    process handed out before: servers are given their ports before any of them binds."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port


@cache
def workers_supported() -> bool:
    """Whether ``taskboard serve`` offers ``--workers`` (issue 11 adds it)."""
    shown = subprocess.run(
        [str(_TASKBOARD), "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**_clean_env(), "COLUMNS": "200", "NO_COLOR": "1"},
    )
    return "--workers" in shown.stdout


def taskboard_spec(
    name: str,
    workdir: Path,
    *,
    env: Mapping[str, str],
    workers: int | None = None,
) -> ServerSpec:
    """``taskboard serve`` on a spare port, run in ``workdir`` (its SQLite lives there)."""
    port = spare_port()
    argv = [str(_TASKBOARD), "serve", "--host", "127.0.0.1", "--port", str(port)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    return ServerSpec(name, tuple(argv), env, workdir, "/health/ready", port)


def minimal_spec(name: str, *, database_url: str, rows: int) -> ServerSpec:
    """The minimal FastAPI + SQLAlchemy app (``bench/_http_minimal_app.py``)."""
    port = spare_port()
    argv = (sys.executable, "-m", "bench._http_minimal_app", "--port", str(port))
    env = {"BENCH_HTTP_DATABASE_URL": database_url, "BENCH_HTTP_ROWS": str(rows)}
    return ServerSpec(name, argv, env, REPO, "/ready", port)


def launch(spec: ServerSpec, logs: Path) -> Server:
    """Start the process group without waiting for it; pair with :meth:`Server.stop`."""
    spec.cwd.mkdir(parents=True, exist_ok=True)
    log = logs / f"{spec.name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            spec.argv,
            cwd=spec.cwd,
            env={**_clean_env(), **spec.env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    return Server(spec, process, log)


async def wait_ready(servers: Sequence[Server]) -> None:
    """Until every server answers 200 on its readiness path; raise if one exits or hangs."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        await asyncio.gather(*(_wait_one(client, server) for server in servers))


async def _wait_one(client: httpx.AsyncClient, server: Server) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.spec.name} exited ({server.process.returncode}) before it was "
                f"ready:\n{server.log_tail()}"
            )
        with suppress(httpx.TransportError):
            answer = await client.get(server.url + server.spec.ready_path)
            if answer.status_code == 200:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(
        f"{server.spec.name} not ready in {_READY_TIMEOUT_S:g} s:\n{server.log_tail()}"
    )


def _clean_env() -> dict[str, str]:
    """This process's environment without any ``CORESTONE_*`` or ``BENCH_HTTP_*`` setting."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CORESTONE_", "BENCH_HTTP_"))
    }


def _die_with_parent() -> None:
    """In the child: SIGTERM if the suite dies, even by SIGKILL (Linux ``PR_SET_PDEATHSIG``),
    so that no server outlives it in its own session."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
