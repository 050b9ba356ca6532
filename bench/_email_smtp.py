"""The email suite's SMTP half: a counting aiosmtpd server in its own process, three senders.

The server runs in a child process (its own core on a 2-vCPU machine, its own event
loop), accepts every message with ``250`` without parsing it, and counts the connections
it accepted and the messages it received in shared counters, so the figures are what the
server saw, not what a client believes it did. Each run also reports the CPU time per
message of both sides (this process, and the server's process read from ``/proc``): on
a local server without TLS both are bound by CPU, which says where a way's time goes.

Every contender starts from the same data (a recipient, a subject and a text per
message), builds its own message objects inside the timed window, and runs with the same
concurrency (``CONCURRENCY`` calls in flight, corestone's pool size). Every client names
itself with the same fixed EHLO hostname: left unset, aiosmtplib looks up the machine's
FQDN on every connection, which would charge the per-message contenders for DNS. With
``tls`` the server requires STARTTLS (a self-signed certificate, which no client
verifies), as a real submission server does.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage as MimeMessage
from multiprocessing.sharedctypes import Synchronized
from typing import Any

import aiosmtplib
from aiosmtpd.smtp import SMTP as SMTPServer  # noqa: N811 - a class, named as one
from aiosmtpd.smtp import Envelope, Session
from fastapi_mail import ConnectionConfig, FastMail, MessageSchema, MessageType

from corestone.email import EmailMessage
from corestone.email.providers.base import Outgoing
from corestone.email.providers.smtp import SmtpProvider
from corestone.errors import EmailProviderError

__all__ = [
    "CONCURRENCY",
    "Mail",
    "SmtpResult",
    "corestone_bulk",
    "fastapi_mail_lists",
    "fastapi_mail_single",
    "mails",
    "one_connection_per_message",
    "smtp_server",
]

CONCURRENCY = 2
"""Calls in flight for every contender: corestone's default SMTP pool size."""
BATCH = 100
"""Messages per corestone batch and per fastapi-mail list: the SMTP provider's max_batch."""
EHLO_NAME = "bench.localhost"
SENDER = "bench@example.com"


@dataclass(frozen=True, slots=True)
class Mail:
    """What the application has before it sends: the same for every contender."""

    to: str
    subject: str
    text: str


def mails(count: int) -> list[Mail]:
    body = "Your task is ready. " * 20  # ~400 bytes, a notification's size
    return [Mail(f"user{i}@example.org", f"Task {i} is assigned", body) for i in range(count)]


@dataclass(frozen=True, slots=True)
class SmtpResult:
    """One contender's run as the server counted it."""

    seconds: float
    messages: int
    connections: int
    errors: int
    client_cpu: float = 0.0
    """CPU seconds of this process (the client) over the run."""
    server_cpu: float | None = None
    """CPU seconds of the server's process over the run (None: no ``/proc`` to read)."""

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    def cpu_us(self, seconds: float | None) -> float | None:
        """``seconds`` of CPU per message received, in µs."""
        if seconds is None or not self.messages:
            return None
        return seconds / self.messages * 1e6


# -- the server (child process) -------------------------------------------------------


class _Counting:
    """aiosmtpd handler: count each message, keep nothing."""

    def __init__(self, messages: Synchronized[int]) -> None:
        self.messages = messages

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTPServer, session: Session, envelope: Envelope
    ) -> str:
        with self.messages.get_lock():
            self.messages.value += 1
        return "250 OK"


def _serve(
    port: int,
    connections: Synchronized[int],
    messages: Synchronized[int],
    certificate: tuple[str, str] | None,
) -> None:
    tls: ssl.SSLContext | None = None
    if certificate is not None:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(*certificate)

    async def main() -> None:
        handler = _Counting(messages)

        def protocol() -> SMTPServer:
            with connections.get_lock():
                connections.value += 1
            # hostname given: by default aiosmtpd looks up the FQDN for each connection
            return SMTPServer(
                handler,
                hostname="bench-server.localhost",
                enable_SMTPUTF8=True,
                tls_context=tls,
                require_starttls=tls is not None,
            )

        server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


