"""L2: the shared Redis tier — values in envelopes, a tag index, invalidation by tag or pattern.

Every method is one round trip: ``get_many`` is one MGET, ``set_many`` one pipeline (or
one Lua call when tags are involved), tag invalidation one Lua call. The tag index is a
Redis set per tag (``…#tag:{tag}``) listing the entry keys carrying it; entries and their
tag memberships are written by one script, and invalidation unlinks every member and the
set in one script, so no reader sees a half-invalidated tag.

A tag set's TTL is raised to its longest-lived member's, never shortened, so the set
outlives every live member. Members whose entries expired are dropped by sampling on
each tagged write (see ``_lua.SET_TAGGED``), so a busy tag's set does not grow without
bound; the few that remain cost memory only, as UNLINK of a missing key is a no-op.

The client must return raw bytes (``decode_responses=False``, redis-py's default): the
envelope is binary. Both RESP2 and RESP3 clients work (redis-py 8 defaults to RESP3).
Redis errors are *not* caught here — the tiered cache calls L2 behind the ``cache``
breaker and degrades to L1 + loader. A value that is not a valid envelope for the
configured serializer (corrupt, written by something else) is a miss, logged once per key.

Targets a single Redis (or primary + replicas), not Cluster: the Lua scripts touch keys
read from tag sets; a workspace's keys could be hash-tagged later to make that
slot-local.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, cast

from corestone._extras import requires_extra

with requires_extra(__name__, "redis"):
    from redis.client import NEVER_DECODE

from corestone.cache import _lua
from corestone.cache.lock import RedisLock
from corestone.cache.serialization import Envelope, Serializer, Stored
from corestone.clock import Clock, monotonic
from corestone.observability.logging import get_logger

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["RedisCache", "Stored"]

log = get_logger(__name__)

_LOGGED_KEYS_MAX: Final = 10_000
_UTF8_STRICT: Final = {("utf-8", "strict"), ("utf8", "strict")}
_RAW_REPLY: Final = {NEVER_DECODE: True}  # redis-py's option: the reply stays bytes


# A tag's generation is the Redis server time (µs) of its latest invalidation, strictly
# increasing. It outlives any load by far; if it does expire, it reads as 0 again and a
# load holding an older, higher number simply does not store (the safe side).
_GENERATION_TTL_MS = 24 * 3600 * 1000


def _ttl_ms(ttl: float) -> int:
    if not ttl > 0:  # also rejects NaN
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    return max(1, math.ceil(ttl * 1000))


class RedisCache:
    """The L2 tier over one ``redis.asyncio.Redis`` client (bytes responses, RESP2 or RESP3).

    ``serializer`` defaults to msgpack; values larger than ``compress_above`` bytes are
    zlib-compressed (``None``: never). Keys are full storage keys from ``KeyBuilder``:
    this is the tier a :class:`~corestone.cache.TieredCache` builds on, not an API for
    callers (who would have to scope keys by workspace themselves). ``clock`` times pings
    and the locks it hands out.
    """

    def __init__(
        self,
        client: Redis,
        *,
        serializer: Serializer | None = None,
        compress_above: int | None = 1024,
        compress_level: int = 1,
        clock: Clock = monotonic,
    ) -> None:
        if client.get_encoder().decode_responses:  # type: ignore[no-untyped-call]
            raise ValueError(
                "RedisCache needs a client created with decode_responses=False: "
                "cache envelopes are binary"
            )
        self.client = client
        self._clock = clock
        self.envelope = Envelope(
            serializer, compress_above=compress_above, compress_level=compress_level
        )
        self._encode = self.envelope.encode
        self._decode = self.envelope.decode
        self._decode_many = self.envelope.decode_many
        self._set_tagged: AsyncScript = client.register_script(_lua.SET_TAGGED)
        self._invalidate_tags: AsyncScript = client.register_script(_lua.INVALIDATE_TAGS)
        self._logged: set[str] = set()
        encoder = client.get_encoder()  # type: ignore[no-untyped-call]
        # The client would encode str keys as str.encode() does: do it in bulk (get_many_raw).
        self._utf8_keys = (encoder.encoding, encoder.encoding_errors) in _UTF8_STRICT

    @property
    def serializer(self) -> Serializer:
        return self.envelope.serializer

    # --- reads --------------------------------------------------------------------------

    def undecodable(self, key: str, exc: ValueError) -> None:
        """A value we cannot read is a miss; say so once per key, not on every read."""
        if key in self._logged:
            return
        if len(self._logged) >= _LOGGED_KEYS_MAX:
            self._logged.clear()
        self._logged.add(key)
        log.warning("cache.l2.undecodable", key=key, error=str(exc))

    async def get(self, key: str) -> Stored | None:
        data = cast("bytes | None", await self.client.get(key))
        if data is None:
            return None
        try:
            return self._decode(data)
        except ValueError as exc:
            self.undecodable(key, exc)
            return None

    async def get_many(self, keys: Sequence[str]) -> list[Stored | None]:
        """One MGET; results in the order of ``keys``, ``None`` for misses and unreadable values."""
        if not keys:
            return []
        raw = cast("list[bytes | None]", await self.client.mget(keys))

        def corrupt(index: int, exc: ValueError) -> None:
            self.undecodable(keys[index], exc)

        return self._decode_many(raw, corrupt)

    async def get_many_raw(self, keys: Sequence[str]) -> list[bytes | None]:
        """One MGET, the envelopes undecoded: for a reader that decodes them itself.

        ``TieredCache.get_many`` decodes and checks each value in one loop (``_batch``),
        and reports an undecodable one to :meth:`undecodable`. The keys go out as bytes
        encoded here in one C loop: redis-py's per-argument encoder costs about as much
        per key as everything else this cache adds to the batch. Replies are never
        decoded, so redis-py is told so and skips its no-op decode per value.
        """
        if not keys:
            return []
        args = list(map(str.encode, keys)) if self._utf8_keys else keys
        reply = await self.client.execute_command(  # type: ignore[no-untyped-call]
            "MGET", *args, **_RAW_REPLY
        )
        return cast("list[bytes | None]", reply)

    # --- writes -------------------------------------------------------------------------

    async def set(
        self,
        key: str,
        stored: Stored,
        *,
        ttl: float,
        tag_keys: Sequence[str] = (),
        generations: Sequence[int] | None = None,
    ) -> bool:
        """Store one entry for ``ttl`` seconds (physical lifetime); with tags, atomically.

        With ``generations`` (from :meth:`get_with_generations`, one per tag), nothing is
        stored and False returned if any tag was invalidated since they were read.
        """
        ms = _ttl_ms(ttl)
        data = self._encode(stored)
        if not tag_keys:
            await self.client.set(key, data, px=ms)
            return True
        args: list[Any] = [1, ms, data]
        if generations is not None:
            if len(generations) != len(tag_keys):
                raise ValueError("one generation per tag key")
            args.extend(str(g) for g in generations)
        return int(await self._set_tagged(keys=[key, *tag_keys], args=args)) >= 0

    async def get_with_generations(
        self, key: str, tag_keys: Sequence[str], *, server_time: bool = False
    ) -> tuple[Stored | None, list[int], int | None]:
        """The entry, each tag's generation and (if asked) the server time in µs: one round trip.

        A generation is the server time (µs) of the tag's latest invalidation, so with
        ``server_time`` a caller can tell whether a tag was invalidated after a moment of
        its own (see ``TieredCache.get_or_load``'s ``not_before``).
        """
        gen_keys = [f"{tag}#gen" for tag in tag_keys]
        if not server_time:
            if not tag_keys:
                return await self.get(key), [], None
            replies = cast("list[bytes | None]", await self.client.mget([key, *gen_keys]))
            now_us = None
        else:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.mget([key, *gen_keys])
                pipe.time()
                replies, (seconds, micros) = await pipe.execute()
            now_us = int(seconds) * 1_000_000 + int(micros)
        data, gens = replies[0], replies[1:]
        stored = None
        if data is not None:
            try:
                stored = self._decode(data)
            except ValueError as exc:
                self.undecodable(key, exc)
        return stored, [int(g) if g is not None else 0 for g in gens], now_us

    async def set_many(
        self,
        items: Sequence[tuple[str, Stored]],
        *,
        ttl: float,
        tag_keys: Sequence[str] = (),
    ) -> None:
        """Store several entries in one round trip (a pipeline, or one Lua call with tags)."""
        if not items:
            return
        ms = _ttl_ms(ttl)
        encode = self._encode
        if tag_keys:
            keys = [key for key, _ in items]
            keys.extend(tag_keys)
            args: list[Any] = [len(items), ms]
            args.extend(encode(stored) for _, stored in items)
            await self._set_tagged(keys=keys, args=args)
            return
        # No MULTI: the entries are independent, and a transaction would only add latency.
        async with self.client.pipeline(transaction=False) as pipe:
            for key, stored in items:
                pipe.set(key, encode(stored), px=ms)
            await pipe.execute()

    async def delete(self, keys: Sequence[str]) -> int:
        """UNLINK the keys (freed off Redis's main thread); returns how many existed."""
        if not keys:
            return 0
        return int(await self.client.unlink(*keys))

    async def invalidate_tags(self, tag_keys: Sequence[str]) -> int:
        """Remove every entry carrying any of the tags, and the tag sets, in one atomic script."""
        if not tag_keys:
            return 0
        return int(await self._invalidate_tags(keys=list(tag_keys), args=[_GENERATION_TTL_MS]))

    async def reset_tags(self, tag_keys: Sequence[str]) -> int:
        """UNLINK tag sets and their generations (corrupt ones); the entries are left alone."""
        if not tag_keys:
            return 0
        keys = [*tag_keys, *(f"{tag}#gen" for tag in tag_keys)]
        return int(await self.client.unlink(*keys))

    async def invalidate_pattern(
        self, match: str, *, batch: int = 500, spare: Callable[[str], bool] | None = None
    ) -> int:
        """Remove keys matching a SCAN MATCH glob (already escaped by ``KeyBuilder``).

        SCAN walks the keyspace in steps, so Redis keeps serving other clients — never
        KEYS, which blocks it for the whole walk. Keys are unlinked ``batch`` at a time.
        Not atomic: an entry written while the walk is running may survive, which is why
        invalidations are also announced on the backplane. SCAN may return a key twice;
        the count only includes keys that still existed when unlinked. Keys for which
        ``spare(key)`` is true are left alone (the tiered cache spares its tag index).
        """
        if batch < 1:
            raise ValueError("batch must be >= 1")
        removed = 0
        pending: list[bytes] = []
        async for key in self.client.scan_iter(match=match, count=batch):
            if spare is not None and spare(key.decode("utf-8", "surrogateescape")):
                continue
            pending.append(key)
            if len(pending) >= batch:
                removed += int(await self.client.unlink(*pending))
                pending.clear()
        if pending:
            removed += int(await self.client.unlink(*pending))
        return removed

    # --- misc ---------------------------------------------------------------------------

    async def ping(self) -> float:
        """Round-trip time of a PING, in seconds (for health checks)."""
        started = self._clock()
        await self.client.ping()
        return self._clock() - started

    def lock(self, key: str, *, lease: float = 10.0) -> RedisLock:
        """A distributed lock on ``key`` (a full key; the caller picks a namespace for locks)."""
        return RedisLock(self.client, key, lease=lease, clock=self._clock)
