"""Amazon SES v2 (``SendEmail``, ``SendBulkEmail``) over httpx, signed by botocore's SigV4.

corestone does no cryptography of its own here: every request is signed by botocore's
``SigV4Auth`` (service ``ses``, the configured region) from ``botocore.credentials``'
``Credentials``, then sent with httpx, so the whole of boto3 is not needed. Without
explicit keys the credentials come from botocore's default chain (environment, shared
files, SSO, container or instance role), resolved on the first call; temporary ones are
refreshed by botocore before they expire, off the event loop when that takes I/O.

``SendEmail`` (``POST /v2/email/outbound-emails``) carries a message as
``Content.Simple`` (subject, text and HTML bodies, custom headers), or as
``Content.Raw`` (the MIME form, base64) when it has attachments or inline images.
corestone's id goes in the ``corestone-id`` message tag, which SES returns with every
event it publishes (``mail.tags``), and in the ``X-Corestone-Id`` header. SES answers
``200 {"MessageId": "…"}``.

``SendBulkEmail`` (``POST /v2/email/outbound-bulk-emails``, at most 50 entries, SES's
limit) carries the messages of a batch that share everything but their recipients,
subject, bodies, headers, tags and metadata. The content is an inline template
(``DefaultContent.Template.TemplateContent``) of placeholders only: ``{{subject}}``,
``{{text}}``, ``{{html}}``; each message is an entry with its destination, its
``corestone-id`` tag, its headers (``List-Unsubscribe`` per recipient, and
``X-Corestone-Id``) as ``ReplacementHeaders``, and its rendered subject and bodies as
``ReplacementTemplateData``. This works because SES documents that it supports simple
substitutions for inline template content and that it does not escape HTML when it
renders a template: each recipient's HTML, rendered and escaped by corestone's sandbox,
arrives as it was rendered, and what a recipient's data holds (``{{ }}`` included) is a
value, never template text. Messages with files (a template cannot carry them), with a
non-ASCII local part, more than 14 headers or more than 262,144 characters of data go
through ``SendEmail``; a bulk request holds at most 1 MB of template data.

Errors: a transport error, timeout, ``TooManyRequestsException`` (429),
``LimitExceededException`` (the sending quota) and every 5xx are retryable;
``MessageRejected``, ``MailFromDomainNotVerifiedException``, ``AccountSuspendedException``,
``SendingPausedException``, ``NotFoundException``, ``BadRequestException`` and refused
credentials are permanent. In a bulk answer each entry's status is mapped alike
(``ACCOUNT_THROTTLED``, ``ACCOUNT_DAILY_QUOTA_EXCEEDED``, ``TRANSIENT_FAILURE`` and
``FAILED`` retryable, the rest permanent). SES does not accept SMTPUTF8 (non-ASCII local
parts): such a message is refused permanently before any request.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Sequence
from email.utils import formataddr
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
    wire_mime,
)
from corestone.email.providers.base import Outgoing, Sent
from corestone.errors import EmailProviderError
from corestone.observability.health import CheckResult, HealthStatus

with requires_extra(__name__, "email"):
    import httpx
with requires_extra(__name__, "ses"):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials, ReadOnlyCredentials, RefreshableCredentials
    from botocore.session import get_session

__all__ = [
    "MAX_BULK_ENTRIES",
    "MAX_BULK_RECIPIENTS",
    "MAX_BULK_TEMPLATE_BYTES",
    "MAX_REPLACEMENT_DATA",
    "TAG_NAME",
    "SesProvider",
]

MAX_BULK_ENTRIES: Final = 50
"""``SendBulkEmail``: at most 50 destinations (entries) a call."""
MAX_BULK_RECIPIENTS: Final = 50 * 50
"""Recipients of one bulk call: 50 entries of at most 50 recipients (the message limit)."""
MAX_REPLACEMENT_DATA: Final = 262_144
"""``ReplacementTemplateData``: at most 262,144 characters per entry."""
MAX_BULK_TEMPLATE_BYTES: Final = 1024 * 1024
"""Inline templates: "each input JSON file can be up to 1 MB, including both the text
and HTML parts"; read conservatively as the whole request's template data."""
_MAX_HEADERS: Final = 15  # MessageHeader lists: at most 15 items
TAG_NAME: Final = "corestone-id"
_RETRYABLE_ERRORS: Final = frozenset(
    {"TooManyRequests", "Throttling", "LimitExceeded", "InternalFailure", "ServiceUnavailable"}
)
_RETRYABLE_STATUSES: Final = frozenset(
    {"ACCOUNT_THROTTLED", "ACCOUNT_DAILY_QUOTA_EXCEEDED", "TRANSIENT_FAILURE", "FAILED"}
)