@dataclass
class SmtpServer:
    port: int
    tls: bool
    """STARTTLS required (a self-signed certificate; clients do not verify it)."""
    _connections: Synchronized[int]
    _messages: Synchronized[int]
    _pid: int | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}" + ("?starttls=true" if self.tls else "")

    def client_tls(self) -> ssl.SSLContext | None:
        """What corestone's provider is given: no verification, as the peers are told."""
        if not self.tls:
            return None
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context

    def counts(self) -> tuple[int, int]:
        """(connections accepted, messages received) so far."""
        return self._connections.value, self._messages.value

    def server_cpu(self) -> float | None:
        """CPU seconds the server's process has used (Linux ``/proc``; None elsewhere)."""
        try:
            with open(f"/proc/{self._pid}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except (OSError, TypeError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    async def measure(self, send: Callable[[], Awaitable[int]]) -> SmtpResult:
        """Run one contender; its figures are the server's counts over its run."""
        connections, messages = self.counts()
        client, server = time.process_time(), self.server_cpu()
        started = time.perf_counter()
        errors = await send()
        seconds = time.perf_counter() - started
        await asyncio.sleep(0.05)  # the last QUITs reach the server
        after_connections, after_messages = self.counts()
        after_server = self.server_cpu()
        return SmtpResult(
            seconds,
            after_messages - messages,
            after_connections - connections,
            errors,
            time.process_time() - client,
            None if server is None or after_server is None else after_server - server,
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _certificate(folder: str) -> tuple[str, str]:
    """A self-signed certificate and its key, made by openssl."""
    cert, key = f"{folder}/cert.pem", f"{folder}/key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@contextmanager
def smtp_server(*, tls: bool = False) -> Iterator[SmtpServer]:
    """Start the counting server in a child process (STARTTLS required with ``tls``)."""
    with tempfile.TemporaryDirectory() as folder:
        certificate = _certificate(folder) if tls else None
        with _server_process(certificate) as server:
            yield server


@contextmanager
def _server_process(certificate: tuple[str, str] | None) -> Iterator[SmtpServer]:
    ctx = multiprocessing.get_context("spawn")
    connections: Any = ctx.Value("q", 0)
    messages: Any = ctx.Value("q", 0)
    port = _free_port()
    process = ctx.Process(
        target=_serve, args=(port, connections, messages, certificate), daemon=True
    )
    process.start()
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                    probe.recv(100)  # the greeting
                break
            except OSError:
                if time.monotonic() > deadline or not process.is_alive():
                    raise RuntimeError("the bench SMTP server did not start") from None
                time.sleep(0.05)
        server = SmtpServer(port, certificate is not None, connections, messages, process.pid)
        yield server
    finally:
        process.terminate()
        process.join(5)


# -- the contenders ---------------------------------------------------------------------


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def _in_flight(calls: list[Callable[[], Awaitable[int]]], limit: int) -> int:
    """Run ``calls`` with at most ``limit`` in flight; the sum of their error counts."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[int]]) -> int:
        async with gate:
            return await call()

    return sum(await asyncio.gather(*(one(c) for c in calls)))


async def corestone_bulk(server: SmtpServer, data: Sequence[Mail]) -> int:
    """corestone's SMTP provider: batches of ``max_batch`` over its pooled connections."""
    provider = SmtpProvider(
        server.url,
        pool_size=CONCURRENCY,
        max_batch=BATCH,
        local_hostname=EHLO_NAME,
        tls_context=server.client_tls(),
    )
    outgoing = [
        Outgoing(
            f"bench-{i}", EmailMessage.build(sender=SENDER, to=m.to, subject=m.subject, text=m.text)
        )
        for i, m in enumerate(data)
    ]

    async def batch(chunk: Sequence[Outgoing]) -> int:
        return sum(isinstance(r, EmailProviderError) for r in await provider.send_batch(chunk))

    try:
        # the provider's own pool (a semaphore of pool_size) is the concurrency limit
        results = await asyncio.gather(*(batch(c) for c in _chunks(outgoing, BATCH)))
    finally:
        await provider.aclose()
    return sum(results)


def _mime(mail: Mail) -> MimeMessage:
    mime = MimeMessage()
    mime["From"] = SENDER
    mime["To"] = mail.to
    mime["Subject"] = mail.subject
    mime.set_content(mail.text)
    return mime


async def one_connection_per_message(server: SmtpServer, data: Sequence[Mail]) -> int:
    """``aiosmtplib.send`` per message: connect, EHLO, send, QUIT, each time."""

    def call(mail: Mail) -> Callable[[], Awaitable[int]]:
        async def send() -> int:
            await aiosmtplib.send(
                _mime(mail),
                hostname="127.0.0.1",
                port=server.port,
                local_hostname=EHLO_NAME,
                start_tls=server.tls,
                validate_certs=False,
            )
            return 0

        return send

    return await _in_flight([call(m) for m in data], CONCURRENCY)


def _fastmail(server: SmtpServer) -> FastMail:
    config = ConnectionConfig(
        MAIL_USERNAME="",
        MAIL_PASSWORD="",
        MAIL_FROM=SENDER,
        MAIL_PORT=server.port,
        MAIL_SERVER="127.0.0.1",
        MAIL_STARTTLS=server.tls,
        MAIL_SSL_TLS=False,
        USE_CREDENTIALS=False,
        VALIDATE_CERTS=False,
        LOCAL_HOSTNAME=EHLO_NAME,
    )
    return FastMail(config)


def _schema(mail: Mail) -> MessageSchema:
    return MessageSchema(
        subject=mail.subject, recipients=[mail.to], body=mail.text, subtype=MessageType.plain
    )


async def fastapi_mail_single(server: SmtpServer, data: Sequence[Mail]) -> int:
    """fastapi-mail as its docs show it: one ``send_message`` (one connection) per message."""
    fm = _fastmail(server)

    def call(mail: Mail) -> Callable[[], Awaitable[int]]:
        async def send() -> int:
            await fm.send_message(_schema(mail))
            return 0

        return send

    return await _in_flight([call(m) for m in data], CONCURRENCY)


async def fastapi_mail_lists(server: SmtpServer, data: Sequence[Mail]) -> int:
    """fastapi-mail's own bulk: ``send_message`` of a list of 100 over one connection."""
    fm = _fastmail(server)

    def call(chunk: Sequence[Mail]) -> Callable[[], Awaitable[int]]:
        async def send() -> int:
            await fm.send_message([_schema(m) for m in chunk])
            return 0

        return send

    return await _in_flight([call(c) for c in _chunks(data, BATCH)], CONCURRENCY)
