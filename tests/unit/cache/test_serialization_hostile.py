"""Hostile values for the msgpack serializer: deep nesting, ambiguous local times."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
import zlib
from zoneinfo import ZoneInfo

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information
import pytest

from corestone.cache.serialization import COMPRESSED, HEADER, Envelope, MsgpackSerializer, Stored


def _nested_tuple_payload(depth: int) -> bytes:
    """What a tuple nested ``depth`` deep looks like on the wire (built without the packer)."""
    data = msgpack.packb([])
    for _ in range(depth):
        data = msgpack.packb([msgpack.ExtType(10, data)])
    return bytes(data)


def test_a_deeply_nested_value_in_redis_is_a_miss_not_a_crash() -> None:
    """An L2 value with tuples nested hundreds deep must decode to a ValueError (a miss),
    never take the reading process down."""
    script = textwrap.dedent(
        f"""
        import struct
        from corestone.cache.serialization import Envelope, HEADER
        payload = {_nested_tuple_payload(400)!r}
        try:
            Envelope().decode(HEADER.pack(1, 0.0) + payload)
        except ValueError:
            print("miss")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"the reader died (exit {done.returncode})"
    assert done.stdout.strip() == "miss"


def test_a_value_too_deep_to_read_back_is_refused_when_written() -> None:
    """A tuple nested too deep to be read back is refused at dumps, so it never reaches L2."""
    value: tuple[object, ...] = ()
    for _ in range(400):
        value = (value,)
    with pytest.raises(ValueError, match="nested"):
        MsgpackSerializer().dumps(value)


def test_moderately_nested_tuples_still_round_trip() -> None:
    """The nesting bound leaves room for any realistic value (tuples 30 deep, sets of tuples)."""
    value: object = {"k": frozenset({(1, (2, 3))}), (4, 5): {6}}
    for _ in range(30):
        value = (value, [{"x": (1,)}])
    envelope = Envelope()
    assert envelope.decode(envelope.encode(Stored(value, 1.0))).value == value


def test_an_ambiguous_local_time_keeps_its_instant() -> None:
    """A zoned datetime in the repeated hour (fold=1) comes back as the same instant, not
    an hour earlier."""
    zone = ZoneInfo("America/New_York")
    for fold in (0, 1):
        value = dt.datetime(2024, 11, 3, 1, 30, tzinfo=zone, fold=fold)
        out = MsgpackSerializer().loads(MsgpackSerializer().dumps(value))
        assert out.tzinfo == zone
        assert out.utcoffset() == value.utcoffset()
        assert out.astimezone(dt.UTC) == value.astimezone(dt.UTC)


def test_a_compressed_value_inflating_past_the_bound_is_a_miss() -> None:
    """A compressed L2 value that would inflate past ``max_decompressed`` is refused as a
    ValueError (a miss) without inflating it: a small zlib bomb must not exhaust memory."""
    envelope = Envelope(max_decompressed=64 * 1024)
    bomb = zlib.compress(msgpack.packb(b"\x00" * (1024 * 1024)), 9)
    data = HEADER.pack(envelope.format_id | COMPRESSED, 0.0) + bomb
    with pytest.raises(ValueError, match="inflates"):
        envelope.decode(data)
    reported: list[int] = []
    assert envelope.decode_many([data], lambda index, _: reported.append(index)) == [None]
    assert reported == [0]
    small = Stored(b"\x00" * 4096, 1.0)  # compressible, inflates within the bound
    assert envelope.decode(envelope.encode(small)) == small
