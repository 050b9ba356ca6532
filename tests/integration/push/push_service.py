"""A local push service for the tests: RFC 8030's resources, RFC 8292's checks, and a
browser's decryption, served by uvicorn on a free port of 127.0.0.1.

- ``POST /subscribe`` (RFC 8030 §4) makes a subscription: 201 Created, ``Location`` the
  subscription resource, ``Link: <…>; rel="urn:ietf:params:push"`` the push resource the
  application server posts to. A JSON body ``{"applicationServerKey": …}`` restricts the
  subscription to that VAPID key (RFC 8292 §4), as ``pushManager.subscribe`` does.
- ``POST /p/{id}`` (RFC 8030 §5) takes a message: 201 Created with the message resource
  in ``Location``. Before that it checks what a real service checks: the subscription
  exists (404), ``TTL`` is present and a number, ``Urgency`` and ``Topic`` are valid (400),
  ``Content-Encoding: aes128gcm`` (415), the body is at most 4,096 bytes (413), and the
  ``Authorization: vapid t=…, k=…`` token: an ES256 JWT whose signature verifies against
  ``k`` (401), whose ``aud`` is this service's origin, whose ``exp`` is in the future and
  at most 24 h away, whose ``sub`` is a mailto: or https: contact, and whose ``k`` is the
  key the subscription was restricted to (403).
- Then it does what the browser would: decrypts the body with http_ece, using the
  subscription's private key and auth secret, which :meth:`PushService.browser` made
  like a browser does (a P-256 key pair and 16 random bytes). The plaintext is kept in
  :attr:`PushService.delivered` for the test to assert.

Switches: :meth:`PushService.gone` makes a subscription answer 410 (or 404),
:meth:`PushService.answer_next` queues answers (429 with ``Retry-After``, 503) given
before any check, and ``delay`` holds every answer that long (``most_in_flight`` then
tells how many requests were open at once).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tests.local_asgi import LocalAsgiServer

Reply = tuple[int, dict[str, str], bytes]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Browser:
    """One subscribed browser: its subscription JSON and the secrets only it knows."""

    id: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    server_key: str | None
    gone_status: int | None = None

    @property
    def subscription(self) -> dict[str, Any]:
        """What ``PushSubscription.toJSON()`` gives the page."""
        public = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(public), "auth": b64url(self.auth)},
        }


@dataclass
class Delivered:
    """One accepted message, as the browser would see it, with what came with it."""

    browser: str
    plaintext: bytes
    headers: dict[str, str]
    claims: dict[str, Any]
    body_bytes: int


@dataclass
class PushService:
    """The service of the module doc; ``requests`` counts every request to a push resource."""

    url: str = ""
    browsers: dict[str, Browser] = field(default_factory=dict)
    delivered: list[Delivered] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)
    requests: int = 0
    queued: list[Reply] = field(default_factory=list)
    delay: float = 0.0
    connections: set[int] = field(default_factory=set)  # the client ports seen
    in_flight: int = 0
    most_in_flight: int = 0
    _local: LocalAsgiServer | None = None

    # -- the test's handles -------------------------------------------------------------

    async def browser(self, application_server_key: str | None) -> Browser:
        """Subscribe like a browser: a new key pair and auth secret, then POST /subscribe."""
        import httpx

        body = (
            {}
            if application_server_key is None
            else {"applicationServerKey": application_server_key}
        )
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{self.url}/subscribe", json=body)
        assert response.status_code == 201, response.text
        link = re.fullmatch(r'<([^>]+)>;\s*rel="urn:ietf:params:push"', response.headers["link"])
        assert link is not None
        browser_id = response.headers["location"].rsplit("/", 1)[1]
        browser = self.browsers[browser_id]
        browser.endpoint = self.url + link[1]
        return browser

    def gone(self, browser: Browser, status: int = 410) -> None:
        """From now on, messages for ``browser`` get ``status`` (410 Gone or 404)."""
        browser.gone_status = status

    def answer_next(
        self, status: int, headers: dict[str, str] | None = None, body: bytes | None = None
    ) -> None:
        """Answer the next message request with ``status``, before any check."""
        self.queued.append((status, headers or {}, body or b'{"error": "scripted"}'))

    # -- the HTTP side --------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if method == "POST" and path == "/subscribe":
            return self._subscribe(body)
        match = re.fullmatch(r"/p/([0-9a-f]{32})", path)
        if method != "POST" or match is None:
            return 404, {}, b"no such resource"
        self.requests += 1
        if self.queued:
            return self.queued.pop(0)
        status, reason = self._accept(match[1], headers, body)
        if status != 201:
            self.refused.append((status, reason))
            return status, {"content-type": "text/plain"}, reason.encode()
        return 201, {"location": f"/m/{uuid.uuid4().hex}"}, b""

    def _subscribe(self, body: bytes) -> Reply:
        options = json.loads(body or b"{}")
        browser = Browser(
            id=uuid.uuid4().hex,
            endpoint="",
            private_key=ec.generate_private_key(ec.SECP256R1()),
            auth=os.urandom(16),
            server_key=options.get("applicationServerKey"),
        )
        self.browsers[browser.id] = browser
        headers = {
            "location": f"/subscription/{browser.id}",
            "link": f'</p/{browser.id}>; rel="urn:ietf:params:push"',
        }
        return 201, headers, b""

    def _accept(self, browser_id: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        browser = self.browsers.get(browser_id)
        if browser is None:
            return 404, "no such subscription"
        if browser.gone_status is not None:
            return browser.gone_status, "subscription expired"
        ttl = headers.get("ttl")
        if ttl is None or not ttl.isdigit():
            return 400, "TTL header required (RFC 8030 5.2)"
        if headers.get("urgency", "normal") not in ("very-low", "low", "normal", "high"):
            return 400, "bad Urgency"
        topic = headers.get("topic")
        if topic is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", topic):
            return 400, "bad Topic"
        if headers.get("content-encoding") != "aes128gcm":
            return 415, "Content-Encoding must be aes128gcm"
        if len(body) > 4096:
            return 413, "payload over 4096 bytes"
        status, reason, claims = self._vapid(headers.get("authorization", ""), browser)
        if status != 200:
            return status, reason
        try:
            plaintext = http_ece.decrypt(
                body, private_key=browser.private_key, auth_secret=browser.auth, version="aes128gcm"
            )
        except Exception as error:
            return 400, f"cannot decrypt: {error!r}"
        self.delivered.append(Delivered(browser.id, plaintext, headers, claims, len(body)))
        return 201, ""

    def _vapid(self, authorization: str, browser: Browser) -> tuple[int, str, dict[str, Any]]:
        """RFC 8292 §3 and §4.2: the token verifies against k, and k is the expected key."""
        scheme, _, params = authorization.partition(" ")
        if scheme.lower() != "vapid":
            return 401, "Authorization must use the vapid scheme", {}
        values = dict(part.strip().split("=", 1) for part in params.split(",") if "=" in part)
        token, key = values.get("t", ""), values.get("k", "")
        try:
            signing_input, _, signature = token.rpartition(".")
            header_b64, _, claims_b64 = signing_input.partition(".")
            header = json.loads(unb64url(header_b64))
            claims = json.loads(unb64url(claims_b64))
            raw = unb64url(signature)
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(key))
            if header.get("alg") != "ES256" or len(raw) != 64:
                raise InvalidSignature
            der = encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:]))
            public.verify(der, signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError, KeyError):
            return 401, "VAPID token does not verify against k", {}
        now = time.time()
        if claims.get("aud") != self.url:
            return 403, f"aud {claims.get('aud')!r} is not {self.url}", claims
        exp = claims.get("exp")
        if not isinstance(exp, int) or not now < exp <= now + 24 * 3600:
            return 403, "exp must be in the future and at most 24 hours away", claims
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
            return 403, "sub must be a mailto: or https: contact", claims
        if browser.server_key is not None and unb64url(key) != unb64url(browser.server_key):
            return 403, "subscription was made for another application server key", claims
        return 200, "", claims

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if scope["path"].startswith("/p/"):
            self.connections.add(scope["client"][1])
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            status, reply_headers, payload = self.handle(
                scope["method"], scope["path"], headers, body
            )
        finally:
            self.in_flight -= 1
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in reply_headers.items()],
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
