"""One MGET reply read into values and L1 entries, in one loop.

``TieredCache.get_many`` is where L2 competes with a raw MGET (issue 11's target: within
1.2x of it), and redis-py's reply parsing leaves about a microsecond a value for
everything the cache adds. So the envelope's common case (uncompressed, our format), the
check of what a TieredCache writes (``CacheCore.decode``) and the L1 entry are done
inline here, without a ``Stored`` or a call per value; anything else (a compressed or
foreign envelope) takes ``Envelope.decode``, and the same checks follow either way. The
tests hold both paths to the same answers (tests/unit/cache/test_batch.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from corestone.cache._entry import Entry
from corestone.cache.serialization import HEADER, Envelope

__all__ = ["Fill", "read_reply"]

_HEADER_UNPACK: Final = HEADER.unpack_from
_HEADER_SIZE: Final = HEADER.size
_INF: Final = float("inf")

Fill = tuple[str, Entry, float, tuple[str, ...]]
"""An L1 entry to keep: (full key, entry, seconds to keep it, tag keys)."""


def read_reply(
    envelope: Envelope,
    keys: Sequence[str | bytes],
    fulls: Sequence[str],
    raw: Sequence[bytes | None],
    now: float,
    max_stale: float,
    found: dict[str | bytes, Any],
    corrupt: Callable[[str, ValueError], None],
) -> tuple[list[Fill], int]:
    """Add the fresh values of ``raw`` (MGET's reply for ``fulls``) to ``found``, by ``keys``.

    Returns what to keep in L1 (fresh values, each kept until stale plus ``max_stale``)
    and how many values were a TieredCache's (the L2 hits; the rest are misses). An
    undecodable value is reported to ``corrupt(full_key, error)`` and is a miss, as in
    ``RedisCache.get``; a decodable one of the wrong shape is a miss, as in
    ``CacheCore.decode``.
    """
    plain = envelope.format_id
    loads = envelope.loads
    decode = envelope.decode
    header = _HEADER_UNPACK
    size = _HEADER_SIZE
    inf, minus_inf = _INF, -_INF
    fills: list[Fill] = []
    keep = fills.append
    hits = 0
    for key, full, data in zip(keys, fulls, raw, strict=True):
        if data is None:
            continue
        try:
            fmt, fresh_until = header(data)
            if fmt == plain:
                payload = loads(data[size:])
            else:  # compressed or not ours: the full path says which
                stored = decode(data)
                payload, fresh_until = stored.value, stored.fresh_until
        except Exception as exc:  # noqa: BLE001 - any failure here means "not ours"
            corrupt(full, exc if isinstance(exc, ValueError) else ValueError(repr(exc)))
            continue
        # What a TieredCache writes: [tag keys, value, refresh_at]; see CacheCore.decode.
        if type(payload) is not list or len(payload) != 3:
            continue
        tag_keys, value, refresh_at = payload
        if (
            type(refresh_at) is not float
            or type(tag_keys) is not list
            or not minus_inf < refresh_at < inf  # also true for NaN
            or not minus_inf < fresh_until < inf
        ):
            continue
        if not tag_keys:
            tags: tuple[str, ...] = ()
        elif all(type(tag) is str for tag in tag_keys):
            tags = tuple(tag_keys)
        else:
            continue
        hits += 1
        if fresh_until > now:
            found[key] = value
            if refresh_at > fresh_until:
                refresh_at = fresh_until
            keep((full, Entry(value, fresh_until, refresh_at), fresh_until - now + max_stale, tags))
    return fills, hits
