"""RedisCache against a real Redis, over RESP2 and RESP3 clients.

Round trips are counted on the client side: a connection class records every packed send
(one send = one round trip, a pipeline's commands go out in one send) and the name of every
command packed, so "one MGET", "one round trip" and "SCAN, never KEYS" are checked without
MONITOR or server-global counters other tests would disturb.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as redis
from redis.asyncio.connection import Connection

import corestone.cache.redis as redis_module
from corestone.cache.redis import RedisCache, Stored
from corestone.cache.serialization import (
    COMPRESSED,
    HEADER,
    MsgpackSerializer,
    OrjsonSerializer,
    PickleSerializer,
    Serializer,
)


class CountingConnection(Connection):
    """Records packed sends (round trips) and command names, shared per client via ``log``."""

    log: dict[str, list[Any]]

    def pack_command(self, *args: Any) -> list[bytes]:
        name = args[0]
        self.log["commands"].append((name.decode() if isinstance(name, bytes) else name).upper())
        return super().pack_command(*args)

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        self.log["sends"].append(1)
        await super().send_packed_command(command, check_health)


class Recorder:
    def __init__(self) -> None:
        self.log: dict[str, list[Any]] = {"commands": [], "sends": []}

    def reset(self) -> None:
        self.log["commands"].clear()
        self.log["sends"].clear()

    @property
    def sends(self) -> int:
        return len(self.log["sends"])

    @property
    def commands(self) -> list[str]:
        return list(self.log["commands"])


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
async def env(
    redis_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Any, str, Recorder]]:
    recorder = Recorder()
    connection_class = type("Counting", (CountingConnection,), {"log": recorder.log})
    client = redis.Redis.from_url(
        redis_url, protocol=request.param, connection_class=connection_class, max_connections=4
    )
    prefix = f"cstest:{uuid.uuid4().hex}:"
    await client.ping()
    try:
        yield client, prefix, recorder
    finally:
        leftovers = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if leftovers:
            await client.unlink(*leftovers)
        await client.aclose()


TRICKY: dict[str, Any] = {
    "bytes": b"\x00\xff\x80 raw",
    "unicode": "café ✓ 𝄞 \u0000 — ünïcødé",
    "big_int": 3**150,
    "neg_big_int": -(2**64),
    "nested": {"a": [1, [2, [3, {"b": None}]]], "t": True, "f": 1.25},
    "aware": dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=-7))),
    "zoned": dt.datetime(2026, 10, 25, 2, 30, tzinfo=ZoneInfo("Europe/Berlin")),
    "uuid": uuid.uuid4(),
    "decimal": Decimal("3.14159265358979323846264338327950288419716939937510"),
    "date": dt.date(2024, 2, 29),
}

# orjson reads back JSON types only: the tricky values that survive it unchanged.
JSON_TRICKY: dict[str, Any] = {
    "unicode": TRICKY["unicode"],
    "nested": TRICKY["nested"],
    "int64": [2**63 - 1, -(2**63)],
    "float": 1e-300,
}


@pytest.mark.parametrize(
    ("serializer", "value"),
    [
        (MsgpackSerializer(), TRICKY),
        (PickleSerializer(), {**TRICKY, "tuple": (1, "x")}),
        (OrjsonSerializer(), JSON_TRICKY),
    ],
    ids=["msgpack", "pickle", "orjson"],
)
async def test_every_serializer_round_trips_tricky_values(
    env: tuple[Any, str, Recorder], serializer: Serializer, value: dict[str, Any]
) -> None:
    """Each serializer keeps tricky values and their types; orjson gives datetimes as strings."""
    client, prefix, _ = env
    cache = RedisCache(client, serializer=serializer)
    await cache.set(f"{prefix}k", Stored(value, 1_800_000_000.5), ttl=30)
    got = await cache.get(f"{prefix}k")
    assert got == Stored(value, 1_800_000_000.5)
    assert got is not None
    for name, item in value.items():
        assert type(got.value[name]) is type(item), name
    if "zoned" in value:
        assert got.value["zoned"].tzinfo == ZoneInfo("Europe/Berlin")
    # orjson writes datetimes and UUIDs but reads back strings: documented, and visible here.
    if serializer.name == "orjson":
        moment = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        await cache.set(f"{prefix}d", Stored({"at": moment}, 1.0), ttl=30)
        assert (await cache.get(f"{prefix}d")) == Stored({"at": moment.isoformat()}, 1.0)


async def test_compression_kicks_in_above_threshold_and_round_trips(
    env: tuple[Any, str, Recorder],
) -> None:
    """Only values above compress_above are compressed, to under a tenth; all readers read both."""
    client, prefix, _ = env
    cache = RedisCache(client, compress_above=1024)
    small, big = {"s": "x" * 500}, {"s": "compressible " * 2000}
    await cache.set_many(
        [(f"{prefix}small", Stored(small, 1.0)), (f"{prefix}big", Stored(big, 2.0))], ttl=30
    )
    raw_small = await client.get(f"{prefix}small")
    raw_big = await client.get(f"{prefix}big")
    assert raw_small[0] & COMPRESSED == 0
    assert raw_big[0] & COMPRESSED
    assert len(raw_big) < len(big["s"]) // 10
    assert await cache.get_many([f"{prefix}small", f"{prefix}big"]) == [
        Stored(small, 1.0),
        Stored(big, 2.0),
    ]
    # compress_above=None: never compressed, still readable by a compressing reader.
    plain = RedisCache(client, compress_above=None)
    await plain.set(f"{prefix}plain", Stored(big, 3.0), ttl=30)
    assert (await client.get(f"{prefix}plain"))[0] & COMPRESSED == 0
    assert await cache.get(f"{prefix}plain") == Stored(big, 3.0)


async def test_get_many_is_one_mget_in_order_with_misses(env: tuple[Any, str, Recorder]) -> None:
    """get_many is one MGET, in the asked order, with None for missing and foreign values."""
    client, prefix, recorder = env
    cache = RedisCache(client)
    keys = [f"{prefix}{i}" for i in range(10)]
    await cache.set_many([(k, Stored(i, float(i))) for i, k in enumerate(keys) if i % 3], ttl=30)
    await client.set(keys[4], b"hello")  # a foreign value in the middle: a miss, not an error
    recorder.reset()
    got = await cache.get_many(list(reversed(keys)))
    assert recorder.commands == ["MGET"]
    assert recorder.sends == 1
    expected = [
        None if (i % 3 == 0 or i == 4) else Stored(i, float(i)) for i in reversed(range(10))
    ]
    assert got == expected
    recorder.reset()
    assert await cache.get_many([]) == []
    assert recorder.sends == 0


async def test_set_many_is_one_round_trip_with_and_without_tags(
    env: tuple[Any, str, Recorder],
) -> None:
    """set_many is one round trip: pipelined SETs, or one EVALSHA with tags; TTLs are set."""
    client, prefix, recorder = env
    cache = RedisCache(client)
    items = [(f"{prefix}e{i}", Stored({"i": i}, 10.0)) for i in range(50)]
    recorder.reset()
    await cache.set_many(items, ttl=30)
    assert recorder.sends == 1
    assert recorder.commands == ["SET"] * 50
    assert 0 < await client.pttl(items[7][0]) <= 30_000

    tag_a, tag_b = f"{prefix}#tag:a", f"{prefix}#tag:b"
    tagged = [(f"{prefix}t{i}", Stored(i, 10.0)) for i in range(20)]
    await cache.set_many(tagged[:1], ttl=30, tag_keys=[tag_a])  # loads the script once
    recorder.reset()
    await cache.set_many(tagged, ttl=30, tag_keys=[tag_a, tag_b])
    assert recorder.sends == 1
    assert recorder.commands == ["EVALSHA"]
    members = {m.decode() for m in await client.smembers(tag_b)}
    assert members == {k for k, _ in tagged}
    assert await cache.get_many([k for k, _ in tagged]) == [s for _, s in tagged]
    assert 0 < await client.pttl(tagged[3][0]) <= 30_000


async def test_tag_invalidation_removes_exactly_the_tagged_keys(
    env: tuple[Any, str, Recorder],
) -> None:
    """invalidate_tags deletes and counts the tag's live keys and its set; others are kept."""
    client, prefix, recorder = env
    cache = RedisCache(client)
    red, blue = f"{prefix}#tag:red", f"{prefix}#tag:blue"
    await cache.set(f"{prefix}r1", Stored(1, 1.0), ttl=30, tag_keys=[red])
    await cache.set(f"{prefix}rb", Stored(2, 1.0), ttl=30, tag_keys=[red, blue])
    await cache.set_many(
        [(f"{prefix}b{i}", Stored(i, 1.0)) for i in range(3)], ttl=30, tag_keys=[blue]
    )
    await cache.set(f"{prefix}plain", Stored(3, 1.0), ttl=30)
    await cache.set(f"{prefix}gone", Stored(4, 1.0), ttl=30, tag_keys=[red])
    await client.delete(f"{prefix}gone")  # an expired/removed member still listed in the set

    recorder.reset()
    assert await cache.invalidate_tags([red]) == 2
    assert recorder.commands[-1] == "EVALSHA"  # one script (after a SCRIPT LOAD the first time)
    assert await client.exists(red) == 0
    assert await client.exists(f"{prefix}r1", f"{prefix}rb") == 0
    remaining = await cache.get_many(
        [f"{prefix}b0", f"{prefix}b1", f"{prefix}b2", f"{prefix}plain"]
    )
    assert all(r is not None for r in remaining)
    assert (
        await client.exists(blue) == 1
    )  # the other tag's set is untouched (it lists rb, now gone)

    assert await cache.invalidate_tags([blue, f"{prefix}#tag:none"]) == 3
    assert await client.exists(blue) == 0
    assert await cache.get(f"{prefix}plain") == Stored(3, 1.0)
    assert await cache.invalidate_tags([]) == 0


