"""Web Push end to end against a local push service that checks VAPID and decrypts.

Each test registers a browser-like subscription in the real store (SQLite and
PostgreSQL), sends through :class:`WebPushSender` over real HTTP, and asserts what the
push service verified and what the browser would read.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import orjson
import pytest
from sqlalchemy import select

from corestone.db import Database
from corestone.errors import PayloadTooLargeError
from corestone.observability.metrics import Metrics
from corestone.push import (
    MAX_PLAINTEXT_BYTES,
    EndpointPolicy,
    PushOutcome,
    SubscriptionStore,
    VapidKeys,
    WebPushSender,
)
from corestone.push.subscriptions import PushSubscriptionRecord
from corestone.resilience import BreakerRegistry, State
from tests.integration.push.conftest import SUBJECT, Waits, sent, subscribe
from tests.integration.push.push_service import PushService


@pytest.fixture(params=[True, False], ids=["offloaded", "inline"])
async def sender(
    request: pytest.FixtureRequest,
    keys: VapidKeys,
    db: Database,
    store: SubscriptionStore,
    breakers: BreakerRegistry,
    metrics: Metrics,
    waits: Waits,
) -> AsyncIterator[WebPushSender]:
    push = WebPushSender(
        keys,
        database=db,
        store=store,
        breakers=breakers,
        metrics=metrics,
        sleep=waits,
        offload_crypto=request.param,
    )
    yield push
    await push.aclose()


async def _row(db: Database, endpoint: str) -> PushSubscriptionRecord | None:
    async with db.transaction(read_only=True) as tx:
        found = await tx.session.scalars(
            select(PushSubscriptionRecord).where(PushSubscriptionRecord.endpoint == endpoint)
        )
        return found.first()


async def test_a_message_reaches_the_browser_decrypted_with_its_headers(
    service: PushService,
    store: SubscriptionStore,
    db: Database,
    keys: VapidKeys,
    sender: WebPushSender,
    metrics: Metrics,
) -> None:
    """The push service verifies the VAPID token (ES256 against k, aud, exp, sub), the
    browser decrypts exactly the JSON sent, TTL/Urgency/Topic arrive as given, the service's
    201 Location comes back, and the row records the success."""
    browser, subscription = await subscribe(service, store, db, keys)
    payload = {"title": "Task assigned", "task": 42, "text": "é ✓"}

    result = await sender.send(subscription, payload, ttl=600, urgency="high", topic="task-42")

    assert result.outcome is PushOutcome.DELIVERED
    assert result.ok
    assert result.status == 201
    assert result.attempts == 1
    assert result.location is not None
    assert result.location.startswith("/m/")
    [message] = service.delivered
    assert message.browser == browser.id
    assert orjson.loads(message.plaintext) == payload
    assert (message.headers["ttl"], message.headers["urgency"]) == ("600", "high")
    assert message.headers["topic"] == "task-42"
    assert message.claims["aud"] == service.url
    assert message.claims["sub"] == SUBJECT
    assert time.time() < message.claims["exp"] <= time.time() + 24 * 3600
    row = await _row(db, browser.endpoint)
    assert row is not None
    assert row.last_success_at is not None
    assert row.failures == 0
    assert sent(metrics, "delivered") == 1
    count = metrics.registry.get_sample_value("corestone_push_send_seconds_count")
    assert count == 1


@pytest.mark.parametrize("status", [410, 404])
async def test_a_gone_subscription_is_removed(
    service: PushService,
    store: SubscriptionStore,
    db: Database,
    keys: VapidKeys,
    sender: WebPushSender,
    metrics: Metrics,
    status: int,
) -> None:
    """410 Gone (or 404) from the push service deletes the subscription's row, once."""
    browser, subscription = await subscribe(service, store, db, keys)
    service.gone(browser, status)

    result = await sender.send(subscription, b"hello")

    assert result.outcome is PushOutcome.GONE
    assert result.status == status
    assert await _row(db, browser.endpoint) is None
    async with db.transaction(read_only=True) as tx:
        assert await store.list_for_user(tx.session, "7") == []
    assert service.delivered == []
    assert sent(metrics, "gone") == 1


