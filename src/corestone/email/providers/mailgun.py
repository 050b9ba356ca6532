"""Mailgun's messages API (``POST /v3/{domain}/messages``) over httpx.

A message becomes one multipart form: ``from``, ``to``/``cc``/``bcc`` (one field per
address), ``subject``, ``text``, ``html``, ``o:tag`` per tag, ``h:<Name>`` per custom
header (and ``h:Reply-To``), ``v:<key>`` per metadata entry, and corestone's id as
``v:corestone-id``: Mailgun returns ``v:`` variables in every webhook event
(``user-variables``), which is how an event finds its message. Files go as
``attachment`` parts; inline images as ``inline`` parts named after their Content-ID,
because Mailgun gives an inline part the Content-ID of its file name (so the HTML's
``cid:logo`` finds the part sent as ``logo``). Authentication is HTTP basic ``api:<key>``.
Mailgun answers ``200 {"id": "<…>", "message": "Queued. Thank you."}``; the id, without
its angle brackets, is the provider message id.

The API lives at ``https://api.mailgun.net`` (US) or ``https://api.eu.mailgun.net`` (EU):
a domain is created in one region and only that one knows it.

Batches use Mailgun's batch sending: messages that each have one ``to`` recipient and
no cc/bcc, and share everything but that recipient, the subject, the bodies, header
values and metadata values, go out as one request with many ``to`` fields (up to 1,000,
Mailgun's documented limit, and never one address twice) and ``recipient-variables``,
so Mailgun sends each recipient a message of their own. A part every message shares is
sent once as it is; a part that differs (each recipient's rendered subject, text or
HTML, their ``List-Unsubscribe`` header, a metadata value) is ``%recipient.<name>%`` and
each recipient's value is in their recipient variables, as is their corestone id
(``v:corestone-id=%recipient.corestone_id%``). Mailgun documents recipient variables in
the subject and bodies; in ``h:`` and ``v:`` values it substitutes them as well, which
is what django-anymail's Mailgun backend relies on for per-recipient headers and
metadata. A message containing ``%recipient`` anywhere (Mailgun would substitute it)
goes in a request of its own. corestone's id is not repeated in a header: Mailgun adds
the ``v:`` variables to each delivered message as ``X-Mailgun-Variables``.

Errors: a transport error, timeout, 429 and 5xx are retryable (``Retry-After`` honoured);
400, 401, 402, 403, 404, 413 and any other 4xx are permanent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Final, Literal

from corestone._extras import requires_extra
from corestone.email.message import EmailMessage
from corestone.email.providers._common import (
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

__all__ = ["MAILGUN_REGIONS", "MAX_RECIPIENTS_PER_REQUEST", "MAX_REQUEST_BYTES", "MailgunProvider"]

MAX_RECIPIENTS_PER_REQUEST: Final = 1000
"""Mailgun's batch sending: at most 1,000 ``to`` recipients a request."""
MAX_REQUEST_BYTES: Final = 25 * 1024 * 1024
"""Mailgun's documented maximum message size (25 MB), applied to the subjects, bodies
and header values one batch request carries."""
_VARIES: Final = ("to", "subject", "text", "html", "headers", "metadata", "idempotency_key")


def _batch_key(message: EmailMessage) -> str | None:
    """What the messages of one batch request share; None: the message goes alone.

    One ``to`` and no cc/bcc (batch sending gives each ``to`` a message of their own),
    and no ``%recipient`` anywhere (Mailgun would substitute it). Header and metadata
    names are shared; their values, the subject and the bodies may differ.
    """
    if len(message.to) != 1 or message.cc or message.bcc:
        return None
    if "%recipient" in json.dumps(message.to_dict(), ensure_ascii=False):
        return None
    parts = (message.text is None, message.html is None)
    return shared_key(message, _VARIES, parts, sorted(message.headers), sorted(message.metadata))


