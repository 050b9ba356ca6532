"""corestone.web.contract on a bare FastAPI app: strict queries, media types, HEAD, Allow."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query
from fastapi.testclient import TestClient
from pydantic import BaseModel

from corestone.web.contract import HeadAsGet, StrictRoute, allowed_methods


def _paging(limit: Annotated[int, Query()] = 10) -> int:
    return limit


class _Item(BaseModel):
    name: str


def _app() -> FastAPI:
    router = APIRouter(route_class=StrictRoute)

    @router.get("/items")
    async def items(q: str | None = None, limit: int = Depends(_paging)) -> dict[str, object]:
        return {"q": q, "limit": limit}

    @router.post("/items")
    async def add(item: _Item) -> dict[str, str]:
        return {"name": item.name}

    app = FastAPI()
    app.include_router(router)
    return app


def test_query_names_include_those_of_dependencies() -> None:
    """A parameter a dependency declares is known; others and repeats are 422 naming them."""
    client = TestClient(_app())
    assert client.get("/items?q=a&limit=3").json() == {"q": "a", "limit": 3}
    unknown = client.get("/items?qq=a")
    assert unknown.status_code == 422
    assert (unknown.json()["field"], unknown.json()["rule"]) == ("qq", "unknown_parameter")
    repeated = client.get("/items?limit=1&limit=2")
    assert (repeated.json()["field"], repeated.json()["rule"]) == ("limit", "repeated_parameter")


def test_a_body_must_be_json_by_its_content_type() -> None:
    """``+json`` types pass, others are 415; a request with no body is left to validation."""
    client = TestClient(_app())
    ok = client.post(
        "/items", content=b'{"name": "a"}', headers={"content-type": "application/merge+json"}
    )
    assert ok.status_code == 200
    refused = client.post(
        "/items", content=b'{"name": "a"}', headers={"content-type": "text/plain"}
    )
    assert refused.status_code == 415
    assert refused.headers["content-type"] == "application/problem+json"
    assert client.post("/items").status_code == 422


def test_allowed_methods_walk_included_routers() -> None:
    """Every method served at a path is found, through included routers, HEAD beside GET."""
    app = _app()
    scope = {"type": "http", "path": "/items", "method": "PUT"}
    assert allowed_methods(app.router.routes, scope) == ["GET", "HEAD", "POST"]
    assert allowed_methods(app.router.routes, {**scope, "path": "/nothing"}) == []


def test_head_is_get_without_a_body() -> None:
    """HEAD reaches the GET route; the client gets its headers and no body."""
    client = TestClient(HeadAsGet(_app()))
    got = client.get("/items")
    head = client.head("/items")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"]
