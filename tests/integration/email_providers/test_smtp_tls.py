"""The SMTP provider's TLS: STARTTLS with AUTH, implicit TLS, certificates, pool bounds."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from corestone.email.providers.smtp import SmtpProvider
from corestone.errors import EmailProviderError
from tests.integration.email_providers.conftest import SmtpServer, free_port, outgoing
from tests.integration.email_providers.fakes import SmtpRecorder, start_smtp

USER, PASSWORD = "mailer", "tls-secret-77"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 made by openssl: (certificate, key)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


def client_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


def _authenticate(
    server: object, session: object, envelope: object, mechanism: str, data: object
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def starttls_server(certificate: tuple[Path, Path]) -> Iterator[SmtpServer]:
    """A server that requires STARTTLS before anything, then AUTH (only over TLS)."""
    recorder = SmtpRecorder()
    port = free_port()
    controller = start_smtp(
        recorder, port, tls_context=server_context(certificate), require_starttls=True,
        authenticator=_authenticate, auth_required=True,
    )  # fmt: skip
    server = SmtpServer(recorder, port, controller)
    try:
        yield server
    finally:
        server.stop()


async def test_starttls_then_auth(
    starttls_server: SmtpServer, certificate: tuple[Path, Path]
) -> None:
    """``?starttls=true`` with a user: STARTTLS, then AUTH over TLS, then the message."""
    url = f"smtp://{USER}:{PASSWORD}@127.0.0.1:{starttls_server.port}?starttls=true"
    provider = SmtpProvider(url, tls_context=client_context(certificate))
    await provider.send(outgoing())
    await provider.aclose()
    [delivered] = starttls_server.recorder.delivered
    assert delivered.tls is True
    assert delivered.authenticated is True


async def test_without_starttls_the_server_refuses_permanently(starttls_server: SmtpServer) -> None:
    """A URL without ``?starttls=true`` to a server requiring it: a permanent 530, not a loop
    of retries, and nothing delivered."""
    provider = SmtpProvider(f"smtp://127.0.0.1:{starttls_server.port}")
    with pytest.raises(EmailProviderError) as caught:
        await provider.send(outgoing())
    await provider.aclose()
    assert caught.value.retryable is False
    assert "530" in caught.value.reason
    assert starttls_server.recorder.delivered == []


async def test_untrusted_certificate_is_permanent(starttls_server: SmtpServer) -> None:
    """The server's certificate is not trusted (the system's CAs only): a configuration
    error, permanent, and nothing goes out."""
    url = f"smtp://{USER}:{PASSWORD}@127.0.0.1:{starttls_server.port}?starttls=true"
    provider = SmtpProvider(url)
    with pytest.raises(EmailProviderError) as caught:
        await provider.send(outgoing())
    await provider.aclose()
    assert caught.value.retryable is False
    assert "certificate" in caught.value.reason.lower()
    assert PASSWORD not in caught.value.reason


async def test_implicit_tls(certificate: tuple[Path, Path]) -> None:
    """``smtps://``: TLS from the first byte."""
    recorder = SmtpRecorder()
    port = free_port()
    controller = start_smtp(recorder, port, ssl_context=server_context(certificate))
    provider = SmtpProvider(f"smtps://127.0.0.1:{port}", tls_context=client_context(certificate))
    try:
        await provider.send(outgoing())
    finally:
        await provider.aclose()
        controller.stop()
    [delivered] = recorder.delivered
    assert delivered.tls is True


async def test_concurrent_sends_share_a_bounded_pool(smtp_server: SmtpServer) -> None:
    """Eight sends at once through a pool of two open two connections, not eight."""
    provider = SmtpProvider(smtp_server.url, pool_size=2)
    await asyncio.gather(*(provider.send(outgoing(f"c-{i}")) for i in range(8)))
    await provider.aclose()
    assert provider.connections_opened == 2
    assert len(smtp_server.recorder.delivered) == 8


async def test_server_without_smtputf8_refuses_an_international_address() -> None:
    """A non-ASCII local part to a server that does not offer SMTPUTF8: permanent, nothing
    sent, and the connection still carries the next (ASCII) message."""
    recorder = SmtpRecorder()
    port = free_port()
    controller = start_smtp(recorder, port, enable_SMTPUTF8=False)
    provider = SmtpProvider(f"smtp://127.0.0.1:{port}")
    try:
        outcomes = await provider.send_batch(
            [outgoing("u", to=["josé@example.org"]), outgoing("a", to=["ada@example.org"])]
        )
    finally:
        await provider.aclose()
        controller.stop()
    refused, sent = outcomes
    assert isinstance(refused, EmailProviderError)
    assert refused.retryable is False
    assert "SMTPUTF8" in refused.reason
    assert not isinstance(sent, EmailProviderError)
    assert [d.rcpt_tos for d in recorder.delivered] == [["ada@example.org"]]
    assert provider.connections_opened == 1
