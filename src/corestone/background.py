"""Passes in the background: the loop under every polling component of corestone.

The email sender, the events relay and consumers, and saga recovery each run *passes*
(claim a batch, work on it) in a task of their own, and each needs the same things
right: a pass at once when woken (a commit), else every ``poll_seconds``; again at once
after a full pass, since more is waiting; a failed pass logged and remembered for the
health check, never the end of the loop; a stop that lets the pass in hand finish for
up to ``drain_seconds``, then cancels it and waits until it has really ended, even when
the stop itself is cancelled (a component's stop timeout), so no pass outlives the
shutdown and touches a closed database. :class:`PassLoop` is that loop, once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from corestone.observability.logging import get_logger

__all__ = ["PassLoop", "cancel_and_wait"]

log = get_logger(__name__)


class PassLoop:
    """Run ``run_pass`` in a background task until stopped.

    ``run_pass`` returns whether more work is waiting (a full batch): the next pass then
    starts at once, else after a wake or ``poll_seconds``. ``wait_first`` waits before
    the first pass (the process may still be migrating its schema right after start).
    ``pause_after`` picks the wait after a failed pass (default ``poll_seconds``; e.g. a
    breaker's retry-after). The owner exposes :attr:`stopping` to passes that should
    stop between items.
    """

    def __init__(
        self,
        name: str,
        run_pass: Callable[[], Awaitable[bool]],
        *,
        poll_seconds: float,
        drain_seconds: float,
        wait_first: bool = True,
        pause_after: Callable[[Exception], float] | None = None,
    ) -> None:
        if poll_seconds <= 0 or drain_seconds < 0:
            raise ValueError("poll_seconds must be positive and drain_seconds not negative")
        self.name = name
        self._run_pass = run_pass
        self.poll_seconds = poll_seconds
        self.drain_seconds = drain_seconds
        self._wait_first = wait_first
        self._pause_after = pause_after
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        """``repr`` of the last pass's failure (clipped), None once a pass succeeds."""

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def died(self) -> bool:
        """The loop ended while it should run (a bug, or a BaseException out of a pass)."""
        return self._task is not None and self._task.done()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wake(self) -> None:
        """Start a pass now instead of at the next poll."""
        self._wake.set()

    def start(self) -> None:
        if self.running:
            return
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name=f"corestone-{self.name}")

    async def stop(self) -> None:
        """Let the pass in hand finish (up to ``drain_seconds``), cancel it, wait. Idempotent.

        The loop's task has ended when this returns, even when this call is cancelled
        meanwhile; that cancellation is raised once the task is done.
        """
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        self._wake.set()
        try:
            # wait(), not wait_for(shield()): a task that ended with an error must not
            # make the stop raise it.
            await asyncio.wait([task], timeout=self.drain_seconds)
        finally:
            await cancel_and_wait(task, self.name)

    async def _loop(self) -> None:
        more = not self._wait_first
        pause = self.poll_seconds
        while not self._stop.is_set():
            if not more:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), pause)
                self._wake.clear()
                if self._stop.is_set():
                    return
            try:
                more = await self._run_pass()
            except Exception as error:  # noqa: BLE001 - the database may be back next pass
                log.warning("background pass failed", loop=self.name, error=repr(error))
                self.last_error, more = repr(error)[:200], False
                pause = self._pause_after(error) if self._pause_after else self.poll_seconds
            else:
                self.last_error, pause = None, self.poll_seconds


async def cancel_and_wait(task: asyncio.Future[Any], name: str) -> None:
    """Cancel ``task`` and wait until it has ended, even if the caller is cancelled meanwhile.

    ``suppress(CancelledError): await task`` would swallow a cancellation of the caller
    (a stop timeout) and return as if stopped; this re-raises it once the task is done.
    """
    task.cancel()
    interrupted = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            interrupted = True
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("background loop ended with an error", loop=name, error=repr(error))
    if interrupted:
        raise asyncio.CancelledError
