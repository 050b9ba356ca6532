"""Redis Streams, NATS JetStream and RabbitMQ against the real servers: the broker port's promises.

Each test uses a topic (stream, subject, exchange) and groups of its own, and deletes them.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from corestone.config import Settings
from corestone.errors import CircuitOpenError, UnavailableError
from corestone.events.brokers import (
    DeadLetterBroker,
    GuardedBroker,
    MemoryBroker,
    OutgoingMessage,
)
from corestone.events.brokers.url import broker_from_url
from corestone.observability.health import HealthStatus
from corestone.resilience import BreakerConfig, CircuitBreaker
from corestone.runtime import Infrastructure

from .brokers import KINDS, cleanup, fetch_until, make_broker, service_url, unique_topic

MakeBroker = Callable[..., Awaitable[Any]]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def topic(kind: str, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    name = unique_topic()
    yield name
    await cleanup(make_broker(kind, service_url(kind, request)), name, ["g", "g1", "g2"])


@pytest.fixture
async def open_broker(kind: str, request: pytest.FixtureRequest) -> AsyncIterator[MakeBroker]:
    """Started brokers on the shared server; each is closed at the end (if still open)."""
    url = service_url(kind, request)
    opened: list[Any] = []

    async def make(**options: Any) -> Any:
        broker = make_broker(kind, url, **options)
        await broker.start()
        opened.append(broker)
        return broker

    yield make
    for broker in opened:
        await broker.aclose()


def _messages(topic: str, *ids: str) -> list[OutgoingMessage]:
    return [
        OutgoingMessage(
            id=i, topic=topic, body=f"body-{i}".encode(), key="k", headers={"type": "t"}
        )
        for i in ids
    ]


async def test_every_group_gets_every_message_in_order_and_a_republish_is_absorbed(
    open_broker: MakeBroker, topic: str
) -> None:
    """Two groups made before publishing each receive the batch once, in order, bodies intact;
    the batch published again (a relay's retry after a crash) is de-duplicated by id on Redis
    and NATS, and on RabbitMQ reaches the consumer again (its inbox absorbs it)."""
    broker = await open_broker()
    for group in ("g1", "g2"):
        await broker.ensure_group(topic, group)
    ids = [f"m{n:03}" for n in range(50)]
    await broker.publish(_messages(topic, *ids))

    first = await fetch_until(broker, topic, "g1", 50)
    second = await fetch_until(broker, topic, "g2", 50)

    assert [d.id for d in first] == ids == [d.id for d in second]
    assert all(d.attempt == 1 and d.group == "g1" for d in first)
    assert first[7].body == b"body-m007"
    assert first[7].headers["type"] == "t"
    await broker.publish(_messages(topic, *ids[:3]))
    again = await fetch_until(broker, topic, "g1", 3, rounds=4)
    if broker.name == "rabbitmq":
        assert [d.id for d in again] == ids[:3]
    else:
        assert again == []


async def test_a_message_held_by_a_consumer_that_dies_is_delivered_again(
    open_broker: MakeBroker, topic: str
) -> None:
    """A consumer takes two messages and its connection goes away without an ack: another
    consumer of the group gets both (after the ack wait, or at once on RabbitMQ), attempt 2;
    the one acked before dying is not redelivered."""
    survivor = await open_broker()
    doomed = await open_broker()
    await survivor.ensure_group(topic, "g")
    await survivor.publish(_messages(topic, "a", "b", "c"))
    taken = await fetch_until(doomed, topic, "g", 3, consumer="doomed", ack=False)
    assert [d.id for d in taken] == ["a", "b", "c"]
    await doomed.ack(taken[0])
    await doomed.aclose()

    again = await fetch_until(survivor, topic, "g", 2, consumer="survivor")

    assert sorted((d.id, d.attempt) for d in again) == [("b", 2), ("c", 2)]
    assert await fetch_until(survivor, topic, "g", 1, consumer="survivor", rounds=4) == []


async def test_nak_brings_a_message_back_after_its_delay_with_the_next_attempt(
    open_broker: MakeBroker, topic: str
) -> None:
    """A naked delivery is not handed out during its delay, then comes back as attempt 2."""
    broker = await open_broker()
    await broker.ensure_group(topic, "g")
    await broker.publish(_messages(topic, "a"))
    [first] = await fetch_until(broker, topic, "g", 1, ack=False)
    await broker.nak(first, delay_seconds=1.5)

    assert await broker.fetch(topic, "g", consumer="c1", limit=1, wait_seconds=0.3) == []
    [second] = await fetch_until(broker, topic, "g", 1)

    assert (second.id, second.attempt) == ("a", 2)


async def test_after_max_deliver_unanswered_deliveries_a_message_is_dead_and_can_be_replayed(
    open_broker: MakeBroker, topic: str
) -> None:
    """A message whose every consumer dies (no ack, no nak) goes to the group's dead letters
    after max_deliver deliveries, with the reason; the rest of the group's traffic goes on;
    a replay delivers it again."""
    broker = await open_broker()
    assert isinstance(broker, DeadLetterBroker)
    await broker.ensure_group(topic, "g")
    await broker.publish(_messages(topic, "poison"))
    for attempt in range(1, broker.max_deliver + 1):
        dying = await open_broker()
        [delivery] = await fetch_until(dying, topic, "g", 1, consumer=f"d{attempt}", ack=False)
        assert (delivery.id, delivery.attempt) == ("poison", attempt)
        await dying.aclose()
    await broker.publish(_messages(topic, "next"))

    assert [d.id for d in await fetch_until(broker, topic, "g", 1)] == ["next"]
    for _ in range(20):  # the move happens when a fetch finds it again (after the ack wait)
        if await broker.dead_letters(topic, "g"):
            break
        assert await broker.fetch(topic, "g", consumer="c1", limit=1, wait_seconds=0.5) == []
    [dead] = await broker.dead_letters(topic, "g")
    assert (dead.id, dead.body) == ("poison", b"body-poison")
    assert dead.headers["x-dead-reason"]
    assert int(dead.headers["x-dead-attempts"]) == broker.max_deliver

    assert await broker.replay_dead_letters(topic, "g") == 1
    [replayed] = await fetch_until(broker, topic, "g", 1)
    assert replayed.id == "poison"
    assert await broker.dead_letters(topic, "g") == []


async def test_every_call_goes_through_the_breaker_and_ping_answers(
    open_broker: MakeBroker, topic: str
) -> None:
    """Guarded, each call of a healthy broker is one call of its breaker; ping passes. Once
    the broker is gone, its failures open the breaker, which then refuses at once."""
    broker = await open_broker()
    breaker = CircuitBreaker(f"broker:{broker.name}", BreakerConfig(window_size=2, minimum_calls=2))
    calls: list[object] = []
    breaker.add_listener(calls.append, calls=True)
    guarded = GuardedBroker(broker, breaker)
    await guarded.ensure_group(topic, "g")
    await guarded.publish(_messages(topic, "a"))
    [delivery] = await guarded.fetch(topic, "g", consumer="c", limit=1, wait_seconds=5)
    await guarded.ack(delivery)
    assert (await guarded.ping()).status == "pass"
    assert len(calls) == 5

    await broker.aclose()
    for _ in range(2):
        with pytest.raises(UnavailableError):
            await guarded.publish(_messages(topic, "b"))
    with pytest.raises(CircuitOpenError):
        await guarded.publish(_messages(topic, "b"))


async def test_the_broker_url_selects_the_broker_and_its_check_joins_readiness(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """CORESTONE_BROKER_URL builds the broker of its scheme, started with the process; its
    ping is a readiness check (pass); a broker that cannot be reached only warns."""
    url = service_url(kind, request)
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db", broker_url=url)
    async with Infrastructure(settings) as infra:
        assert infra.broker is not None
        assert infra.broker.name == kind
        report = await infra.health.ready()
        assert _broker_check(report.checks)["status"] == "pass"
        assert report.status is HealthStatus.PASS

    assert isinstance(broker_from_url("memory://"), MemoryBroker)
    with pytest.raises(ValueError, match="kafka"):
        broker_from_url("kafka://k:9092")


async def test_a_broker_that_is_down_makes_readiness_warn_not_fail(
    kind: str, tmp_path: Path
) -> None:
    """The outbox keeps events while the broker is away: the process starts, readiness warns."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = {"redis": f"redis://127.0.0.1:{port}/0", "nats": f"nats://127.0.0.1:{port}",
           "rabbitmq": f"amqp://guest:guest@127.0.0.1:{port}/"}[kind]  # fmt: skip
    broker = make_broker(kind, url)
    infra = Infrastructure(
        Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db"), broker=broker
    )
    async with infra:
        report = await infra.health.ready()

    assert _broker_check(report.checks)["status"] in ("warn", "fail")
    assert report.status is HealthStatus.WARN


def _broker_check(checks: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    [entry] = [entries[0] for name, entries in checks.items() if name.startswith("broker:")]
    return entry
