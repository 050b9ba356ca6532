"""SendGrid's v3 Mail Send API (``POST /v3/mail/send``) over httpx.

A message becomes one request: ``from``, ``subject``, ``content`` (text before HTML, as
SendGrid requires), ``attachments`` (inline ones with ``disposition: inline`` and their
``content_id``), ``headers`` and ``categories`` (the message's tags). Its recipients,
metadata and corestone's id go in its personalization, the id in ``custom_args`` as
``corestone_id``: SendGrid returns custom args with every event webhook, which is how an
event finds its message. SendGrid answers ``202 Accepted`` with an ``X-Message-Id``.

Batches use personalizations, SendGrid's way to send one request to many recipients,
each with their own message: messages that share everything but their recipients,
subject, bodies, headers and metadata go out in one request, one personalization each
(up to 1,000 recipients a request, SendGrid's documented limit, and never one address
twice, which SendGrid refuses). Each personalization carries its recipients, its own
``subject`` when the subjects differ, its message's ``headers`` (``List-Unsubscribe``
per recipient) and ``X-Corestone-Id``, and ``custom_args`` with the metadata and the
id. When the bodies differ (rendered per recipient), the request's ``content`` is the
tags ``-corestone-text-`` / ``-corestone-html-`` and each personalization's
``substitutions`` carry its own rendered text and HTML. Substitutions are limited to
10,000 bytes per personalization: a message over it, or one containing a tag (SendGrid
would replace it), shares a request only with messages of the very same bodies. Every
message of a request gets the request's ``X-Message-Id``; SendGrid's per-recipient
event ids start with it, and the event's ``custom_args`` name the message.

Errors: a transport error, timeout, 429 and 5xx are retryable (``Retry-After`` or, as
SendGrid sends on 429, ``X-RateLimit-Reset`` gives the wait); 400, 401, 403, 413 and any
other 4xx are permanent. SendGrid takes no idempotency key.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from typing import Any, Final

from corestone._extras import requires_extra
from corestone.email.message import Address, EmailMessage
from corestone.email.providers._common import (
    CORESTONE_ID_HEADER,
    guard,
    parse_retry_after,
    plan_requests,
    send_planned,
    shared_key,
    shorten,
    status_error,
    varying,
)
from corestone.email.providers.base import Outgoing, Sent
from corestone.errors import EmailProviderError
from corestone.observability.health import CheckResult, HealthStatus

with requires_extra(__name__, "email"):
    import httpx

__all__ = [
    "HTML_TAG",
    "MAX_RECIPIENTS_PER_REQUEST",
    "MAX_SUBSTITUTION_BYTES",
    "TEXT_TAG",
    "SendGridProvider",
]

MAX_RECIPIENTS_PER_REQUEST: Final = 1000
"""SendGrid: at most 1,000 recipients (to + cc + bcc over all personalizations) a request."""
MAX_SUBSTITUTION_BYTES: Final = 10_000
"""SendGrid's API reference: "the total collective size of your substitutions may not
exceed 10,000 bytes per personalization object" (its substitution-tag guide says 50,000;
the stricter one is kept)."""
TEXT_TAG: Final = "-corestone-text-"
HTML_TAG: Final = "-corestone-html-"
"""The substitution tags standing for each recipient's rendered text and HTML."""
_TAG_PREFIX: Final = "-corestone-"
_PER_PERSONALIZATION: Final = (
    "to", "cc", "bcc", "subject", "text", "html", "headers", "metadata", "idempotency_key",
)  # fmt: skip


def _substitutions(message: EmailMessage) -> dict[str, str]:
    return {
        tag: value
        for tag, value in ((TEXT_TAG, message.text), (HTML_TAG, message.html))
        if value is not None
    }


def _batch_key(message: EmailMessage) -> str:
    """What the messages of one request share; bodies too when they cannot be substituted.

    A message whose bodies hold a tag (SendGrid would replace it) or whose substitutions
    exceed :data:`MAX_SUBSTITUTION_BYTES` shares a request only with messages of the very
    same bodies, which then go once, as they are.
    """
    parts = (message.text is None, message.html is None)
    size = sum(len(k.encode()) + len(v.encode()) for k, v in _substitutions(message).items())
    stored = json.dumps(message.to_dict(), ensure_ascii=False)
    if _TAG_PREFIX in stored or size > MAX_SUBSTITUTION_BYTES:
        return shared_key(message, _PER_PERSONALIZATION, parts, message.text, message.html)
    return shared_key(message, _PER_PERSONALIZATION, parts, "merge")


def _address(address: Address) -> dict[str, str]:
    entry = {"email": address.ascii_email}
    if address.name:
        entry["name"] = address.name
    return entry


