"""HTTP middleware and problem+json: request ids, body limits, RED metrics, error mapping."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from fastapi import APIRouter, FastAPI, Request
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route
from starlette.types import Message, Receive, Scope, Send

from corestone import context
from corestone.config import Settings
from corestone.errors import (
    AuthenticationError,
    CircuitOpenError,
    ConfigurationError,
    ConflictError,
    CorestoneError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    StaleVersionError,
    UnavailableError,
)
from corestone.observability.logging import configure_logging
from corestone.observability.metrics import Metrics
from corestone.runtime import Infrastructure
from corestone.testing import ManualClock
from corestone.web.app import instrument
from corestone.web.middleware import (
    BodySizeLimitMiddleware,
    HttpMetricsMiddleware,
    RequestContextMiddleware,
    route_template,
)
from corestone.web.problems import (
    PROBLEM_CONTENT_TYPE,
    STATUS_BY_CODE,
    internal_error_problem,
    problem_for_error,
    problem_response,
)

SAFE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def _raw_request(
    app: Any,
    *,
    method: str = "POST",
    path: str = "/",
    headers: Iterable[tuple[bytes, bytes]] = (),
    chunks: Iterable[bytes] = (b"",),
) -> tuple[int, dict[str, str], bytes]:
    """Call an ASGI app directly, for requests an HTTP client refuses to build."""
    pending = list(chunks)
    messages: list[Message] = []

    async def receive() -> Message:
        if pending:
            body = pending.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(pending)}
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": list(headers),
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    await app(scope, receive, send)
    [start] = [m for m in messages if m["type"] == "http.response.start"]
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


async def _echo_correlation(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI app answering with the correlation id it sees."""
    body = (context.correlation_id() or "").encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def _count_body(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI app that reads the whole body and answers with its length."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


def _counter_samples(metrics: Metrics) -> dict[tuple[str, str, str], float]:
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    return {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for s in families["corestone_http_requests"].samples
        if s.name == "corestone_http_requests_total"
    }


def _in_flight(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("corestone_http_requests_in_flight")


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


# --- RequestContextMiddleware ---------------------------------------------------------


async def test_a_safe_request_id_is_accepted_bound_and_returned() -> None:
    """A well-formed X-Request-ID becomes the correlation id and comes back on the response."""
    async with _client(RequestContextMiddleware(_echo_correlation)) as client:
        response = await client.get("/", headers={"X-Request-ID": "req-abc.123"})

    assert response.headers["x-request-id"] == "req-abc.123"
    assert response.text == "req-abc.123"


async def test_a_missing_request_id_is_generated_and_returned() -> None:
    """Without X-Request-ID a fresh id is bound and returned."""
    async with _client(RequestContextMiddleware(_echo_correlation)) as client:
        first = await client.get("/")
        second = await client.get("/")

    assert re.fullmatch(r"[0-9a-f]{32}", first.headers["x-request-id"])
    assert first.text == first.headers["x-request-id"]
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@pytest.mark.parametrize(
    "hostile",
    [
        b"abc\r\nSet-Cookie: session=stolen",
        b"abc\nX-Injected: 1",
        b"x" * 1000,
        "ідентифікатор".encode(),
        b"abc def",
    ],
)
async def test_a_hostile_request_id_is_replaced(hostile: bytes) -> None:
    """Header injection, megabyte ids or non-ASCII ids are replaced, never echoed."""
    async with _client(RequestContextMiddleware(_echo_correlation)) as client:
        response = await client.get("/", headers={"X-Request-ID": hostile})

    returned = response.headers["x-request-id"]
    assert SAFE_ID.fullmatch(returned)
    assert returned.encode() != hostile
    assert response.text == returned
    assert "set-cookie" not in response.headers
    assert "x-injected" not in response.headers


async def test_the_request_is_logged_with_its_correlation_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each request produces one log line carrying the correlation id, method, path and status."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging(format="json")
    try:
        async with _client(RequestContextMiddleware(_echo_correlation)) as client:
            await client.get("/tasks", headers={"X-Request-ID": "req-logged"})
    finally:
        structlog.reset_defaults()
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    [request] = [line for line in lines if line["event"] == "request"]
    assert request["correlation_id"] == "req-logged"
    assert (request["method"], request["path"], request["status"]) == ("GET", "/tasks", 200)


async def test_the_apps_own_request_id_header_is_replaced() -> None:
    """An X-Request-ID set by the app is replaced by the bound one, never duplicated."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"x-request-id", b"from-app"), (b"x-other", b"kept")]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async with _client(RequestContextMiddleware(app)) as client:
        response = await client.get("/", headers={"X-Request-ID": "from-client"})

    assert response.headers.get_list("x-request-id") == ["from-client"]
    assert response.headers["x-other"] == "kept"


async def test_the_correlation_id_is_unbound_after_the_request() -> None:
    """The id is bound only while the request is handled."""
    async with _client(RequestContextMiddleware(_echo_correlation)) as client:
        await client.get("/", headers={"X-Request-ID": "req-1"})

    assert context.correlation_id() is None


async def test_an_unhandled_exception_becomes_a_problem_without_internals() -> None:
    """An exception before any response is a 500 problem+json with the correlation id only."""

    async def crashing(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("database password is hunter2")

    async with _client(RequestContextMiddleware(crashing)) as client:
        response = await client.get("/boom", headers={"X-Request-ID": "req-crash"})

    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert response.headers["x-request-id"] == "req-crash"
    body = response.json()
    assert body["status"] == 500
    assert body["code"] == "internal"
    assert body["correlation_id"] == "req-crash"
    assert body["instance"] == "/boom"
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text


async def test_an_exception_in_an_instrumented_fastapi_app_is_a_problem(tmp_path: Path) -> None:
    """Through instrument(), a crashing endpoint answers 500 problem+json and is counted."""
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def crash(item_id: int) -> None:
        raise RuntimeError(f"secret detail for {item_id}")

    infra = Infrastructure(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db"))
    async with _client(instrument(app, infra)) as client:
        response = await client.get("/items/3")

    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert response.json()["correlation_id"] == response.headers["x-request-id"]
    assert "secret detail" not in response.text
    assert _counter_samples(infra.metrics) == {("GET", "/items/{item_id}", "500"): 1.0}


async def test_websocket_and_lifespan_scopes_pass_through() -> None:
    """Non-HTTP scopes reach the app untouched by every middleware."""
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        pass

    stack = RequestContextMiddleware(
        HttpMetricsMiddleware(BodySizeLimitMiddleware(app, max_bytes=10), metrics=Metrics())
    )
    await stack({"type": "lifespan"}, receive, send)

    assert seen == ["lifespan"]


# --- BodySizeLimitMiddleware ----------------------------------------------------------


def _assert_payload_too_large(status: int, body: bytes, limit: int) -> None:
    assert status == 413
    problem = json.loads(body)
    assert problem["code"] == "payload_too_large"
    assert problem["status"] == 413
    assert problem["limit_bytes"] == limit
    assert problem["field"] == "body"


async def test_a_declared_body_over_the_limit_is_refused_without_calling_the_app() -> None:
    """A Content-Length above the limit gets 413 problem+json before the app runs."""
    calls: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append("called")
        await _count_body(scope, receive, send)

    async with _client(BodySizeLimitMiddleware(app, max_bytes=10)) as client:
        response = await client.post("/upload", content=b"x" * 11)

    _assert_payload_too_large(response.status_code, response.content, 10)
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert response.json()["instance"] == "/upload"
    assert calls == []


async def test_a_body_at_the_limit_passes() -> None:
    """Exactly max_bytes, declared or streamed, is allowed."""
    async with _client(BodySizeLimitMiddleware(_count_body, max_bytes=10)) as client:
        declared = await client.post("/", content=b"x" * 10)
        streamed = await client.post("/", content=_chunks(b"x" * 4, b"x" * 6))

    assert (declared.status_code, declared.text) == (200, "10")
    assert (streamed.status_code, streamed.text) == (200, "10")


async def test_a_streamed_body_over_the_limit_is_refused() -> None:
    """A chunked body without Content-Length gets 413 once it passes the limit."""
    async with _client(BodySizeLimitMiddleware(_count_body, max_bytes=10)) as client:
        response = await client.post("/", content=_chunks(b"x" * 4, b"x" * 4, b"x" * 4))

    assert "content-length" not in response.request.headers
    _assert_payload_too_large(response.status_code, response.content, 10)
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE


async def test_a_streamed_body_over_the_limit_is_refused_by_a_starlette_app() -> None:
    """A framework reading the body sees a disconnect; the client gets 413 and nothing raises."""

    async def read_all(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(len(await request.body())))

    app = Starlette(routes=[Route("/upload", read_all, methods=["POST"])])

    async with _client(BodySizeLimitMiddleware(app, max_bytes=10)) as client:
        response = await client.post("/upload", content=_chunks(b"x" * 8, b"x" * 8))

    _assert_payload_too_large(response.status_code, response.content, 10)


async def test_a_streamed_body_over_the_limit_is_refused_by_a_fastapi_app() -> None:
    """A FastAPI endpoint reading the body behind the limit also gives 413 problem+json."""
    app = FastAPI()

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    async with _client(BodySizeLimitMiddleware(app, max_bytes=10)) as client:
        response = await client.post("/upload", content=_chunks(b"x" * 8, b"x" * 8))

    _assert_payload_too_large(response.status_code, response.content, 10)


@pytest.mark.parametrize("declared", [b"abc", b"-1", "\u00b2".encode("latin-1"), b"1e9"])
async def test_a_malformed_content_length_is_refused(declared: bytes) -> None:
    """A Content-Length that is not a plain number is a 400, never a crash of the middleware."""
    status, headers, body = await _raw_request(
        BodySizeLimitMiddleware(_count_body, max_bytes=10),
        headers=[(b"content-length", declared)],
    )

    assert status == 400
    assert json.loads(body)["field"] == "Content-Length"
    assert headers["content-type"] == PROBLEM_CONTENT_TYPE


async def test_the_limit_counts_bytes_across_chunks() -> None:
    """Many small chunks that add up past the limit are refused, read directly over ASGI."""
    status, _, body = await _raw_request(
        BodySizeLimitMiddleware(_count_body, max_bytes=10), chunks=[b"xx"] * 6
    )

    _assert_payload_too_large(status, body, 10)


# --- HttpMetricsMiddleware ------------------------------------------------------------


def _items_app(metrics: Metrics) -> tuple[FastAPI, HttpMetricsMiddleware]:
    app = FastAPI()
    router = APIRouter(prefix="/api")

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, object]:
        return {"id": item_id, "in_flight": _in_flight(metrics)}

    @router.get("/tasks/{task_id}")
    async def read_task(task_id: str) -> dict[str, str]:
        return {"id": task_id}

    app.include_router(router)
    return app, HttpMetricsMiddleware(app, metrics=metrics)


async def test_requests_are_labelled_by_route_template_not_raw_path() -> None:
    """Requests to /items/1 and /items/2 count under /items/{item_id}; no raw path appears."""
    metrics = Metrics()
    _, wrapped = _items_app(metrics)

    async with _client(wrapped) as client:
        await client.get("/items/1")
        await client.get("/items/2")
        await client.get("/api/tasks/abc")
        await client.get("/items/not-a-number")

    assert _counter_samples(metrics) == {
        ("GET", "/items/{item_id}", "200"): 2.0,
        ("GET", "/api/tasks/{task_id}", "200"): 1.0,
        ("GET", "/items/{item_id}", "422"): 1.0,
    }
    text = metrics.render().decode()
    assert "/items/1" not in text
    assert "/api/tasks/abc" not in text
    assert "not-a-number" not in text


async def test_unmatched_routes_are_counted_as_unmatched() -> None:
    """Requests that match no route share one label, so scanners cannot explode cardinality."""
    metrics = Metrics()
    _, wrapped = _items_app(metrics)

    async with _client(wrapped) as client:
        for path in ("/wp-admin", "/.env", "/items"):
            assert (await client.get(path)).status_code == 404

    assert _counter_samples(metrics) == {("GET", "unmatched", "404"): 3.0}
    assert "wp-admin" not in metrics.render().decode()


async def test_unknown_methods_are_labelled_other() -> None:
    """An unusual method does not become its own label value."""
    metrics = Metrics()
    _, wrapped = _items_app(metrics)

    async with _client(wrapped) as client:
        await client.request("BREW", "/items/1")

    [(method, _, _)] = _counter_samples(metrics)
    assert method == "OTHER"


async def test_plain_starlette_routes_are_labelled_by_template() -> None:
    """Starlette routes (not only FastAPI ones) are found by their template."""

    async def show(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    metrics = Metrics()
    app = Starlette(routes=[Route("/users/{user_id}", show)])

    async with _client(HttpMetricsMiddleware(app, metrics=metrics)) as client:
        await client.get("/users/17")

    assert _counter_samples(metrics) == {("GET", "/users/{user_id}", "200"): 1.0}


async def test_in_flight_gauge_counts_the_request_and_returns_to_zero() -> None:
    """The in-flight gauge is 1 while the request runs and 0 afterwards."""
    metrics = Metrics()
    _, wrapped = _items_app(metrics)

    async with _client(wrapped) as client:
        response = await client.get("/items/5")

    assert response.json()["in_flight"] == 1.0
    assert _in_flight(metrics) == 0.0


async def test_in_flight_gauge_returns_to_zero_when_the_app_raises() -> None:
    """A crashing app is counted as 500 and does not leave the gauge raised."""

    async def crashing(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    metrics = Metrics()
    with pytest.raises(RuntimeError):
        await _raw_request(HttpMetricsMiddleware(crashing, metrics=metrics), method="GET")

    assert _in_flight(metrics) == 0.0
    assert _counter_samples(metrics) == {("GET", "unmatched", "500"): 1.0}


async def test_concurrent_requests_are_all_in_flight_together() -> None:
    """Requests being handled at the same time each count in the gauge."""
    metrics = Metrics()
    all_seen, release = asyncio.Event(), asyncio.Event()
    seen: list[float | None] = []
    arrived = asyncio.Barrier(3)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await arrived.wait()
        seen.append(_in_flight(metrics))
        if len(seen) == 3:
            all_seen.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    wrapped = HttpMetricsMiddleware(app, metrics=metrics)
    tasks = [asyncio.create_task(_raw_request(wrapped, method="GET")) for _ in range(3)]
    await all_seen.wait()
    release.set()
    await asyncio.gather(*tasks)

    assert seen == [3.0, 3.0, 3.0]
    assert _in_flight(metrics) == 0.0


async def test_latency_is_observed_per_route() -> None:
    """The duration histogram has one observation per request under the route template."""
    metrics = Metrics()
    _, wrapped = _items_app(metrics)

    async with _client(wrapped) as client:
        await client.get("/items/1")
        await client.get("/items/2")

    count = metrics.registry.get_sample_value(
        "corestone_http_request_duration_seconds_count",
        {"method": "GET", "route": "/items/{item_id}"},
    )
    assert count == 2.0


def test_route_template_without_a_route_is_unmatched() -> None:
    """A scope no router has seen yields the unmatched label."""
    assert route_template({"type": "http", "path": "/x"}) == "unmatched"


async def test_two_middlewares_on_one_metrics_share_the_series() -> None:
    """Wrapping a second app with the same Metrics reuses the metrics instead of failing."""
    metrics = Metrics()
    HttpMetricsMiddleware(_echo_correlation, metrics=metrics)
    second = HttpMetricsMiddleware(_echo_correlation, metrics=metrics)

    await _raw_request(second, method="GET")

    assert _counter_samples(metrics) == {("GET", "unmatched", "200"): 1.0}


# --- problems -------------------------------------------------------------------------


def _problem(error: CorestoneError) -> tuple[int, dict[str, str], dict[str, Any]]:
    response = problem_for_error(error, instance="/x")
    return response.status_code, dict(response.headers), json.loads(bytes(response.body))


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (NotFoundError("no such task"), 404),
        (ConflictError("duplicate email"), 409),
        (StaleVersionError("changed", current_version=3), 409),
        (InvalidInputError("too long", field="title", rule="max_length"), 422),
        (PayloadTooLargeError(10), 413),
        (AuthenticationError("bad token"), 401),
        (PermissionDeniedError("owners only"), 403),
        (UnavailableError("db down", retry_after=2), 503),
        (CircuitOpenError("smtp", retry_after=5), 503),
    ],
)
def test_problem_for_error_maps_codes_to_statuses(error: CorestoneError, status: int) -> None:
    """Each error code has its HTTP status, and the body repeats status and code."""
    got, headers, body = _problem(error)

    assert got == status
    assert STATUS_BY_CODE[error.code] == status
    assert headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert body["status"] == status
    assert body["code"] == error.code
    assert body["type"] == f"urn:corestone:problem:{error.code}"
    assert body["detail"] == error.message
    assert body["instance"] == "/x"
    assert body["title"]


def test_invalid_input_names_the_field_and_rule() -> None:
    """A 422 carries the field and rule that were broken."""
    _, _, body = _problem(InvalidInputError("too long", field="title", rule="max_length"))

    assert (body["field"], body["rule"]) == ("title", "max_length")


def test_stale_version_carries_the_current_version() -> None:
    """A stale write's 409 tells the client which version to reload."""
    _, _, body = _problem(StaleVersionError("changed", current_version=3))

    assert body["current_version"] == 3


def test_unauthenticated_asks_for_a_bearer_token() -> None:
    """A 401 has WWW-Authenticate naming the Bearer scheme."""
    _, headers, _ = _problem(AuthenticationError("bad token"))

    assert headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("retry_after", "header"), [(2, "2"), (2.1, "3"), (0.2, "1"), (0, "1")])
def test_unavailable_has_retry_after_in_whole_seconds(retry_after: float, header: str) -> None:
    """A 503 says when to retry, rounded up to at least one second."""
    _, headers, body = _problem(UnavailableError("db down", retry_after=retry_after))

    assert headers["retry-after"] == header
    assert body["retry_after"] == retry_after


@pytest.mark.parametrize("retry_after", [None, float("inf"), float("nan")])
def test_unavailable_without_a_known_retry_time_has_no_retry_after(
    retry_after: float | None,
) -> None:
    """No usable retry time means no Retry-After header, and still a 503."""
    status, headers, _ = _problem(CircuitOpenError("smtp", retry_after=retry_after))

    assert status == 503
    assert "retry-after" not in headers


@pytest.mark.parametrize(
    "error", [ConfigurationError("CORESTONE_X is bad"), CorestoneError("internal detail")]
)
def test_errors_without_an_http_meaning_are_opaque_500s(error: CorestoneError) -> None:
    """Errors that are not the caller's fault become a 500 that says nothing about the cause."""
    status, _, body = _problem(error)

    assert status == 500
    assert body["code"] == "internal"
    assert error.message not in json.dumps(body)


def test_problem_response_shape_and_extensions() -> None:
    """The document has the RFC 9457 members, extensions, errors, and no None members."""
    with context.bind(correlation="req-9"):
        response = problem_response(
            422,
            "invalid_input",
            "title: too long",
            instance="/tasks",
            errors=[{"field": "title", "rule": "max_length"}],
            headers={"X-Extra": "1"},
            extensions={"field": "title", "hint": None},
        )

    body = json.loads(bytes(response.body))
    assert body == {
        "type": "urn:corestone:problem:invalid_input",
        "title": "Unprocessable Content",
        "status": 422,
        "code": "invalid_input",
        "detail": "title: too long",
        "instance": "/tasks",
        "field": "title",
        "errors": [{"field": "title", "rule": "max_length"}],
        "correlation_id": "req-9",
    }
    assert response.headers["x-extra"] == "1"
    assert response.media_type == PROBLEM_CONTENT_TYPE


def test_problem_response_without_context_has_no_correlation_id() -> None:
    """Outside a request no correlation_id member is invented."""
    body = json.loads(bytes(problem_response(404, "not_found", "gone").body))

    assert "correlation_id" not in body
    assert "instance" not in body


def test_internal_error_problem_says_nothing_about_the_cause() -> None:
    """The 500 document points to the correlation id and nothing else."""
    with context.bind(correlation="req-500"):
        response = internal_error_problem(instance="/x")

    body = json.loads(bytes(response.body))
    assert response.status_code == 500
    assert body["code"] == "internal"
    assert body["correlation_id"] == "req-500"
    assert "correlation_id" in body["detail"]


# --- route labels behind mounts, refused bodies, slow bodies ---------------------------


async def test_requests_behind_a_mount_with_a_parameter_are_labelled_by_its_template() -> None:
    """A mount's own template, not the raw root_path, prefixes the route label."""
    metrics = Metrics()
    inner = FastAPI()

    @inner.get("/tasks/{task_id}")
    async def read(task_id: str) -> dict[str, str]:
        return {"id": task_id}

    async def show(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    outer = FastAPI()
    outer.mount("/ws/{ws}", inner)
    outer.mount("/org/{org}", Starlette(routes=[Mount("/team/{team}", routes=[Route("/", show)])]))
    wrapped = HttpMetricsMiddleware(BodySizeLimitMiddleware(outer, max_bytes=1024), metrics)

    async with _client(wrapped) as client:
        for ws in ("1", "2", "3"):
            assert (await client.get(f"/ws/{ws}/tasks/t{ws}")).status_code == 200
        assert (await client.get("/org/a/team/b/")).status_code == 200

    assert _counter_samples(metrics) == {
        ("GET", "/ws/{ws}/tasks/{task_id}", "200"): 3.0,
        ("GET", "/org/{org}/team/{team}/", "200"): 1.0,
    }
    assert "/ws/1" not in metrics.render().decode()


async def test_a_declared_body_over_the_limit_is_counted_under_its_route() -> None:
    """A 413 refused before the app ran is labelled with the route the request was for."""
    metrics = Metrics()
    app = FastAPI()

    @app.post("/upload/{name}")
    async def upload(name: str, request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    wrapped = HttpMetricsMiddleware(BodySizeLimitMiddleware(app, max_bytes=10), metrics)

    async with _client(wrapped) as client:
        assert (await client.post("/upload/a", content=b"x" * 11)).status_code == 413

    assert _counter_samples(metrics) == {("POST", "/upload/{name}", "413"): 1.0}


async def test_a_content_length_of_five_thousand_digits_is_a_400_problem() -> None:
    """A huge all-digit Content-Length is a 400 problem+json at the ASGI level, never a 500."""
    status, headers, body = await _raw_request(
        BodySizeLimitMiddleware(_count_body, max_bytes=10),
        headers=[(b"content-length", b"9" * 5000)],
    )

    assert status == 400
    assert headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert json.loads(body)["code"] == "invalid_input"


def _trickle(clock: ManualClock, *, seconds_per_chunk: float, chunks: int) -> Receive:
    """A client sending ``chunks`` of one byte, each taking ``seconds_per_chunk``, then waiting."""
    sent = 0

    async def receive() -> Message:
        nonlocal sent
        if sent < chunks:
            sent += 1
            clock.advance(seconds_per_chunk)
            return {"type": "http.request", "body": b"x", "more_body": sent < chunks}
        return {"type": "http.disconnect"}

    return receive


async def _call(app: Any, receive: Receive) -> tuple[int, bytes]:
    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/upload",
        "root_path": "",
        "headers": [],
        "query_string": b"",
    }
    await app(scope, receive, send)
    [start] = [m for m in messages if m["type"] == "http.response.start"]
    return start["status"], b"".join(m.get("body", b"") for m in messages[1:])


async def test_a_trickling_body_gets_408_and_frees_its_slot() -> None:
    """A body still arriving after the body timeout is answered 408 and the app is released."""
    clock = ManualClock()
    released: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await _count_body(scope, receive, send)
        finally:
            released.append("done")

    limited = BodySizeLimitMiddleware(app, max_bytes=1000, body_timeout_seconds=5, clock=clock)

    status, body = await _call(limited, _trickle(clock, seconds_per_chunk=2, chunks=10))

    assert status == 408
    problem = json.loads(body)
    assert (problem["code"], problem["status"]) == ("request_timeout", 408)
    assert released == ["done"]


async def test_a_body_within_the_timeout_passes_and_a_later_receive_is_not_limited() -> None:
    """Once the body is complete, waiting for the disconnect (as SSE does) is never cut off."""
    clock = ManualClock()
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await _count_body(scope, receive, send)
        clock.advance(3600)
        seen.append((await receive())["type"])

    limited = BodySizeLimitMiddleware(app, max_bytes=1000, body_timeout_seconds=5, clock=clock)

    status, body = await _call(limited, _trickle(clock, seconds_per_chunk=1, chunks=3))

    assert (status, body) == (200, b"3")
    assert seen == ["http.disconnect"]


async def test_the_body_timeout_comes_from_settings(tmp_path: Path) -> None:
    """CORESTONE_HTTP_BODY_TIMEOUT_SECONDS reaches the middleware that instrument() builds."""
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db",
        http_body_timeout_seconds=7,
    )
    assert Settings().http_body_timeout_seconds == 30
    wrapped: Any = instrument(FastAPI(), Infrastructure(settings))
    while not isinstance(wrapped, BodySizeLimitMiddleware):
        wrapped = wrapped.app
    assert wrapped.body_timeout_seconds == 7


def _bodiless_get() -> tuple[Scope, Receive]:
    """A GET with no body, from a server on ASGI spec 2.3 (uvicorn's), whose client stays."""
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "method": "GET",
        "path": "/report",
        "root_path": "",
        "headers": [],
        "query_string": b"",
    }
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    return scope, receive


