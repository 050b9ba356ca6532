"""corestone.web.contract on a bare FastAPI app: strict queries, media types, HEAD, Allow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import pytest
import starlette.datastructures
from fastapi import APIRouter, Depends, FastAPI, Query
from fastapi.testclient import TestClient
from pydantic import BaseModel

import corestone.web.contract
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


def _api_key(api_key: Annotated[str, Query()] = "none") -> str:
    return api_key


def test_parameters_of_an_inclusions_dependencies_are_known() -> None:
    """``include_router(dependencies=[…])`` adds that dependency's query parameter to every
    route included: it is accepted there (it was refused as unknown), and still refused
    on the same routes included without it."""
    app = FastAPI()
    app.include_router(_app().router, prefix="/keyed", dependencies=[Depends(_api_key)])
    app.include_router(_app().router, prefix="/open")
    client = TestClient(app)
    assert client.get("/keyed/items?api_key=k&limit=2").json() == {"q": None, "limit": 2}
    repeated = client.get("/keyed/items?api_key=k&api_key=j")
    assert (repeated.status_code, repeated.json()["rule"]) == (422, "repeated_parameter")
    refused = client.get("/open/items?api_key=k")
    assert (refused.status_code, refused.json()["field"]) == (422, "api_key")


def test_a_query_string_is_parsed_once_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """The strict check reads the QueryParams FastAPI parses for the route's parameters:
    one parse per request, where it used to parse the query string a second time."""
    calls: list[str] = []

    def counted(parse: Callable[..., Any]) -> Callable[..., Any]:
        def parse_once(*args: Any, **kwargs: Any) -> Any:
            calls.append(str(args[0]))
            return parse(*args, **kwargs)

        return parse_once

    monkeypatch.setattr(
        starlette.datastructures, "parse_qsl", counted(starlette.datastructures.parse_qsl)
    )
    if hasattr(corestone.web.contract, "parse_qsl"):  # the module before it read QueryParams
        monkeypatch.setattr(
            corestone.web.contract, "parse_qsl", counted(corestone.web.contract.parse_qsl)
        )
    client = TestClient(_app())
    assert client.get("/items?q=a&limit=3").status_code == 200
    assert calls == ["q=a&limit=3"]
    calls.clear()
    assert client.get("/items?q=a&q=b").status_code == 422
    assert calls == ["q=a&q=b"]


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
