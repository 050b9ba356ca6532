"""The L2 envelope and serializers, without Redis: format, round trips, refusal of foreign bytes."""

from __future__ import annotations

import collections
import datetime as dt
import enum
import pickle
import struct
import uuid
import zlib
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from corestone.cache.serialization import (
    COMPRESSED,
    HEADER,
    Envelope,
    MsgpackSerializer,
    OrjsonSerializer,
    PickleSerializer,
    Serializer,
    Stored,
)

TRICKY: dict[str, Any] = {
    "bytes": b"\x00\xff binary \x80",
    "unicode": "naïve café ✓ 𝄞 \u0000 end",
    "big_int": 2**200,
    "neg_big_int": -(2**70) - 1,
    "int64_edge": [2**63 - 1, -(2**63), 2**64 - 1],
    "nested": {"a": [1, {"b": [None, True, False, 1.5]}], "c": {}},
    "aware": dt.datetime(
        2026, 11, 26, 23, 59, 1, 123456, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))
    ),
    "zoned": dt.datetime(2026, 3, 29, 1, 30, tzinfo=ZoneInfo("Europe/Paris")),
    "naive": dt.datetime(2000, 1, 1, 0, 0),
    "date": dt.date(1999, 12, 31),
    "time": dt.time(12, 0, 1, 5),
    "delta": dt.timedelta(days=-3, seconds=5, microseconds=7),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "decimal": Decimal("-12345678901234567890.000000000000000001"),
    "set": {1, 2, 3},
    "frozenset": frozenset({"x"}),
    "int_keys": {1: "one", 2: "two"},
}


def test_msgpack_round_trips_tricky_values_with_types_intact() -> None:
    """msgpack reads back every tricky value with its exact type, a zoned datetime with its zone."""
    s = MsgpackSerializer()
    back = s.loads(s.dumps(TRICKY))
    assert back == TRICKY
    for name, value in TRICKY.items():
        assert type(back[name]) is type(value), name
    assert back["zoned"].tzinfo == ZoneInfo("Europe/Paris")  # the zone, not just an offset
    assert back["aware"].utcoffset() == dt.timedelta(hours=5, minutes=30)


def test_msgpack_tuples_round_trip_as_tuples_even_as_dict_keys() -> None:
    """Tuples come back as tuples (nested, in sets, as dict keys): L2 returns what L1 does."""
    s = MsgpackSerializer()
    for value in [(1, 2), [(1, (2, "3"))], {(1, 2): "x", "k": ((),)}, {(1, 2), (3, 4)}]:
        back = s.loads(s.dumps(value))
        assert back == value
        assert repr(back) == repr(value)  # same types all the way down, not just equal


def test_msgpack_subclasses_of_plain_types_come_back_as_their_base_type() -> None:
    """Strict typing (for tuples) must not refuse enum members or dict and str subclasses."""

    class Level(enum.IntEnum):
        HIGH = 3

    class Color(enum.StrEnum):
        RED = "red"

    s = MsgpackSerializer()
    value = [Level.HIGH, Color.RED, collections.OrderedDict(a=1), True, 2**70, bytearray(b"x")]
    assert s.loads(s.dumps(value)) == [3, "red", {"a": 1}, True, 2**70, b"x"]
    assert type(s.loads(s.dumps(True))) is bool


def test_msgpack_refuses_unknown_types() -> None:
    """An object msgpack cannot carry is a TypeError at dumps, never a silent change."""
    with pytest.raises(TypeError):
        MsgpackSerializer().dumps(object())


def test_envelope_layout_is_format_byte_then_fresh_until_then_payload() -> None:
    """An envelope is a format byte, fresh_until as a big-endian double, then the payload."""
    env = Envelope(MsgpackSerializer(), compress_above=None)
    data = env.encode(Stored({"k": 1}, 1234.5))
    fmt, fresh = struct.unpack(">Bd", data[:9])
    assert fmt == MsgpackSerializer.format_id
    assert fresh == 1234.5
    assert MsgpackSerializer().loads(data[9:]) == {"k": 1}
    assert HEADER.size == 9
    assert env.decode(data) == Stored({"k": 1}, 1234.5)


@pytest.mark.parametrize(
    "serializer", [MsgpackSerializer(), OrjsonSerializer(), PickleSerializer()]
)
def test_every_serializer_round_trips_through_the_envelope(serializer: Serializer) -> None:
    """msgpack, orjson and pickle each read back a Stored value through the envelope unchanged."""
    env = Envelope(serializer)
    value = {"list": [1, 2.5, "x", None], "n": 2**62}
    stored = env.decode(env.encode(Stored(value, 99.0)))
    assert stored == Stored(value, 99.0)
    assert isinstance(stored, Stored)


def test_compression_only_above_threshold_and_round_trips() -> None:
    """Only payloads above compress_above are zlib-compressed and flagged, and decode back."""
    env = Envelope(compress_above=1024)
    small = env.encode(Stored("x" * 1000, 1.0))
    big_value = "abc" * 10_000
    big = env.encode(Stored(big_value, 2.0))
    assert small[0] & COMPRESSED == 0
    assert big[0] & COMPRESSED
    assert len(big) < len(big_value) // 10
    assert zlib.decompress(big[9:])  # a plain zlib stream after the header
    assert env.decode(big) == Stored(big_value, 2.0)
    never = Envelope(compress_above=None).encode(Stored(big_value, 2.0))
    assert never[0] & COMPRESSED == 0