async def test_a_slow_handler_streaming_its_answer_is_not_a_body_timeout() -> None:
    """Time the app spends before it reads a body that has already arrived is not a 408."""
    clock = ManualClock()

    async def report(scope: Scope, receive: Receive, send: Send) -> None:
        clock.advance(31)  # a slow query before the report streams

        async def rows() -> AsyncIterator[bytes]:
            yield b"row"

        await StreamingResponse(rows())(scope, receive, send)

    limited = BodySizeLimitMiddleware(report, max_bytes=1000, body_timeout_seconds=30, clock=clock)
    scope, receive = _bodiless_get()
    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)

    await limited(scope, receive, send)

    assert messages[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in messages[1:]) == b"row"


async def test_a_body_read_late_by_a_busy_app_is_not_a_body_timeout() -> None:
    """An app that reads the body only after waiting for a slot is not answered 408."""
    clock = ManualClock()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        clock.advance(60)  # waiting for a bulkhead permit
        await _count_body(scope, receive, send)

    limited = BodySizeLimitMiddleware(app, max_bytes=1000, body_timeout_seconds=5, clock=clock)

    status, body = await _call(limited, _trickle(clock, seconds_per_chunk=1, chunks=3))

    assert (status, body) == (200, b"3")


async def test_a_mounted_plain_asgi_app_is_labelled_by_its_mount_template() -> None:
    """A mount of an app without routes is labelled by its own template, not the outer app's."""
    metrics = Metrics()

    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse("raw")(scope, receive, send)

    outer = FastAPI()

    @outer.get("/{anything}")
    async def catch_all(anything: str) -> dict[str, str]:
        return {"got": anything}

    outer.mount("/raw/{r}", raw)
    wrapped = HttpMetricsMiddleware(BodySizeLimitMiddleware(outer, max_bytes=1024), metrics)

    async with _client(wrapped) as client:
        for r in ("a", "b"):
            assert (await client.get(f"/raw/{r}/file-{r}")).text == "raw"

    assert _counter_samples(metrics) == {("GET", "/raw/{r}", "200"): 2.0}


async def test_a_path_that_makes_routing_raise_is_still_counted() -> None:
    """A path whose route matching raises (5,000 digits for an int convertor) is still counted."""
    metrics = Metrics()

    async def show(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/n/{id:int}", show)])
    wrapped = RequestContextMiddleware(HttpMetricsMiddleware(app, metrics))

    async with _client(wrapped) as client:
        assert (await client.get("/n/" + "9" * 5000)).status_code == 500

    assert _counter_samples(metrics) == {("GET", "unmatched", "500"): 1.0}
