"""Live streams over real HTTP: taskboard apps served by uvicorn in the test's loop, and an
SSE reader that parses the frames as a browser's fetch() reader would."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from corestone import Infrastructure, Settings
from corestone.push import EventFeed
from taskboard.app import create_app
from tests.local_asgi import LocalAsgiServer

WAIT = 20.0
"""The longest a test waits for a frame (bounded: a lost event fails, never hangs)."""


@dataclass
class Frame:
    """One SSE frame: its fields (``id``, ``event``, ``data``) or a comment."""

    id: str | None = None
    event: str | None = None
    data: str | None = None
    comment: str | None = None
    retry: str | None = None

    def json(self) -> Any:
        assert self.data is not None
        return orjson.loads(self.data)


def parse_frame(block: bytes) -> Frame:
    frame = Frame()
    for line in block.decode().split("\n"):
        if line.startswith(":"):
            frame.comment = line[1:].strip()
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name in ("id", "event", "data", "retry"):
            setattr(frame, name, value)
    return frame


class SseReader:
    """Frames from one open stream (``response``), read on demand with a bound."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._bytes = response.aiter_raw()
        self._buffer = b""
        self.ended = False

    async def next(self, within: float = WAIT) -> Frame | None:
        """The next frame, or None once the server ended the stream."""
        while b"\n\n" not in self._buffer:
            try:
                chunk = await asyncio.wait_for(anext(self._bytes), within)
            except StopAsyncIteration:
                self.ended = True
                return None
            self._buffer += chunk
        block, self._buffer = self._buffer.split(b"\n\n", 1)
        return parse_frame(block)

    async def event(self, within: float = WAIT) -> Frame | None:
        """The next frame that is not a comment or ``retry`` (None at the end)."""
        while True:
            frame = await self.next(within)
            if frame is None or frame.event is not None:
                return frame

    async def events(self, count: int, within: float = WAIT) -> list[Frame]:
        found: list[Frame] = []
        while len(found) < count:
            frame = await self.event(within)
            assert frame is not None, f"the stream ended after {found}"
            found.append(frame)
        return found


@dataclass
class Instance:
    """One taskboard app served on a port, with its infrastructure."""

    infra: Infrastructure
    url: str
    client: httpx.AsyncClient
    server: LocalAsgiServer

    @property
    def feed(self) -> EventFeed:
        feed: EventFeed = self.infra.services.scope().get(EventFeed)
        return feed

    async def signup(self, name: str = "Ada") -> tuple[int, dict[str, str]]:
        email = f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.com"
        response = await self.client.post("/api/users", json={"name": name, "email": email})
        assert response.status_code == 201, response.text
        body = response.json()
        return body["user"]["id"], {"Authorization": f"Bearer {body['token']}"}

    async def workspace(self, headers: dict[str, str]) -> int:
        response = await self.client.post("/api/workspaces", json={"name": "W"}, headers=headers)
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    async def task(self, headers: dict[str, str], ws: int, title: str = "T") -> dict[str, Any]:
        response = await self.client.post(
            f"/api/workspaces/{ws}/tasks", json={"title": title}, headers=headers
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def add_member(self, headers: dict[str, str], ws: int, user_id: int) -> None:
        response = await self.client.post(
            f"/api/workspaces/{ws}/members", json={"user_id": user_id}, headers=headers
        )
        assert response.status_code == 201, response.text


@dataclass
class Cluster:
    """A factory of instances on one database; everything stops at teardown."""

    database_url: str
    tmp_path: Path
    stack: AsyncExitStack
    redis_url: str | None = None
    namespace: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:12]}")

    async def instance(self, *, worker: bool = True, **settings: Any) -> Instance:
        options: dict[str, Any] = {
            "database_url": self.database_url,
            "env": "test",
            "email_file_dir": str(self.tmp_path / "mail"),
            "cache_namespace": self.namespace,
            "redis_url": self.redis_url,
            **settings,
        }
        infra = Infrastructure(Settings(**options))
        app = create_app(infra, worker=worker)
        await self.stack.enter_async_context(infra)
        server = LocalAsgiServer(app)
        url = await server.start()
        self.stack.push_async_callback(server.stop)
        client = httpx.AsyncClient(base_url=url, timeout=WAIT)
        self.stack.push_async_callback(client.aclose)
        return Instance(infra, url, client, server)

    async def stream(
        self,
        instance: Instance,
        headers: dict[str, str],
        ws: int,
        *,
        last_event_id: str | None = None,
        expect: int = 200,
    ) -> SseReader | httpx.Response:
        """Open ``ws``'s stream on ``instance``: a reader, or the refusal (``expect``)."""
        sent = dict(headers)
        if last_event_id is not None:
            sent["Last-Event-ID"] = last_event_id
        request = instance.client.build_request("GET", f"/api/workspaces/{ws}/events", headers=sent)
        response = await instance.client.send(request, stream=True)
        self.stack.push_async_callback(response.aclose)
        if response.status_code != 200:
            await response.aread()
            assert response.status_code == expect, response.text
            return response
        assert expect == 200, response.status_code
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = SseReader(response)
        first = await reader.next()
        assert first is not None
        assert first.retry == "2000"
        return reader


@pytest.fixture
async def cluster(database_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        yield Cluster(database_url, tmp_path, stack)


async def eventually(check: Callable[[], Awaitable[bool] | bool], within: float = WAIT) -> None:
    """Wait (bounded) until ``check`` holds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