class SendGridProvider:
    """Sends with one API key (it needs the ``mail.send`` scope)."""

    def __init__(
        self,
        api_key: str,
        *,
        name: str = "sendgrid",
        base_url: str = "https://api.sendgrid.com",
        timeout: float = 30.0,
        max_batch: int = MAX_RECIPIENTS_PER_REQUEST,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("SendGrid needs an API key")
        self.name = name
        self.max_batch = max_batch
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}

    def __repr__(self) -> str:  # the key must never reach a log
        return f"SendGridProvider(name={self.name!r}, base_url={self._base_url!r})"

    def _content(self, message: EmailMessage) -> dict[str, Any]:
        """Everything of the request but the personalizations: what a batch must share."""
        body: dict[str, Any] = {"from": _address(message.sender), "subject": message.subject}
        if len(message.reply_to) == 1:
            body["reply_to"] = _address(message.reply_to[0])
        elif message.reply_to:
            body["reply_to_list"] = [_address(a) for a in message.reply_to]
        content = []
        if message.text is not None:
            content.append({"type": "text/plain", "value": message.text})
        if message.html is not None:
            content.append({"type": "text/html", "value": message.html})
        body["content"] = content
        if message.attachments:
            body["attachments"] = [
                {
                    "content": base64.b64encode(a.content).decode("ascii"),
                    "type": a.content_type,
                    "filename": a.filename,
                    "disposition": "inline" if a.inline else "attachment",
                    **({"content_id": a.content_id} if a.inline else {}),
                }
                for a in message.attachments
            ]
        if message.headers:
            body["headers"] = dict(message.headers)
        if message.tags:
            body["categories"] = list(message.tags)
        return body

    def _personalization(self, outgoing: Outgoing) -> dict[str, Any]:
        message_id = guard(self.name, outgoing)
        message = outgoing.message
        entry: dict[str, Any] = {"to": [_address(a) for a in message.to]}
        if message.cc:
            entry["cc"] = [_address(a) for a in message.cc]
        if message.bcc:
            entry["bcc"] = [_address(a) for a in message.bcc]
        entry["custom_args"] = {**message.metadata, "corestone_id": message_id}
        entry["headers"] = {CORESTONE_ID_HEADER: message_id}
        return entry

    async def send(self, outgoing: Outgoing) -> Sent:
        """One request, one personalization."""
        body = self._content(outgoing.message)
        body["personalizations"] = [self._personalization(outgoing)]
        return Sent(self.name, await self._post(body))

    async def send_batch(self, batch: Sequence[Outgoing]) -> list[Sent | EmailProviderError]:
        """Messages that share all but recipients, subject, bodies, headers and metadata go
        as one request of one personalization each; see the module docstring.

        When the whole batch is one request and it fails, the error is raised (every
        message has that outcome); otherwise each request's failure is returned in the
        place of each of its messages.
        """
        if len(batch) > self.max_batch:
            raise ValueError(f"a batch holds at most {self.max_batch} messages")
        plan = plan_requests(
            self.name, batch, _batch_key, max_recipients=MAX_RECIPIENTS_PER_REQUEST
        )
        return await send_planned(batch, plan, self.send, self._send_merged)

    async def _send_merged(self, batch: list[Outgoing]) -> list[Sent | EmailProviderError]:
        """One request for messages of one batch key: a personalization each."""
        messages = [o.message for o in batch]
        body = self._content(messages[0])
        del body["subject"], body["content"]
        body.pop("headers", None)
        subjects = [m.subject for m in messages]
        merged = varying([m.text for m in messages]) or varying([m.html for m in messages])
        if not varying(subjects):
            body["subject"] = subjects[0]
        body["content"] = [
            {"type": kind, "value": tag if merged else value}
            for kind, tag, value in (
                ("text/plain", TEXT_TAG, messages[0].text),
                ("text/html", HTML_TAG, messages[0].html),
            )
            if value is not None
        ]
        personalizations = []
        for outgoing in batch:
            entry = self._personalization(outgoing)
            message = outgoing.message
            entry["headers"] = {**message.headers, **entry["headers"]}
            if varying(subjects):
                entry["subject"] = message.subject
            if merged:
                entry["substitutions"] = _substitutions(message)
            personalizations.append(entry)
        body["personalizations"] = personalizations
        sent = Sent(self.name, await self._post(body))
        return [sent] * len(batch)

    async def _post(self, body: dict[str, Any]) -> str | None:
        try:
            response = await self._client.post(
                f"{self._base_url}/v3/mail/send", json=body, headers=self._headers
            )
        except httpx.HTTPError as exc:
            raise EmailProviderError(
                self.name, shorten(f"{type(exc).__name__}: {exc}"), retryable=True
            ) from None
        if response.status_code in (200, 202):
            message_id: str | None = response.headers.get("X-Message-Id")
            return message_id
        raise self._error(response)

    def _error(self, response: httpx.Response) -> EmailProviderError:
        detail = ""
        try:
            errors = response.json().get("errors") or []
            detail = "; ".join(
                ": ".join(str(part) for part in (e.get("field"), e.get("message")) if part)
                for e in errors[:3]
                if isinstance(e, dict)
            )
        except (ValueError, AttributeError, TypeError):
            detail = response.text
        wait = parse_retry_after(response.headers.get("Retry-After"))
        reset = response.headers.get("X-RateLimit-Reset")
        if wait is None and reset and reset.strip().isdigit():
            wait = max(0.0, int(reset) - time.time())
        return status_error(self.name, response.status_code, detail, retry_after=wait)

    async def check(self) -> CheckResult:
        """``GET /v3/scopes``: the key is valid and may send mail."""
        try:
            response = await self._client.get(f"{self._base_url}/v3/scopes", headers=self._headers)
        except httpx.HTTPError as exc:
            return CheckResult(status=HealthStatus.FAIL, output=shorten(type(exc).__name__))
        if response.status_code != 200:
            return CheckResult(status=HealthStatus.FAIL, output=self._error(response).reason)
        try:
            scopes = response.json().get("scopes", [])
        except (ValueError, AttributeError):
            scopes = []
        if "mail.send" not in scopes:
            return CheckResult(status=HealthStatus.FAIL, output="API key lacks the mail.send scope")
        return CheckResult(output="mail.send")

    async def aclose(self) -> None:
        """Close the HTTP client this provider made (not one it was given)."""
        if self._owns_client:
            await self._client.aclose()
