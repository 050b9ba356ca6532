"""Fixtures of the provider tests: a real SMTP server, a DKIM key pair, messages."""

from __future__ import annotations

import base64
import contextlib
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from aiosmtpd.controller import Controller

from corestone.email.message import EmailMessage
from corestone.email.providers.base import Outgoing
from tests.integration.email_providers.fakes import (
    FakeHttpServer,
    MailgunFake,
    SendGridFake,
    SesFake,
    SmtpRecorder,
    start_smtp,
)

F = TypeVar("F", bound=FakeHttpServer)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class SmtpServer:
    recorder: SmtpRecorder
    port: int
    controller: Controller | None

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd, SMTPUTF8 on) on a free port, recording what it accepts."""
    recorder = SmtpRecorder()
    port = free_port()
    server = SmtpServer(recorder, port, start_smtp(recorder, port))
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class DkimPair:
    private_pem: bytes
    dns_record: bytes


@pytest.fixture(scope="session")
def dkim_pair(tmp_path_factory: pytest.TempPathFactory) -> DkimPair:
    """An RSA key made by openssl, and the DNS TXT record publishing its public half."""
    folder: Path = tmp_path_factory.mktemp("dkim")
    key = folder / "key.pem"
    subprocess.run(
        ["openssl", "genrsa", "-traditional", "-out", str(key), "2048"],
        check=True, capture_output=True,
    )  # fmt: skip
    public = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    return DkimPair(key.read_bytes(), record)


def message(**fields: object) -> EmailMessage:
    """A valid message; ``fields`` override the defaults."""
    values: dict[str, object] = {
        "sender": ("Corestone", "noreply@example.com"),
        "to": ["ada@example.org"],
        "subject": "Hello",
        "text": "Hello, Ada.",
    }
    values.update(fields)
    return EmailMessage.build(**values)  # type: ignore[arg-type]


def outgoing(message_id: str = "m-1", **fields: object) -> Outgoing:
    return Outgoing(message_id, message(**fields))


SENDGRID_KEY = "SG.test-key-8d2f"
MAILGUN_KEY = "key-mg-test-41aa"
MAILGUN_DOMAIN = "mg.example.com"
AWS_KEY_ID = "AKIDEXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
AWS_REGION = "eu-west-1"


@contextlib.asynccontextmanager
async def serving(fake: F) -> AsyncIterator[F]:
    """Serve ``fake`` while the block runs: started before, stopped after, whatever happened."""
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def sendgrid_fake() -> AsyncIterator[SendGridFake]:
    """A local SendGrid v3 API that accepts SENDGRID_KEY."""
    async with serving(SendGridFake(SENDGRID_KEY)) as fake:
        yield fake


@pytest.fixture
async def mailgun_fake() -> AsyncIterator[MailgunFake]:
    """A local Mailgun API that knows MAILGUN_DOMAIN and accepts MAILGUN_KEY."""
    async with serving(MailgunFake(MAILGUN_KEY, MAILGUN_DOMAIN)) as fake:
        yield fake


@pytest.fixture
async def ses_fake() -> AsyncIterator[SesFake]:
    """A local SES v2 API that verifies SigV4 signatures made with AWS_SECRET."""
    async with serving(SesFake(AWS_KEY_ID, AWS_SECRET, AWS_REGION)) as fake:
        yield fake
