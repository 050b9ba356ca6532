"""Bulkhead: at most N calls in flight, a bounded queue behind them, rejection beyond.

A slow dependency otherwise ties up every worker of the process; the bulkhead caps what
it may hold and turns the excess into an immediate :class:`BulkheadFullError` (HTTP 503),
which sheds load instead of queueing it without limit. One bulkhead serves one event
loop (async) or threads (sync), not both.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from corestone.errors import BulkheadFullError, InvalidInputError

__all__ = ["Bulkhead"]

P = ParamSpec("P")
T = TypeVar("T")


class Bulkhead:
    """``max_concurrent`` calls run; up to ``max_queue`` wait ``max_wait_seconds`` for a slot."""

    def __init__(
        self,
        name: str,
        *,
        max_concurrent: int,
        max_queue: int = 0,
        max_wait_seconds: float | None = None,
    ) -> None:
        if max_concurrent < 1:
            raise InvalidInputError(
                "max_concurrent: must be at least 1", field="max_concurrent", rule=">= 1"
            )
        if max_queue < 0:
            raise InvalidInputError("max_queue: must be >= 0", field="max_queue", rule=">= 0")
        self.name = name
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.max_wait_seconds = max_wait_seconds
        self.active = 0
        self.rejected = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._cond = threading.Condition()
        self._sync_waiting = 0

    @property
    def waiting(self) -> int:
        """Callers in the queue now."""
        return len(self._waiters) + self._sync_waiting

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn`` in a slot, queueing if allowed, else raise BulkheadFullError."""
        await self._enter()
        try:
            return await fn(*args, **kwargs)
        finally:
            self._leave()

    async def _enter(self) -> None:
        if self.active < self.max_concurrent and not self._waiters:
            self.active += 1
            return
        if len(self._waiters) >= self.max_queue:
            self.rejected += 1
            raise BulkheadFullError(self.name)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.max_wait_seconds):
                await waiter
        except BaseException as error:
            if waiter.done() and not waiter.cancelled():
                self._leave()  # the slot was handed to us as we gave up: pass it on
            if isinstance(error, TimeoutError):
                self.rejected += 1
                raise BulkheadFullError(self.name) from None
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _leave(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the waiter
                return
        self.active -= 1

    def call_sync(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn`` in a slot from a thread, waiting in the queue if allowed."""
        with self._cond:
            if self.active >= self.max_concurrent:
                if self._sync_waiting >= self.max_queue:
                    self.rejected += 1
                    raise BulkheadFullError(self.name)
                self._sync_waiting += 1
                try:
                    got = self._cond.wait_for(
                        lambda: self.active < self.max_concurrent, self.max_wait_seconds
                    )
                finally:
                    self._sync_waiting -= 1
                if not got:
                    self.rejected += 1
                    raise BulkheadFullError(self.name)
            self.active += 1
        try:
            return fn(*args, **kwargs)
        finally:
            with self._cond:
                self.active -= 1
                self._cond.notify()
