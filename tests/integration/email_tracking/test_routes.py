"""The webhook router on its own: its body limit, and a provider left out is a 404."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from corestone import Infrastructure, Settings
from corestone.db import Database
from corestone.email.tracking import EmailTracker
from corestone.email.webhooks import MailgunWebhook
from corestone.web import instrument
from corestone.web.email_routes import email_webhooks_router

KEY = "mailgun-signing-key-for-tests"
PROBLEM = "application/problem+json"


def signed(event: dict[str, object], *, padding: int = 0) -> bytes:
    stamp, token = str(int(time.time())), f"tok-{time.monotonic_ns()}"
    signature = hmac.new(KEY.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    payload = {"signature": {"timestamp": stamp, "token": token, "signature": signature},
               "event-data": event, "padding": "x" * padding}  # fmt: skip
    return json.dumps(payload).encode()


@pytest.fixture
async def client(db: Database, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    infra = Infrastructure(Settings(database_url=database_url, env="test"))
    api = FastAPI()
    router = email_webhooks_router(
        EmailTracker(db), mailgun=MailgunWebhook(KEY), max_body_bytes=2000
    )
    api.include_router(router, prefix="/hooks")
    app = instrument(api, infra)
    async with infra:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            yield http


async def test_a_body_over_the_routers_limit_is_a_413_problem(client: httpx.AsyncClient) -> None:
    """The router's own limit holds below the app's: a correctly signed but large body is
    refused before it is parsed, streamed or declared."""
    event = {"event": "delivered", "id": "e1", "recipient": "ada@example.com"}
    small = await client.post("/hooks/mailgun", content=signed(event))
    assert small.status_code == 200, small.text
    assert small.json() == {"applied": 0, "duplicates": 0, "unmatched": 1}

    large = signed(event, padding=3000)

    async def stream() -> AsyncIterator[bytes]:
        yield large

    for content in (large, stream()):
        response = await client.post("/hooks/mailgun", content=content)
        assert response.status_code == 413
        assert response.headers["content-type"].startswith(PROBLEM)


async def test_a_provider_without_a_key_has_no_endpoint(client: httpx.AsyncClient) -> None:
    """Only the providers given get a route: SendGrid here is a 404, not an open door."""
    response = await client.post("/hooks/sendgrid", content=b"[]")
    assert response.status_code == 404
