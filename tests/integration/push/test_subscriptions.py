"""The subscriptions store on SQLite and PostgreSQL: register, list, remove, and refusals
that write nothing."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from corestone.db import Database
from corestone.errors import InvalidInputError
from corestone.push import EndpointPolicy, PushSubscription, SubscriptionStore


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _browser(endpoint: str = "https://push.example.com/p/abc") -> dict[str, Any]:
    """A subscription as ``PushSubscription.toJSON()`` gives it, with a real P-256 key."""
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return {
        "endpoint": endpoint,
        "expirationTime": None,
        "keys": {"p256dh": _b64(point), "auth": _b64(os.urandom(16))},
    }


@pytest.fixture
async def db(database_url: str) -> Any:
    from corestone.push.subscriptions import PushSubscriptionRecord

    database = Database(database_url)
    await database.start()
    async with database.engine.begin() as conn:
        await conn.run_sync(PushSubscriptionRecord.__table__.create)  # type: ignore[attr-defined]
    yield database
    await database.aclose()


async def _all(db: Database, store: SubscriptionStore, *users: str) -> dict[str, list[str]]:
    async with db.transaction(read_only=True) as tx:
        return {u: [s.endpoint for s in await store.list_for_user(tx.session, u)] for u in users}


async def test_register_list_and_remove_are_per_user(db: Database) -> None:
    """Each user lists only their subscriptions; removing needs the owner, not just the
    endpoint; the stored row keeps the keys, the workspace and a creation time."""
    store = SubscriptionStore()
    first, second = _browser("https://push.example.com/p/1"), _browser("https://fcm.example.net/2")
    async with db.transaction() as tx:
        stored = await store.register(tx.session, 7, first, workspace_id=3)
        await store.register(tx.session, "8", second)

    assert stored.user_id == "7"
    assert stored.workspace_id == "3"
    assert stored.id is not None
    assert stored.p256dh == first["keys"]["p256dh"]
    assert stored.auth == first["keys"]["auth"]
    assert stored.created_at is not None
    assert stored.failures == 0
    assert await _all(db, store, "7", "8") == {"7": [first["endpoint"]], "8": [second["endpoint"]]}
    async with db.transaction(read_only=True) as tx:
        in_workspace = await store.list_for_user(tx.session, "7", workspace_id=3)
        elsewhere = await store.list_for_user(tx.session, "7", workspace_id=4)
    assert [s.endpoint for s in in_workspace] == [first["endpoint"]]
    assert elsewhere == []
    async with db.transaction() as tx:
        assert not await store.remove(tx.session, "8", first["endpoint"])  # not theirs
        assert await store.remove(tx.session, "7", first["endpoint"])
        assert not await store.remove(tx.session, "7", first["endpoint"])
    assert await _all(db, store, "7", "8") == {"7": [], "8": [second["endpoint"]]}


async def test_registering_an_endpoint_again_updates_its_row(db: Database) -> None:
    """The same endpoint registered again (new keys, or another user on that browser) is
    one row, with the new keys and owner and its failures cleared."""
    store = SubscriptionStore()
    again = _browser()
    async with db.transaction() as tx:
        original = await store.register(tx.session, "7", _browser())
        await store.record_failure(tx.session, original.endpoint)
        updated = await store.register(tx.session, "9", again)

    assert updated.id == original.id
    assert updated.user_id == "9"
    assert updated.failures == 0
    assert updated.p256dh == again["keys"]["p256dh"]
    assert updated.created_at == original.created_at
    assert await _all(db, store, "7", "9") == {"7": [], "9": [again["endpoint"]]}


async def test_a_user_keeps_only_their_newest_subscriptions(db: Database) -> None:
    """Past ``max_per_user``, registering drops that user's oldest, and nobody else's."""
    store = SubscriptionStore(max_per_user=2)
    endpoints = [f"https://push.example.com/p/{n}" for n in range(4)]
    async with db.transaction() as tx:
        await store.register(tx.session, "other", _browser("https://push.example.com/p/x"))
        for endpoint in endpoints:
            await store.register(tx.session, "7", _browser(endpoint))

    assert await _all(db, store, "7", "other") == {
        "7": endpoints[2:],
        "other": ["https://push.example.com/p/x"],
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"endpoint": "http://push.example.com/p/1"}, "endpoint"),
        ({"endpoint": "https://127.0.0.1/p/1"}, "endpoint"),
        ({"endpoint": "https://169.254.169.254/latest/meta-data"}, "endpoint"),
        ({"endpoint": "https://[::ffff:10.0.0.1]/p"}, "endpoint"),
        ({"endpoint": "https://localhost/p"}, "endpoint"),
        ({"endpoint": "https://metadata.google.internal/p"}, "endpoint"),
        ({"p256dh": _b64(b"\x04" + b"\x01" * 64)}, "keys.p256dh"),  # not on the curve
        ({"p256dh": _b64(b"\x02" + b"\x01" * 32)}, "keys.p256dh"),  # compressed
        ({"p256dh": "not base64url!"}, "keys.p256dh"),
        ({"auth": _b64(os.urandom(15))}, "keys.auth"),
        ({"auth": ""}, "keys.auth"),
    ],
)
async def test_a_bad_subscription_is_refused_and_nothing_is_written(
    db: Database, change: dict[str, str], field: str
) -> None:
    """SSRF targets and keys that could never decrypt are refused with the field named."""
    store = SubscriptionStore()
    data = _browser()
    if "endpoint" in change:
        data["endpoint"] = change["endpoint"]
    else:
        data["keys"] |= change

    with pytest.raises(InvalidInputError) as refused:
        async with db.transaction() as tx:
            await store.register(tx.session, "7", data)

    assert refused.value.field == field
    assert await _all(db, store, "7") == {"7": []}


async def test_an_allow_listed_origin_may_be_private_http(db: Database) -> None:
    """The allow-list (a test's push service, a private one) admits exactly its origin."""
    store = SubscriptionStore(policy=EndpointPolicy.allowing("http://127.0.0.1:8123"))
    async with db.transaction() as tx:
        kept = await store.register(tx.session, "7", _browser("http://127.0.0.1:8123/p/1"))
        with pytest.raises(InvalidInputError):
            await store.register(tx.session, "7", _browser("http://127.0.0.1:8124/p/1"))

    assert kept.endpoint == "http://127.0.0.1:8123/p/1"
    async with db.transaction(read_only=True) as tx:
        assert await store.get(tx.session, kept.endpoint) == kept


def test_a_browser_subscription_round_trips_and_missing_fields_are_named() -> None:
    """``from_browser`` reads toJSON()'s shape, ``to_browser`` writes it back; a missing
    key names its field."""
    data = _browser()
    subscription = PushSubscription.from_browser(data)

    assert subscription.to_browser() == data
    with pytest.raises(InvalidInputError) as missing:
        PushSubscription.from_browser({"endpoint": data["endpoint"], "keys": {"auth": "x"}})
    assert missing.value.field == "keys.p256dh"
    with pytest.raises(InvalidInputError) as no_keys:
        PushSubscription.from_browser({"endpoint": data["endpoint"]})
    assert no_keys.value.field == "keys"
