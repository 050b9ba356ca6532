"""How L2 values become bytes on the wire, and back.

A value in Redis is an *envelope*::

    byte 0      format: serializer id (low 7 bits) | 0x80 when the payload is zlib-compressed
    bytes 1..8  fresh_until, big-endian IEEE-754 double (wall-clock epoch seconds)
    bytes 9..   payload written by the serializer

One MGET answers both "what is it" and "may I still serve it as fresh"; the format byte
lets a reader refuse what it cannot or must not decode: :class:`Envelope` raises
:class:`ValueError` and the cache turns that into a miss. The default serializer is
msgpack with extension types for the values a service caches (tuples, datetimes with
their zone, dates, UUIDs, decimals, big ints, sets), which can only build plain data;
:class:`OrjsonSerializer` suits JSON values; :class:`PickleSerializer` is opt-in only.
Why it is built this way: docs/decisions (the cache design rationale).
"""

from __future__ import annotations

import datetime as dt
import pickle
import struct
import threading
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from corestone.errors import MissingExtraError

try:
    import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information
except ModuleNotFoundError:  # it comes with the 'redis' extra; MsgpackSerializer() says so
    msgpack = None

__all__ = [
    "COMPRESSED",
    "CUSTOM_FORMAT_ID",
    "HEADER",
    "MAX_DECOMPRESSED",
    "Envelope",
    "MsgpackSerializer",
    "OrjsonSerializer",
    "PickleSerializer",
    "Serializer",
    "Stored",
]

COMPRESSED: Final = 0x80
"""Flag in the format byte: the payload is zlib-compressed."""

HEADER: Final = struct.Struct(">Bd")
"""Format byte + fresh_until; the payload starts at ``HEADER.size`` (9)."""

MAX_DECOMPRESSED: Final = 256 * 1024 * 1024
"""The most a compressed L2 value may inflate to; past it the value is a miss.

A few kilobytes of zlib can inflate to gigabytes: whoever can write to the Redis could
otherwise exhaust every reader's memory with one value."""

_HEADER_SIZE: Final = HEADER.size
_HEADER_UNPACK: Final = HEADER.unpack_from
_ID_MASK: Final = 0x7F


@dataclass(frozen=True, slots=True)
class Stored:
    """What L2 keeps for one key.

    ``fresh_until`` is wall-clock epoch seconds (every instance must agree on it, so it
    cannot be a monotonic clock); after it the value is stale and only served fail-safe.
    The physical Redis TTL is longer (fresh + maximum stale age) and set by the caller.
    """

    value: Any
    fresh_until: float


# Frozen dataclasses build instances through object.__setattr__, which costs more than the
# rest of decoding a small value. The slot descriptors set the fields directly; the result
# is an ordinary, equal, immutable Stored (used only on the decode hot path).
_new_stored = object.__new__
_set_value = Stored.__dict__["value"].__set__
_set_fresh = Stored.__dict__["fresh_until"].__set__


@runtime_checkable
class Serializer(Protocol):
    """Turns a value into bytes and back.

    ``name`` identifies the format in logs. The built-in serializers also carry a
    ``format_id`` (1..127) written into the envelope; a custom serializer without one gets
    127 ("custom"), so values it wrote are never handed to a built-in decoder.
    ``loads`` must raise (any exception) on input it did not produce.
    """

    name: str

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


CUSTOM_FORMAT_ID: Final = 0x7F

# --- msgpack --------------------------------------------------------------------------------

_EXT_DATETIME: Final = 1
_EXT_DATE: Final = 2
_EXT_TIME: Final = 3
_EXT_UUID: Final = 4
_EXT_DECIMAL: Final = 5
_EXT_BIGINT: Final = 6
_EXT_SET: Final = 7
_EXT_FROZENSET: Final = 8
_EXT_TIMEDELTA: Final = 9
_EXT_TUPLE: Final = 10

_MAX_EXT_DEPTH: Final = 64
"""How deep tuples, sets and frozensets may nest in one value.

Each level is packed and unpacked by a nested msgpack call, which recurses on the C
stack: a tuple a few hundred levels deep crashes the reading process (SIGSEGV) instead
of raising. Such a value is refused when written, and a payload nesting deeper (written
by something else) is refused when read, as any undecodable value is: a miss."""

