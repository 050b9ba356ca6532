"""Serve an ASGI app with uvicorn and a graceful shutdown that load balancers understand.

On SIGTERM or SIGINT: readiness fails at once, the listening sockets close, requests in
flight get until the deadline to finish (then they are cancelled), and only then does
the app's lifespan stop the infrastructure. A second SIGINT forces an immediate exit.
The process then returns normally — no re-raised signal, no traceback.

The server is uvicorn with httptools, on uvloop where it exists (``run``): measured
against granian and plain asyncio in docs/decisions/0027. ``serve`` runs one process;
``corestone.web.serve_workers`` runs several on one port, each calling ``serve`` with
its ``WorkerProcess``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import math
import os
import signal
import socket
import threading
from collections.abc import Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

import uvicorn
from starlette.types import ASGIApp

from corestone.observability.health import HealthRegistry
from corestone.observability.logging import get_logger
from corestone.observability.metrics import Metrics
from corestone.web._bounded_http import BoundedHttpToolsProtocol

__all__ = [
    "METRICS_PUBLISH_SECONDS",
    "WORKER_HEADER",
    "WorkerProcess",
    "http_url",
    "listen",
    "run",
    "serve",
]

log = get_logger("corestone.web")

METRICS_PUBLISH_SECONDS = 1.0
"""How often a worker shares its scrape-time metrics with the others (see Metrics.publish)."""

WORKER_HEADER = "X-Worker-Pid"
"""Response header naming the worker process that answered, when several serve one port."""

_T = TypeVar("_T")


@dataclass(frozen=True)
class WorkerProcess:
    """What a worker started by ``serve_workers`` passes to ``serve``.

    ``index`` (0 … N-1) is stable across a restart of the same slot, so work meant to run
    once per service, not once per worker, can run in worker 0 only.
    """

    index: int
    sockets: tuple[socket.socket, ...]
    started: Callable[[], None]


def listen(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A socket listening on ``host:port`` now, for ``serve(..., sockets=[it])`` later.

    Binding first lets a program fail on a taken port before it changes anything (runs
    migrations, replaces a token) on behalf of a server that could never have served.
    Raises ``OSError`` (``errno.EADDRINUSE`` for a taken port) like ``socket.bind``.

    ``::`` (every IPv6 interface) is dual-stack, ``IPV6_V6ONLY=0``, so IPv4 clients
    (127.0.0.1) reach it too, as "every interface" promises. ``socket.create_server``
    alone would set ``IPV6_V6ONLY=1``, as asyncio's ``create_server`` does for
    ``uvicorn --host ::`` (while uvicorn's own ``bind_socket``, used with ``--workers``,
    leaves the kernel's default): one explicit answer instead. A specific IPv6 address
    (``::1``) is IPv6 only; an IPv4 address or a host name binds IPv4. On a system
    without IPv6 at all, ``::`` binds every IPv4 interface (``0.0.0.0``) instead.
    """
    if ":" not in host:
        return socket.create_server((host, port), family=socket.AF_INET, backlog=2048)
    every = _every_interface(host)
    try:
        return socket.create_server(
            (host, port),
            family=socket.AF_INET6,
            backlog=2048,
            dualstack_ipv6=every and socket.has_dualstack_ipv6(),
        )
    except OSError as error:
        # A kernel without IPv6 (ipv6.disable=1): every interface is every IPv4 one.
        if not every or error.errno != errno.EAFNOSUPPORT:
            raise
    log.warning("no IPv6 on this system: listening on every IPv4 interface", host=host, port=port)
    return socket.create_server(("0.0.0.0", port), family=socket.AF_INET, backlog=2048)  # noqa: S104


def http_url(host: str, port: int) -> str:
    """``http://host:port`` to print, an IPv6 literal in brackets (``http://[::1]:8000``).

    RFC 3986 §3.2.2: without them the address's colons read as a port separator, and
    neither a browser nor curl accepts ``http://::1:8000``.
    """
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _every_interface(host: str) -> bool:
    try:
        return ipaddress.IPv6Address(host).is_unspecified
    except ValueError:
        return False


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """Run ``main`` to completion on uvloop where it is installed, else on asyncio's loop.

    The same as ``asyncio.run`` otherwise (Ctrl-C cancels ``main``).
    """
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # optional: there is no uvloop on Windows
    except ImportError:  # pragma: no cover
        return None
    return uvloop.new_event_loop


class _GracefulServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        health: HealthRegistry,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self._health = health
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._on_started is not None:
            self._on_started()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            self._health.mark_shutting_down()
            log.info(
                "shutdown requested; readiness now failing",
                signal=signal.Signals(sig).name,
                deadline_seconds=self.config.timeout_graceful_shutdown,
            )
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn re-raises the captured signal after shutting down, which turns a clean
        # Ctrl-C into a KeyboardInterrupt traceback; a served-out process should just end.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
            if self._on_started is not None:
                # A worker: a SIGTERM sent to the whole process group (systemd's default)
                # arrives twice, from the sender and from the supervisor. The process is
                # already stopping; a repeated SIGTERM must not cut its components' stop short.
                signal.signal(signal.SIGTERM, signal.SIG_IGN)


async def serve(
    app: ASGIApp,
    *,
    health: HealthRegistry,
    host: str = "127.0.0.1",
    port: int = 8000,
    shutdown_timeout: float = 30.0,
    metrics: Metrics | None = None,
    worker: WorkerProcess | None = None,
    sockets: Sequence[socket.socket] | None = None,
) -> None:
    """Run ``app`` until SIGTERM/SIGINT, then drain within ``shutdown_timeout`` seconds.

    ``worker``: serve on the sockets a ``serve_workers`` supervisor shares (``host`` and
    ``port`` are then unused), name this process in an ``X-Worker-Pid`` response header
    and tell the supervisor once it serves. ``metrics``: shared with the other workers
    every ``METRICS_PUBLISH_SECONDS`` when they run in multiprocess mode. ``sockets``:
    serve on these already listening sockets (from :func:`listen`) instead of binding
    ``host:port``.
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=BoundedHttpToolsProtocol,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=math.ceil(shutdown_timeout),
        server_header=False,
        headers=[] if worker is None else [(WORKER_HEADER, str(os.getpid()))],
    )
    server = _GracefulServer(config, health, None if worker is None else worker.started)
    publishing = (
        asyncio.create_task(_publish(metrics))
        if metrics is not None and metrics.multiprocess
        else None
    )
    try:
        if worker is not None:
            sockets = worker.sockets
        await server.serve(None if sockets is None else list(sockets))
    finally:
        if publishing is not None:
            publishing.cancel()
            await asyncio.wait([publishing])
    if server.started is False and not server.should_exit:
        raise SystemExit(1)


async def _publish(metrics: Metrics) -> None:
    while True:
        try:
            metrics.publish()
        except Exception:  # a metrics hiccup must never stop the server
            log.exception("publishing metrics to the other workers failed")
        await asyncio.sleep(METRICS_PUBLISH_SECONDS)
