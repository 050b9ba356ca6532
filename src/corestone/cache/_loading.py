"""Loading for the tiered cache: one flight per key, fail-safe, timeouts, locks, refresh.

A *flight* (see ``_flights``) is the one task that loads a key: it reads L2 and the tags'
generations, optionally takes the key's Redis lock, runs the loader and stores the
result against those generations. Every caller that misses the same key waits on the
same flight (shielded, so a caller giving up never cancels the load for the others);
with ``distributed_lock`` the flights of every process wait on one lock, and the loser
finds the winner's value in L2 instead of loading again. A load that says its data comes
from a snapshot taken before a recent invalidation (``not_before``) runs alone and stores
nothing. The helpers here take the cache's :class:`~._core.CacheCore`, never the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Any

from corestone.cache._core import CacheCore
from corestone.cache._entry import Entry
from corestone.cache._flights import Flight
from corestone.cache._remote import UNAVAILABLE
from corestone.cache.lock import RedisLock
from corestone.cache.options import CacheOptions
from corestone.errors import LoadTimeoutError, UnavailableError
from corestone.observability.logging import get_logger

__all__ = ["Loader", "Loading"]

Loader = Callable[[], Awaitable[Any]]
log = get_logger(__name__)
_NOTHING: Any = object()
_RELEASE_TIMEOUT = 0.5


class Loading:
    """Starts, joins and waits for the flights of one cache."""

    def __init__(self, core: CacheCore) -> None:
        self._core = core
        self._flights = core.flights.joinable
        self._tasks = core.flights.tasks  # every flight, joinable or not

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
        core = self._core
        private = not_before is not None and core.recent.since((full, *tag_keys), not_before)
        flight = None if private else self._flights.get(full)
        if flight is None:
            now = core.wall_clock()
            if stale is not None and not _within_max_stale(stale, options, now):
                stale = None
            flight = Flight(
                full, scope, tag_keys, stale, now, private=private, not_before=not_before
            )
            self._begin(flight, loader, options)
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
            self._core.stats.eager_refreshes += 1
            flight = Flight(
                full,
                scope,
                tag_keys,
                current,
                current.fresh_until,
                private=False,
                not_before=None,
            )
            self._begin(flight, loader, options)

    def _begin(self, flight: Flight, loader: Loader, options: CacheOptions) -> None:
        full = flight.full
        flight.task = asyncio.get_running_loop().create_task(
            self._fly(flight, loader, options), name=f"cache-load:{full[:80]}"
        )
        flight.task.add_done_callback(_consume)
        self._tasks.add(flight.task)
        flight.task.add_done_callback(self._tasks.discard)
        if not flight.private:
            self._flights[full] = flight

    async def _wait(self, flight: Flight, options: CacheOptions) -> Any:
        task = flight.task
        assert task is not None
        stats = self._core.stats
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

    async def _fly(self, flight: Flight, loader: Loader, options: CacheOptions) -> Any:
        core = self._core
        lock: RedisLock | None = None
        try:
            # The generations are read before the loader runs (so before any snapshot it
            # takes begins): a store against them is refused if a tag moved since.
            if flight.private:
                found, generations, storable = await core.read_l2(flight.full), None, False
            else:
                found, generations, storable = await core.read_for_load(
                    flight.full, flight.tag_keys, flight.not_before
                )
                if not storable:  # its snapshot predates an invalidation: nobody else joins
                    core.flights.finished(flight)
            if found is not None and not flight.invalidated:
                now = core.wall_clock()
                if found.fresh_until > max(now, flight.newer_than):
                    return found.value
                if _within_max_stale(found, options, now) and (
                    flight.stale is None or found.fresh_until > flight.stale.fresh_until
                ):
                    flight.stale = found
            if options.distributed_lock and core.remote is not None and not flight.private:
                lock, value = await self._lock_or_value(flight, options)
                if value is not _NOTHING:
                    return value
            value = await self._run(flight, loader, options)
            if storable and not flight.invalidated:
                await core.store_loaded(flight.full, value, flight.tag_keys, options, generations)
            return value
        finally:
            if lock is not None:
                await _release(lock)
            self._core.flights.finished(flight)

    async def _run(self, flight: Flight, loader: Loader, options: CacheOptions) -> Any:
        core = self._core
        core.stats.loads += 1
        started = core.clock()
        try:
            value = await loader()
        except Exception as error:
            core.stats.load_errors += 1
            log.warning("cache loader failed", key=flight.full[:200], error=repr(error))
            self._throttle(flight, options)
            raise
        finally:
            observe = core.observe
            if observe is not None:
                observe("load", core.clock() - started)
        return value

    def _throttle(self, flight: Flight, options: CacheOptions) -> None:
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
        now = self._core.wall_clock()
        until = now + options.fail_safe_throttle
        keep = options.fail_safe_throttle + max(0.0, stale.fresh_until + options.max_stale - now)
        self._core.memory.set(
            flight.full, Entry(stale.value, until, until), ttl=keep, tags=flight.tag_keys
        )

    async def _lock_or_value(
        self, flight: Flight, options: CacheOptions
    ) -> tuple[RedisLock | None, Any]:
        """Hold the key's lock (value _NOTHING), or the value another process loaded.

        Waiting ends when the lock is ours, when the holder's value appears in L2, when
        Redis is away (then we load here rather than not at all) or after ``hard_timeout``
        (the caller has given up by then; the load proceeds without the lock).
        """
        core = self._core
        remote = core.remote
        assert remote is not None
        lock = remote.store.lock(_lock_key(flight), lease=options.lock_lease)
        clock = core.clock
        deadline = None if options.hard_timeout is None else clock() + options.hard_timeout
        delay = 0.002
        while True:
            acquired = await remote.call("lock", lambda: lock.acquire(wait=0))
            if acquired is UNAVAILABLE:
                return None, _NOTHING
            if acquired:
                try:
                    found = await core.read_l2(flight.full)
                except BaseException:  # cancelled (the cache is closing): free the lock now
                    await _release(lock)
                    raise
                if found is not None and found.fresh_until > max(
                    core.wall_clock(), flight.newer_than
                ):
                    await _release(lock)
                    return None, found.value
                return lock, _NOTHING
            core.stats.lock_waits += 1
            if deadline is not None and clock() > deadline:
                return None, _NOTHING
            await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter
            delay = min(delay * 2, 0.05)
            found = await core.read_l2(flight.full)
            if found is not None and found.fresh_until > max(core.wall_clock(), flight.newer_than):
                return None, found.value

    async def aclose(self) -> None:
        await self._core.flights.aclose()


async def _release(lock: RedisLock) -> None:
    """Release directly, not through the breaker: a lock must never outlive its load.

    ``RedisLock.release`` stops the watchdog first and finishes a failed release in the
    background, so at worst the lease runs out.
    """
    with contextlib.suppress(Exception):
        await asyncio.wait_for(lock.release(), _RELEASE_TIMEOUT)


def _within_max_stale(entry: Entry, options: CacheOptions, now: float) -> bool:
    return options.fail_safe and entry.fresh_until + options.max_stale > now


def _lock_key(flight: Flight) -> str:
    """``{scope}#lock{rest}``: beside the entry, never equal to an entry or a tag key."""
    rest = flight.full[len(flight.scope) :]
    return f"{flight.scope}#lock{rest}"


def _consume(task: asyncio.Task[Any]) -> None:
    # Callers may all have given up (timeouts); the outcome was logged and counted.
    if not task.cancelled():
        task.exception()
