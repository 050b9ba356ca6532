"""request_cost suite: what one taskboard request costs in process, with no network.

``uv run python -m bench request_cost [--quick]`` builds taskboard's ASGI app on a fresh
PostgreSQL database and Redis namespace (created and dropped here), seeds a workspace and
a task through the app, and drives each request one at a time by calling the app with
ASGI messages: no server, no socket, no load generator. That isolates what a request
costs this process — middleware, FastAPI's routing and dependency solving, corestone and
taskboard — from the HTTP server and the machine's other load, which move the http
suite's figures. Two figures per request:

- **µs per request**: wall time of a sequential run (median of rounds).
- **Python calls per request**: function calls counted by cProfile over one round, which
  do not depend on the machine's load; the way to compare two versions of the code.

``/health/live`` is the floor: the middleware, FastAPI and the access line around an
endpoint that does nothing.
"""

from __future__ import annotations

import contextlib
import cProfile
import os
import pstats
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import orjson

from bench._http_stores import PG_HOST, PG_PORT, REDIS_URL, postgres_database, redis_namespace
from bench._report import Report

__all__ = ["run"]

_Message = dict[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_App = Callable[[dict[str, Any], _Receive, _Send], Awaitable[None]]


async def _call(
    app: _App, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> tuple[int, bytes]:
    path, _, query = target.partition("?")
    sent: list[_Message] = []

    async def receive() -> _Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: _Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    return int(sent[0]["status"]), b"".join(m.get("body", b"") for m in sent[1:])


async def run(quick: bool) -> Report:
    from corestone import Infrastructure
    from corestone.config import Settings
    from corestone.observability.logging import configure_logging
    from taskboard.app import create_app, prepare
    from taskboard.seed import ensure_demo

    requests, rounds = (300, 3) if quick else (2000, 5)
    report = Report("request_cost", ("request", "µs/request", "Python calls/request"))
    async with AsyncExitStack() as stack:
        database = await stack.enter_async_context(postgres_database())
        namespace = await stack.enter_async_context(redis_namespace())
        # The access line is part of the cost: written, to a sink instead of the terminal.
        sink = stack.enter_context(open(os.devnull, "w"))  # noqa: ASYNC230, SIM115 - /dev/null
        stack.enter_context(contextlib.redirect_stderr(sink))
        configure_logging(format="json", level="info")
        settings = Settings(
            database_url=f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{database}",
            redis_url=REDIS_URL,
            cache_namespace=namespace,
        )
        infra = Infrastructure(settings)
        app: Any = create_app(infra, worker=False)
        await stack.enter_async_context(infra)
        await prepare(infra)
        demo = await ensure_demo(infra.db)
        auth = [(b"authorization", f"Bearer {demo.token}".encode()), (b"host", b"bench")]
        json_auth = [*auth, (b"content-type", b"application/json")]
        ws = demo.workspace_id
        status, body = await _call(
            app, "POST", f"/api/workspaces/{ws}/tasks", json_auth, b'{"title": "measured"}'
        )
        if status != 201:
            raise RuntimeError(f"seeding failed: {status} {body[:200]!r}")
        task = orjson.loads(body)["id"]
        cases = {
            "GET /health/live": ("GET", "/health/live", auth, b""),
            "GET a task (cached)": ("GET", f"/api/workspaces/{ws}/tasks/{task}", auth, b""),
            "list 20": ("GET", f"/api/workspaces/{ws}/tasks?limit=20", auth, b""),
            "create": ("POST", f"/api/workspaces/{ws}/tasks", json_auth, b'{"title": "x"}'),
        }
        for name, (method, target, headers, payload) in cases.items():
            for _ in range(50):  # warm: pool, prepared statements, caches
                await _call(app, method, target, headers, payload)
            timings = []
            for _ in range(rounds):
                started = time.perf_counter()
                for _ in range(requests):
                    await _call(app, method, target, headers, payload)
                timings.append((time.perf_counter() - started) / requests * 1e6)
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(requests):
                await _call(app, method, target, headers, payload)
            profile.disable()
            calls = pstats.Stats(profile).total_calls / requests  # type: ignore[attr-defined]
            micros = statistics.median(timings)
            report.rows.append((name, micros, round(calls)))
            key = name.lower().replace(" ", "_").replace("/", "").replace("(", "").replace(")", "")
            report.results[f"{key}_us"] = micros
            report.results[f"{key}_calls"] = calls
    report.notes.append(
        f"{requests} sequential requests per round, median of {rounds} rounds; calls counted "
        "by cProfile over one more round (coroutine resumptions count as calls)"
    )
    report.notes.append("taskboard on PostgreSQL + Redis, in process: no server, no socket")
    return report