async def test_429_is_retried_after_the_services_retry_after(
    service: PushService,
    store: SubscriptionStore,
    db: Database,
    keys: VapidKeys,
    sender: WebPushSender,
    waits: Waits,
    breakers: BreakerRegistry,
) -> None:
    """A 429 with Retry-After: 7 is retried after at least 7 s, then delivered; throttling
    is a working service's answer, so the breaker records no failure."""
    _, subscription = await subscribe(service, store, db, keys)
    service.answer_next(429, {"retry-after": "7"})

    result = await sender.send(subscription, b"later")

    assert result.outcome is PushOutcome.DELIVERED
    assert result.attempts == 2
    assert len(waits.seconds) == 1
    assert waits.seconds[0] >= 7
    assert [m.plaintext for m in service.delivered] == [b"later"]
    [snapshot] = breakers.snapshot()
    assert snapshot.name == f"push:{service.url.removeprefix('http://')}"
    assert (snapshot.successful_calls, snapshot.failed_calls) == (2, 0)


async def test_503_is_retried_with_backoff_then_delivered(
    service: PushService,
    store: SubscriptionStore,
    db: Database,
    keys: VapidKeys,
    sender: WebPushSender,
    waits: Waits,
) -> None:
    """Two 503s, then the service takes the message: three attempts, two waits, one copy."""
    _, subscription = await subscribe(service, store, db, keys)
    service.answer_next(503)
    service.answer_next(503)

    result = await sender.send(subscription, b"eventually")

    assert result.outcome is PushOutcome.DELIVERED
    assert result.attempts == 3
    assert len(waits.seconds) == 2
    assert service.requests == 3
    assert [m.plaintext for m in service.delivered] == [b"eventually"]


async def test_a_service_that_stays_down_fails_the_send_then_opens_its_breaker(
    service: PushService,
    store: SubscriptionStore,
    db: Database,
    keys: VapidKeys,
    sender: WebPushSender,
    breakers: BreakerRegistry,
    metrics: Metrics,
) -> None:
    """503 on every attempt: ``failed`` with the row's failure counted; once the breaker of
    ``push:<host>`` opens, sends are refused without a request."""
    browser, subscription = await subscribe(service, store, db, keys)
    for _ in range(3):
        service.answer_next(503, {"retry-after": "1"})

    failed = await sender.send(subscription, b"x")

    assert failed.outcome is PushOutcome.FAILED
    assert failed.status == 503
    assert failed.attempts == 3
    assert service.requests == 3
    row = await _row(db, browser.endpoint)
    assert row is not None
    assert row.failures == 1
    service.answer_next(503)  # the fourth call in the window: 4 of 4 failed, it opens
    cut_short = await sender.send(subscription, b"x")
    assert cut_short.outcome is PushOutcome.CIRCUIT_OPEN
    assert (cut_short.attempts, cut_short.status) == (1, 503)  # its retry was refused
    breaker = breakers.get(f"push:{service.url.removeprefix('http://')}")
    assert breaker.state is State.OPEN
    row = await _row(db, browser.endpoint)
    assert row is not None
    assert row.failures == 2
    before = service.requests

    refused = await sender.send(subscription, b"x")

    assert refused.outcome is PushOutcome.CIRCUIT_OPEN
    assert refused.attempts == 0
    assert refused.retry_after is not None
    assert refused.retry_after > 0
    assert service.requests == before
    row = await _row(db, browser.endpoint)
    assert row is not None
    assert row.failures == 2
    assert sent(metrics, "failed") == 1
    assert sent(metrics, "circuit_open") == 2


async def test_a_subscription_made_for_another_key_is_rejected_and_kept(
    service: PushService,
    store: SubscriptionStore,
    db: Database,
    keys: VapidKeys,
    sender: WebPushSender,
) -> None:
    """The browser subscribed with another application server key: the service answers
    403 (RFC 8292 §4.2), the send is ``rejected``, the row stays with a failure counted."""
    other = VapidKeys.generate(SUBJECT)
    browser, subscription = await subscribe(service, store, db, other)

    result = await sender.send(subscription, b"not yours")

    assert result.outcome is PushOutcome.REJECTED
    assert result.status == 403
    assert result.reason is not None
    assert "another application server key" in result.reason
    row = await _row(db, browser.endpoint)
    assert row is not None
    assert row.failures == 1
    assert service.delivered == []


async def test_an_expired_token_is_refused_by_the_push_service(
    service: PushService, store: SubscriptionStore, db: Database, keys: VapidKeys
) -> None:
    """A sender whose clock is two days behind signs an ``exp`` in the past: the service
    refuses it, which shows its exp check is live."""
    _, subscription = await subscribe(service, store, db, keys)
    async with WebPushSender(
        keys, policy=store.policy, clock=lambda: time.time() - 172_800
    ) as late:
        result = await late.send(subscription, b"stale")

    assert result.outcome is PushOutcome.REJECTED
    assert result.status == 403
    assert service.refused == [(403, "exp must be in the future and at most 24 hours away")]


