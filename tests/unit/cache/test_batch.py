"""The batch reader of get_many answers as the single-key path does, for every kind of L2 value."""

from __future__ import annotations

import math
import zlib
from typing import Any

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information
import pytest

from corestone.cache import TieredCache
from corestone.cache._batch import read_reply
from corestone.cache._entry import Entry
from corestone.cache.serialization import (
    COMPRESSED,
    HEADER,
    Envelope,
    OrjsonSerializer,
    Stored,
)

NOW = 1_000_000.0
FRESH = NOW + 10.0
MAX_STALE = 100.0


def _envelope(payload: Any, fresh_until: float = FRESH, fmt: int = 1) -> bytes:
    return HEADER.pack(fmt, fresh_until) + msgpack.packb(payload, use_bin_type=True)


def _compressed(payload: Any, fresh_until: float = FRESH) -> bytes:
    packed = zlib.compress(msgpack.packb(payload, use_bin_type=True))
    return HEADER.pack(1 | COMPRESSED, fresh_until) + packed


# (name, what Redis holds under the key): every value an attacker, another client or a bug
# could leave there, and the good ones.
VALUES: list[tuple[str, bytes | None]] = [
    ("absent", None),
    ("good", _envelope([[], {"id": 1}, FRESH - 5.0])),
    ("good_tagged", _envelope([["corestone:t:global#tag:a"], [1, 2], FRESH - 5.0])),
    ("refresh_after_fresh", _envelope([[], "v", FRESH + 50.0])),
    ("stale", _envelope([[], "v", NOW - 20.0], fresh_until=NOW - 10.0)),
    ("compressed", _compressed([[], "x" * 2000, FRESH - 5.0])),
    ("compressed_corrupt", HEADER.pack(1 | COMPRESSED, FRESH) + b"not zlib"),
    ("too_short", b"\x01\x00"),
    ("empty", b""),
    ("other_format", HEADER.pack(2, FRESH) + b'[[], "v", 1.0]'),
    ("garbage_payload", HEADER.pack(1, FRESH) + b"\xc1\xc1"),
    ("trailing_bytes", _envelope([[], "v", FRESH - 5.0]) + b"\x00"),
    ("not_a_list", _envelope({"a": 1})),
    ("short_list", _envelope([[], "v"])),
    ("long_list", _envelope([[], "v", 1.0, 2.0])),
    ("tags_not_a_list", _envelope(["tag", "v", FRESH - 5.0])),
    ("tag_not_a_string", _envelope([[1], "v", FRESH - 5.0])),
    ("refresh_is_an_int", _envelope([[], "v", 5])),
    ("refresh_is_nan", _envelope([[], "v", math.nan])),
    ("refresh_is_inf", _envelope([[], "v", math.inf])),
    ("fresh_is_nan", _envelope([[], "v", FRESH - 5.0], fresh_until=math.nan)),
    ("fresh_is_inf", _envelope([[], "v", FRESH - 5.0], fresh_until=math.inf)),
]


def _single_path(cache: TieredCache, data: bytes | None) -> tuple[Entry, tuple[str, ...]] | None:
    """What ``get`` makes of the value: ``RedisCache.get``'s decode, then ``CacheCore.decode``."""
    stored: Stored | None = None
    if data is not None:
        try:
            stored = Envelope().decode(data)
        except ValueError:
            stored = None
    return cache._core.decode(stored)


@pytest.mark.parametrize(("name", "data"), VALUES, ids=[name for name, _ in VALUES])
async def test_a_batch_read_finds_what_a_single_read_finds(name: str, data: bytes | None) -> None:
    """Each L2 value is a fresh hit, a stale hit or a miss in get_many exactly as in get."""
    cache = TieredCache(namespace="t", wall_clock=lambda: NOW)
    expected = _single_path(cache, data)
    found: dict[str | bytes, Any] = {}
    errors: list[str] = []
    full = "corestone:t:global:k"
    fills, hits = read_reply(
        Envelope(),
        ["k"],
        [full],
        [data],
        NOW,
        MAX_STALE,
        found,
        lambda key, exc: errors.append(key),
    )
    assert hits == (expected is not None)
    if expected is None or not expected[0].fresh_until > NOW:
        assert found == {}
        assert fills == []
    else:
        entry, tags = expected
        assert found == {"k": entry.value}
        [(kept_full, kept, keep_for, kept_tags)] = fills
        assert (kept_full, kept_tags) == (full, tags)
        assert (kept.value, kept.fresh_until, kept.refresh_at) == (
            entry.value,
            entry.fresh_until,
            entry.refresh_at,
        )
        assert keep_for == entry.fresh_until - NOW + MAX_STALE
    undecodable = data is not None and _undecodable(data)
    assert errors == ([full] if undecodable else [])


def _undecodable(data: bytes) -> bool:
    try:
        Envelope().decode(data)
    except ValueError:
        return True
    return False


def test_values_keep_their_keys_and_order_in_a_mixed_batch() -> None:
    """A batch of hits, misses and foreign values answers each key with its own value."""
    missing = [(f"k{n}", f"corestone:t:global:k{n}") for n in range(len(VALUES))]
    raw = [data for _, data in VALUES]
    found: dict[str | bytes, Any] = {}
    keys, fulls = [key for key, _ in missing], [full for _, full in missing]
    fills, hits = read_reply(Envelope(), keys, fulls, raw, NOW, MAX_STALE, found, lambda k, e: None)
    cache = TieredCache(namespace="t", wall_clock=lambda: NOW)
    expected = {}
    for (key, _), data in zip(missing, raw, strict=True):
        single = _single_path(cache, data)
        if single is not None and single[0].fresh_until > NOW:
            expected[key] = single[0].value
    assert found == expected
    assert [full for full, *_ in fills] == [full for key, full in missing if key in expected]
    assert hits == len(expected) + 1  # the stale one is an L2 hit, not returned


def test_another_serializer_is_read_through_its_own_loads() -> None:
    """With orjson configured, its envelopes are values and msgpack ones are foreign."""
    envelope = Envelope(OrjsonSerializer())
    ours = envelope.encode(Stored([[], {"a": 1}, FRESH - 1.0], FRESH))
    msgpack_one = _envelope([[], "v", FRESH - 1.0])
    found: dict[str | bytes, Any] = {}
    errors: list[str] = []
    read_reply(
        envelope,
        ["a", "b"],
        ["full:a", "full:b"],
        [ours, msgpack_one],
        NOW,
        MAX_STALE,
        found,
        lambda key, exc: errors.append(key),
    )
    assert found == {"a": {"a": 1}}
    assert errors == ["full:b"]
