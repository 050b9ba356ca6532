"""Amazon SES v2 (``SendEmail``, ``SendBulkEmail``) over httpx, signed by botocore's SigV4.

corestone does no cryptography of its own here: every request is signed by botocore's
``SigV4Auth`` (service ``ses``, the configured region) from ``botocore.credentials``'
``Credentials``, then sent with httpx, so the whole of boto3 is not needed.

``SendEmail`` (``POST /v2/email/outbound-emails``) carries a message as
``Content.Simple`` (subject, text and HTML bodies, custom headers), or as
``Content.Raw`` (the MIME form, base64) when it has attachments or inline images.
corestone's id goes in the ``corestone-id`` message tag, which SES returns with every
event it publishes (``mail.tags``), and in the ``X-Corestone-Id`` header. SES answers
``200 {"MessageId": "…"}``.

``SendBulkEmail`` (``POST /v2/email/outbound-bulk-emails``, at most 50 entries, SES's
limit) is used for the messages of a batch that share their content and differ only in
their recipients (and id): the content is sent once as an inline template, and each
message is an entry with its destination, its ``corestone-id`` tag and its
``X-Corestone-Id`` header. Text containing ``{{`` would be read as a template
placeholder, and attachments cannot be part of it, so such messages, and messages that
share their content with no other, go through ``SendEmail``.

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
    from botocore.credentials import Credentials

__all__ = ["MAX_BULK_ENTRIES", "TAG_NAME", "SesProvider"]

MAX_BULK_ENTRIES: Final = 50
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
        access_key_id: str,
        secret_access_key: str,
        *,
        region: str,
        session_token: str | None = None,
        name: str = "ses",
        endpoint_url: str | None = None,
        configuration_set: str | None = None,
        timeout: float = 30.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if not access_key_id or not secret_access_key or not region:
            raise ValueError("SES needs an access key id, its secret and a region")
        self.name = name
        self.max_batch = MAX_BULK_ENTRIES
        self.region = region
        self._endpoint = (endpoint_url or f"https://email.{region}.amazonaws.com").rstrip("/")
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
        SigV4Auth(self._credentials, "ses", self.region).add_auth(request)
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

    @staticmethod
    def _bulk_key(message: EmailMessage) -> str | None:
        """What messages must share to go in one ``SendBulkEmail``; None: they cannot."""
        texts = (message.subject, message.text or "", message.html or "")
        if message.attachments or message.needs_smtputf8 or any("{{" in t for t in texts):
            return None
        shared = message.to_dict()
        for field in ("to", "cc", "bcc", "idempotency_key", "tags", "metadata"):
            shared.pop(field)
        return json.dumps(shared, sort_keys=True)

    async def send_batch(self, batch: Sequence[Outgoing]) -> list[Sent | EmailProviderError]:
        """Shared content through ``SendBulkEmail``, the rest through ``SendEmail``.

        When the whole batch is one request and it fails, the error is raised (every
        message has that outcome); otherwise each failure is returned in its place.
        """
        if len(batch) > self.max_batch:
            raise ValueError(f"a batch holds at most {self.max_batch} messages")
        groups: dict[str, list[int]] = {}
        singles: list[int] = []
        outcomes: dict[int, Sent | EmailProviderError] = {}
        for index, outgoing in enumerate(batch):
            try:
                guard(self.name, outgoing)  # one bad message must not sink its group
            except EmailProviderError as exc:
                outcomes[index] = exc
                continue
            key = self._bulk_key(outgoing.message)
            if key is None:
                singles.append(index)
            else:
                groups.setdefault(key, []).append(index)
        singles += [members[0] for members in groups.values() if len(members) == 1]
        bulks = [members for members in groups.values() if len(members) > 1]
        whole = len(bulks) + len(singles) == 1 and not outcomes
        for index in singles:
            try:
                outcomes[index] = await self.send(batch[index])
            except EmailProviderError as exc:
                if whole:
                    raise
                outcomes[index] = exc
        for members in bulks:
            try:
                outcomes.update(await self._bulk([batch[i] for i in members], members))
            except EmailProviderError as exc:
                if whole:
                    raise
                outcomes.update(dict.fromkeys(members, exc))
        return [outcomes[i] for i in range(len(batch))]

    async def _bulk(
        self, batch: list[Outgoing], indexes: list[int]
    ) -> dict[int, Sent | EmailProviderError]:
        first = batch[0].message
        template: dict[str, Any] = {"Subject": first.subject}
        if first.text is not None:
            template["Text"] = first.text
        if first.html is not None:
            template["Html"] = first.html
        body = self._common(first)
        body["DefaultContent"] = {
            "Template": {
                "TemplateContent": template,
                "TemplateData": "{}",
                "Headers": self._headers(first, None),
            }
        }
        entries = []
        for outgoing in batch:
            message_id = guard(self.name, outgoing)
            entries.append(
                {
                    "Destination": self._destination(outgoing.message),
                    "ReplacementTags": [{"Name": TAG_NAME, "Value": message_id}],
                    "ReplacementHeaders": [{"Name": CORESTONE_ID_HEADER, "Value": message_id}],
                }
            )
        body["BulkEmailEntries"] = entries
        answer = await self._call("POST", "/v2/email/outbound-bulk-emails", body)
        results = answer.get("BulkEmailEntryResults") if isinstance(answer, dict) else None
        if not isinstance(results, list) or len(results) != len(batch):
            # Accepted, but the answer cannot be matched to the entries: report them sent
            # without an id rather than retry what SES may well be delivering.
            return dict.fromkeys(indexes, Sent(self.name, None))
        outcomes: dict[int, Sent | EmailProviderError] = {}
        for index, result in zip(indexes, results, strict=True):
            status = str(result.get("Status", "")) if isinstance(result, dict) else ""
            if status == "SUCCESS":
                outcomes[index] = Sent(self.name, result.get("MessageId"))
            else:
                reason = shorten(f"{status}: {result.get('Error') or ''}".rstrip(": "))
                outcomes[index] = EmailProviderError(
                    self.name, reason, retryable=status in _RETRYABLE_STATUSES
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
