"""The Web Push sender: one encrypted, VAPID-signed message to one subscription.

:meth:`WebPushSender.send` checks the payload (at most 3,993 bytes of plaintext) and the
headers, encrypts the payload (RFC 8291, ``aes128gcm``) and posts it to the
subscription's endpoint (RFC 8030) with ``TTL``, ``Urgency``, ``Topic`` and a VAPID
``Authorization`` (RFC 8292: ``aud`` the endpoint's origin, ``exp`` at most 24 hours
ahead; one token per origin is reused until an hour before it expires).

Every request goes through the circuit breaker of its push service, ``push:<host>``
(``CORESTONE_BREAKERS`` tunes it, ``/api/ops/breakers`` shows it). Only a service that
did not do its job counts against it: a transport error, a timeout, a 5xx. 429 and 5xx
are retried up to ``attempts`` times, waiting the service's ``Retry-After`` or a
jittered exponential backoff, whichever is longer; a wait beyond ``max_retry_wait_seconds``
is not waited: the result is ``failed`` with that ``retry_after``, for the caller to
reschedule. The ciphertext is made once and the same bytes are posted on every attempt.

Outcomes (also the ``outcome`` label of ``corestone_push_sent_total``):

- ``delivered``: 2xx, the service accepted the message (201 Created, with ``Location``);
- ``gone``: 404 or 410, the subscription expired or was unsubscribed: its row is deleted;
- ``rejected``: another 4xx (400, 401/403 a VAPID key the subscription was not made
  for, 413 too large); the row's failure count grows;
- ``failed``: retries spent (or a wait too long) on 429, 5xx or transport errors;
- ``circuit_open``: the push service's breaker refused the call; nothing was sent.

``corestone_push_send_seconds`` times each HTTP request. The crypto (about 0.5 ms per
message for encryption, 0.2 ms per token) runs on one worker thread of the sender's own,
so a burst of sends does not stall the event loop (docs/push.md has the measurements).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from corestone._extras import requires_extra
from corestone.errors import CircuitOpenError, InvalidInputError
from corestone.observability.logging import get_logger
from corestone.observability.metrics import Metrics
from corestone.push._message import (
    MAX_PLAINTEXT_BYTES,
    Urgency,
    check_headers,
    encrypt,
    parse_retry_after,
    plaintext_of,
)
from corestone.push.endpoints import EndpointPolicy, origin_of
from corestone.push.subscriptions import PushSubscription, SubscriptionStore, check_keys
from corestone.push.vapid import MAX_TOKEN_SECONDS, VapidKeys
from corestone.resilience.registry import BreakerRegistry

with requires_extra(__name__, "push"):
    import httpx

if TYPE_CHECKING:
    from corestone.config import Settings
    from corestone.db.database import Database
    from corestone.resilience.breaker import CircuitBreaker

__all__ = ["MAX_PLAINTEXT_BYTES", "PushOutcome", "PushResult", "Urgency", "WebPushSender"]

log = get_logger(__name__)
T = TypeVar("T")

_REASON_BYTES = 512
_TOKEN_RENEW_SECONDS = 3600


class PushOutcome(StrEnum):
    """How one :meth:`WebPushSender.send` ended (see the module doc)."""

    DELIVERED = "delivered"
    GONE = "gone"
    REJECTED = "rejected"
    FAILED = "failed"
    CIRCUIT_OPEN = "circuit_open"


@dataclass(frozen=True, slots=True)
class PushResult:
    """The outcome of one send, with the push service's last answer."""

    outcome: PushOutcome
    status: int | None = None
    attempts: int = 0
    location: str | None = None
    reason: str | None = None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        """Whether the push service accepted the message."""
        return self.outcome is PushOutcome.DELIVERED


@dataclass(slots=True)
class _Answer:
    status: int | None
    location: str | None = None
    reason: str | None = None
    retry_after: float | None = None