_nesting = threading.local()


def _nested(pack_or_unpack: Callable[[Any], Any], arg: Any) -> Any:
    """Run one nested msgpack call, one level deeper; ValueError past ``_MAX_EXT_DEPTH``."""
    depth = getattr(_nesting, "depth", 0)
    if depth >= _MAX_EXT_DEPTH:
        raise ValueError(f"tuples, sets and frozensets nested more than {_MAX_EXT_DEPTH} deep")
    _nesting.depth = depth + 1
    try:
        return pack_or_unpack(arg)
    finally:
        _nesting.depth = depth


def _zone_suffix(value: dt.datetime | dt.time) -> str:
    """``[Europe/Paris]`` for a ZoneInfo zone, so the zone (not just today's offset) survives."""
    tz = value.tzinfo
    if isinstance(tz, ZoneInfo) and tz.key:
        return f"[{tz.key}]"
    return ""


def _split_zone(text: str) -> tuple[str, ZoneInfo | None]:
    if text.endswith("]"):
        base, _, key = text[:-1].partition("[")
        try:
            return base, ZoneInfo(key)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {key!r}") from exc
    return text, None


def _msgpack_default(obj: Any) -> Any:
    # The packer is strict about types, so tuples (and subclasses of the plain types) land
    # here rather than being packed as the type they derive from. Order matters: datetime
    # is a subclass of date, bool of int.
    if isinstance(obj, tuple):  # a namedtuple comes back as a plain tuple
        return msgpack.ExtType(_EXT_TUPLE, _nested(_pack, list(obj)))
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, str):  # a StrEnum member, a str subclass: its plain value
        return str.__str__(obj)
    if isinstance(obj, dict):
        return dict(obj)
    if isinstance(obj, list):
        return list(obj)
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, int) and type(obj) is not int:  # an IntEnum member, an int subclass
        return int(obj)
    if isinstance(obj, dt.datetime):
        return msgpack.ExtType(_EXT_DATETIME, (obj.isoformat() + _zone_suffix(obj)).encode())
    if isinstance(obj, dt.date):
        return msgpack.ExtType(_EXT_DATE, obj.isoformat().encode())
    if isinstance(obj, dt.time):
        return msgpack.ExtType(_EXT_TIME, (obj.isoformat() + _zone_suffix(obj)).encode())
    if isinstance(obj, uuid.UUID):
        return msgpack.ExtType(_EXT_UUID, obj.bytes)
    if isinstance(obj, Decimal):
        return msgpack.ExtType(_EXT_DECIMAL, str(obj).encode())
    if isinstance(obj, int):  # beyond 64 bits: msgpack hands it here
        return msgpack.ExtType(_EXT_BIGINT, str(obj).encode())
    if isinstance(obj, frozenset):
        return msgpack.ExtType(_EXT_FROZENSET, _nested(_pack, list(obj)))
    if isinstance(obj, set):
        return msgpack.ExtType(_EXT_SET, _nested(_pack, list(obj)))
    if isinstance(obj, dt.timedelta):
        return msgpack.ExtType(_EXT_TIMEDELTA, _pack([obj.days, obj.seconds, obj.microseconds]))
    raise TypeError(f"MsgpackSerializer cannot serialize {type(obj).__name__}")


def _msgpack_ext(code: int, data: bytes) -> Any:
    if code == _EXT_DATETIME:
        text, zone = _split_zone(data.decode())
        value = dt.datetime.fromisoformat(text)
        if zone is None:
            return value
        zoned = value.replace(tzinfo=zone)
        if zoned.utcoffset() != value.utcoffset():  # the repeated hour: the offset says which
            zoned = zoned.replace(fold=1)
        return zoned
    if code == _EXT_DATE:
        return dt.date.fromisoformat(data.decode())
    if code == _EXT_TIME:
        text, zone = _split_zone(data.decode())
        time_value = dt.time.fromisoformat(text)
        return time_value.replace(tzinfo=zone) if zone is not None else time_value
    if code == _EXT_UUID:
        return uuid.UUID(bytes=data)
    if code == _EXT_DECIMAL:
        return Decimal(data.decode())
    if code == _EXT_BIGINT:
        return int(data)
    if code == _EXT_SET:
        return set(_nested(_unpack, data))
    if code == _EXT_FROZENSET:
        return frozenset(_nested(_unpack, data))
    if code == _EXT_TIMEDELTA:
        days, seconds, micros = _unpack(data)
        return dt.timedelta(days=days, seconds=seconds, microseconds=micros)
    if code == _EXT_TUPLE:
        return tuple(_nested(_unpack, data))
    raise ValueError(f"unknown msgpack extension type {code}")