def test_incompressible_payload_is_stored_plain() -> None:
    """A payload zlib cannot shrink (random bytes) is stored plain even above the threshold."""
    import os

    env = Envelope(compress_above=10)
    data = env.encode(Stored(os.urandom(5000), 1.0))
    assert data[0] & COMPRESSED == 0


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello",  # someone's SET key hello
        b"\x01\x00",  # truncated header
        b"\x09" + struct.pack(">d", 1.0) + b"\x01",  # unknown format id
        HEADER.pack(1 | COMPRESSED, 1.0) + b"not zlib",
        HEADER.pack(1, 1.0) + b"\xc1",  # 0xc1 is never valid msgpack
        HEADER.pack(1, 1.0) + b"\x01\x02",  # trailing data after one object
        HEADER.pack(1, 1.0) + b"\xc7\x01\x63x",  # unknown ext type 99
        HEADER.pack(1, 1.0) + b"\xc7\x03\x05abc",  # Decimal ext with garbage
    ],
)
def test_corrupt_input_raises_value_error(data: bytes) -> None:
    """Empty, foreign, truncated, bad-zlib, invalid or trailing data raises ValueError only."""
    with pytest.raises(ValueError):  # noqa: PT011 — ValueError is the whole contract
        Envelope().decode(data)


def test_values_of_another_serializer_are_refused() -> None:
    """A msgpack envelope refuses a value written by orjson, naming the serializer it expected."""
    written = Envelope(OrjsonSerializer()).encode(Stored([1], 1.0))
    with pytest.raises(ValueError, match="msgpack"):
        Envelope(MsgpackSerializer()).decode(written)


def test_pickle_is_never_used_unless_asked() -> None:
    """msgpack is the default, and no other envelope unpickles, even under msgpack's byte."""
    assert Envelope().serializer.name == "msgpack"
    pickled = Envelope(PickleSerializer()).encode(Stored(object.__new__(_Probe), 1.0))
    for other in (MsgpackSerializer(), OrjsonSerializer()):
        with pytest.raises(ValueError):  # noqa: PT011
            Envelope(other).decode(pickled)
    # Even a raw pickle stream dressed with the msgpack format byte is not unpickled.
    disguised = HEADER.pack(MsgpackSerializer.format_id, 1.0) + pickle.dumps(object.__new__(_Probe))
    _Probe.loaded = 0
    with pytest.raises(ValueError):  # noqa: PT011
        Envelope().decode(disguised)
    assert _Probe.loaded == 0


class _Probe:
    loaded = 0

    def __setstate__(self, state: object) -> None:
        type(self).loaded += 1


def test_custom_serializer_gets_the_custom_format_id() -> None:
    """A custom serializer is tagged 0x7F, reads its own values, and the default refuses them."""

    class Upper:
        name = "upper"

        def dumps(self, value: Any) -> bytes:
            return str(value).upper().encode()

        def loads(self, data: bytes) -> Any:
            return data.decode()

    env = Envelope(Upper())
    data = env.encode(Stored("abc", 5.0))
    assert data[0] == 0x7F
    assert env.decode(data) == Stored("ABC", 5.0)
    with pytest.raises(ValueError):  # noqa: PT011
        Envelope().decode(data)


def test_negative_compress_above_and_level_zero_are_refused() -> None:
    """compress_above=-1 and compress_level=0 raise, naming the setting."""
    with pytest.raises(ValueError, match="compress_above"):
        Envelope(compress_above=-1)
    with pytest.raises(ValueError, match="compress_level"):
        Envelope(compress_level=0)


def test_fast_path_stored_is_a_normal_frozen_dataclass() -> None:
    """A decoded Stored equals, hashes, refuses assignment and replaces like one built by hand."""
    import dataclasses

    stored = Envelope().decode(Envelope().encode(Stored([1], 3.0)))
    assert stored == Stored([1], 3.0)
    assert hash(Stored("a", 1.0)) == hash(Envelope().decode(Envelope().encode(Stored("a", 1.0))))
    with pytest.raises(dataclasses.FrozenInstanceError):
        stored.value = 2  # type: ignore[misc]
    assert dataclasses.replace(stored, fresh_until=4.0) == Stored([1], 4.0)


def test_decode_many_matches_decode_and_reports_bad_values_by_index() -> None:
    """decode_many decodes like decode, None for absent or bad values, and reports bad indexes."""
    env = Envelope(compress_above=100)
    good = env.encode(Stored({"a": 1}, 1.0))
    compressed = env.encode(Stored("z" * 5000, 2.0))
    foreign = Envelope(OrjsonSerializer()).encode(Stored([1], 3.0))
    items = [good, None, b"hello", compressed, foreign, b"", HEADER.pack(1, 4.0) + b"\xc1", good]
    errors: list[tuple[int, ValueError]] = []
    out = env.decode_many(items, lambda index, exc: errors.append((index, exc)))
    assert out == [
        Stored({"a": 1}, 1.0),
        None,
        None,
        Stored("z" * 5000, 2.0),
        None,
        None,
        None,
        Stored({"a": 1}, 1.0),
    ]
    assert [index for index, _ in errors] == [2, 4, 5, 6]
    assert all(isinstance(exc, ValueError) for _, exc in errors)
    assert env.decode_many([], lambda index, exc: None) == []
