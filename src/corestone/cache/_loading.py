"""Loading for the tiered cache: one flight per key, fail-safe, timeouts, locks, refresh.

A *flight* is the one task that loads a key: it reads L2, optionally takes the key's
Redis lock, runs the loader and stores the result. Every caller that misses the same key
waits on the same flight (shielded, so a caller giving up never cancels the load for the
others); with ``distributed_lock`` the flights of every process wait on one lock, and the
loser finds the winner's value in L2 instead of loading again.

Invalidations overtake flights. A flight whose key (or one of its tags, or a pattern
covering it) is invalidated while it runs still answers the callers already waiting, but
it leaves the flight table at once (later callers start a fresh load), forgets its stale
value and does not store what it read: caching it would bring back what the
invalidation just removed. A load that says its data comes from a snapshot taken before
a recent invalidation (``not_before``) runs alone and stores nothing, for the same reason.
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
from corestone.errors import LoadTimeoutError, UnavailableError
from corestone.observability.logging import get_logger

if TYPE_CHECKING:
    from corestone.cache.tiered import TieredCache

__all__ = ["Loader", "Loading"]

Loader = Callable[[], Awaitable[Any]]
log = get_logger(__name__)
_NOTHING: Any = object()
_RELEASE_TIMEOUT = 0.5


class _Flight:
    __slots__ = (
        "full",
        "invalidated",
        "newer_than",
        "private",
        "scope",
        "stale",
        "tag_keys",
        "task",
    )

    def __init__(
        self,
        full: str,
        scope: str,
        tag_keys: tuple[str, ...],
        stale: Entry | None,
        newer_than: float,
        private: bool,
    ) -> None:
        self.full = full
        self.scope = scope
        self.tag_keys = tag_keys
        self.stale = stale
        self.newer_than = newer_than
        self.private = private  # not joinable, never stored
        self.invalidated = False
        self.task: asyncio.Task[Any] | None = None


class Loading:
    """The flights of one TieredCache."""

    def __init__(self, cache: TieredCache) -> None:
        self._cache = cache
        self._flights: dict[str, _Flight] = {}
        self._tasks: set[asyncio.Task[Any]] = set()  # every flight, joinable or not

    async def load(
        self,
        full: str,
        scope: str,
        loader: Loader,
        tag_keys: tuple[str, ...],
        options: CacheOptions,
        stale: Entry | None,
        not_before: float | None = None,
    ) -> Any:
        """Join (or start) the key's flight and wait for it within the options' timeouts."""
        cache = self._cache
        private = not_before is not None and cache.recent.since((full, *tag_keys), not_before)
        flight = None if private else self._flights.get(full)
        if flight is None:
            now = cache.clock()
            if stale is not None and not _within_max_stale(stale, options, now):
                stale = None
            flight = self._begin(full, scope, loader, tag_keys, options, stale, now, private)
        return await self._wait(flight, options)

    def refresh(
        self,
        full: str,
        scope: str,
        loader: Loader,
        tag_keys: tuple[str, ...],
        options: CacheOptions,
        current: Entry,
    ) -> None:
        """Start a background refresh of a hot key unless one is already flying."""
        if full not in self._flights:
            self._cache.stats.eager_refreshes += 1
            self._begin(full, scope, loader, tag_keys, options, current, current.fresh_until, False)

    def _begin(
        self,
        full: str,
        scope: str,
        loader: Loader,
        tag_keys: tuple[str, ...],
        options: CacheOptions,
        stale: Entry | None,
        newer_than: float,
        private: bool,
    ) -> _Flight:
        flight = _Flight(full, scope, tag_keys, stale, newer_than, private)
        flight.task = asyncio.get_running_loop().create_task(
            self._fly(flight, loader, options), name=f"cache-load:{full[:80]}"
        )
        flight.task.add_done_callback(_consume)
        self._tasks.add(flight.task)
        flight.task.add_done_callback(self._tasks.discard)
        if not private:
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
                stale = flight.stale
                if not done and stale is not None:
                    stats.load_timeouts += 1
                    stats.stale_served += 1
                    return stale.value
                hard = None if hard is None else hard - soft
            if hard is None:
                return await asyncio.shield(task)
            done, _ = await asyncio.wait({task}, timeout=hard)
            if done:
                return task.result()
            stats.load_timeouts += 1
            stale = flight.stale
            if options.fail_safe and stale is not None:
                stats.stale_served += 1
                return stale.value
            raise LoadTimeoutError(flight.full, options.hard_timeout or hard)
        except LoadTimeoutError:
            raise
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this caller is being cancelled
            # The flight was cancelled under us (the cache is closing): not our cancellation.
            raise UnavailableError("the cache closed while loading this key") from None
        except Exception:
            stale = flight.stale
            if options.fail_safe and stale is not None:
                stats.stale_served += 1
                return stale.value
            raise

    async def _fly(self, flight: _Flight, loader: Loader, options: CacheOptions) -> Any:
        cache = self._cache
        lock: RedisLock | None = None
        try:
            if flight.private:
                found, generations = await cache.read_l2(flight.full), None
            else:
                found, generations = await cache.read_l2_for_load(flight.full, flight.tag_keys)
            if found is not None and not flight.invalidated:
                if found.fresh_until > max(cache.clock(), flight.newer_than):
                    return found.value
                if _within_max_stale(found, options, cache.clock()) and (
                    flight.stale is None or found.fresh_until > flight.stale.fresh_until
                ):
                    flight.stale = found
            if options.distributed_lock and cache.remote is not None and not flight.private:
                lock, value = await self._lock_or_value(flight, options)
                if value is not _NOTHING:
                    return value
            value = await self._run(flight, loader, options)
            if not flight.invalidated and not flight.private:
                await cache.store(
                    flight.full, value, flight.tag_keys, options, generations=generations
                )
            return value
        finally:
            if lock is not None:
                await _release(lock)
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
        """After a failed load, let the stale value count as fresh for a short while.

        Never for a flight that was invalidated: that would bring back a deleted value.
        """
        stale = flight.stale
        if (
            flight.invalidated
            or flight.private
            or not options.fail_safe
            or stale is None
            or not options.fail_safe_throttle
        ):
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
        """Hold the key's lock (value _NOTHING), or the value another process loaded.

        Waiting ends when the lock is ours, when the holder's value appears in L2, when
        Redis is away (then we load here rather than not at all) or after ``hard_timeout``
        (the caller has given up by then; the load proceeds without the lock).
        """
        cache = self._cache
        remote = cache.remote
        assert remote is not None
        lock = remote.store.lock(_lock_key(flight), lease=options.lock_lease)
        deadline = None if options.hard_timeout is None else time.monotonic() + options.hard_timeout
        delay = 0.002
        while True:
            acquired = await remote.call("lock", lambda: lock.acquire(wait=0))
            if acquired is UNAVAILABLE:
                return None, _NOTHING
            if acquired:
                found = await cache.read_l2(flight.full)
                if found is not None and found.fresh_until > max(cache.clock(), flight.newer_than):
                    await _release(lock)
                    return None, found.value
                return lock, _NOTHING
            cache.stats.lock_waits += 1
            if deadline is not None and time.monotonic() > deadline:
                return None, _NOTHING
            await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter
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
                self._overtaken(flight)

    def invalidated_tags(self, tag_keys: Iterable[str]) -> None:
        if not self._flights:
            return
        touched = set(tag_keys)
        for flight in list(self._flights.values()):
            if not touched.isdisjoint(flight.tag_keys):
                self._overtaken(flight)

    def invalidated_matching(self, matches: Callable[[str], bool]) -> None:
        for flight in list(self._flights.values()):
            if matches(flight.full):
                self._overtaken(flight)

    def invalidated_all(self) -> None:
        for flight in list(self._flights.values()):
            self._overtaken(flight)

    def _overtaken(self, flight: _Flight) -> None:
        flight.invalidated = True
        flight.stale = None
        if self._flights.get(flight.full) is flight:
            del self._flights[flight.full]  # later callers start a fresh load

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._flights.clear()


async def _release(lock: RedisLock) -> None:
    """Release directly, not through the breaker: a lock must never outlive its load.

    ``RedisLock.release`` stops the watchdog first and finishes a failed release in the
    background, so at worst the lease runs out.
    """
    with contextlib.suppress(Exception):
        await asyncio.wait_for(lock.release(), _RELEASE_TIMEOUT)


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