_packer_options: Final[dict[str, Any]] = {
    "use_bin_type": True,
    "strict_types": True,  # a tuple is not a list: it keeps its type (and works as a key)
    "default": _msgpack_default,
}


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, **_packer_options)  # type: ignore[no-any-return]


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_msgpack_ext)


class MsgpackSerializer:
    """The default: msgpack plus extension types; decoding can only build plain data.

    Carries bytes, str, int (any size), float, bool, None, lists, tuples, dicts (any
    hashable keys, tuples included), datetime (naive or aware; a ZoneInfo zone is kept by
    name), date, time, timedelta, UUID, Decimal, set and frozenset: each comes back as
    the type it went in as, so L2 returns what L1 does. Subclasses come back as their
    base type (a namedtuple as a tuple, an IntEnum member as an int); anything else is a
    ``TypeError`` at ``dumps`` — a bug to fix at the call site, not something to store.
    """

    name = "msgpack"
    format_id = 1

    def __init__(self) -> None:
        if msgpack is None:
            raise MissingExtraError(f"{__name__}.MsgpackSerializer", ("redis",), "msgpack")

    def dumps(self, value: Any) -> bytes:
        return _pack(value)

    def loads(self, data: bytes) -> Any:
        return _unpack(data)


class OrjsonSerializer:
    """orjson: for values that are JSON-shaped already (and readable with ``redis-cli``).

    orjson writes datetimes, UUIDs and dataclasses but reads everything back as JSON
    types (strings, numbers, lists, dicts); bytes, Decimal and ints beyond 64 bits are not
    supported. Then L2 does not return what L1 does (a tuple or a datetime in L1 is a
    list or a string from L2): choose it only for values that are JSON types already.
    """

    name = "orjson"
    format_id = 2

    def dumps(self, value: Any) -> bytes:
        return orjson.dumps(value)

    def loads(self, data: bytes) -> Any:
        return orjson.loads(data)


class PickleSerializer:
    """pickle: any picklable object graph — use only when asked for, and understand why.

    Unpickling executes code named by the bytes it reads. Anyone who can write to this
    Redis (another service, a leaked password, a misconfigured ACL) can then run code in
    every process that reads the cache. It is therefore never a default, and values written
    by another serializer are never passed to it (the envelope's format byte must say
    pickle). Prefer msgpack; reach for this only for trusted, private Redis deployments.
    """

    name = "pickle"
    format_id = 3

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self.protocol = protocol

    def dumps(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=self.protocol)

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)  # noqa: S301 — the reason this serializer is opt-in


def _inflate(payload: bytes, limit: int) -> bytes:
    """Decompress ``payload``, refusing (ValueError) to produce more than ``limit`` bytes."""
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(payload, limit)
    except zlib.error as exc:
        raise ValueError(f"corrupt compressed payload: {exc}") from exc
    if inflater.unconsumed_tail:
        raise ValueError(f"compressed payload inflates past {limit} bytes")
    if not inflater.eof:
        raise ValueError("corrupt compressed payload: truncated")
    return data


