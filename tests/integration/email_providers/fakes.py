"""Local stand-ins for SendGrid, Mailgun and SES, and a real SMTP server (aiosmtpd).

Each HTTP fake is a small ASGI app served by uvicorn on a free port of 127.0.0.1, in the
test's own event loop. It implements the documented request and answer shapes of the
provider's endpoints (authentication, required fields, limits, the answer on success and
the error bodies), records every request exactly as it arrived, and answers a queue of
scripted failures first (``fail_next``) so each error code can be provoked. The SES fake
verifies each request's SigV4 signature the way AWS does: it rebuilds the canonical
request from what it received (only the headers the request says it signed) and
recomputes the signature with botocore and the known secret.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qsl

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.local_asgi import LocalAsgiServer

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Received:
    """One request as the fake received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> tuple[list[tuple[str, str]], list[tuple[str, str, str, bytes]]]:
        """(fields in order, files as (field, filename, content type, content))."""
        ctype = self.headers.get("content-type", "")
        if ctype.startswith("application/x-www-form-urlencoded"):
            return parse_qsl(self.body.decode(), keep_blank_values=True), []
        parsed = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + self.body
        )
        fields: list[tuple[str, str]] = []
        files: list[tuple[str, str, str, bytes]] = []
        for part in parsed.iter_parts():
            assert isinstance(part, Message)
            name = str(part.get_param("name", header="content-disposition"))
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            filename = part.get_filename()
            if filename is None:
                fields.append((name, payload.decode()))
            else:
                files.append((name, filename, part.get_content_type(), payload))
        return fields, files


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> Reply:
    return (
        status,
        {"content-type": "application/json", **(headers or {})},
        json.dumps(body).encode(),
    )