async def test_the_largest_payload_fills_4096_bytes_and_one_more_byte_is_refused(
    service: PushService,
    store: SubscriptionStore,
    db: Database,
    keys: VapidKeys,
    sender: WebPushSender,
) -> None:
    """3,993 bytes of plaintext make a 4,096-byte body the browser decrypts; 3,994 raise
    PayloadTooLargeError naming the payload, and nothing is posted."""
    _, subscription = await subscribe(service, store, db, keys)
    largest = bytes(range(256)) * 15 + b"z" * (MAX_PLAINTEXT_BYTES - 3840)

    assert (await sender.send(subscription, largest)).ok
    assert service.delivered[0].body_bytes == 4096
    assert service.delivered[0].plaintext == largest
    with pytest.raises(PayloadTooLargeError) as refused:
        await sender.send(subscription, largest + b"!")
    assert refused.value.field == "payload"
    assert service.requests == 1


async def test_one_token_serves_every_message_to_one_push_service(
    service: PushService,
    store: SubscriptionStore,
    db: Database,
    keys: VapidKeys,
    sender: WebPushSender,
) -> None:
    """The VAPID token is signed once per push service origin and reused, not per message."""
    _, first = await subscribe(service, store, db, keys, user="1")
    _, second = await subscribe(service, store, db, keys, user="2")

    assert (await sender.send(first, b"a")).ok
    assert (await sender.send(second, b"b")).ok

    tokens = {m.headers["authorization"] for m in service.delivered}
    assert len(tokens) == 1


async def test_an_endpoint_outside_the_policy_is_refused_before_any_request(
    service: PushService, store: SubscriptionStore, db: Database, keys: VapidKeys
) -> None:
    """A sender with the default policy (no allow-list) refuses the loopback http endpoint
    the store accepted under the test's policy: InvalidInputError, no request."""
    from corestone.errors import InvalidInputError

    _, subscription = await subscribe(service, store, db, keys)
    async with WebPushSender(keys, policy=EndpointPolicy()) as strict:
        with pytest.raises(InvalidInputError) as refused:
            await strict.send(subscription, b"x")

    assert refused.value.field == "endpoint"
    assert service.requests == 0


async def test_a_burst_beyond_the_concurrency_waits_its_turn_and_all_arrive(
    service: PushService, store: SubscriptionStore, db: Database, keys: VapidKeys
) -> None:
    """Regression: a burst used to queue in httpx's pool, where the wait counted against
    the request timeout (500 sends failed and opened the breaker). Now at most
    ``concurrency`` requests are open and the rest wait outside: a burst that takes
    2.5 timeouts to drain arrives whole, each message once."""
    import asyncio

    _, subscription = await subscribe(service, store, db, keys)
    service.delay = 0.05  # 80 sends, 4 at a time: 1 s, 2.5 times the timeout
    async with WebPushSender(
        keys, policy=store.policy, concurrency=4, timeout_seconds=0.4
    ) as sender:
        results = await asyncio.gather(
            *(sender.send(subscription, str(n).encode()) for n in range(80))
        )

    assert [r.outcome for r in results] == [PushOutcome.DELIVERED] * 80
    assert sorted(int(m.plaintext) for m in service.delivered) == list(range(80))
    assert service.most_in_flight <= 4


async def test_sends_one_after_another_reuse_one_connection(
    service: PushService,
    store: SubscriptionStore,
    db: Database,
    keys: VapidKeys,
    sender: WebPushSender,
) -> None:
    """Regression: an accepted answer was closed unread, which closed its connection, so
    every send paid a new TCP (and in production TLS) handshake. Five sends, one connection,
    whatever each answer was."""
    _, subscription = await subscribe(service, store, db, keys)
    service.answer_next(503)  # an error answer's body is read too

    for _ in range(5):
        assert (await sender.send(subscription, b"again")).ok

    assert service.requests == 6
    assert len(service.connections) == 1


async def test_a_push_services_reason_is_cut_and_cleaned(
    service: PushService,
    store: SubscriptionStore,
    db: Database,
    keys: VapidKeys,
    sender: WebPushSender,
) -> None:
    """An error body becomes ``result.reason`` (and a log field): at most 512 characters,
    without line breaks or escape sequences a hostile service could plant in a log."""
    _, subscription = await subscribe(service, store, db, keys)
    service.answer_next(400, body=b"bad\r\nX-Forged: 1\x1b[31m" + b"x" * 5000)

    result = await sender.send(subscription, b"x")

    assert result.outcome is PushOutcome.REJECTED
    assert result.reason is not None
    assert result.reason.startswith("bad  X-Forged: 1 [31m")
    assert len(result.reason) <= 512
    assert result.reason.isprintable()
