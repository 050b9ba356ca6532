"""SendGrid's v3 Mail Send API (``POST /v3/mail/send``) over httpx.

A message becomes one request: ``from``, ``subject``, ``content`` (text before HTML, as
SendGrid requires), ``attachments`` (inline ones with ``disposition: inline`` and their
``content_id``), ``headers`` and ``categories`` (the message's tags). Its recipients,
metadata and corestone's id go in its personalization, the id in ``custom_args`` as
``corestone_id``: SendGrid returns custom args with every event webhook, which is how an
event finds its message. SendGrid answers ``202 Accepted`` with an ``X-Message-Id``.

Batches use personalizations: messages whose content is identical and which differ only
in their recipients, metadata and id go out in one request, one personalization each
(each with its own ``custom_args``), up to 1,000 recipients a request, SendGrid's
documented limit.
Messages that differ in content go out in separate requests (one per distinct content),
so a batch of fully personalised messages costs one request per message. Every
personalization's recipients get the same ``X-Message-Id``; SendGrid's own per-recipient
ids in events start with it.

Errors: a transport error, timeout, 429 and 5xx are retryable (``Retry-After`` or, as
SendGrid sends on 429, ``X-RateLimit-Reset`` gives the wait); 400, 401, 403, 413 and any
other 4xx are permanent. SendGrid takes no idempotency key.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from typing import Any

from corestone._extras import requires_extra
from corestone.email.message import Address, EmailMessage
from corestone.email.providers._common import (
    CORESTONE_ID_HEADER,
    guard,
    parse_retry_after,
    shorten,
    status_error,
)
from corestone.email.providers.base import Outgoing, Sent
from corestone.errors import EmailProviderError
from corestone.observability.health import CheckResult, HealthStatus

with requires_extra(__name__, "email"):
    import httpx

__all__ = ["MAX_RECIPIENTS_PER_REQUEST", "SendGridProvider"]

MAX_RECIPIENTS_PER_REQUEST = 1000
"""SendGrid: at most 1,000 recipients (to + cc + bcc over all personalizations) a request."""


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
        """Messages of identical content share a request; see the module docstring.

        When the whole batch is one request and it fails, the error is raised (every
        message has that outcome); otherwise each request's failure is returned in the
        place of each of its messages.
        """
        if len(batch) > self.max_batch:
            raise ValueError(f"a batch holds at most {self.max_batch} messages")
        outcomes: list[Sent | EmailProviderError | None] = [None] * len(batch)
        groups: list[tuple[dict[str, Any], list[tuple[int, dict[str, Any]]], int]] = []
        by_content: dict[str, int] = {}
        for index, outgoing in enumerate(batch):
            try:
                personalization = self._personalization(outgoing)
            except EmailProviderError as exc:
                outcomes[index] = exc
                continue
            content = self._content(outgoing.message)
            key = json.dumps(content, sort_keys=True)
            count = len(outgoing.message.recipients)
            group = by_content.get(key)
            if group is None or groups[group][2] + count > MAX_RECIPIENTS_PER_REQUEST:
                by_content[key] = group = len(groups)
                groups.append((content, [], 0))
            body, members, recipients = groups[group]
            members.append((index, personalization))
            groups[group] = (body, members, recipients + count)
        for body, members, _ in groups:
            request = {**body, "personalizations": [p for _, p in members]}
            try:
                sent: Sent | EmailProviderError = Sent(self.name, await self._post(request))
            except EmailProviderError as exc:
                if len(groups) == 1 and len(members) == len(batch):
                    raise
                sent = exc
            for index, _ in members:
                outcomes[index] = sent
        return [o for o in outcomes if o is not None]

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
