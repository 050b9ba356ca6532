"""L2 access for the tiered cache: behind a breaker, never raising, never forgetting a delete.

Every Redis call goes through the ``cache`` breaker and a short timeout; any failure is
counted and reported as :data:`UNAVAILABLE` so the cache carries on as L1 + loader.

Writes made while Redis is unreachable cannot delete the older values L2 still holds, and
other instances cannot hear about them. So every invalidation that could not be applied
is remembered (bounded; past the bound the whole namespace is flushed instead) and
replayed, to Redis and on the backplane, before L2 is read again. Until the replay
succeeds L2 is treated as unavailable: a value it holds may be one we meant to delete.

An invalidation Redis refuses for good (a WRONGTYPE, a script error: anything that is not
"unreachable") would never succeed, so it is not queued: it is dropped with a warning,
counted (``invalidations_dropped``) and replaced by a flush of the whole namespace, which
cannot fail that way. Pattern invalidations and flushes never delete the tag index (tag
sets, tag generations) or locks: tags must keep reaching their entries afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import TYPE_CHECKING, Final, TypeVar

from corestone.cache.backplane import Backplane, Invalidation
from corestone.cache.keys import is_index_key
from corestone.cache.stats import CacheStats
from corestone.clock import Clock, monotonic
from corestone.errors import CircuitOpenError
from corestone.observability.logging import get_logger
from corestone.resilience.breaker import CircuitBreaker
from corestone.resilience.integrations import redis_unavailable

if TYPE_CHECKING:
    from corestone.cache.redis import RedisCache

__all__ = ["UNAVAILABLE", "Remote", "Unavailable"]

T = TypeVar("T")
log = get_logger(__name__)

MAX_PENDING: Final = 10_000
LOG_EVERY: Final = 5.0


class Unavailable(Enum):
    """The single value meaning "L2 could not be asked"."""

    UNAVAILABLE = "unavailable"


UNAVAILABLE: Final = Unavailable.UNAVAILABLE


class _RefusedError(Exception):
    """Redis answered an invalidation with a permanent error: replaying cannot help."""


class Remote:
    """The L2 store and the backplane as the tiered cache sees them."""

    def __init__(
        self,
        store: RedisCache,
        backplane: Backplane,
        breaker: CircuitBreaker,
        stats: CacheStats,
        *,
        namespace_glob: str,
        timeout: float = 0.5,
        observe: Callable[[str, float], None] | None = None,
        clock: Clock = monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self.store = store
        self.backplane = backplane
        self.breaker = breaker
        self._stats = stats
        self._namespace_glob = namespace_glob
        self._timeout = timeout
        self._observe = observe
        self._clock = clock  # rate-limits the failure log
        self._wall_clock = wall_clock  # stamps the flush messages it sends
        self._pending: list[Invalidation] = []
        self._pending_items = 0
        self._overflowed = False
        self._suspect_tags: set[str] = set()  # tags whose invalidation Redis refused
        self._replay_lock = asyncio.Lock()
        self._replayer: asyncio.Task[None] | None = None
        self._last_logged = -LOG_EVERY
        self._unlogged = 0

    @property
    def pending(self) -> int:
        return self._pending_items

    async def call(self, op: str, fn: Callable[[], Awaitable[T]]) -> T | Unavailable:
        """Run one L2 operation, or say it could not run; never raises an Exception."""
        if (self._pending_items or self._overflowed) and not await self._replay():
            return UNAVAILABLE
        return await self._guarded(op, fn)

    async def _guarded(
        self, op: str, fn: Callable[[], Awaitable[T]], *, refused: bool = False
    ) -> T | Unavailable:
        """Run ``fn`` behind the breaker; with ``refused``, raise :class:`_RefusedError` for an
        error that is not unavailability instead of reporting it as UNAVAILABLE."""
        breaker = self.breaker
        try:
            permit = breaker.permit()
        except CircuitOpenError:
            self._stats.l2_skipped += 1
            return UNAVAILABLE
        clock = breaker.clock
        started = clock()
        try:
            async with asyncio.timeout(self._timeout):
                result = await fn()
        except Exception as error:
            elapsed = clock() - started
            unavailable = redis_unavailable(error)
            breaker.record_outcome(permit, elapsed, failed=unavailable)
            self._stats.l2_errors += 1
            if refused and not unavailable:
                raise _RefusedError(repr(error)) from error
            self._log_failure(op, error, unavailable)
            return UNAVAILABLE
        except BaseException:
            breaker.release(permit)
            raise
        elapsed = clock() - started
        breaker.record_outcome(permit, elapsed)
        if self._observe is not None:
            self._observe(op, elapsed)
        return result

    def _log_failure(self, op: str, error: Exception, unavailable: bool) -> None:
        """One warning per ``LOG_EVERY`` seconds: an outage must not flood the logs."""
        now = self._clock()
        if now - self._last_logged < LOG_EVERY:
            self._unlogged += 1
            return
        log.warning(
            "cache L2 call failed",
            op=op,
            error=repr(error),
            unavailable=unavailable,
            similar_failures_not_logged=self._unlogged,
        )
        self._last_logged = now
        self._unlogged = 0

    async def invalidate(self, message: Invalidation) -> None:
        """Apply ``message`` to L2 and announce it; remember it if either cannot happen."""
        try:
            applied = (
                not self._pending_items
                and not self._overflowed
                and await self._apply_or_drop(message)
            )
        except asyncio.CancelledError:
            # The caller gave up, but this instance has applied it already: Redis and the
            # other instances must still hear of it, or they keep serving the old value.
            self.remember(message)
            raise
        if not applied:
            self.remember(message)
            if not self._replay_lock.locked():
                await self._replay()
        elif self._flush_due() and not self._replay_lock.locked():
            await self._replay()  # the message was refused: flush now

    def _flush_due(self) -> bool:
        return self._overflowed

    async def _apply_or_drop(self, message: Invalidation) -> bool:
        """``_apply``, except that a message Redis refuses for good becomes a flush."""
        try:
            return await self._apply(message)
        except _RefusedError as refusal:
            self._stats.invalidations_dropped += 1
            log.warning(
                "cache invalidation refused by Redis: dropped, flushing the namespace instead",
                kind=message.kind,
                items=len(message.items),
                error=str(refusal),
            )
            # The flush is announced as "clear": peers drop their whole L1, this entry included.
            if message.kind == "tags":
                self._suspect_tags.update(message.items)  # their keys are reset after the flush
            self._overflowed = True
            self._stats.invalidations_pending = self._pending_items + 1
            self._start_replayer()
            return True

    async def announce(self, message: Invalidation) -> None:
        """Tell the other instances (a set overwrote L2 already; they must drop L1)."""
        if await self.backplane.publish(message):
            self._stats.invalidations_sent += 1
        else:
            self.remember(message)

    async def _apply(self, message: Invalidation) -> bool:
        store = self.store
        items = list(message.items)
        result: object
        if message.kind == "keys":
            result = await self._guarded("delete", lambda: store.delete(items), refused=True)
        elif message.kind == "tags":
            result = await self._guarded(
                "invalidate_tags", lambda: store.invalidate_tags(items), refused=True
            )
        elif message.kind == "pattern":
            result = await self._guarded(
                "invalidate_pattern", lambda: _each_pattern(store, items), refused=True
            )
        else:
            result = await self._guarded(
                "clear",
                lambda: store.invalidate_pattern(self._namespace_glob, spare=is_index_key),
            )
        if result is UNAVAILABLE:
            return False
        if not await self.backplane.publish(message):
            return False
        self._stats.invalidations_sent += 1
        return True

    def remember(self, message: Invalidation) -> None:
        """Queue ``message`` to be applied to L2 and announced by the background replay."""
        if self._overflowed:
            return
        self._pending.append(message)
        self._pending_items += max(1, len(message.items))
        if self._pending_items > MAX_PENDING:
            # Too much to replay one by one: replay one namespace-wide flush instead.
            self._pending.clear()
            self._pending_items = 0
            self._overflowed = True
        self._stats.invalidations_pending = self._pending_items + int(self._overflowed)
        self._start_replayer()

    def _start_replayer(self) -> None:
        if self._replayer is None or self._replayer.done():
            # Nobody may touch L2 for a while after Redis returns; replay without them.
            self._replayer = asyncio.get_running_loop().create_task(
                self._replay_until_done(), name="cache-invalidation-replay"
            )

    async def _replay_until_done(self, interval: float = 0.25) -> None:
        while self._pending_items or self._overflowed:
            await asyncio.sleep(interval)
            await self._replay()

    async def aclose(self) -> None:
        """Stop replaying; what is still pending is lost with the process (documented)."""
        if self._replayer is not None:
            self._replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replayer
            self._replayer = None

    async def _replay(self) -> bool:
        """Apply what is pending, oldest first; True once nothing is left."""
        async with self._replay_lock:
            while self._pending:
                message = self._pending[0]
                if not await self._apply_or_drop(message):
                    self._stats.invalidations_pending = self._pending_items
                    return False
                self._pending.pop(0)
                self._pending_items -= max(1, len(message.items))
            if self._overflowed:  # after the queue: a refused message in it sets it again
                flush = Invalidation("clear", (), self.backplane.instance_id, self._wall_clock())
                if not await self._apply(flush):
                    return False
                self._overflowed = False
                if self._suspect_tags:
                    await self._reset_suspect_tags()
            self._stats.invalidations_pending = 0
            return True

    async def _reset_suspect_tags(self) -> None:
        """Delete the keys of tags whose invalidation Redis refused, then invalidate them.

        A refused tag invalidation means a corrupt tag set or generation key (a WRONGTYPE):
        left alone, every later write and invalidation of the tag would fail the same way,
        each costing a namespace flush. The flush has dropped the tag's entries; deleting
        its keys and invalidating it afresh moves its generation on, so a load that read
        the generation before the refusal still cannot store. Tried once: a tag refused
        again is only logged, never flushed for in a loop.
        """
        tags, self._suspect_tags = tuple(sorted(self._suspect_tags)), set()
        store = self.store
        if await self._guarded("reset_tags", lambda: store.reset_tags(tags)) is UNAVAILABLE:
            return
        message = Invalidation("tags", tags, self.backplane.instance_id, self._wall_clock())
        try:
            if not await self._apply(message):
                self.remember(message)  # its generation must still move on
        except _RefusedError as refusal:
            log.warning("cache tag keys still refused after a reset", error=str(refusal))


async def _each_pattern(store: RedisCache, patterns: list[str]) -> int:
    removed = 0
    for pattern in patterns:
        removed += await store.invalidate_pattern(pattern, spare=is_index_key)
    return removed
