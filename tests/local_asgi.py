"""An ASGI app served by uvicorn on a free port of 127.0.0.1, in the test's event loop.

The fakes of providers (SendGrid, Mailgun, SES, push services) are ASGI apps the product
talks to over real HTTP: this is the one way they are started and stopped.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn

__all__ = ["LocalAsgiServer"]


class LocalAsgiServer:
    """Serve ``app`` until :meth:`stop`; :meth:`start` returns its ``http://127.0.0.1:port``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> str:
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", ws="none"
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:  # bounded by the server's start or its failure
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