async def test_tag_set_ttl_is_raised_never_shortened(env: tuple[Any, str, Recorder]) -> None:
    """A tag set's TTL rises to its longest member's, never falls; a persistent set stays so."""
    client, prefix, _ = env
    cache = RedisCache(client)
    tag = f"{prefix}#tag:t"
    await cache.set(f"{prefix}short", Stored(1, 1.0), ttl=5, tag_keys=[tag])
    assert 0 < await client.pttl(tag) <= 5_000
    await cache.set(f"{prefix}long", Stored(2, 1.0), ttl=300, tag_keys=[tag])
    assert 200_000 < await client.pttl(tag) <= 300_000  # raised to the longest member
    await cache.set(f"{prefix}short2", Stored(3, 1.0), ttl=1, tag_keys=[tag])
    assert 200_000 < await client.pttl(tag) <= 300_000  # not shortened
    await cache.set_many([(f"{prefix}m", Stored(4, 1.0))], ttl=2, tag_keys=[tag])
    assert 200_000 < await client.pttl(tag) <= 300_000
    # A set someone made persistent stays persistent.
    await client.persist(tag)
    await cache.set(f"{prefix}x", Stored(5, 1.0), ttl=1, tag_keys=[tag])
    assert await client.pttl(tag) == -1


async def test_pattern_invalidation_with_glob_characters_uses_scan_not_keys(
    env: tuple[Any, str, Recorder],
) -> None:
    """Escaped glob characters match literally, via SCAN never KEYS; a bare * is a wildcard."""
    client, prefix, recorder = env
    cache = RedisCache(client)
    hostile = ["a*b", "a?b", "a[b]", "axb", "a\\b", "aXXb", "a*b:child"]
    await cache.set_many([(f"{prefix}{k}", Stored(k, 1.0)) for k in hostile], ttl=30)

    recorder.reset()
    assert await cache.invalidate_pattern(f"{prefix}a\\*b") == 1  # only the literal "a*b"
    assert "KEYS" not in recorder.commands
    assert "SCAN" in recorder.commands
    survivors = {k for k in hostile if await client.exists(f"{prefix}{k}")}
    assert survivors == set(hostile) - {"a*b"}

    assert await cache.invalidate_pattern(f"{prefix}a\\[b\\]") == 1
    assert await cache.invalidate_pattern(f"{prefix}a\\?b") == 1
    assert await cache.invalidate_pattern(f"{prefix}a\\\\b") == 1
    assert {k for k in hostile if await client.exists(f"{prefix}{k}")} == {
        "axb",
        "aXXb",
        "a*b:child",
    }
    # A real wildcard in the user's part still works, within the prefix only.
    assert await cache.invalidate_pattern(f"{prefix}a*b") == 2
    assert await client.exists(f"{prefix}a*b:child") == 1


