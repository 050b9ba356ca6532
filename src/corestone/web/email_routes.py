"""HTTP endpoints for email: providers' delivery webhooks, and one-click unsubscribe.

``email_webhooks_router`` serves ``POST /sendgrid`` and ``POST /mailgun`` (mount it at,
say, ``/webhooks/email``). Each reads the raw body (at most ``max_body_bytes``: 413
beyond), verifies the provider's signature over exactly those bytes and refuses a replay
(401 problem+json, ``code="unauthenticated"``), and only then parses and applies the
events (:class:`~corestone.email.tracking.EmailTracker`). Applying is idempotent by
(provider, event id), so a provider's retry of a call that did reach us changes nothing.

``unsubscribe_router`` serves the ``List-Unsubscribe`` URL: ``POST`` (the RFC 8058
one-click body, or any POST: a mail client sends nothing else there) suppresses the
address (or hands the request to the app's ``handler``, which may turn a preference off
instead); ``GET`` only shows a confirmation button, because link scanners and previews
fetch URLs in mail and must not unsubscribe anyone (RFC 8058 §4).
Both need the ``email`` extra (and a database one).
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, Response

from corestone.email.outbox import SuppressionReason
from corestone.email.service import EmailService
from corestone.email.tracking import EmailTracker, TrackingResult
from corestone.email.unsubscribe import UnsubscribeRequest, UnsubscribeTokens
from corestone.email.webhooks import MailgunWebhook, SendGridWebhook
from corestone.errors import PayloadTooLargeError

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "UnsubscribeHandler",
    "email_webhooks_router",
    "read_body",
    "unsubscribe_router",
]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, refused (413) as soon as it passes ``max_bytes``, declared or not."""
    declared = request.headers.get("content-length", "")
    if declared.isdecimal() and int(declared) > max_bytes:
        raise PayloadTooLargeError(max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLargeError(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(result: TrackingResult) -> dict[str, Any]:
    return {
        "applied": result.applied,
        "duplicates": result.duplicates,
        "unmatched": result.unmatched,
    }


def email_webhooks_router(
    tracker: EmailTracker,
    *,
    sendgrid: SendGridWebhook | None = None,
    mailgun: MailgunWebhook | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> APIRouter:
    """``POST /sendgrid`` and ``POST /mailgun`` for the providers given (others: 404)."""
    router = APIRouter(include_in_schema=False)

    if sendgrid is not None:
        verifier = sendgrid

        @router.post("/sendgrid")
        async def sendgrid_events(request: Request) -> dict[str, Any]:
            body = await read_body(request, max_body_bytes)
            events = verifier.events(body, request.headers)
            return _answer(await tracker.apply(events))

    if mailgun is not None:
        mailgun_verifier = mailgun

        @router.post("/mailgun")
        async def mailgun_event(request: Request) -> dict[str, Any]:
            body = await read_body(request, max_body_bytes)
            event = mailgun_verifier.event(body)
            return _answer(await tracker.apply([event] if event is not None else []))

    return router


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Unsubscribe</title></head>
<body><form method="post"><p>Stop emails to <b>{address}</b> ({list_id})?</p>
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button></form></body></html>"""


UnsubscribeHandler = Callable[[UnsubscribeRequest], Awaitable[bool]]
"""Handles an unsubscribe itself (True), or leaves it to the suppression list (False)."""


def unsubscribe_router(
    tokens: UnsubscribeTokens,
    service: EmailService,
    *,
    path: str = "/email/unsubscribe",
    handler: UnsubscribeHandler | None = None,
) -> APIRouter:
    """``GET`` (a confirmation page) and ``POST`` (one click: suppress) at ``path?token=…``.

    ``handler`` sees each verified request first: an app whose lists are preferences
    (one kind of notification for one user) turns that preference off and answers True,
    and the address stays deliverable for everything else. A request it answers False
    for suppresses the address, as without a handler.
    """
    router = APIRouter(include_in_schema=False)

    @router.get(path)
    async def confirm(token: str) -> Response:
        wanted = tokens.verify(token)
        page = _PAGE.format(
            address=html.escape(wanted.address), list_id=html.escape(wanted.list_id)
        )
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @router.post(path)
    async def unsubscribe(request: Request, token: str) -> dict[str, str]:
        await read_body(request, 4096)  # the one-click form; its content changes nothing
        wanted = tokens.verify(token)
        if handler is None or not await handler(wanted):
            await service.suppress(
                wanted.address,
                SuppressionReason.MANUAL,
                detail=f"unsubscribed from {wanted.list_id}",
            )
        return {"status": "unsubscribed", "address": wanted.address, "list": wanted.list_id}

    return router
