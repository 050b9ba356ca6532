"""The parts of a TieredCache that its helpers share: tiers, invalidation log, flights, clocks.

:class:`TieredCache` builds one :class:`CacheCore` and hands it to the loading code and the
ops helpers, which never see the cache itself. The core's methods take full storage keys;
it is private, and the public methods of the cache build those keys from the namespace
and the workspace, so no caller can name another workspace's entry.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from corestone.cache._batch import read_reply
from corestone.cache._entry import Entry
from corestone.cache._flights import Flights
from corestone.cache._recent import RecentInvalidations
from corestone.cache._remote import UNAVAILABLE, Remote
from corestone.cache.backplane import Backplane, Invalidation
from corestone.cache.keys import KeyBuilder, glob_regex
from corestone.cache.memory import MemoryCache
from corestone.cache.options import CacheOptions
from corestone.cache.serialization import Stored
from corestone.cache.stats import CacheStats
from corestone.clock import Clock

__all__ = ["CacheCore"]

_FINITE_MIN = float("-inf")
_FINITE_MAX = float("inf")


@dataclass(eq=False)
class CacheCore:
    """L1, L2, the invalidation log, the flights, the stats and the clocks of one cache.

    ``clock`` (monotonic) measures durations and orders invalidations against reads;
    ``wall_clock`` stamps freshness deadlines, which travel to other instances in L2.
    """

    name: str
    keys: KeyBuilder
    memory: MemoryCache
    options: CacheOptions
    stats: CacheStats
    backplane: Backplane
    remote: Remote | None
    clock: Clock
    wall_clock: Clock
    observe: Callable[[str, float], None] | None = None
    flights: Flights = field(default_factory=Flights)
    recent: RecentInvalidations = field(init=False)

    def __post_init__(self) -> None:
        self.recent = RecentInvalidations(clock=self.clock)

    # -- L2 reads ------------------------------------------------------------------------

    def decode(self, stored: Stored | None) -> tuple[Entry, tuple[str, ...]] | None:
        """The L1 entry and tag keys of an L2 value, counted; None if absent or foreign.

        A TieredCache writes ``[tag_keys, value, refresh_at]``; anything else under a key
        (another client's value, a corrupt one) is a miss, never an exception.
        """
        if stored is None:
            self.stats.l2_misses += 1
            return None
        payload = stored.value
        fresh_until = stored.fresh_until
        if type(payload) is list and len(payload) == 3:
            tag_keys, value, refresh_at = payload
            if (
                type(tag_keys) is list
                and (not tag_keys or all(type(tag) is str for tag in tag_keys))
                and type(refresh_at) is float
                and _FINITE_MIN < refresh_at < _FINITE_MAX  # also false for NaN
                and _FINITE_MIN < fresh_until < _FINITE_MAX
            ):
                self.stats.l2_hits += 1
                refresh_at = min(refresh_at, fresh_until)
                return Entry(value, fresh_until, refresh_at), tuple(tag_keys)
        self.stats.l2_misses += 1
        return None

    def _keep(self, full: str, decoded: tuple[Entry, tuple[str, ...]], started: float) -> Entry:
        """Keep a fresh L2 value in L1 unless it or a tag was invalidated since ``started``."""
        entry, tag_keys = decoded
        now = self.wall_clock()
        if entry.fresh_until > now and not self.recent.since((full, *tag_keys), started):
            keep = entry.fresh_until - now + self.options.max_stale
            self.memory.set(full, entry, ttl=keep, tags=tag_keys)
        return entry

    async def read_l2(self, full: str) -> Entry | None:
        """One full key from L2 (fresh or stale), kept in L1 if still current; None if absent."""
        if self.remote is None:
            return None
        store = self.remote.store
        started = self.recent.mark()
        stored = await self.remote.call("get", lambda: store.get(full))
        if stored is UNAVAILABLE:
            return None
        decoded = self.decode(stored)
        return None if decoded is None else self._keep(full, decoded, started)

    async def read_for_load(
        self, full: str, tag_keys: tuple[str, ...], not_before: float | None
    ) -> tuple[Entry | None, list[int] | None, bool]:
        """``read_l2`` plus what a load must store against: (entry, generations, storable).

        The tags' generations are read here, before the loader runs. With ``not_before``
        (a reading of ``clock``: when the loader's data was current), the load is not
        storable if any tag was invalidated after that moment, on any instance: Redis
        answers with its own time too, and generations are Redis times.
        """
        if self.remote is None or not tag_keys:
            return await self.read_l2(full), None, True
        store = self.remote.store
        asked = not_before is not None
        started = self.recent.mark()
        reply = await self.remote.call(
            "get", lambda: store.get_with_generations(full, tag_keys, server_time=asked)
        )
        if reply is UNAVAILABLE:
            return None, None, True
        stored, generations, server_us = reply
        storable = True
        if not_before is not None and server_us is not None:
            # The earliest Redis time ``not_before`` can be: the reply came at the latest now.
            since_us = server_us - (self.clock() - not_before) * 1_000_000
            storable = all(generation < since_us for generation in generations)
        decoded = self.decode(stored)
        entry = None if decoded is None else self._keep(full, decoded, started)
        return entry, generations, storable

    async def read_many(
        self, keys: list[str | bytes], fulls: list[str], found: dict[str | bytes, Any]
    ) -> None:
        """Add to ``found`` the fresh L2 values of ``keys`` (full keys ``fulls``): one MGET."""
        remote = self.remote
        if remote is None:
            return
        store = remote.store
        started = self.recent.mark()
        raw = await remote.call("get_many", lambda: store.get_many_raw(fulls))
        if raw is UNAVAILABLE:
            return
        keep, hits = read_reply(
            store.envelope,
            keys,
            fulls,
            raw,
            self.wall_clock(),
            self.options.max_stale,
            found,
            store.undecodable,
        )
        stats = self.stats
        stats.l2_hits += hits
        stats.l2_misses += len(keys) - hits
        if keep and self.recent.latest > started:  # invalidated meanwhile: keep the others
            since = self.recent.since
            keep = [fill for fill in keep if not since((fill[0], *fill[3]), started)]
        # Readable in L1 now; the admission bookkeeping runs when the loop next turns.
        self.memory.add_many(keep)

    # -- writes --------------------------------------------------------------------------

    async def store(
        self, full: str, value: Any, tag_keys: tuple[str, ...], options: CacheOptions
    ) -> None:
        """Write one full key to both tiers and announce it (``set``, untagged loads)."""
        fresh_until = self.fresh_until(options)
        entry = self.entry(value, fresh_until, options)
        self.stats.sets += 1
        self.overwritten([full])
        self.memory.set(full, entry, ttl=self.keep_for(fresh_until, options), tags=tag_keys)
        if self.remote is not None:
            store = self.remote.store
            stored = self.stored(entry, tag_keys)
            await self.write_l2(
                "set",
                lambda: store.set(full, stored, ttl=options.keep_for, tag_keys=tag_keys),
                [full],
            )

    async def store_loaded(
        self,
        full: str,
        value: Any,
        tag_keys: tuple[str, ...],
        options: CacheOptions,
        generations: list[int] | None,
    ) -> bool:
        """Store what a load read, refused (False) if a tag was invalidated since ``generations``.

        Redis is written first and refuses if a tag's generation moved (on any instance);
        only an accepted value enters L1. Generations that could not be read (Redis away)
        leave the value in L1 only: L2 cannot be written safely without them.
        """
        if self.remote is None or not tag_keys:
            await self.store(full, value, tag_keys, options)
            return True
        fresh_until = self.fresh_until(options)
        entry = self.entry(value, fresh_until, options)
        keep = self.keep_for(fresh_until, options)
        self.stats.sets += 1
        if generations is None:
            self.overwritten([full])
            self.memory.set(full, entry, ttl=keep, tags=tag_keys)
            return True
        store = self.remote.store
        stored = self.stored(entry, tag_keys)
        started = self.recent.mark()
        accepted = await self.remote.call(
            "set",
            lambda: store.set(
                full, stored, ttl=options.keep_for, tag_keys=tag_keys, generations=generations
            ),
        )
        if accepted is False:
            self.stats.stores_refused += 1
            return False
        if self.recent.since((full, *tag_keys), started):
            return False  # invalidated here while Redis was being written
        self.overwritten([full])
        self.memory.set(full, entry, ttl=keep, tags=tag_keys)
        message = self.message("keys", (full,))
        if accepted is UNAVAILABLE:
            await self.remote.invalidate(message)  # L2 may hold an older value: replay
        else:
            await self.remote.announce(message)
        return True

    async def write_l2(
        self, op: str, write: Callable[[], Awaitable[object]], fulls: list[str]
    ) -> None:
        """Run an L2 write, then announce it (or queue its keys' deletion if Redis is away)."""
        remote = self.remote
        assert remote is not None
        message = self.message("keys", tuple(fulls))
        try:
            if await remote.call(op, write) is UNAVAILABLE:
                # L2 may still hold an older value under these keys: delete it when it returns.
                await remote.invalidate(message)
            else:
                await remote.announce(message)
        except asyncio.CancelledError:
            # Cancelled with L1 written and L2 written or not, the others unaware: delete the
            # keys in L2 and announce that in the background, so nobody keeps the old value.
            remote.remember(message)
            raise

    def overwritten(self, fulls: list[str]) -> None:
        """A write replaces these keys: reads and loads in flight must not keep older data."""
        self.recent.note(fulls)
        self.flights.invalidated_keys(fulls)

    def entry(self, value: Any, fresh_until: float, options: CacheOptions) -> Entry:
        refresh_at = fresh_until
        if options.eager_refresh is not None:
            now = self.wall_clock()
            refresh_at = now + (fresh_until - now) * options.eager_refresh
        return Entry(value, fresh_until, refresh_at)

    def keep_for(self, fresh_until: float, options: CacheOptions) -> float:
        """How long L1 keeps an entry: until it is no longer fresh, plus the stale allowance."""
        stale = options.max_stale if options.fail_safe else 0.0
        return fresh_until - self.wall_clock() + stale

    @staticmethod
    def stored(entry: Entry, tag_keys: tuple[str, ...]) -> Stored:
        # L2 keeps the tags (so an instance reading the value indexes them in its L1) and
        # the refresh point (so eager refresh works on every instance, not just the writer).
        return Stored([list(tag_keys), entry.value, entry.refresh_at], entry.fresh_until)

    def fresh_until(self, options: CacheOptions) -> float:
        ttl = options.ttl
        if options.jitter:
            ttl *= 1.0 - options.jitter * random.random()  # noqa: S311 - spread, not secrets
        return self.wall_clock() + ttl

    # -- invalidation --------------------------------------------------------------------

    def message(self, kind: Any, items: tuple[str, ...]) -> Invalidation:
        return Invalidation(kind, items, self.backplane.instance_id, self.wall_clock())

    async def invalidate(self, message: Invalidation) -> None:
        """Apply ``message`` here, then to L2 and every other instance."""
        if not message.items:
            return
        self.apply_locally(message)
        if self.remote is not None:
            await self.remote.invalidate(message)

    def apply_locally(self, message: Invalidation) -> None:
        memory = self.memory
        flights = self.flights
        if message.kind in ("keys", "tags"):
            self.recent.note(message.items)
        else:
            self.recent.note_everything()
        if message.kind == "keys":
            memory.delete_many(message.items)
            flights.invalidated_keys(message.items)
        elif message.kind == "tags":
            memory.invalidate_tags(message.items)
            flights.invalidated_tags(message.items)
        elif message.kind == "pattern":
            regexes = [glob_regex(glob) for glob in message.items]

            def matches(key: Hashable) -> bool:
                return isinstance(key, str) and any(_full(r, key) for r in regexes)

            memory.invalidate_matching(matches)
            flights.invalidated_matching(matches)
        else:
            memory.clear()
            flights.invalidated_all()

    def on_message(self, message: Invalidation) -> None:
        self.stats.invalidations_received += 1
        self.apply_locally(message)

    def on_resync(self) -> None:
        # We were deaf: anything in L1 may have been invalidated meanwhile.
        self.stats.resyncs += 1
        self.recent.note_everything()
        self.memory.clear()
        self.flights.invalidated_all()


def _full(regex: re.Pattern[str], key: str) -> bool:
    return regex.fullmatch(key) is not None