async def test_pattern_invalidation_unlinks_in_batches(env: tuple[Any, str, Recorder]) -> None:
    """invalidate_pattern unlinks at most batch keys per UNLINK, and refuses batch=0."""
    client, prefix, recorder = env
    cache = RedisCache(client)
    await cache.set_many([(f"{prefix}bulk:{i}", Stored(i, 1.0)) for i in range(1_234)], ttl=30)
    await cache.set(f"{prefix}keep", Stored(0, 1.0), ttl=30)
    recorder.reset()
    assert await cache.invalidate_pattern(f"{prefix}bulk:*", batch=100) == 1_234
    assert "KEYS" not in recorder.commands
    assert recorder.commands.count("UNLINK") >= 13  # ≤ 100 keys per UNLINK
    assert await client.exists(f"{prefix}keep") == 1
    with pytest.raises(ValueError, match="batch"):
        await cache.invalidate_pattern(f"{prefix}*", batch=0)


class LogSpy:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.warnings.append((event, fields))


@pytest.fixture
def log_spy(monkeypatch: pytest.MonkeyPatch) -> LogSpy:
    spy = LogSpy()
    monkeypatch.setattr(redis_module, "log", spy)
    return spy


async def test_corrupt_or_foreign_value_is_a_logged_miss(
    env: tuple[Any, str, Recorder], log_spy: LogSpy
) -> None:
    """Foreign, truncated, bad-zlib and pickled values read as misses, each logged."""
    client, prefix, _ = env
    cache = RedisCache(client)
    await client.set(f"{prefix}hello", "hello")
    await client.set(f"{prefix}trunc", HEADER.pack(1, 1.0) + b"\xc1")
    await client.set(f"{prefix}zlib", HEADER.pack(1 | COMPRESSED, 1.0) + b"garbage")
    await RedisCache(client, serializer=PickleSerializer()).set(
        f"{prefix}pickled", Stored(1, 1.0), ttl=30
    )
    for key in ("hello", "trunc", "zlib", "pickled"):
        assert await cache.get(f"{prefix}{key}") is None
        assert await cache.get(f"{prefix}{key}") is None
    assert await cache.get_many([f"{prefix}hello", f"{prefix}zlib"]) == [None, None]
    logged = [
        fields["key"] for event, fields in log_spy.warnings if event == "cache.l2.undecodable"
    ]
    assert sorted(logged) == sorted(f"{prefix}{k}" for k in ("hello", "trunc", "zlib", "pickled"))


