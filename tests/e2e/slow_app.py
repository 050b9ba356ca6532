"""A tiny corestone service with a slow endpoint, for graceful-shutdown tests.

Run as ``python tests/e2e/slow_app.py PORT``; settings come from the environment.
"""

from __future__ import annotations

import asyncio
import sys

from fastapi import FastAPI

from corestone import Infrastructure, load_settings
from corestone.observability import configure_logging, get_logger
from corestone.web import instrument, serve

log = get_logger("slow_app")


async def main(port: int) -> None:
    settings = load_settings()
    configure_logging(format="json", level="info")
    api = FastAPI()

    @api.get("/slow")
    async def slow(seconds: float = 1.0) -> dict[str, float]:
        log.info("slow request started", seconds=seconds)
        await asyncio.sleep(seconds)
        log.info("slow request finished", seconds=seconds)
        return {"slept": seconds}

    async with Infrastructure(settings) as infra:
        app = instrument(api, infra)
        await serve(
            app, health=infra.health, port=port, shutdown_timeout=settings.shutdown_timeout_seconds
        )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
