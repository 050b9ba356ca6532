"""Serve an ASGI app with uvicorn and a graceful shutdown that load balancers understand.

On SIGTERM or SIGINT: readiness fails at once, the listening sockets close, requests in
flight get until the deadline to finish (then they are cancelled), and only then does
the app's lifespan stop the infrastructure. A second SIGINT forces an immediate exit.
The process then returns normally — no re-raised signal, no traceback.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Generator
from types import FrameType

import uvicorn
from starlette.types import ASGIApp

from corestone.observability.health import HealthRegistry
from corestone.observability.logging import get_logger

__all__ = ["serve"]

log = get_logger("corestone.web")


class _GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, health: HealthRegistry) -> None:
        super().__init__(config)
        self._health = health

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


async def serve(
    app: ASGIApp,
    *,
    health: HealthRegistry,
    host: str = "127.0.0.1",
    port: int = 8000,
    shutdown_timeout: float = 30.0,
) -> None:
    """Run ``app`` until SIGTERM/SIGINT, then drain within ``shutdown_timeout`` seconds."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=math.ceil(shutdown_timeout),
        server_header=False,
    )
    server = _GracefulServer(config, health)
    await server.serve()
    if server.started is False and not server.should_exit:
        raise SystemExit(1)