def _size(message: EmailMessage) -> int:
    texts = (message.subject, message.text or "", message.html or "", *message.headers.values())
    return sum(len(t.encode()) for t in texts)


MAILGUN_REGIONS: Final = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}


def _repeated(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Form pairs as httpx takes them: a field given twice (``to``, ``o:tag``) as a list."""
    fields: dict[str, list[str]] = {}
    for key, value in pairs:
        fields.setdefault(key, []).append(value)
    return fields


class MailgunProvider:
    """Sends for one domain with one API key."""

    def __init__(
        self,
        api_key: str,
        domain: str,
        *,
        name: str = "mailgun",
        region: Literal["us", "eu"] = "us",
        base_url: str | None = None,
        timeout: float = 30.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if not api_key or not domain or "/" in domain:
            raise ValueError("Mailgun needs an API key and a domain name")
        if base_url is None and region not in MAILGUN_REGIONS:
            raise ValueError(f"region must be one of {sorted(MAILGUN_REGIONS)}")
        self.name = name
        self.max_batch = MAX_RECIPIENTS_PER_REQUEST
        self.domain = domain
        self._base_url = (base_url or MAILGUN_REGIONS[region]).rstrip("/")
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._auth = httpx.BasicAuth("api", api_key)

    def __repr__(self) -> str:  # the key must never reach a log
        return f"MailgunProvider(name={self.name!r}, domain={self.domain!r})"

    def _form(
        self, outgoing: Outgoing
    ) -> tuple[list[tuple[str, str]], list[tuple[str, tuple[str, bytes, str]]]]:
        message_id = guard(self.name, outgoing)
        message = outgoing.message
        data: list[tuple[str, str]] = [("from", message.sender.formatted(ascii_domain=True))]
        for field, addresses in (("to", message.to), ("cc", message.cc), ("bcc", message.bcc)):
            data += [(field, a.formatted(ascii_domain=True)) for a in addresses]
        data.append(("subject", message.subject))
        if message.text is not None:
            data.append(("text", message.text))
        if message.html is not None:
            data.append(("html", message.html))
        if message.reply_to:
            replies = ", ".join(a.formatted(ascii_domain=True) for a in message.reply_to)
            data.append(("h:Reply-To", replies))
        data += [(f"h:{name}", value) for name, value in message.headers.items()]
        data += [("o:tag", tag) for tag in message.tags]
        # A metadata entry named ``corestone-id`` would be a second ``v:corestone-id``
        # beside ours, and Mailgun's webhooks could then name another message: ours wins.
        data += [(f"v:{k}", v) for k, v in message.metadata.items() if k != "corestone-id"]
        data.append(("v:corestone-id", message_id))
        files = [
            (
                "inline" if a.inline else "attachment",
                (a.content_id if a.content_id else a.filename, a.content, a.content_type),
            )
            for a in message.attachments
        ]
        return data, files

    async def send(self, outgoing: Outgoing) -> Sent:
        """One form post; the id Mailgun queued the message under comes back."""
        data, files = self._form(outgoing)
        return Sent(self.name, await self._post(data, files))

    async def _post(
        self, data: list[tuple[str, str]], files: list[tuple[str, tuple[str, bytes, str]]]
    ) -> str | None:
        try:
            response = await self._client.post(
                f"{self._base_url}/v3/{self.domain}/messages",
                data=_repeated(data),
                files=files or None,  # multipart with files, urlencoded without
                auth=self._auth,
            )
        except httpx.HTTPError as exc:
            raise EmailProviderError(
                self.name, shorten(f"{type(exc).__name__}: {exc}"), retryable=True
            ) from None
        if response.status_code == 200:
            try:
                queued = str(response.json().get("id") or "")
            except (ValueError, AttributeError):
                queued = ""
            return queued.strip().strip("<>") or None
        raise self._error(response)

    def _error(self, response: httpx.Response) -> EmailProviderError:
        try:
            detail = str(response.json().get("message", ""))
        except (ValueError, AttributeError):
            detail = response.text
        wait = parse_retry_after(response.headers.get("Retry-After"))
        return status_error(self.name, response.status_code, detail, retry_after=wait)

    async def send_batch(self, batch: Sequence[Outgoing]) -> list[Sent | EmailProviderError]:
        """Messages of one batch key as one batch-sending request each; the rest alone.

        When the whole batch is one request and it fails, the error is raised (every
        message has that outcome); otherwise each failure is returned in its place.
        """
        if len(batch) > self.max_batch:
            raise ValueError(f"a batch holds at most {self.max_batch} messages")
        plan = plan_requests(
            self.name, batch, _batch_key, max_recipients=MAX_RECIPIENTS_PER_REQUEST,
            max_size=MAX_REQUEST_BYTES, size=_size,
        )  # fmt: skip
        return await send_planned(batch, plan, self.send, self._send_merged)

    async def _send_merged(self, batch: list[Outgoing]) -> list[Sent | EmailProviderError]:
        data, files = self._batch_form(batch)
        sent = Sent(self.name, await self._post(data, files))
        return [sent] * len(batch)

    def _batch_form(
        self, batch: list[Outgoing]
    ) -> tuple[list[tuple[str, str]], list[tuple[str, tuple[str, bytes, str]]]]:
        """One form for many recipients: what differs goes through recipient variables.

        A part every message shares is written once as it is; a part that differs is
        ``%recipient.<name>%`` and each recipient's value is in ``recipient-variables``
        (keyed by the address as it is in ``to``), as are their corestone ids.
        """
        messages = [o.message for o in batch]
        variables: dict[str, dict[str, str]] = {
            m.to[0].ascii_email: {"corestone_id": guard(self.name, o)}
            for o, m in zip(batch, messages, strict=True)
        }

        def part(name: str, values: Sequence[str]) -> str:
            if not varying(values):
                return values[0]
            for message, value in zip(messages, values, strict=True):
                variables[message.to[0].ascii_email][name] = value
            return f"%recipient.{name}%"

        first = messages[0]
        _, files = self._form(batch[0])
        data = [("from", first.sender.formatted(ascii_domain=True))]
        data += [("to", m.to[0].formatted(ascii_domain=True)) for m in messages]
        data.append(("subject", part("subject", [m.subject for m in messages])))
        for name in ("text", "html"):  # present in all or none: the batch key says so
            if getattr(first, name) is not None:
                data.append((name, part(name, [getattr(m, name) for m in messages])))
        if first.reply_to:
            replies = ", ".join(a.formatted(ascii_domain=True) for a in first.reply_to)
            data.append(("h:Reply-To", replies))
        for header in first.headers:
            headers = [m.headers[header] for m in messages]
            data.append((f"h:{header}", part(f"h:{header}", headers)))
        data += [("o:tag", tag) for tag in first.tags]
        for key in first.metadata:
            metadata = [m.metadata[key] for m in messages]
            data.append((f"v:{key}", part(f"v:{key}", metadata)))
        data.append(("v:corestone-id", "%recipient.corestone_id%"))
        data.append(("recipient-variables", json.dumps(variables, separators=(",", ":"))))
        return data, files

    async def check(self) -> CheckResult:
        """``GET /v4/domains/{domain}``: the key is valid and the region knows the domain."""
        try:
            response = await self._client.get(
                f"{self._base_url}/v4/domains/{self.domain}", auth=self._auth
            )
        except httpx.HTTPError as exc:
            return CheckResult(status=HealthStatus.FAIL, output=shorten(type(exc).__name__))
        if response.status_code != 200:
            return CheckResult(status=HealthStatus.FAIL, output=self._error(response).reason)
        return CheckResult(output=self.domain)

    async def aclose(self) -> None:
        """Close the HTTP client this provider made (not one it was given)."""
        if self._owns_client:
            await self._client.aclose()
