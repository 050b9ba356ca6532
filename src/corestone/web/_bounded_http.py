"""uvicorn's httptools protocol with a cap on the request head: 431, not unbounded memory.

httptools (llhttp) accepts a request line and headers of any size and any number: an
8 MB header, or 100,000 of them, is buffered and handed to the application, and uvicorn
builds the URL by repeated concatenation. That is memory and CPU any client can spend.
This protocol counts the bytes of the head (request line and headers) as they arrive and
the headers as they are parsed, and answers ``431 Request Header Fields Too Large``
(RFC 6585) and closes the connection once either passes its limit: before the application
sees the request, and without buffering more than the limit. A body is not counted.
"""

from __future__ import annotations

from typing import Any, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["LINGER_SECONDS", "MAX_HEADERS", "MAX_HEAD_BYTES", "BoundedHttpToolsProtocol"]

MAX_HEAD_BYTES: Final = 64 * 1024
"""Request line + headers. nginx allows 4 buffers of 8 KiB, Node 16 KiB in all;
64 KiB leaves room for long tokens and cookies."""
MAX_HEADERS: Final = 100
LINGER_SECONDS: Final = 1.0
"""After a 431 the client is usually still sending its head. Closing at once would make
the kernel answer the unread bytes with a reset, which destroys the 431 on its way; so
the connection reads and drops input for this long (nginx's lingering close) first."""


class _HeadTooLargeError(Exception):
    """Raised inside a parser callback to stop parsing the request at once."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that refuses an oversized head with 431 (``http=`` of uvicorn)."""

    max_head_bytes: int = MAX_HEAD_BYTES
    max_headers: int = MAX_HEADERS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_open = True  # the first request's head starts with the first byte
        self._head_bytes = 0
        self._header_count = 0
        self._too_large = False
        self._lingering = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = True
        self._head_bytes = 0
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_headers:
            self._too_large = True
            raise _HeadTooLargeError  # httptools stops and uvicorn answers: see send_400_response
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # refused already: drop what the client is still sending
        if not self._head_open:
            super().data_received(data)
            return
        allowed = self.max_head_bytes - self._head_bytes
        if len(data) <= allowed:
            self._head_bytes += len(data)  # may count a body's first bytes: harmless
            super().data_received(data)
            return
        self._head_bytes = self.max_head_bytes
        super().data_received(data[:allowed])  # the head may end within the allowed part
        if self.transport.is_closing():
            return
        if self._reading_head():  # the parser's callbacks may have closed it meanwhile
            self._send_431()
        else:
            super().data_received(data[allowed:])

    def _reading_head(self) -> bool:
        return self._head_open

    def send_400_response(self, msg: str) -> None:
        if self._too_large:  # the parser stopped because we raised in a callback
            self._send_431()
        else:
            super().send_400_response(msg)

    def _send_431(self) -> None:
        message = b"Request header fields too large"
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: " + str(len(message)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + message
        )
        self._lingering = True
        self._head_open = False
        self.loop.call_later(LINGER_SECONDS, self.transport.close)