class Envelope:
    """Wraps a serializer with the envelope: header, optional compression, strict checks.

    ``encode`` compresses (zlib at ``compress_level``) only when the payload exceeds
    ``compress_above`` bytes *and* compression actually saves space. ``decode`` raises
    :class:`ValueError` for anything it did not write — too short, another serializer's
    format id, a broken zlib stream, one inflating past ``max_decompressed`` bytes or a
    payload the serializer rejects — so the caller has exactly one failure to map to a miss.
    """

    __slots__ = (
        "_format",
        "_loads",
        "compress_above",
        "compress_level",
        "max_decompressed",
        "serializer",
    )

    def __init__(
        self,
        serializer: Serializer | None = None,
        *,
        compress_above: int | None = 1024,
        compress_level: int = 1,
        max_decompressed: int = MAX_DECOMPRESSED,
    ) -> None:
        if max_decompressed < 1:
            raise ValueError("max_decompressed must be >= 1")
        if compress_above is not None and compress_above < 0:
            raise ValueError("compress_above must be >= 0 or None")
        if not 1 <= compress_level <= 9:
            raise ValueError("compress_level must be within 1..9")
        self.serializer: Serializer = serializer if serializer is not None else MsgpackSerializer()
        format_id = getattr(self.serializer, "format_id", CUSTOM_FORMAT_ID)
        if not isinstance(format_id, int) or not 1 <= format_id <= _ID_MASK:
            raise ValueError("a serializer's format_id must be an int within 1..127")
        self._format = format_id
        # The default serializer's loads is one call shorter to reach (batch reads count it).
        self._loads = (
            _unpack if type(self.serializer) is MsgpackSerializer else self.serializer.loads
        )
        self.compress_above = compress_above
        self.compress_level = compress_level
        self.max_decompressed = max_decompressed

    @property
    def format_id(self) -> int:
        """The format byte of an uncompressed value (compressed ones add ``COMPRESSED``)."""
        return self._format

    @property
    def loads(self) -> Callable[[bytes], Any]:
        """The serializer's ``loads``: what a batch reader calls on an uncompressed payload."""
        return self._loads

    def encode(self, stored: Stored) -> bytes:
        payload = self.serializer.dumps(stored.value)
        fmt = self._format
        if self.compress_above is not None and len(payload) > self.compress_above:
            packed = zlib.compress(payload, self.compress_level)
            if len(packed) < len(payload):
                payload = packed
                fmt |= COMPRESSED
        return HEADER.pack(fmt, stored.fresh_until) + payload

    def decode(self, data: bytes) -> Stored:
        try:
            fmt, fresh_until = HEADER.unpack_from(data)
        except struct.error as exc:
            raise ValueError("not a corestone cache envelope (too short)") from exc
        payload = data[_HEADER_SIZE:]
        if fmt != self._format:
            if fmt != self._format | COMPRESSED:
                name = self.serializer.name
                raise ValueError(f"envelope format {fmt:#04x} is not {name} ({self._format:#04x})")
            payload = _inflate(payload, self.max_decompressed)
        try:
            value = self._loads(payload)
        except Exception as exc:  # any decoder failure means "not ours"
            raise ValueError(f"{self.serializer.name} payload rejected: {exc!r}") from exc
        stored: Stored = _new_stored(Stored)
        _set_value(stored, value)
        _set_fresh(stored, fresh_until)
        return stored

    def decode_many(
        self,
        items: Iterable[bytes | None],
        on_error: Callable[[int, ValueError], None],
    ) -> list[Stored | None]:
        """Decode an MGET reply: ``None`` stays ``None``, undecodable values become ``None``.

        The batch read is where L2 competes with a raw MGET, so this loop is ``decode``
        inlined for the common case (uncompressed, our format): one header unpack, one
        ``loads``, fields set through slot descriptors — no per-value call into
        ``decode`` and no exception setup beyond the ``loads`` guard. Anything else takes
        the full path. ``on_error(index, error)`` is told about each undecodable value.
        """
        fmt_id = self._format
        loads = self._loads
        header = _HEADER_UNPACK
        size = _HEADER_SIZE
        new, set_value, set_fresh = _new_stored, _set_value, _set_fresh
        out: list[Stored | None] = []
        append = out.append
        for data in items:
            if data is None:
                append(None)
                continue
            try:
                fmt, fresh_until = header(data)
                if fmt != fmt_id:
                    append(self.decode(data))
                    continue
                value = loads(data[size:])
            except Exception as exc:  # noqa: BLE001 — any failure here means "not ours"
                on_error(len(out), exc if isinstance(exc, ValueError) else ValueError(repr(exc)))
                append(None)
                continue
            stored = new(Stored)
            set_value(stored, value)
            set_fresh(stored, fresh_until)
            append(stored)
        return out