@dataclass
class FakeHttpServer:
    """The recording, scripted ASGI server under each provider fake."""

    requests: list[Received] = field(default_factory=list)
    scripted: list[Reply] = field(default_factory=list)
    url: str = ""
    _local: LocalAsgiServer | None = None

    def fail_next(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        """Answer the next request with this, whatever it is."""
        self.scripted.append(_json(status, body, headers))

    def handle(self, request: Received) -> Reply:  # pragma: no cover - each fake overrides
        raise NotImplementedError

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = Received(
            method=scope["method"],
            path=scope["path"],
            query=scope["query_string"].decode(),
            headers={k.decode().lower(): v.decode() for k, v in scope["headers"]},
            body=body,
        )
        self.requests.append(request)
        status, headers, payload = self.scripted.pop(0) if self.scripted else self.handle(request)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def start(self) -> str:
        self._local = LocalAsgiServer(self)
        self.url = await self._local.start()
        return self.url

    async def stop(self) -> None:
        if self._local is not None:
            await self._local.stop()


@dataclass
class Rendered:
    """One recipient's message as the provider would build it from a (batch) request."""

    to: list[str]
    subject: str
    text: str | None
    html: str | None
    headers: dict[str, str]
    ids: dict[str, str]
    """What the provider's events would give back: custom args, user variables, tags."""


def substitute(text: str | None, pattern: str, values: dict[str, str]) -> str | None:
    """Replace each placeholder once, from left to right: a value is never read again."""
    if text is None:
        return None
    return re.sub(pattern, lambda m: values.get(m.group(1), m.group(0)), text)


class SendGridFake(FakeHttpServer):
    """``POST /v3/mail/send`` and ``GET /v3/scopes`` as SendGrid documents them.

    Each accepted personalization is rendered as SendGrid would (its subject or the
    request's, its substitutions applied to subject and content, request headers under
    its own) into :attr:`delivered`.
    """

    def __init__(self, api_key: str, scopes: tuple[str, ...] = ("mail.send",)) -> None:
        super().__init__()
        self.api_key = api_key
        self.scopes = scopes
        self.message_ids: list[str] = []
        self.delivered: list[Rendered] = []

    def handle(self, request: Received) -> Reply:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _json(401, {"errors": [{"field": None, "message": "authorization required"}]})
        if request.method == "GET" and request.path == "/v3/scopes":
            return _json(200, {"scopes": list(self.scopes)})
        if request.method != "POST" or request.path != "/v3/mail/send":
            return _json(404, {"errors": [{"message": "not found"}]})
        body = request.json()
        problems = []
        personalizations = body.get("personalizations") or []
        if not personalizations or any(not p.get("to") for p in personalizations):
            problems.append(("personalizations", "each needs a to"))
        recipients = sum(len(p.get(k, [])) for p in personalizations for k in ("to", "cc", "bcc"))
        if recipients > 1000:
            problems.append(("personalizations", "more than 1000 recipients"))
        if not (body.get("from") or {}).get("email"):
            problems.append(("from.email", "required"))
        if not body.get("subject") and not all(p.get("subject") for p in personalizations):
            problems.append(("subject", "required"))
        content = body.get("content") or []
        if not content or (len(content) > 1 and content[0]["type"] != "text/plain"):
            problems.append(("content", "text/plain must come first"))
        emails = [a["email"].lower() for p in personalizations for k in ("to", "cc", "bcc")
                  for a in p.get(k, [])]  # fmt: skip
        if len(set(emails)) != len(emails):
            problems.append(("personalizations", "each address only once"))
        for p in personalizations:
            subs = p.get("substitutions") or {}
            if sum(len(k.encode()) + len(v.encode()) for k, v in subs.items()) > 10_000:
                problems.append(("personalizations.substitutions", "over 10,000 bytes"))
        if problems:
            return _json(400, {"errors": [{"field": f, "message": m} for f, m in problems]})
        self.message_ids.append(uuid.uuid4().hex[:22])
        bodies = {c["type"]: c["value"] for c in content}
        for p in personalizations:
            subs = p.get("substitutions") or {}
            pattern = "(" + "|".join(re.escape(k) for k in subs) + ")" if subs else "(?!)"
            self.delivered.append(
                Rendered(
                    to=[a["email"] for a in p["to"]],
                    subject=substitute(p.get("subject", body.get("subject")), pattern, subs) or "",
                    text=substitute(bodies.get("text/plain"), pattern, subs),
                    html=substitute(bodies.get("text/html"), pattern, subs),
                    headers={**body.get("headers", {}), **p.get("headers", {})},
                    ids=dict(p.get("custom_args", {})),
                )
            )
        return 202, {"x-message-id": self.message_ids[-1]}, b""


class MailgunFake(FakeHttpServer):
    """``POST /v3/{domain}/messages`` and ``GET /v4/domains/{domain}`` as Mailgun documents.

    Each accepted message is rendered into :attr:`delivered`: with recipient variables,
    one per ``to`` with its ``%recipient.x%`` placeholders replaced (subject, bodies,
    ``h:`` and ``v:`` values); without, one for the whole request.
    """

    def __init__(self, api_key: str, domain: str) -> None:
        super().__init__()
        self.api_key = api_key
        self.domain = domain
        self.delivered: list[Rendered] = []

    def handle(self, request: Received) -> Reply:
        expected = "Basic " + base64.b64encode(f"api:{self.api_key}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return 401, {"content-type": "text/plain"}, b"Forbidden"
        if request.method == "GET" and request.path == f"/v4/domains/{self.domain}":
            return _json(200, {"domain": {"name": self.domain, "state": "active"}})
        if request.path != f"/v3/{self.domain}/messages" or request.method != "POST":
            return _json(404, {"message": "Domain not found"})
        fields, _ = request.form()
        names = {name for name, _ in fields}
        if not {"from", "to", "subject"} <= names or not names & {"text", "html"}:
            return _json(400, {"message": "'from', 'to', 'subject' and a body are required"})
        to = [value for name, value in fields if name == "to"]
        if len(to) > 1000:
            return _json(400, {"message": "Too many recipients: 1000 at most"})
        variables = dict(fields).get("recipient-variables")
        addresses = [value.rpartition("<")[2].rstrip(">") for value in to]
        known: dict[str, dict[str, str]] = {}
        if variables is not None:
            known = json.loads(variables)
            if not isinstance(known, dict) or set(addresses) - set(known):
                return _json(400, {"message": "recipient-variables must cover every to"})
            if len(set(addresses)) != len(addresses):
                return _json(400, {"message": "an address is given twice"})
        single = dict(fields)
        for group in [[a] for a in addresses] if variables is not None else [addresses]:
            values = known.get(group[0], {}) if variables is not None else {}
            pattern = r"%recipient\.([^%]+)%" if variables is not None else "(?!)"

            def fill(
                text: str | None, values: dict[str, str] = values, pattern: str = pattern
            ) -> str | None:
                return substitute(text, pattern, values)

            self.delivered.append(
                Rendered(
                    to=group,
                    subject=fill(single["subject"]) or "",
                    text=fill(single.get("text")),
                    html=fill(single.get("html")),
                    headers={k[2:]: fill(v) or "" for k, v in fields if k.startswith("h:")},
                    ids={k[2:]: fill(v) or "" for k, v in fields if k.startswith("v:")},
                )
            )
        return _json(200, {"id": f"<{uuid.uuid4().hex}@{self.domain}>", "message": "Queued."})


class SesFake(FakeHttpServer):
    """SES v2 ``SendEmail``, ``SendBulkEmail`` and ``GetAccount``, SigV4 verified."""

    def __init__(self, access_key_id: str, secret: str, region: str) -> None:
        super().__init__()
        self.access_key_id = access_key_id
        self.secret = secret
        self.region = region
        self.entry_status: dict[str, str] = {}
        """A recipient address → the status its bulk entry gets (SUCCESS otherwise)."""
        self.signatures_checked = 0
        self.delivered: list[Rendered] = []
        """Each Simple message sent, and each successful bulk entry, its template rendered
        with its data (SES renders ``{{name}}`` without escaping anything)."""

    def signature_ok(self, request: Received) -> bool:
        """Recompute the request's SigV4 signature from what arrived, as AWS would."""
        found = re.fullmatch(
            r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
            r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})",
            request.headers.get("authorization", ""),
        )
        if found is None:
            return False
        key_id, day, region, service, signed, signature = found.groups()
        timestamp = request.headers.get("x-amz-date", "")
        if (key_id, region, service) != (self.access_key_id, self.region, "ses"):
            return False
        if not timestamp.startswith(day) or "host" not in signed.split(";"):
            return False
        url = f"http://{request.headers['host']}{request.path}"
        rebuilt = AWSRequest(
            method=request.method,
            url=f"{url}?{request.query}" if request.query else url,
            data=request.body,
            headers={name: request.headers[name] for name in signed.split(";")},
        )
        rebuilt.context["timestamp"] = timestamp
        signer = SigV4Auth(Credentials(key_id, self.secret), "ses", region)
        canonical = signer.canonical_request(rebuilt)
        expected = signer.signature(signer.string_to_sign(rebuilt, canonical), rebuilt)
        self.signatures_checked += 1
        return hmac.compare_digest(expected, signature)

    def handle(self, request: Received) -> Reply:
        if not self.signature_ok(request):
            return _json(
                403,
                {"message": "The request signature we calculated does not match"},
                {"x-amzn-errortype": "SignatureDoesNotMatch"},
            )
        if request.method == "GET" and request.path == "/v2/email/account":
            return _json(200, {"SendingEnabled": True, "ProductionAccessEnabled": True})
        if request.method == "POST" and request.path == "/v2/email/outbound-emails":
            body = request.json()
            content = body.get("Content") or {}
            simple, raw = content.get("Simple"), content.get("Raw")
            valid = (simple and simple.get("Subject") and simple.get("Body")) or (
                raw and base64.b64decode(raw["Data"], validate=True)
            )
            if not valid or not body.get("FromEmailAddress"):
                return self._bad_request("Content is invalid")
            if simple:
                self.delivered.append(
                    Rendered(
                        to=body["Destination"]["ToAddresses"],
                        subject=simple["Subject"]["Data"],
                        text=simple["Body"].get("Text", {}).get("Data"),
                        html=simple["Body"].get("Html", {}).get("Data"),
                        headers={h["Name"]: h["Value"] for h in simple.get("Headers", [])},
                        ids={t["Name"]: t["Value"] for t in body.get("EmailTags", [])},
                    )
                )
            return _json(200, {"MessageId": f"0100-{uuid.uuid4()}"})
        if request.method == "POST" and request.path == "/v2/email/outbound-bulk-emails":
            body = request.json()
            entries = body.get("BulkEmailEntries") or []
            template = (body.get("DefaultContent") or {}).get("Template")
            if not 1 <= len(entries) <= 50 or not template:
                return self._bad_request("BulkEmailEntries must hold 1-50 entries")
            content = template.get("TemplateContent") or {}
            results = []
            for entry in entries:
                replacement = (entry.get("ReplacementEmailContent") or {}).get(
                    "ReplacementTemplate", {}
                )
                raw = replacement.get("ReplacementTemplateData") or template.get("TemplateData")
                headers = [*template.get("Headers", []), *entry.get("ReplacementHeaders", [])]
                if len(raw or "") > 262_144 or len(entry.get("ReplacementHeaders", [])) > 15:
                    return self._bad_request("an entry is over SES's limits")
                data = json.loads(raw or "{}")
                names = set(re.findall(r"{{([^}]*)}}", json.dumps(content)))
                if names - set(data):  # SES: a rendering failure; here, loudly
                    return self._bad_request(f"template data lacks {sorted(names - set(data))}")
                first = entry["Destination"]["ToAddresses"][0]
                status = self.entry_status.get(first, "SUCCESS")
                if status != "SUCCESS":
                    results.append({"Status": status, "Error": "refused by the fake"})
                    continue
                results.append({"Status": status, "MessageId": f"0100-{uuid.uuid4()}"})
                pattern = r"{{([^}]*)}}"
                self.delivered.append(
                    Rendered(
                        to=entry["Destination"]["ToAddresses"],
                        subject=substitute(content.get("Subject"), pattern, data) or "",
                        text=substitute(content.get("Text"), pattern, data),
                        html=substitute(content.get("Html"), pattern, data),
                        headers={h["Name"]: h["Value"] for h in headers},
                        ids={t["Name"]: t["Value"] for t in entry.get("ReplacementTags", [])},
                    )
                )
            return _json(200, {"BulkEmailEntryResults": results})
        return _json(404, {"message": "not found"}, {"x-amzn-errortype": "NotFoundException"})

    @staticmethod
    def _bad_request(message: str) -> Reply:
        return _json(400, {"message": message}, {"x-amzn-errortype": "BadRequestException"})


# -- SMTP ---------------------------------------------------------------------------------


@dataclass
class Delivered:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str]
    tls: bool = False
    authenticated: bool = False


@dataclass
class SmtpRecorder:
    """aiosmtpd handler: keeps what it accepts, refuses what a test tells it to."""

    delivered: list[Delivered] = field(default_factory=list)
    ehlos: int = 0
    refuse_rcpt: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        with self.lock:
            self.ehlos += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        reply = self.refuse_rcpt.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if self.data_reply:
            return self.data_reply
        content = envelope.original_content or b""
        with self.lock:
            self.delivered.append(
                Delivered(
                    str(envelope.mail_from), list(envelope.rcpt_tos), content,
                    list(envelope.mail_options),
                    tls=server.transport.get_extra_info("ssl_object") is not None,
                    authenticated=bool(session.authenticated),
                )
            )  # fmt: skip
        return "250 OK queued"


def start_smtp(recorder: SmtpRecorder, port: int, **options: Any) -> Controller:
    """A real SMTP server on ``port`` in its own thread; stop it with ``.stop()``."""
    options.setdefault("enable_SMTPUTF8", True)
    controller = Controller(recorder, hostname="127.0.0.1", port=port, **options)
    controller.start()
    return controller
