"""Request dependencies without generators: context bound for the request, a lazy service scope."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated

import anyio
import anyio.lowlevel
import httpx
import pytest
import svcs
from fastapi import Depends, FastAPI, WebSocket
from starlette.testclient import TestClient

from corestone import context
from corestone.config import Settings
from corestone.errors import NotFoundError
from corestone.runtime import Infrastructure
from corestone.web import RequestScope, instrument, service


class Counter:
    """A per-request service whose cleanup is observable."""

    def __init__(self) -> None:
        self.closed = False


async def _maybe_actor(actor: str | None = None) -> str | None:
    if actor is not None:
        context.bind_to_request(actor=actor)
    return actor


async def _actor(actor: str) -> str:
    context.bind_to_request(actor=actor)
    return actor


MaybeActor = Annotated[str | None, Depends(_maybe_actor)]
Actor = Annotated[str, Depends(_actor)]


async def _refuse(actor: Actor) -> None:
    raise RuntimeError(f"refused after binding {actor}")


Refused = Annotated[None, Depends(_refuse)]


def _client(app: object) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def test_bind_to_request_is_undone_when_the_request_scope_ends() -> None:
    """Values set inside a request scope are visible in it and restored after it."""
    with context.bind(actor="outer"), context.request_scope():
        context.bind_to_request(actor=7, workspace=3)
        assert context.actor_id() == "7"
        assert context.workspace_id() == "3"
        context.bind_to_request(actor=8)
        assert context.actor_id() == "8"
    assert context.actor_id() is None
    assert context.workspace_id() is None


def test_bind_to_request_restores_the_value_bound_outside_the_scope() -> None:
    """A worker's actor bound around a job's request scope is back after the job."""
    with context.bind(actor="worker"):
        with context.request_scope():
            context.bind_to_request(actor="job-user")
            assert context.actor_id() == "job-user"
        assert context.actor_id() == "worker"


def test_bind_to_request_outside_a_request_scope_is_refused() -> None:
    """With no request scope nothing would undo it, so it raises instead of leaking."""
    with pytest.raises(RuntimeError, match="request_scope"):
        context.bind_to_request(actor=1)
    assert context.actor_id() is None


async def test_a_value_bound_in_a_request_does_not_reach_the_next_one(tmp_path: Path) -> None:
    """A dependency binds the actor with no block; the next request starts without it."""
    app = FastAPI()
    seen: list[str | None] = []

    @app.get("/x")
    async def endpoint(_: MaybeActor) -> None:
        seen.append(context.actor_id())

    infra = Infrastructure(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db"))
    async with _client(instrument(app, infra)) as client:
        await client.get("/x", params={"actor": "alice"})
        await client.get("/x")
    assert seen == ["alice", None]
    assert context.actor_id() is None


async def test_one_service_scope_per_request_closed_after_the_response(tmp_path: Path) -> None:
    """service() and RequestScope share the request's scope; its cleanups run when it ends."""
    made: list[Counter] = []

    async def counter() -> AsyncIterator[Counter]:
        made.append(Counter())
        yield made[-1]
        made[-1].closed = True

    app = FastAPI()
    identities: list[tuple[int, int]] = []

    @app.get("/x")
    async def endpoint(
        first: Annotated[Counter, Depends(service(Counter))], scope: RequestScope
    ) -> dict[str, bool]:
        again = await scope.aget(Counter)
        identities.append((id(first), id(again)))
        return {"closed": first.closed}

    infra = Infrastructure(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db"))
    infra.services.register_factory(Counter, counter)
    async with _client(instrument(app, infra)) as client:
        first = await client.get("/x")
        second = await client.get("/x")
    assert first.json() == {"closed": False}
    assert second.json() == {"closed": False}
    assert len(made) == 2  # one per request, not one per dependency
    assert all(a == b for a, b in identities)
    assert all(c.closed for c in made)


async def test_the_service_scope_is_closed_when_the_endpoint_raises(tmp_path: Path) -> None:
    """A failing request still runs its scope's cleanups."""
    made: list[Counter] = []

    async def counter() -> AsyncIterator[Counter]:
        made.append(Counter())
        yield made[-1]
        made[-1].closed = True

    app = FastAPI()

    @app.get("/x")
    async def endpoint(_: Annotated[Counter, Depends(service(Counter))]) -> None:
        raise RuntimeError("boom")

    infra = Infrastructure(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db"))
    infra.services.register_factory(Counter, counter)
    async with _client(instrument(app, infra)) as client:
        response = await client.get("/x")
    assert response.status_code == 500
    assert made
    assert made[0].closed


async def test_concurrent_requests_get_their_own_scopes(tmp_path: Path) -> None:
    """Interleaved requests never share a scope or see each other's actor."""
    app = FastAPI()
    release = asyncio.Event()
    seen: dict[str, tuple[int, str | None]] = {}

    @app.get("/x")
    async def endpoint(actor: Actor, scope: RequestScope) -> None:
        if actor == "a":
            await release.wait()
        else:
            release.set()
        seen[actor] = (id(scope), context.actor_id())

    infra = Infrastructure(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db"))
    async with _client(instrument(app, infra)) as client:
        await asyncio.gather(
            client.get("/x", params={"actor": "a"}), client.get("/x", params={"actor": "b"})
        )
    assert seen["a"][1] == "a"
    assert seen["b"][1] == "b"
    assert seen["a"][0] != seen["b"][0]


def test_service_returns_one_dependency_per_type() -> None:
    """FastAPI solves a dependency once per request only if it is the same callable."""
    assert service(Counter) is service(Counter)
    assert service(Counter) is not service(svcs.Container)


async def test_the_service_scope_is_closed_when_the_request_is_cancelled(tmp_path: Path) -> None:
    """A request cancelled by a cancel scope around it (a timeout) still runs its cleanups.

    anyio re-delivers a scope's cancellation at every await inside it, so an unshielded
    close would itself be cancelled at its first await and the cleanups never finish.
    """
    made: list[Counter] = []

    async def counter() -> AsyncIterator[Counter]:
        made.append(Counter())
        yield made[-1]
        await anyio.lowlevel.checkpoint()  # a cleanup that awaits, as closing a session does
        made[-1].closed = True

    app = FastAPI()
    entered = anyio.Event()

    @app.get("/x")
    async def endpoint(_: Annotated[Counter, Depends(service(Counter))]) -> None:
        entered.set()
        await anyio.sleep_forever()

    infra = Infrastructure(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db"))
    infra.services.register_factory(Counter, counter)
    async with _client(instrument(app, infra)) as client, anyio.create_task_group() as group:

        async def cancel_when_entered() -> None:
            await entered.wait()
            group.cancel_scope.cancel()

        group.start_soon(cancel_when_entered)
        await client.get("/x")
    assert len(made) == 1
    assert made[0].closed
    assert context.actor_id() is None


def test_websocket_routes_get_a_service_scope_and_bind_to_request(tmp_path: Path) -> None:
    """service(), RequestScope and bind_to_request work in a websocket route as in HTTP ones.

    The request context middleware opens no request scope for websockets, and a
    ``Request`` parameter is never given to a websocket's dependencies.
    """
    made: list[Counter] = []

    def counter() -> Iterator[Counter]:
        made.append(Counter())
        yield made[-1]
        made[-1].closed = True

    app = FastAPI()

    @app.websocket("/ws")
    async def endpoint(
        websocket: WebSocket,
        actor: Actor,
        first: Annotated[Counter, Depends(service(Counter))],
        scope: RequestScope,
    ) -> None:
        await websocket.accept()
        same = scope.get(Counter) is first
        await websocket.send_json({"actor": context.actor_id(), "same": same})
        await websocket.close()

    infra = Infrastructure(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db"))
    infra.services.register_factory(Counter, counter)
    with (
        TestClient(instrument(app, infra)) as client,
        client.websocket_connect("/ws?actor=alice") as socket,
    ):
        assert socket.receive_json() == {"actor": "alice", "same": True}
    assert len(made) == 1
    assert made[0].closed


async def test_a_dependency_failing_after_the_actor_was_bound_leaks_nothing(
    tmp_path: Path,
) -> None:
    """The actor bound before a later dependency raises is gone for the next request."""
    app = FastAPI()
    seen: list[str | None] = []

    @app.get("/x")
    async def endpoint(_: Actor, __: Refused) -> None:
        raise AssertionError("not reached")

    @app.get("/y")
    async def other() -> None:
        seen.append(context.actor_id())

    infra = Infrastructure(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db"))
    async with _client(instrument(app, infra)) as client:
        assert (await client.get("/x", params={"actor": "alice"})).status_code == 500
        assert (await client.get("/y")).status_code == 200
    assert seen == [None]
    assert context.actor_id() is None


async def test_bind_to_request_in_a_worker_thread_is_refused() -> None:
    """A sync dependency runs in a worker thread on a copy of the context: refused, not lost.

    The value would land in the copy and vanish when the thread's call returned, leaving
    the request without its actor, silently.
    """
    with context.request_scope():
        with pytest.raises(RuntimeError, match="thread"):
            await asyncio.to_thread(context.bind_to_request, actor="lost")
        assert context.actor_id() is None
        context.bind_to_request(actor="kept")  # in the request's own thread: fine
        assert context.actor_id() == "kept"


def test_bind_to_request_in_a_job_run_on_its_own_thread_works() -> None:
    """A worker thread that opens its own request scope binds inside it as usual."""
    seen: list[str | None] = []

    def job() -> None:
        with context.request_scope():
            context.bind_to_request(actor="job")
            seen.append(context.actor_id())

    thread = threading.Thread(target=job)
    thread.start()
    thread.join()
    assert seen == ["job"]


async def test_factories_that_ask_for_the_error_see_the_one_that_failed_the_request(
    tmp_path: Path,
) -> None:
    """A factory registered with suppress_context_exit=False sees a handled error too.

    A unit of work per request commits or rolls back on it; the 404 a NotFoundError
    becomes is answered inside FastAPI, so the scope closed outside sees no exception.
    """
    seen: list[str | None] = []

    async def unit_of_work() -> AsyncIterator[Counter]:
        try:
            yield Counter()
        except Exception as error:
            seen.append(type(error).__name__)
            raise
        seen.append(None)

    app = FastAPI()

    @app.get("/x/{fail}")
    async def endpoint(fail: bool, scope: RequestScope) -> None:
        await scope.aget(Counter)
        if fail:
            raise NotFoundError("gone")

    infra = Infrastructure(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db"))
    infra.services.registry.register_factory(Counter, unit_of_work, suppress_context_exit=False)
    async with _client(instrument(app, infra)) as client:
        assert (await client.get("/x/true")).status_code == 404
        assert (await client.get("/x/false")).status_code == 200
    assert seen == ["NotFoundError", None]
