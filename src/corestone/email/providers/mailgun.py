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

Batches use Mailgun's batch sending: messages whose content is identical, each with one
``to`` recipient and no cc/bcc, go out as one request with many ``to`` fields and
``recipient-variables`` holding each recipient's corestone id, so Mailgun sends each
recipient a message of their own and ``v:corestone-id`` is ``%recipient.corestone_id%``
(Mailgun substitutes recipient variables in ``v:`` values), up to 1,000 recipients a
request, Mailgun's documented limit. Other messages, and content containing
``%recipient`` (which Mailgun would substitute), go one request each. corestone's id is
not repeated in a header: Mailgun adds the ``v:`` variables to each delivered message
as ``X-Mailgun-Variables``.

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
    shorten,
    status_error,
)
from corestone.email.providers.base import Outgoing, Sent
from corestone.errors import EmailProviderError
from corestone.observability.health import CheckResult, HealthStatus

with requires_extra(__name__, "email"):
    import httpx

__all__ = ["MAILGUN_REGIONS", "MAX_RECIPIENTS_PER_REQUEST", "MailgunProvider"]

MAX_RECIPIENTS_PER_REQUEST: Final = 1000
"""Mailgun's batch sending: at most 1,000 ``to`` recipients a request."""
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

    @staticmethod
    def _batch_key(message: EmailMessage) -> str | None:
        """What messages must share to go in one batch request; None: they cannot."""
        texts = (message.subject, message.text or "", message.html or "")
        if (
            len(message.to) != 1
            or message.cc
            or message.bcc
            or any("%recipient" in t for t in texts)
        ):
            return None
        shared = message.to_dict()
        for field in ("to", "idempotency_key"):
            shared.pop(field)
        return json.dumps(shared, sort_keys=True)

    async def send_batch(self, batch: Sequence[Outgoing]) -> list[Sent | EmailProviderError]:
        """Shared content as one batch request each; the rest one request per message.

        When the whole batch is one request and it fails, the error is raised (every
        message has that outcome); otherwise each failure is returned in its place.
        """
        if len(batch) > self.max_batch:
            raise ValueError(f"a batch holds at most {self.max_batch} messages")
        requests: list[list[int]] = []
        open_groups: dict[str, list[int]] = {}
        outcomes: dict[int, Sent | EmailProviderError] = {}
        for index, outgoing in enumerate(batch):
            try:
                guard(self.name, outgoing)  # one bad message must not sink its group
            except EmailProviderError as exc:
                outcomes[index] = exc
                continue
            key = self._batch_key(outgoing.message)
            group = open_groups.get(key) if key is not None else None
            address = outgoing.message.to[0].ascii_email
            if group is None or any(batch[i].message.to[0].ascii_email == address for i in group):
                group = []
                requests.append(group)
                if key is not None:
                    open_groups[key] = group
            group.append(index)
        whole = len(requests) == 1 and not outcomes
        for members in requests:
            try:
                if len(members) == 1:
                    outcomes[members[0]] = await self.send(batch[members[0]])
                    continue
                data, files = self._batch_form([batch[i] for i in members])
                sent = Sent(self.name, await self._post(data, files))
                outcomes.update(dict.fromkeys(members, sent))
            except EmailProviderError as exc:
                if whole:
                    raise
                outcomes.update(dict.fromkeys(members, exc))
        return [outcomes[i] for i in range(len(batch))]

    def _batch_form(
        self, batch: list[Outgoing]
    ) -> tuple[list[tuple[str, str]], list[tuple[str, tuple[str, bytes, str]]]]:
        ids = {o.message.to[0].ascii_email: guard(self.name, o) for o in batch}
        data, files = self._form(batch[0])
        data = [(k, v) for k, v in data if k not in ("to", "v:corestone-id")]
        to = [("to", o.message.to[0].formatted(ascii_domain=True)) for o in batch]
        variables = {address: {"corestone_id": i} for address, i in ids.items()}
        data = [data[0], *to, *data[1:], ("v:corestone-id", "%recipient.corestone_id%")]
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
