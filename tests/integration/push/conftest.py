"""Fixtures for Web Push: the local push service, a database with the subscriptions table,
VAPID keys, a sender that records its waits instead of sleeping them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from corestone.db import Database
from corestone.observability.metrics import Metrics
from corestone.push import EndpointPolicy, PushSubscription, SubscriptionStore, VapidKeys
from corestone.push.subscriptions import PushSubscriptionRecord
from corestone.resilience import BreakerConfig, BreakerRegistry
from tests.integration.push.push_service import Browser, PushService

SUBJECT = "mailto:ops@example.com"


@pytest.fixture
async def service() -> AsyncIterator[PushService]:
    push = PushService()
    await push.start()
    yield push
    await push.stop()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.start()
    async with database.engine.begin() as conn:
        await conn.run_sync(PushSubscriptionRecord.__table__.create, checkfirst=True)  # type: ignore[attr-defined]
    yield database
    await database.aclose()


@pytest.fixture
def keys() -> VapidKeys:
    return VapidKeys.generate(SUBJECT)


@pytest.fixture
def policy(service: PushService) -> EndpointPolicy:
    """The production rules, with the local service's origin allowed (it is http, loopback)."""
    return EndpointPolicy.allowing(service.url)


@pytest.fixture
def store(policy: EndpointPolicy) -> SubscriptionStore:
    return SubscriptionStore(policy=policy)


@dataclass
class Waits:
    """A sender's ``sleep``: records each wait and returns at once."""

    seconds: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


@pytest.fixture
def waits() -> Waits:
    return Waits()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def breakers(metrics: Metrics) -> BreakerRegistry:
    """Breakers that open after 4 calls of which half failed, and stay open a minute."""
    config = BreakerConfig(minimum_calls=4, window_size=4, wait_in_open_seconds=60)
    return BreakerRegistry(config, metrics=metrics)


async def subscribe(
    service: PushService,
    store: SubscriptionStore,
    db: Database,
    keys: VapidKeys,
    user: str = "7",
    **options: Any,
) -> tuple[Browser, PushSubscription]:
    """A browser subscribed with ``keys``' public key, registered for ``user``."""
    browser = await service.browser(keys.application_server_key)
    async with db.transaction() as tx:
        stored = await store.register(tx.session, user, browser.subscription, **options)
    return browser, stored


def sent(metrics: Metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value("corestone_push_sent_total", {"outcome": outcome})
    return value or 0.0