class WebPushSender:
    """Send Web Push messages signed with ``keys``; a component (``aclose`` when done).

    With a ``database``, the sender keeps the subscriptions table true: a ``gone``
    subscription is deleted, a delivery stamps ``last_success_at``, a ``rejected`` or
    ``failed`` send adds one to ``failures``. ``policy`` must match the one the
    subscriptions were registered under (it is checked again before each send).
    """

    name = "webpush-sender"

    def __init__(
        self,
        keys: VapidKeys,
        *,
        database: Database | None = None,
        store: SubscriptionStore | None = None,
        policy: EndpointPolicy | None = None,
        breakers: BreakerRegistry | None = None,
        metrics: Metrics | None = None,
        client: httpx.AsyncClient | None = None,
        timeout_seconds: float = 10.0,
        concurrency: int = 50,
        attempts: int = 3,
        retry_wait_seconds: float = 0.5,
        max_retry_wait_seconds: float = 30.0,
        token_seconds: int = 12 * 3600,
        offload_crypto: bool = True,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if attempts < 1 or concurrency < 1 or retry_wait_seconds < 0 or max_retry_wait_seconds < 0:
            raise ValueError("attempts and concurrency >= 1; retry waits >= 0")
        if not _TOKEN_RENEW_SECONDS < token_seconds <= MAX_TOKEN_SECONDS:
            raise ValueError(f"token_seconds must be over 1 h and at most {MAX_TOKEN_SECONDS}")
        self.keys = keys
        self.database = database
        self.policy = policy or (store.policy if store is not None else EndpointPolicy())
        self.store = store or SubscriptionStore(policy=self.policy)
        self.breakers = breakers or BreakerRegistry(metrics=metrics)
        self.attempts = attempts
        self.retry_wait, self.max_retry_wait = retry_wait_seconds, max_retry_wait_seconds
        self.token_seconds = token_seconds
        self.clock, self.sleep = clock, sleep
        self._owns_client = client is None
        # No redirects: a push service answers where it is; a redirect could lead anywhere.
        self._client = client or httpx.AsyncClient(
            timeout=timeout_seconds,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        # Requests in flight, all services together: a burst beyond it waits here, in
        # order, rather than in httpx's pool (whose queue costs grow with its length, and
        # whose wait would count against the timeout and so against the breaker).
        self._gate = asyncio.Semaphore(concurrency)
        self._executor = (
            ThreadPoolExecutor(1, thread_name_prefix="corestone-webpush")
            if offload_crypto
            else None
        )
        self._tokens: dict[str, tuple[int, str]] = {}  # audience -> (exp, header)
        metrics = metrics or Metrics()
        self._sent = metrics.counter(
            "push_sent_total", "Web Push messages by outcome.", ["outcome"]
        )
        self._seconds = metrics.histogram(
            "push_send_seconds", "Time of one request to a push service."
        )

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> WebPushSender:
        """A sender with the VAPID keys of ``settings`` (ConfigurationError if unset)."""
        return cls(VapidKeys.from_settings(settings), **options)

    def __repr__(self) -> str:
        return f"WebPushSender(keys={self.keys!r})"

    async def __aenter__(self) -> WebPushSender:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client this sender made (not one it was given) and its thread."""
        if self._owns_client:
            await self._client.aclose()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # -- sending ---------------------------------------------------------------------------

    async def send(
        self,
        subscription: PushSubscription,
        payload: bytes | Mapping[str, Any],
        *,
        ttl: int = 86_400,
        urgency: Urgency = "normal",
        topic: str | None = None,
    ) -> PushResult:
        """Deliver ``payload`` to ``subscription``; see the module doc for the outcomes.

        A bad payload, header value or subscription raises InvalidInputError (nothing is
        sent); ``payload`` over 3,993 bytes raises PayloadTooLargeError. An endpoint
        whose host now resolves to a non-public address is ``rejected`` unsent.
        """
        plaintext = plaintext_of(payload)
        headers = check_headers(ttl, urgency, topic)
        endpoint = self.policy.check(subscription.endpoint)
        public_key, secret = check_keys(subscription.p256dh, subscription.auth)
        try:
            await self.policy.check_resolved(endpoint)
        except InvalidInputError as refused:  # the host now resolves to a private address
            answer = _Answer(None, None, refused.message)
            return await self._finish(subscription, PushOutcome.REJECTED, answer, 0)
        audience = origin_of(endpoint)
        body, authorization = await self._off_loop(
            lambda: (encrypt(plaintext, public_key, secret), self._token(audience))
        )
        headers |= {
            "Authorization": authorization,
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
        }
        # push:<host>, with the port only when it is not the scheme's default.
        breaker = self.breakers.get(f"push:{audience.partition('://')[2]}")
        outcome, answer, attempts = await self._deliver(breaker, endpoint, headers, body)
        return await self._finish(subscription, outcome, answer, attempts)

    async def _deliver(
        self, breaker: CircuitBreaker, endpoint: str, headers: dict[str, str], body: bytes
    ) -> tuple[PushOutcome, _Answer, int]:
        answer = _Answer(None)
        for attempt in range(1, self.attempts + 1):
            async with self._gate:
                try:
                    permit = breaker.permit()
                except CircuitOpenError as error:
                    refused = _Answer(answer.status, None, error.message, error.retry_after)
                    return PushOutcome.CIRCUIT_OPEN, refused, attempt - 1
                answer = await self._post(breaker, permit, endpoint, headers, body)
            status = answer.status
            if status is not None and 200 <= status < 300:
                return PushOutcome.DELIVERED, answer, attempt
            if status in (404, 410):
                return PushOutcome.GONE, answer, attempt
            if status is not None and status != 429 and status < 500:
                return PushOutcome.REJECTED, answer, attempt
            backoff = random.uniform(0, self.retry_wait * 2 ** (attempt - 1))  # noqa: S311
            wait = max(answer.retry_after or 0.0, backoff)
            if attempt == self.attempts or wait > self.max_retry_wait:
                break
            await self.sleep(wait)
        return PushOutcome.FAILED, answer, attempt

    async def _post(
        self,
        breaker: CircuitBreaker,
        permit: int,
        endpoint: str,
        headers: dict[str, str],
        body: bytes,
    ) -> _Answer:
        """One request under ``permit``; every failure comes back as an answer."""
        started = time.perf_counter()
        try:
            async with self._client.stream(
                "POST", endpoint, content=body, headers=headers
            ) as response:
                # Read (a bounded part of) every answer: a response closed unread takes
                # its connection with it, and the next send would connect again.
                text = await _first_bytes(response)
                reason = None if 200 <= response.status_code < 300 else text
                answer = _Answer(
                    response.status_code,
                    response.headers.get("Location"),
                    reason,
                    parse_retry_after(response.headers.get("Retry-After"), now=self.clock()),
                )
        except httpx.HTTPError as error:
            answer = _Answer(None, None, f"{type(error).__name__}: {error}"[:_REASON_BYTES])
        except BaseException:  # cancelled: the call counts for nothing
            breaker.release(permit)
            raise
        seconds = time.perf_counter() - started
        self._seconds.observe(seconds)
        down = answer.status is None or answer.status >= 500
        breaker.record_outcome(permit, seconds, failed=down)
        return answer

    async def _finish(
        self, subscription: PushSubscription, outcome: PushOutcome, answer: _Answer, attempts: int
    ) -> PushResult:
        """Count the outcome and write it to the subscription's row."""
        self._sent.labels(outcome=outcome.value).inc()
        # A send the breaker refused before any request says nothing about the subscription.
        if self.database is not None and (attempts or outcome is not PushOutcome.CIRCUIT_OPEN):
            await self._record(subscription.endpoint, outcome)
        if outcome is not PushOutcome.DELIVERED:
            log.info(
                "push not delivered",
                outcome=outcome.value,
                status=answer.status,
                origin=origin_of(subscription.endpoint),
                reason=answer.reason,
            )
        return PushResult(
            outcome, answer.status, attempts, answer.location, answer.reason, answer.retry_after
        )

    async def _record(self, endpoint: str, outcome: PushOutcome) -> None:
        """Best effort: the message's fate is decided; a lost write is redone next time
        (a gone endpoint answers 404/410 again)."""
        assert self.database is not None
        store = self.store
        try:
            async with self.database.transaction() as tx:
                if outcome is PushOutcome.GONE:
                    await store.remove_endpoint(tx.session, endpoint)
                elif outcome is PushOutcome.DELIVERED:
                    await store.record_success(tx.session, endpoint)
                else:
                    await store.record_failure(tx.session, endpoint)
        except Exception as error:  # noqa: BLE001 - the send's result stands
            log.warning("push subscription not updated", outcome=outcome.value, error=repr(error))

    # -- crypto ----------------------------------------------------------------------------

    def _token(self, audience: str) -> str:
        """The ``Authorization`` for ``audience``, signed again an hour before it expires."""
        now = int(self.clock())
        cached = self._tokens.get(audience)
        if cached is not None and cached[0] - _TOKEN_RENEW_SECONDS > now:
            return cached[1]
        expires = now + self.token_seconds
        header = self.keys.authorization(audience, expires)
        if len(self._tokens) > 1024:  # one per push service in practice; bounded all the same
            self._tokens.clear()
        self._tokens[audience] = (expires, header)
        return header

    async def _off_loop(self, work: Callable[[], T]) -> T:
        if self._executor is None:
            return work()
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)


async def _first_bytes(response: httpx.Response) -> str:
    """Up to 512 bytes of an error answer's body: enough for a reason, never a flood."""
    collected = b""
    with contextlib.suppress(httpx.HTTPError):
        async for chunk in response.aiter_bytes():
            collected += chunk
            if len(collected) >= _REASON_BYTES:
                break
    text = collected[:_REASON_BYTES].decode("utf-8", "replace")
    # A reason goes into logs and results: no line breaks or control characters from afar.
    return "".join(c if c.isprintable() else " " for c in text).strip()
