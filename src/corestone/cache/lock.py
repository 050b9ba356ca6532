"""A Redis lock for single-flight across processes, whose lease follows the holder.

``SET key token NX PX lease`` takes the lock; release and extend are Lua scripts that act
only while the key still holds *our* random token, so a holder that lost its lease (a
long GC pause, a network partition) can never free or prolong a lock someone else has
taken since. While the lock is held a watchdog task renews the lease every ``lease/3``: a
loader slower than the lease keeps the lock instead of letting a second loader in, and a
crashed process stops renewing, so its lock lapses after at most one lease.

This is a best-effort lock for avoiding duplicate work (cache stampedes), not a fencing
mechanism for correctness: on a single Redis with failover, a promoted replica may not
know about a lock. Targets a single Redis, not Cluster.
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
from types import TracebackType
from typing import TYPE_CHECKING

from corestone.cache import _lua
from corestone.clock import Clock, monotonic
from corestone.observability.logging import get_logger

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["RedisLock"]

log = get_logger(__name__)


# Background releases of possibly-taken locks after a cancelled acquire (kept referenced).
_ORPHANS: set[asyncio.Task[None]] = set()


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisLock:
    """One named lock; one holder at a time across every process sharing the Redis.

    Not re-entrant, and one instance is one attempt at a time: ``acquire`` on a held
    instance raises ``RuntimeError``. Use ``async with`` (waits until acquired, always
    releases) so the watchdog never outlives the work. ``held`` is this instance's view:
    it turns false on release and when the watchdog finds the lease gone.
    ``watchdog=False`` makes the lease a hard limit (the lock lapses after ``lease``
    seconds whatever the holder is doing) — for work that must not hold a lock longer.
    ``clock`` measures the wait and the lease (inject a ManualClock in tests).
    """

    def __init__(
        self,
        client: Redis,
        key: str,
        *,
        lease: float = 10.0,
        poll_min: float = 0.005,
        poll_max: float = 0.1,
        watchdog: bool = True,
        clock: Clock = monotonic,
    ) -> None:
        if lease <= 0:
            raise ValueError("lease must be positive")
        if not 0 < poll_min <= poll_max:
            raise ValueError("need 0 < poll_min <= poll_max")
        self.client = client
        self.key = key
        self.lease = lease
        self.poll_min = poll_min
        self.poll_max = poll_max
        self.watchdog = watchdog
        self._clock = clock
        # register_script only hashes the source; redis-py loads it on first NOSCRIPT.
        self._release_script: AsyncScript = client.register_script(_lua.LOCK_RELEASE)
        self._extend_script: AsyncScript = client.register_script(_lua.LOCK_EXTEND)
        self._token: bytes | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._expires: float | None = None

    @property
    def held(self) -> bool:
        if self._token is None:
            return False
        # Without a watchdog the lease is a hard limit: past it, someone else may hold it.
        return self._expires is None or self._clock() < self._expires

    async def _try_once(self, token: bytes) -> bool:
        return bool(await self.client.set(self.key, token, nx=True, px=_ms(self.lease)))

    async def _attempt(self, token: bytes) -> bool:
        try:
            return await self._try_once(token)
        except BaseException:
            # Cancelled (a caller's timeout) or failed after the SET may have reached Redis:
            # the lock could be ours with nobody knowing the token, blocking everyone for a
            # whole lease. Release it in the background (token-checked, so harmless if not).
            self._release_orphan(token)
            raise

    def _release_orphan(self, token: bytes) -> None:
        async def release() -> None:
            try:
                await self._release_script(keys=[self.key], args=[token])
            except Exception as exc:  # noqa: BLE001 — best effort; the lease lapses anyway
                log.debug("cache.lock.orphan_release_failed", key=self.key, error=repr(exc))

        try:
            task = asyncio.get_running_loop().create_task(release())
        except RuntimeError:  # the loop is going away: the lease will lapse
            return
        _ORPHANS.add(task)
        task.add_done_callback(_ORPHANS.discard)

    async def acquire(self, *, wait: float | None = 0) -> bool:
        """Take the lock; ``wait`` seconds at most (0: one attempt, None: until acquired).

        Polls with jittered exponential backoff between ``poll_min`` and ``poll_max`` so
        many waiters do not hit Redis in lockstep. Returns whether the lock is now held.
        """
        if self._token is not None:
            raise RuntimeError(f"lock {self.key!r} is already held by this instance")
        token = secrets.token_hex(16).encode()
        deadline = None if wait is None else self._clock() + max(0.0, wait)
        delay = self.poll_min
        while True:
            sent_at = self._clock()  # the lease runs from the server's receipt, a bit later
            if await self._attempt(token):
                break
            if deadline is None:
                pause = delay
            else:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return False
                pause = min(delay, remaining)
            # Full jitter in [pause/2, pause]: spread, but never a busy spin.
            await asyncio.sleep(pause * (0.5 + random.random() / 2))  # noqa: S311 — jitter
            delay = min(self.poll_max, delay * 2)
        self._token = token
        self._expires = None if self.watchdog else sent_at + self.lease
        if self.watchdog:
            self._watchdog = asyncio.create_task(
                self._keep_alive(token), name=f"corestone-lock-watchdog:{self.key}"
            )
        return True

    async def extend(self, lease: float | None = None) -> bool:
        """Renew the lease (default: the configured one) if we still hold the lock."""
        token = self._token
        if token is None:
            return False
        duration = lease if lease is not None else self.lease
        sent_at = self._clock()
        extended = bool(await self._extend_script(keys=[self.key], args=[token, _ms(duration)]))
        if extended and self._expires is not None:
            self._expires = sent_at + duration
        return extended

    async def _keep_alive(self, token: bytes) -> None:
        """Renew every lease/3; give up when the lease is gone or could not be renewed in time."""
        interval = self.lease / 3
        last_ok = self._clock()
        while self._token == token:
            await asyncio.sleep(interval)
            if self._token != token:
                return
            try:
                extended = bool(
                    await self._extend_script(keys=[self.key], args=[token, _ms(self.lease)])
                )
            except Exception as exc:  # noqa: BLE001 — Redis hiccup: retry until the lease runs out
                if self._clock() - last_ok < self.lease:
                    log.warning("cache.lock.extend_failed", key=self.key, error=repr(exc))
                    continue
                extended = False
            if not extended:
                if self._token == token:
                    self._token = None
                    log.warning("cache.lock.lost", key=self.key)
                return
            last_ok = self._clock()

    def _stop_watchdog(self) -> None:
        # Not awaited: a renewal already in flight finds the token gone and does nothing,
        # and awaiting here could swallow a cancellation aimed at the caller.
        task, self._watchdog = self._watchdog, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def release(self) -> bool:
        """Give the lock up; returns False when it was no longer ours (lease lost)."""
        token, self._token = self._token, None
        self._stop_watchdog()
        if token is None:
            return False
        try:
            return bool(await self._release_script(keys=[self.key], args=[token]))
        except BaseException:
            # Cancelled or failed mid-release: finish in the background rather than make
            # every other process wait out the lease.
            self._release_orphan(token)
            raise

    async def __aenter__(self) -> RedisLock:
        await self.acquire(wait=None)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()
