"""The email benchmark's building blocks, run once on a few messages (nothing is timed).

``python -m bench email`` takes minutes; this proves in seconds that each contender
really delivers to the counting server, that the server counts connections as the
contenders open them, and that the outbox half queues and delivers every message once,
so a broken suite is found by the tests rather than by the next benchmark run.
"""

from __future__ import annotations

import sys

import pytest
from bench._email_outbox import accept, deliver, outbox_database, queue
from bench._email_smtp import (
    CONCURRENCY,
    corestone_bulk,
    fastapi_mail_lists,
    fastapi_mail_single,
    mails,
    one_connection_per_message,
    smtp_server,
)

pytestmark = pytest.mark.timeout(60)


async def test_every_contender_delivers_each_message_and_the_server_counts_its_connections() -> (
    None
):
    """101 messages each way: all arrive; bulk opens its pool, per-message ways one each."""
    data = mails(101)
    with smtp_server() as server:
        bulk = await server.measure(lambda: corestone_bulk(server, data))
        single = await server.measure(lambda: one_connection_per_message(server, data))
        fastapi_single = await server.measure(lambda: fastapi_mail_single(server, data))
        fastapi_lists = await server.measure(lambda: fastapi_mail_lists(server, data))

    assert [r.messages for r in (bulk, single, fastapi_single, fastapi_lists)] == [101] * 4
    assert [r.errors for r in (bulk, single, fastapi_single, fastapi_lists)] == [0] * 4
    assert 1 <= bulk.connections <= CONCURRENCY
    assert single.connections == fastapi_single.connections == 101
    assert fastapi_lists.connections == 2  # lists of 100: 100 + 1
    results = (bulk, single, fastapi_single, fastapi_lists)
    assert all(r.client_cpu > 0 for r in results)
    if sys.platform == "linux":  # the server's CPU is read from /proc
        assert all(r.server_cpu is not None for r in results)


async def test_the_outbox_half_accepts_and_delivers_every_message_once() -> None:
    """A few transactions of each shape, then one sender empties the outbox: all sent, once."""
    async with outbox_database() as db:
        accepted = await accept(db, 8, rounds=1)
        delivered = await deliver(db)
        await queue(db, 7, start=1000)
        wide = await deliver(db, batch=500)

    assert accepted.transactions == 5
    assert min(accepted.insert_us, accepted.send_us, accepted.insert_and_send_us) > 0
    assert delivered.delivered == 2 * (3 + accepted.transactions)  # warm-up and timed sends
    assert (delivered.left, delivered.duplicates) == (0, 0)
    assert (wide.delivered, wide.left, wide.duplicates) == (7, 0, 0)
