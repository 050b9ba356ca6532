"""A delivery that a consumer which lives on never settles comes back after the ack wait.

Found by the RabbitMQ restart test: a consumer fetched a batch while the broker's circuit
breaker was half-open, then the breaker refused its ack, the pass failed, and the rest of
the batch was neither acked nor naked. Redis and JetStream hand such deliveries out again
after their ack wait; RabbitMQ kept them on the consumer's open channel until it closed,
so those events were never applied while the process lived. Now all three agree.
"""

from __future__ import annotations

import pytest

from corestone.events.brokers.base import OutgoingMessage

from .brokers import ACK_WAIT, KINDS, cleanup, fetch_until, make_broker, service_url, unique_topic


@pytest.mark.parametrize("kind", KINDS)
async def test_deliveries_a_living_consumer_abandoned_come_back_to_it_after_the_ack_wait(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """Take a and b, settle neither (the consumer stays connected), ask again: after the
    1 s ack wait both come back, as attempt 2; a third message published meanwhile too.

    Delivery is at least once: JetStream sometimes hands c out a second time (a new
    consumer sequence, still attempt 1) though it was acked; the test once stopped at
    three deliveries, two of them c, and missed a. It now reads until it has seen all
    three and judges each by its first delivery."""
    url = service_url(kind, request)
    topic = unique_topic()
    broker = make_broker(kind, url)
    await broker.start()
    try:
        await broker.ensure_group(topic, "g")
        await broker.publish([OutgoingMessage(id=i, topic=topic, body=b"x", key="k")
                              for i in ("a", "b")])  # fmt: skip
        abandoned = await fetch_until(broker, topic, "g", 2, ack=False)
        assert [d.id for d in abandoned] == ["a", "b"]
        await broker.publish([OutgoingMessage(id="c", topic=topic, body=b"x", key="k")])

        first: dict[str, int] = {}
        for _ in range(int(4 * ACK_WAIT / 0.5) + 4):
            for delivery in await fetch_until(broker, topic, "g", 3, rounds=1):
                first.setdefault(delivery.id, delivery.attempt)
            if len(first) == 3:
                break

        assert first == {"a": 2, "b": 2, "c": 1}
    finally:
        await broker.aclose()
        await cleanup(make_broker(kind, url), topic, ["g"])