def _address(address: Address) -> str:
    """``Name <a@xn--b.org>``, a non-ASCII name RFC 2047 encoded (SES requires it)."""
    return str(formataddr((address.name, address.ascii_email), charset="utf-8"))


_PER_ENTRY: Final = (
    "to", "cc", "bcc", "subject", "text", "html", "headers", "tags", "metadata", "idempotency_key",
)  # fmt: skip


def _template_data(message: EmailMessage) -> str:
    """One entry's ``ReplacementTemplateData``: its rendered subject, text and HTML."""
    data = {"subject": message.subject, "text": message.text, "html": message.html}
    return json.dumps({k: v for k, v in data.items() if v is not None}, separators=(",", ":"))


def _template_bytes(message: EmailMessage) -> int:
    return len(_template_data(message).encode())


def _bulk_key(message: EmailMessage) -> str | None:
    """What the messages of one ``SendBulkEmail`` share; None: it goes through ``SendEmail``.

    Files cannot be part of a template, SES refuses SMTPUTF8, and an entry holds at most
    15 headers (with ``X-Corestone-Id``) and 262,144 characters of data.
    """
    if message.attachments or message.needs_smtputf8 or len(message.headers) >= _MAX_HEADERS:
        return None
    if len(_template_data(message)) > MAX_REPLACEMENT_DATA:
        return None
    return shared_key(message, _PER_ENTRY, message.text is None, message.html is None)


def _error_code(response: httpx.Response, body: Any) -> str:
    raw = str(response.headers.get("x-amzn-ErrorType", ""))
    if not raw and isinstance(body, dict):
        raw = str(body.get("__type") or body.get("code") or body.get("Code") or "")
    code = raw.split(":", 1)[0].rsplit("#", 1)[-1]
    return code.removesuffix("Exception")


