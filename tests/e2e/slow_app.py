"""A tiny corestone service with a slow endpoint, for graceful-shutdown tests.

Run as ``python tests/e2e/slow_app.py PORT [WORKERS]``; settings come from the
environment. With WORKERS > 1 it serves through ``serve_workers``, one process each.
"""

from __future__ import annotations

import asyncio
import os
import sys

from fastapi import FastAPI

from corestone import Infrastructure, load_settings
from corestone.observability import configure_logging, get_logger
from corestone.web import WorkerProcess, instrument, run, serve, serve_workers

log = get_logger("slow_app")


async def main(port: int, worker: WorkerProcess | None = None) -> None:
    settings = load_settings()
    configure_logging(format="json", level="info")
    api = FastAPI()

    @api.get("/slow")
    async def slow(seconds: float = 1.0) -> dict[str, float]:
        log.info("slow request started", seconds=seconds, pid=os.getpid())
        await asyncio.sleep(seconds)
        log.info("slow request finished", seconds=seconds, pid=os.getpid())
        return {"slept": seconds}

    async with Infrastructure(settings) as infra:
        app = instrument(api, infra)
        await serve(
            app,
            health=infra.health,
            metrics=infra.metrics,
            port=port,
            shutdown_timeout=settings.shutdown_timeout_seconds,
            worker=worker,
        )


def worker_main(worker: WorkerProcess) -> None:
    run(main(0, worker))


if __name__ == "__main__":
    port, workers = int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1
    if workers == 1:
        asyncio.run(main(port))
    else:
        sys.exit(serve_workers(worker_main, workers=workers, port=port))