async def test_delete_counts_in_one_unlink_ping_answers_and_bad_ttls_are_refused(
    env: tuple[Any, str, Recorder],
) -> None:
    """delete is one UNLINK counting what it removed, ping answers, a ttl of 0, -1 or NaN raises."""
    client, prefix, recorder = env
    cache = RedisCache(client)
    await cache.set_many([(f"{prefix}{i}", Stored(i, 1.0)) for i in range(3)], ttl=30)
    recorder.reset()
    assert await cache.delete([f"{prefix}0", f"{prefix}1", f"{prefix}missing"]) == 2
    assert recorder.commands == ["UNLINK"]
    assert await cache.delete([]) == 0
    assert await cache.get(f"{prefix}2") == Stored(2, 1.0)
    assert await cache.ping() > 0
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="ttl"):
            await cache.set(f"{prefix}x", Stored(1, 1.0), ttl=bad)
    assert await cache.get(f"{prefix}x") is None


async def test_decoding_client_is_refused(redis_url: str) -> None:
    """A client built with decode_responses=True is refused, since cached values are bytes."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses"):
            RedisCache(client)
    finally:
        await client.aclose()


async def test_lock_factory_uses_the_same_client(env: tuple[Any, str, Recorder]) -> None:
    """cache.lock gives a lock on the cache's own Redis client, its key gone after release."""
    client, prefix, _ = env
    cache = RedisCache(client)
    async with cache.lock(f"{prefix}lock", lease=5) as lock:
        assert lock.held
        assert await client.exists(f"{prefix}lock") == 1
    assert not lock.held
    assert await client.exists(f"{prefix}lock") == 0


async def test_tag_sets_shed_members_whose_entries_expired(env: tuple[Any, str, Recorder]) -> None:
    """Writes to a busy tag prune most members that expired, never a live one."""
    client, prefix, _ = env
    cache = RedisCache(client)
    tag = f"{prefix}#tag:busy"
    await cache.set_many(
        [(f"{prefix}dead{i}", Stored(i, 1.0)) for i in range(50)], ttl=0.05, tag_keys=[tag]
    )
    await asyncio.sleep(0.1)
    for i in range(100):  # a busy tag: its set is extended by every write
        await cache.set(f"{prefix}live{i}", Stored(i, 1.0), ttl=30, tag_keys=[tag])
    members = {m.decode() for m in await client.smembers(tag)}
    assert {f"{prefix}live{i}" for i in range(100)} <= members  # live members are never dropped
    dead = len(members) - 100
    assert dead <= 25  # sampling pruned most of the 50 (expected ≈ 2)
    assert await cache.invalidate_tags([tag]) == 100
