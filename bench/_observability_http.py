"""The HTTP side of observability: middleware cost per request, and /health/ready under load.

Both drive ASGI apps in process by calling them with ASGI messages (no server, no
socket), so the figures are what this process spends, not the network's.

- **Middleware**: one FastAPI route, called bare and wrapped in corestone's
  ``RequestContextMiddleware`` (request id, context, the access log line, written as JSON
  to /dev/null) around ``HttpMetricsMiddleware`` (route template, counter, histogram,
  in-flight gauge): the difference of the best rounds, in µs per request.
- **Readiness under load**: taskboard on a fresh PostgreSQL database, ``/health/ready``
  requested at a fixed rate (1,000/s) for a few seconds, each request its own task. The
  ``database`` check is replaced by one that counts its calls and then pings as before:
  with the report cached for ``CORESTONE_HEALTH_CACHE_SECONDS``, the database should see
  at most one check per interval, however many probes arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from bench._http_stores import PG_HOST, PG_PORT, postgres_database

__all__ = ["middleware_us", "readiness_checks"]

_Message = dict[str, Any]
_App = Callable[..., Awaitable[None]]


async def _get(app: _App, path: str) -> int:
    sent: list[_Message] = []

    async def receive() -> _Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: _Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    return int(sent[0]["status"])


async def middleware_us(quick: bool) -> dict[str, float]:
    """µs per request of a bare FastAPI route, with each middleware and with both."""
    from fastapi import FastAPI

    from corestone.observability import Metrics
    from corestone.observability.logging import configure_logging
    from corestone.web.middleware import HttpMetricsMiddleware, RequestContextMiddleware

    bare = FastAPI()

    @bare.get("/items/{item}")
    async def item(item: int) -> dict[str, int]:
        return {"item": item}

    apps: dict[str, Any] = {
        "bare": bare,
        "metrics": HttpMetricsMiddleware(bare, metrics=Metrics()),
        "context_and_log": RequestContextMiddleware(bare),
        "wrapped": RequestContextMiddleware(HttpMetricsMiddleware(bare, metrics=Metrics())),
    }
    requests, rounds = (500, 5) if quick else (3000, 15)
    best = dict.fromkeys(apps, float("inf"))
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):  # noqa: ASYNC230
        configure_logging(format="json", level="info")
        for app in apps.values():  # warm: routing caches, first log line
            for _ in range(100):
                await _get(app, "/items/7")
        for _ in range(rounds):
            for name, app in apps.items():
                started = time.perf_counter()
                for _ in range(requests):
                    await _get(app, "/items/7")
                per = (time.perf_counter() - started) / requests * 1e6
                best[name] = min(best[name], per)
    return {
        "route_bare_us": best["bare"],
        "route_with_middleware_us": best["wrapped"],
        "middleware_overhead_us": best["wrapped"] - best["bare"],
        "metrics_middleware_overhead_us": best["metrics"] - best["bare"],
        "context_and_log_overhead_us": best["context_and_log"] - best["bare"],
    }


async def readiness_checks(quick: bool, rate: float = 1000.0) -> dict[str, float]:
    """Probe /health/ready at ``rate`` per second; count the database checks that ran."""
    from corestone import Infrastructure
    from corestone.config import Settings
    from corestone.observability.logging import configure_logging
    from taskboard.app import create_app, prepare

    seconds = 2.0 if quick else 5.0
    async with AsyncExitStack() as stack:
        database = await stack.enter_async_context(postgres_database())
        sink = stack.enter_context(open(os.devnull, "w"))  # noqa: ASYNC230, SIM115 - /dev/null
        stack.enter_context(contextlib.redirect_stderr(sink))
        configure_logging(format="json", level="warning")
        settings = Settings(
            database_url=f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{database}"
        )
        infra = Infrastructure(settings)
        app: Any = create_app(infra, worker=False)
        await stack.enter_async_context(infra)
        await prepare(infra)
        checks = 0

        async def counted_ping() -> Any:
            nonlocal checks
            checks += 1
            return await infra.db.ping()

        infra.health.register("database", counted_ping, component_type="datastore")
        statuses: list[int] = []

        async def probe() -> None:
            statuses.append(await _get(app, "/health/ready"))

        total = int(seconds * rate)
        tasks = []
        started = time.perf_counter()
        for index in range(total):
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(probe()))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    # The intervals the run touched: a check may start in each one, the first included.
    intervals = math.ceil(elapsed / settings.health_cache_seconds)
    return {
        "ready_requests": float(total),
        "ready_requests_per_second": total / elapsed,
        "ready_ok_ratio": statuses.count(200) / total,
        "ready_database_checks": float(checks),
        "ready_cache_intervals": float(intervals),
        "ready_database_checks_per_interval": checks / intervals,
    }
