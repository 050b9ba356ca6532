"""taskboard configured by settings alone: the SMTP provider and the webhook keys, per database."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from email import message_from_bytes

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from corestone import Infrastructure, load_settings
from corestone.email import EmailSender
from taskboard.app import create_app
from tests.integration.conftest import Board
from tests.integration.email_providers.conftest import SmtpServer
from tests.integration.lifespan import lifespan_of


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set CORESTONE_* variables for load_settings, and only those (the machine's removed)."""
    for name in list(os.environ):
        if name.startswith("CORESTONE_") and not name.startswith("CORESTONE_TEST_"):
            monkeypatch.delenv(name)

    def set_variables(**variables: str) -> None:
        for name, value in variables.items():
            monkeypatch.setenv(f"CORESTONE_{name.upper()}", value)

    return set_variables


@asynccontextmanager
async def taskboard() -> AsyncIterator[Board]:
    """taskboard as `taskboard serve` builds it: every setting from the environment."""
    infra = Infrastructure(load_settings())
    app = create_app(infra)
    async with lifespan_of(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://taskboard") as client:
            yield Board(client, infra)


async def test_taskboard_sends_its_welcome_through_the_smtp_server_the_settings_name(
    environment: Callable[..., None], database_url: str, smtp_server: SmtpServer
) -> None:
    """With CORESTONE_EMAIL_PROVIDERS=smtp the welcome reaches that SMTP server, once."""
    environment(
        database_url=database_url, env="test", email_providers="smtp", smtp_url=smtp_server.url
    )
    async with taskboard() as board:
        async with board.infra.services.scope() as scope:
            sender = await scope.aget(EmailSender)
        assert [slot.name for slot in sender.router.slots] == ["smtp"]
        _, auth = await board.signup("Ada", "ada@example.com")
        await board.workspace(auth, name="Ops")
        for _ in range(500):
            if smtp_server.recorder.delivered:
                break
            await asyncio.sleep(0.02)
        [delivered] = smtp_server.recorder.delivered
        assert delivered.rcpt_tos == ["ada@example.com"]
        assert message_from_bytes(delivered.content)["Subject"] == "Welcome to Ops"
        # The provider the settings built is closed with the infrastructure.
        provider = sender.router.slots[0].provider
    assert provider._closed is True  # type: ignore[attr-defined]


@pytest.mark.parametrize("provider", ["sendgrid", "mailgun"])
async def test_a_webhook_is_served_only_while_its_key_is_set(
    environment: Callable[..., None], database_url: str, provider: str, tmp_path: object
) -> None:
    """Without its key a provider's webhook path is a 404; with it, unsigned events are 401."""
    environment(database_url=database_url, env="test", email_file_dir=f"{tmp_path}/mail")
    async with taskboard() as board:
        response = await board.client.post(f"/webhooks/email/{provider}", content=b"[]")
        assert response.status_code == 404

    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    keys = {
        "sendgrid": {"sendgrid_webhook_public_key": base64.b64encode(der).decode()},
        "mailgun": {"mailgun_webhook_signing_key": "mg-signing-key"},
    }
    environment(**keys[provider])
    async with taskboard() as board:
        response = await board.client.post(f"/webhooks/email/{provider}", content=b"[]")
        assert response.status_code == 401, response.text
