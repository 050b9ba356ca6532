"""A request head past its limits is refused with 431 before the application sees it.

httptools alone buffers a request line and headers of any size and number; the server
corestone runs (taskboard serve) caps the head's bytes and its header count, and keeps
serving everyone else. Bodies are not counted: a large body with a small head is fine.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import httpx

from corestone.web._bounded_http import MAX_HEAD_BYTES, MAX_HEADERS
from tests.e2e.conftest import free_port, taskboard_command


def _exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)  # the server may answer before it has read everything
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_oversized_heads_get_431_and_the_server_keeps_serving(start_server, tmp_path: Path) -> None:
    """A header past MAX_HEAD_BYTES (in one write or trickled), too many headers or a URL past
    the limit: 431 and the connection closed; a head at the limit and a large body: served."""
    port = free_port()
    url = f"sqlite+aiosqlite:///{tmp_path / 'board.db'}"
    server = start_server(taskboard_command(port), {"CORESTONE_DATABASE_URL": url}, port)
    server.wait_ready()

    big_header = (
        b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: "
        + b"a" * (2 * MAX_HEAD_BYTES)
        + b"\r\n\r\n"
    )
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS + 1))
    many_headers = b"GET /health/live HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"
    long_url = b"GET /health/live?" + b"q" * (2 * MAX_HEAD_BYTES) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    for request in (big_header, many_headers, long_url):
        answer = _exchange(port, request)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]

    trickled = socket.create_connection(("127.0.0.1", port), timeout=10)
    with trickled:
        trickled.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        for _ in range(2 * MAX_HEAD_BYTES // 4096):
            try:
                trickled.sendall(b"b" * 4096)
            except (BrokenPipeError, ConnectionResetError):
                break
        assert trickled.recv(100).startswith(b"HTTP/1.1 431 ")

    fits = b"X-Fits: " + b"c" * (MAX_HEAD_BYTES // 2)
    ok = _exchange(
        port, b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + fits + b"\r\n\r\n"
    )
    assert ok.startswith(b"HTTP/1.1 200 "), ok[:100]
    body = b"{" + b" " * (200 * 1024) + b"}"  # past the head limit, under the body limit
    posted = _exchange(
        port,
        b"POST /api/workspaces HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
    )
    assert posted.startswith(b"HTTP/1.1 401 "), posted[:100]  # read whole, then no token
    assert httpx.get(f"{server.url}/health/live").status_code == 200
    assert server.stop() == 0