class SesProvider:
    """Sends through SES in one region with one access key."""

    def __init__(
        self,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        *,
        region: str,
        session_token: str | None = None,
        name: str = "ses",
        endpoint_url: str | None = None,
        configuration_set: str | None = None,
        timeout: float = 30.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if not region:
            raise ValueError("SES needs a region")
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("give SES an access key id and its secret together, or neither")
        if access_key_id is not None and not (access_key_id and secret_access_key):
            raise ValueError("an empty SES access key id or secret")
        self.name = name
        self.max_batch = MAX_BULK_ENTRIES
        self.region = region
        self._endpoint = (endpoint_url or f"https://email.{region}.amazonaws.com").rstrip("/")
        self._credentials: Credentials | None = None
        if access_key_id is not None and secret_access_key is not None:
            self._credentials = Credentials(access_key_id, secret_access_key, session_token)
        self._configuration_set = configuration_set
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)

    def __repr__(self) -> str:  # the secret must never reach a log
        return f"SesProvider(name={self.name!r}, region={self.region!r})"

    # -- requests ------------------------------------------------------------------------

    async def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        """Sign with SigV4 and send; the decoded JSON answer, or the mapped error."""
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
        request = AWSRequest(
            method=method,
            url=f"{self._endpoint}{path}",
            data=data,
            headers={"Content-Type": "application/json"} if body is not None else {},
        )
        SigV4Auth(await self._frozen_credentials(), "ses", self.region).add_auth(request)
        try:
            response = await self._client.request(
                method, request.url, content=data or None, headers=dict(request.headers.items())
            )
        except httpx.HTTPError as exc:
            raise EmailProviderError(
                self.name, shorten(f"{type(exc).__name__}: {exc}"), retryable=True
            ) from None
        try:
            answer = response.json() if response.content else {}
        except ValueError:
            answer = None
        if response.status_code == 200:
            return answer
        code = _error_code(response, answer)
        message = ""
        if isinstance(answer, dict):
            message = str(answer.get("message") or answer.get("Message") or "")
        detail = f"{code}: {message}" if code else message or response.text
        wait = parse_retry_after(response.headers.get("Retry-After"))
        error = status_error(self.name, response.status_code, detail, retry_after=wait)
        if code in _RETRYABLE_ERRORS and not error.retryable:
            error = EmailProviderError(self.name, error.reason, retryable=True, retry_after=wait)
        raise error

    async def _frozen_credentials(self) -> ReadOnlyCredentials:
        """The keys to sign with now: given ones, or the default chain's (refreshed).

        Resolving the chain and refreshing a role's keys may call a metadata endpoint
        or read files: done in a thread, so the event loop never waits on it.
        """
        credentials = self._credentials
        if credentials is None:
            credentials = await asyncio.to_thread(get_session().get_credentials)
            if credentials is None:
                raise EmailProviderError(
                    self.name,
                    "no AWS credentials: set CORESTONE_SES_ACCESS_KEY_ID and "
                    "CORESTONE_SES_SECRET_ACCESS_KEY, or configure botocore's default chain",
                    retryable=True,  # a configuration to fix: the mail waits for it
                )
            self._credentials = credentials
        if isinstance(credentials, RefreshableCredentials) and credentials.refresh_needed():
            return await asyncio.to_thread(credentials.get_frozen_credentials)
        return credentials.get_frozen_credentials()

    def _common(self, message: EmailMessage) -> dict[str, Any]:
        if message.needs_smtputf8:
            raise EmailProviderError(
                self.name, "SES does not accept non-ASCII local parts (SMTPUTF8)", retryable=False
            )
        body: dict[str, Any] = {"FromEmailAddress": _address(message.sender)}
        if message.reply_to:
            body["ReplyToAddresses"] = [_address(a) for a in message.reply_to]
        if self._configuration_set:
            body["ConfigurationSetName"] = self._configuration_set
        return body

    @staticmethod
    def _destination(message: EmailMessage) -> dict[str, list[str]]:
        destination = {"ToAddresses": [_address(a) for a in message.to]}
        if message.cc:
            destination["CcAddresses"] = [_address(a) for a in message.cc]
        if message.bcc:
            destination["BccAddresses"] = [_address(a) for a in message.bcc]
        return destination

    @staticmethod
    def _headers(message: EmailMessage, message_id: str | None) -> list[dict[str, str]]:
        headers = [{"Name": k, "Value": v} for k, v in message.headers.items()]
        if message_id is not None:
            headers = [h for h in headers if h["Name"].lower() != CORESTONE_ID_HEADER.lower()]
            headers.append({"Name": CORESTONE_ID_HEADER, "Value": message_id})
        return headers

    def _send_email_body(self, outgoing: Outgoing) -> dict[str, Any]:
        message_id = guard(self.name, outgoing)
        message = outgoing.message
        body = self._common(message)
        body["Destination"] = self._destination(message)
        if message.attachments:
            raw = wire_mime(self.name, outgoing).as_bytes()
            body["Content"] = {"Raw": {"Data": base64.b64encode(raw).decode("ascii")}}
        else:
            content: dict[str, Any] = {}
            if message.text is not None:
                content["Text"] = {"Data": message.text, "Charset": "UTF-8"}
            if message.html is not None:
                content["Html"] = {"Data": message.html, "Charset": "UTF-8"}
            body["Content"] = {
                "Simple": {
                    "Subject": {"Data": message.subject, "Charset": "UTF-8"},
                    "Body": content,
                    "Headers": self._headers(message, message_id),
                }
            }
        body["EmailTags"] = [{"Name": TAG_NAME, "Value": message_id}]
        return body

    async def send(self, outgoing: Outgoing) -> Sent:
        """``SendEmail``: Simple content, or Raw when the message carries files."""
        answer = await self._call(
            "POST", "/v2/email/outbound-emails", self._send_email_body(outgoing)
        )
        message_id = answer.get("MessageId") if isinstance(answer, dict) else None
        return Sent(self.name, str(message_id) if message_id else None)

    # -- batches -------------------------------------------------------------------------

    async def send_batch(self, batch: Sequence[Outgoing]) -> list[Sent | EmailProviderError]:
        """Messages of one bulk key through ``SendBulkEmail``, the rest through ``SendEmail``.

        When the whole batch is one request and it fails, the error is raised (every
        message has that outcome); otherwise each failure is returned in its place, and
        within a bulk request each entry's own status is its message's outcome.
        """
        if len(batch) > self.max_batch:
            raise ValueError(f"a batch holds at most {self.max_batch} messages")
        plan = plan_requests(
            self.name, batch, _bulk_key, max_recipients=MAX_BULK_RECIPIENTS,
            max_size=MAX_BULK_TEMPLATE_BYTES, size=_template_bytes,
        )  # fmt: skip
        return await send_planned(batch, plan, self.send, self._bulk)

    async def _bulk(self, batch: list[Outgoing]) -> list[Sent | EmailProviderError]:
        first = batch[0].message
        template = {"Subject": "{{subject}}"}
        if first.text is not None:
            template["Text"] = "{{text}}"
        if first.html is not None:
            template["Html"] = "{{html}}"
        body = self._common(first)
        body["DefaultContent"] = {"Template": {"TemplateContent": template, "TemplateData": "{}"}}
        entries = []
        for outgoing in batch:
            message_id = guard(self.name, outgoing)
            message = outgoing.message
            entries.append(
                {
                    "Destination": self._destination(message),
                    "ReplacementTags": [{"Name": TAG_NAME, "Value": message_id}],
                    "ReplacementEmailContent": {
                        "ReplacementTemplate": {"ReplacementTemplateData": _template_data(message)}
                    },
                    "ReplacementHeaders": self._headers(message, message_id),
                }
            )
        body["BulkEmailEntries"] = entries
        answer = await self._call("POST", "/v2/email/outbound-bulk-emails", body)
        results = answer.get("BulkEmailEntryResults") if isinstance(answer, dict) else None
        if not isinstance(results, list) or len(results) != len(batch):
            # Accepted, but the answer cannot be matched to the entries: report them sent
            # without an id rather than retry what SES may well be delivering.
            return [Sent(self.name, None)] * len(batch)
        outcomes: list[Sent | EmailProviderError] = []
        for result in results:
            status = str(result.get("Status", "")) if isinstance(result, dict) else ""
            if status == "SUCCESS":
                outcomes.append(Sent(self.name, result.get("MessageId")))
            else:
                reason = shorten(f"{status}: {result.get('Error') or ''}".rstrip(": "))
                outcomes.append(
                    EmailProviderError(self.name, reason, retryable=status in _RETRYABLE_STATUSES)
                )
        return outcomes

    # -- health and shutdown -------------------------------------------------------------

    async def check(self) -> CheckResult:
        """``GetAccount``: the credentials are accepted and the account may send."""
        try:
            answer = await self._call("GET", "/v2/email/account", None)
        except EmailProviderError as exc:
            return CheckResult(status=HealthStatus.FAIL, output=exc.reason)
        if isinstance(answer, dict) and answer.get("SendingEnabled") is False:
            return CheckResult(status=HealthStatus.FAIL, output="sending is disabled")
        if isinstance(answer, dict) and answer.get("ProductionAccessEnabled") is False:
            return CheckResult(status=HealthStatus.WARN, output="account is in the SES sandbox")
        return CheckResult(output=self.region)

    async def aclose(self) -> None:
        """Close the HTTP client this provider made (not one it was given)."""
        if self._owns_client:
            await self._client.aclose()
