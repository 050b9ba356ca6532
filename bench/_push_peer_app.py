"""The push suite's peer: sse-starlette, one generator per client, fed in process.

``python -m bench._push_peer_app --port N`` serves ``GET /events`` (an
``EventSourceResponse`` over an async generator reading the client's own
``asyncio.Queue``) and ``POST /publish`` (the body, as one event, put into every
client's queue: the in-process fan-out sse-starlette users write). No auth, no database,
no resume: the floor for the memory of an idle stream and the fan-out of one event.
Served like taskboard (uvicorn, uvloop, httptools, one process).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import uvicorn
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_QUEUES: set[asyncio.Queue[str]] = set()


async def events(_request: Request) -> EventSourceResponse:
    queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1000)
    _QUEUES.add(queue)

    async def stream() -> AsyncIterator[dict[str, str]]:
        try:
            while True:
                yield {"event": "task.created", "data": await queue.get()}
        finally:
            _QUEUES.discard(queue)

    return EventSourceResponse(stream(), ping=15)


async def publish(request: Request) -> Response:
    data = (await request.body()).decode()
    for queue in list(_QUEUES):
        if not queue.full():
            queue.put_nowait(data)
    return Response(str(len(_QUEUES)))


async def ready(_request: Request) -> Response:
    return Response("ok")


app = Starlette(
    routes=[
        Route("/events", events),
        Route("/publish", publish, methods=["POST"]),
        Route("/ready", ready),
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
        log_level="warning", access_log=False, backlog=4096,
    )  # fmt: skip


if __name__ == "__main__":
    main()
