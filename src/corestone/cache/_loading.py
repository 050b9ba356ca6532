"""Loading for the tiered cache: one flight per key, fail-safe, timeouts, locks, refresh.

A *flight* is the one task that loads a key: it reads L2, optionally takes the key's
Redis lock, runs the loader and stores the result. Every caller that misses the same key
waits on the same flight (shielded, so a caller giving up never cancels the load for the
others); with ``distributed_lock`` the flights of every process wait on one lock, and the
loser finds the winner's value in L2 instead of loading again.

A flight that was overtaken by an invalidation of its key (a write committed while the
loader was reading the old row) still answers its callers but does not store the value:
caching it would bring back what the invalidation just removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from corestone.cache._entry import Entry
from corestone.cache._remote import UNAVAILABLE
from corestone.cache.lock import RedisLock
from corestone.cache.options import CacheOptions
from corestone.errors import LoadTimeoutError
from corestone.observability.logging import get_logger

if TYPE_CHECKING:
    from corestone.cache.tiered import TieredCache

__all__ = ["Loader", "Loading"]

Loader = Callable[[], Awaitable[Any]]
log = get_logger(__name__)
_NOTHING: Any = object()


class _Flight:
    __slots__ = ("full", "invalidated", "newer_than", "scope", "stale", "tag_keys", "task")

    def __init__(
        self,
        full: str,
        scope: str,
        tag_keys: frozenset[str],
        stale: Entry | None,
        newer_than: float,
    ) -> None:
        self.full = full
        self.scope = scope
        self.tag_keys = tag_keys
        self.stale = stale
        self.newer_than = newer_than
        self.invalidated = False
        self.task: asyncio.Task[Any] | None = None


class Loading:
    """The flights of one TieredCache."""

    def __init__(self, cache: TieredCache) -> None:
        self._cache = cache
        self._flights: dict[str, _Flight] = {}

    async def load(
        self,
        full: str,
        scope: str,
        loader: Loader,
        tags: Iterable[str],
        options: CacheOptions,
        stale: Entry | None,
    ) -> Any:
        """Join (or start) the key's flight and wait for it within the options' timeouts."""
        flight = self._flights.get(full)
        if flight is None:
            now = self._cache.clock()
            if stale is not None and not _within_max_stale(stale, options, now):
                stale = None
            flight = self._begin(full, scope, loader, tags, options, stale, now)
        return await self._wait(flight, options)

    def refresh(
        self,
        full: str,
        scope: str,
        loader: Loader,
        tags: Iterable[str],
        options: CacheOptions,
        current: Entry,
    ) -> None:
        """Start a background refresh of a hot key unless one is already flying."""
        if full not in self._flights:
            self._cache.stats.eager_refreshes += 1
            self._begin(full, scope, loader, tags, options, current, current.fresh_until)

    def _begin(
        self,
        full: str,
        scope: str,
        loader: Loader,
        tags: Iterable[str],
        options: CacheOptions,
        stale: Entry | None,
        newer_than: float,
    ) -> _Flight:
        tag_keys = frozenset(self._cache._tag_keys(scope, tags))
        flight = _Flight(full, scope, tag_keys, stale, newer_than)
        flight.task = asyncio.get_running_loop().create_task(
            self._fly(flight, loader, tags, options), name=f"cache-load:{full[:80]}"
        )
        flight.task.add_done_callback(_consume)
        self._flights[full] = flight
        return flight

    async def _wait(self, flight: _Flight, options: CacheOptions) -> Any:
        task = flight.task
        assert task is not None
        stats = self._cache.stats
        soft = options.soft_timeout if options.fail_safe else None
        hard = options.hard_timeout
        try:
            if soft is not None and (hard is None or soft < hard):
                done, _ = await asyncio.wait({task}, timeout=soft)
                if not done and flight.stale is not None:
                    stats.load_timeouts += 1
                    stats.stale_served += 1
                    return flight.stale.value
                hard = None if hard is None else hard - soft
            if hard is None:
                return await asyncio.shield(task)
            done, _ = await asyncio.wait({task}, timeout=hard)
            if done:
                return task.result()
            stats.load_timeouts += 1
            if options.fail_safe and flight.stale is not None:
                stats.stale_served += 1
                return flight.stale.value
            raise LoadTimeoutError(flight.full, options.hard_timeout or hard)
        except LoadTimeoutError:
            raise
        except Exception:
            if options.fail_safe and flight.stale is not None:
                stats.stale_served += 1
                return flight.stale.value
            raise

    async def _fly(
        self, flight: _Flight, loader: Loader, tags: Iterable[str], options: CacheOptions
    ) -> Any:
        cache = self._cache
        lock: RedisLock | None = None
        try:
            found = await cache.read_l2(flight.full)
            if found is not None:
                if found.fresh_until > max(cache.clock(), flight.newer_than):
                    return found.value
                if _within_max_stale(found, options, cache.clock()) and (
                    flight.stale is None or found.fresh_until > flight.stale.fresh_until
                ):
                    flight.stale = found
            if options.distributed_lock and cache.remote is not None:
                lock, value = await self._lock_or_value(flight, options)
                if value is not _NOTHING:
                    return value
            value = await self._run(flight, loader, options)
            if not flight.invalidated:
                await cache.store(flight.full, flight.scope, value, tags, options)
            return value
        finally:
            if lock is not None and cache.remote is not None:
                await cache.remote.call("unlock", lock.release)
            if self._flights.get(flight.full) is flight:
                del self._flights[flight.full]

    async def _run(self, flight: _Flight, loader: Loader, options: CacheOptions) -> Any:
        cache = self._cache
        cache.stats.loads += 1
        started = time.perf_counter()
        try:
            value = await loader()
        except Exception as error:
            cache.stats.load_errors += 1
            log.warning("cache loader failed", key=flight.full[:200], error=repr(error))
            self._throttle(flight, options)
            raise
        finally:
            observe = cache.observe_load
            if observe is not None:
                observe("load", time.perf_counter() - started)
        return value

    def _throttle(self, flight: _Flight, options: CacheOptions) -> None:
        """After a failed load, let the stale value count as fresh for a short while."""
        stale = flight.stale
        if not options.fail_safe or stale is None or not options.fail_safe_throttle:
            return
        now = self._cache.clock()
        until = now + options.fail_safe_throttle
        keep = options.fail_safe_throttle + max(0.0, stale.fresh_until + options.max_stale - now)
        self._cache.memory.set(
            flight.full, Entry(stale.value, until, until), ttl=keep, tags=flight.tag_keys
        )

    async def _lock_or_value(
        self, flight: _Flight, options: CacheOptions
    ) -> tuple[RedisLock | None, Any]:
        """Hold the key's lock (value _NOTHING), or the value another process loaded."""
        cache = self._cache
        remote = cache.remote
        assert remote is not None
        lock = remote.store.lock(_lock_key(flight), lease=options.lock_lease)
        delay = 0.002
        while True:
            acquired = await remote.call("lock", lambda: lock.acquire(wait=0))
            if acquired is UNAVAILABLE:
                return None, _NOTHING  # Redis is away: load here rather than not at all
            if acquired:
                found = await cache.read_l2(flight.full)
                if found is not None and found.fresh_until > max(cache.clock(), flight.newer_than):
                    await remote.call("unlock", lock.release)
                    return None, found.value
                return lock, _NOTHING
            cache.stats.lock_waits += 1
            await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter, not secrets
            delay = min(delay * 2, 0.05)
            found = await cache.read_l2(flight.full)
            if found is not None and found.fresh_until > max(cache.clock(), flight.newer_than):
                return None, found.value

    # -- invalidation of flights ----------------------------------------------------------

    def invalidated_keys(self, fulls: Iterable[str]) -> None:
        if not self._flights:
            return
        for full in fulls:
            flight = self._flights.get(full)
            if flight is not None:
                flight.invalidated = True

    def invalidated_tags(self, tag_keys: Iterable[str]) -> None:
        if not self._flights:
            return
        touched = set(tag_keys)
        for flight in self._flights.values():
            if not flight.tag_keys.isdisjoint(touched):
                flight.invalidated = True

    def invalidated_matching(self, matches: Callable[[str], bool]) -> None:
        for flight in self._flights.values():
            if matches(flight.full):
                flight.invalidated = True

    def invalidated_all(self) -> None:
        for flight in self._flights.values():
            flight.invalidated = True

    async def aclose(self) -> None:
        tasks = [flight.task for flight in self._flights.values() if flight.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._flights.clear()


def _within_max_stale(entry: Entry, options: CacheOptions, now: float) -> bool:
    return options.fail_safe and entry.fresh_until + options.max_stale > now


def _lock_key(flight: _Flight) -> str:
    """``{scope}#lock{rest}``: beside the entry, never equal to an entry or a tag key."""
    rest = flight.full[len(flight.scope) :]
    return f"{flight.scope}#lock{rest}"


def _consume(task: asyncio.Task[Any]) -> None:
    # Callers may all have given up (timeouts); the outcome was logged and counted.
    if not task.cancelled():
        task.exception()
