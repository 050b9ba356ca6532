"""The live feed: one per process, it follows the outbox and fans events out to the streams.

Every process that serves live streams runs one :class:`EventFeed` (a component). On a
wake (:mod:`corestone.push.wakes`: the relay marked events sent, here or in another
process) or at the latest every ``poll_seconds``, it runs ONE query, the sent events
after the last position it read (:func:`corestone.events.log.read_after`), encodes each
event's SSE frame once, and offers the same bytes to every stream of that event's
workspace (:meth:`LiveStream.offer`: never waits; a full buffer cuts that client off).
So a thousand streams cost one query per wake, not a thousand.

A stream opens (:meth:`EventFeed.open`) only for a caller ``authorize`` lets in (it
raises, for example ``NotFoundError``, before anything is streamed), and only below
``max_streams`` in the process and ``max_streams_per_user`` for its user (else
:class:`~corestone.errors.UnavailableError`: 503 with Retry-After; the stream counts
from before ``authorize`` runs, so concurrent opens cannot pass the caps together). With
a ``Last-Event-ID`` it replays the workspace's events after that position from the
outbox, if the outbox still holds all of them; otherwise (pruned, garbage, from the
future, more than ``max_replay`` events or more than the buffer's ``buffer_bytes``) the
first event is ``reset``. The stream joins the feed before ``authorize`` runs (a
revocation dispatched meanwhile ends it) and before the replay is read, and frames at
or below the last position written are skipped, so nothing falls between the replay
and the live events.

Membership is checked again: when an event of a type in ``revocations`` (such as
``member.removed``) names the stream's user in its payload, that stream gets
``revoked`` and ends, before any later event; and every ``recheck_seconds`` ``authorize``
runs again for each open (user, workspace) (cached by the application, usually).

One timer per process (not per stream) offers a heartbeat comment to every stream every
``heartbeat_seconds``. When the process starts shutting down (the health registry's
``mark_shutting_down``, which the server calls on SIGTERM before it drains), every
stream ends at once and new ones are refused, so no stream holds the drain open.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from corestone.background import cancel_and_wait
from corestone.clock import Clock, monotonic
from corestone.db.database import Database
from corestone.errors import NotFoundError, PermissionDeniedError, UnavailableError
from corestone.events.log import LoggedEvent, read_after, read_window
from corestone.observability.health import CheckResult, HealthRegistry, HealthStatus
from corestone.observability.logging import get_logger
from corestone.observability.metrics import Metrics
from corestone.push.sse import (
    HEARTBEAT,
    RESET,
    RETRY,
    REVOKED,
    LiveStream,
    LiveStreamResponse,
    encode_frame,
)
from corestone.push.wakes import LocalWakes

__all__ = ["Authorize", "EventFeed"]

log = get_logger(__name__)

Authorize = Callable[[Any, Any], Awaitable[object]]
"""``authorize(user, workspace)``: returns if ``user`` may follow ``workspace``, else raises
(``NotFoundError`` for a stranger, as every other route of the workspace would)."""

_DENIED = (NotFoundError, PermissionDeniedError)
_MAX_ID_DIGITS = 19


class EventFeed:
    """This process's feed of the outbox to its live streams (see the module doc)."""

    name = "live-streams"

    def __init__(
        self,
        database: Database,
        wakes: LocalWakes,
        *,
        authorize: Authorize,
        revocations: Mapping[str, str] | None = None,
        metrics: Metrics | None = None,
        health: HealthRegistry | None = None,
        max_streams: int = 10_000,
        max_streams_per_user: int = 32,
        buffer_frames: int = 1_000,
        buffer_bytes: int = 1024 * 1024,
        poll_seconds: float = 1.0,
        heartbeat_seconds: float = 10.0,
        recheck_seconds: float = 60.0,
        batch: int = 500,
        max_replay: int = 10_000,
        retry_after_seconds: float = 5.0,
        clock: Clock = monotonic,
    ) -> None:
        if min(max_streams, max_streams_per_user, buffer_frames, buffer_bytes, batch) < 1:
            raise ValueError("stream caps, buffer sizes and batch must be >= 1")
        if max_replay < 1:
            raise ValueError("max_replay must be >= 1")
        if min(poll_seconds, heartbeat_seconds, recheck_seconds) <= 0:
            raise ValueError("poll, heartbeat and recheck intervals must be > 0")
        self.database, self.wakes, self.authorize = database, wakes, authorize
        self.revocations = dict(revocations or {})
        self.health = health
        self.max_streams, self.max_replay = max_streams, max_replay
        self.max_streams_per_user = max_streams_per_user
        self.buffer = (buffer_frames, buffer_bytes)
        self.poll_seconds, self.heartbeat_seconds = poll_seconds, heartbeat_seconds
        self.recheck_seconds, self.batch = recheck_seconds, batch
        self.retry_after, self.clock = retry_after_seconds, clock
        self.position: int | None = None
        """The last position read (None until the first read)."""
        self._streams: dict[str, set[LiveStream]] = {}
        self._count = 0
        self._per_user: dict[str, int] = {}
        self._closing = False
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._recheck: asyncio.Task[int] | None = None
        self._removers: list[Callable[[], None]] = []
        self._error: str | None = None
        m = metrics or Metrics()
        self._open = m.gauge(
            "live_streams_open",
            "Live (SSE) streams open in this process.",
            multiprocess_mode="livesum",
        )
        self._sent = m.counter(
            "live_events_sent_total", "Event frames handed to live streams (one per stream)."
        )
        self._dropped = m.counter(
            "live_clients_dropped_total",
            "Live streams the server ended or refused: slow, revoked, shutdown, cap, user_cap.",
            ["reason"],
        )

    # -- the component -----------------------------------------------------------------

    @property
    def open_streams(self) -> int:
        return self._count

    async def start(self) -> None:
        """Read the newest position, listen for wakes and shutdown, run the loops."""
        self._closing = False
        with contextlib.suppress(Exception):  # the loop reads it once the database is back
            self.position = await self._newest()
        self._removers.append(self.wakes.listen(self._wake.set))
        if self.health is not None:
            # The server marks shutting down from its signal handler, which may run between
            # any two bytecodes of the loop's work: the streams end on the loop's next turn.
            loop = asyncio.get_running_loop()

            def soon() -> None:
                loop.call_soon_threadsafe(self.shut)

            self._removers.append(self.health.on_shutting_down(soon))
        self._tasks = [
            asyncio.create_task(self._follow(), name="corestone-live-feed"),
            asyncio.create_task(self._beat(), name="corestone-live-heartbeat"),
        ]

    async def aclose(self) -> None:
        """End every stream (reason ``shutdown``) and stop the loops. Idempotent."""
        self.shut()
        for remove in self._removers:
            remove()
        self._removers = []
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await cancel_and_wait(task, task.get_name())
        recheck, self._recheck = self._recheck, None
        if recheck is not None:
            await cancel_and_wait(recheck, recheck.get_name())

    def shut(self) -> None:
        """Refuse new streams and end the open ones (the process is shutting down)."""
        self._closing = True
        ended = 0
        for streams in list(self._streams.values()):
            for stream in list(streams):
                stream.end("shutdown")
                ended += 1
        if ended:
            log.info("live streams ended: shutting down", streams=ended)

    async def check(self) -> CheckResult:
        """Health: the open streams; warn while the last read failed or wakes are deaf."""
        count = self._count
        if self._error is not None:
            return CheckResult(
                HealthStatus.WARN, count, "streams", output=f"last read: {self._error}"
            )
        if self.wakes.shared and not self.wakes.connected:
            output = f"Redis wakes are down; polling the outbox every {self.poll_seconds:g}s"
            return CheckResult(HealthStatus.WARN, count, "streams", output=output)
        return CheckResult(HealthStatus.PASS, count, "streams")

    # -- streams ---------------------------------------------------------------------

    async def open(
        self, user: Any, workspace: Any, *, last_event_id: str | None = None
    ) -> LiveStreamResponse:
        """A stream of ``workspace``'s events for ``user``, resumed after ``last_event_id``.

        Raises what ``authorize`` raises, or UnavailableError when the process is
        shutting down or has ``max_streams`` open; nothing is streamed before it returns.
        """
        if self._closing or not self._tasks:
            raise UnavailableError("this process is shutting down", retry_after=self.retry_after)
        self._refuse_over_cap(user)
        # The stream joins the feed before authorize runs: it counts against the caps at
        # once (a burst of opens cannot all pass them while their membership queries
        # run), and a revocation dispatched while authorize runs (the member removed
        # after it read the membership) ends it. Nothing is written before it returns.
        frames, bytes_ = self.buffer
        stream = LiveStream(
            user, str(workspace), max_frames=frames, max_bytes=bytes_, on_end=self._forget
        )
        self._streams.setdefault(stream.workspace, set()).add(stream)
        self._count += 1
        self._per_user[str(user)] = self._per_user.get(str(user), 0) + 1
        self._open.inc()
        try:
            await self.authorize(user, workspace)
            if self._closing:  # shut down while it authorized: shut() ended the others
                raise UnavailableError(
                    "this process is shutting down", retry_after=self.retry_after
                )
            if last_event_id is not None and not stream.ended:
                await self._replay(stream, last_event_id)
        except BaseException:
            stream.end("disconnect")
            raise
        return LiveStreamResponse(stream)

    async def _replay(self, stream: LiveStream, last_event_id: str) -> None:
        """Put the events after ``last_event_id`` (or ``reset``) before the live ones."""
        text = last_event_id.strip()
        # ASCII only: str.isdigit() also takes "²" (int() refuses it: a 500) and "١٢".
        usable = text.isascii() and text.isdigit() and len(text) <= _MAX_ID_DIGITS
        after = int(text) if usable else -1
        _, max_bytes = self.buffer
        async with self.database.transaction(read_only=True) as tx:
            window = await read_window(tx.session)
            chunks = [RETRY]
            size = 0
            if window.resumes(after):
                position = after
                while True:
                    rows = await read_after(
                        tx.session, position, limit=self.batch, workspace_id=stream.workspace
                    )
                    for row in rows:
                        chunks.append(encode_frame(row.position, row.type, row.body))
                        size += len(chunks[-1])
                    if rows:
                        position = rows[-1].position
                    too_many = len(chunks) > self.max_replay + 1 or size > max_bytes
                    if len(rows) < self.batch or too_many:
                        break
                # The replay is held until the client reads it, as buffered frames are:
                # over the buffer's bounds it is a reset, or a resuming client that never
                # reads would hold max_replay events (up to 256 KiB each) per stream.
                if not too_many:
                    stream.position = max(position, after)
                    stream.prefix = b"".join(chunks)
                    return
        stream.prefix = RETRY + RESET

    def _refuse_over_cap(self, user: Any) -> None:
        """UnavailableError at the process's cap, or at ``user``'s (one user cannot take
        every stream of the process from the others)."""
        if self._count >= self.max_streams:
            self._dropped.labels("cap").inc()
            raise UnavailableError("too many live streams open", retry_after=self.retry_after)
        if self._per_user.get(str(user), 0) >= self.max_streams_per_user:
            self._dropped.labels("user_cap").inc()
            raise UnavailableError(
                "too many live streams open for this user", retry_after=self.retry_after
            )

    def _forget(self, stream: LiveStream) -> None:
        streams = self._streams.get(stream.workspace)
        if streams is None or stream not in streams:
            return
        streams.discard(stream)
        if not streams:
            del self._streams[stream.workspace]
        self._count -= 1
        key = str(stream.user)
        left = self._per_user.get(key, 1) - 1
        if left > 0:
            self._per_user[key] = left
        else:
            self._per_user.pop(key, None)
        self._open.dec()
        if stream.reason in ("slow", "revoked", "shutdown"):
            self._dropped.labels(stream.reason).inc()

    # -- following the outbox ------------------------------------------------------------

    async def _newest(self) -> int:
        async with self.database.transaction(read_only=True) as tx:
            return (await read_window(tx.session)).newest

    async def _follow(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for returns the wait's
            # result when a wake lands in the same turn as a cancel, and drops the cancel
            # (the loop then ran on and the feed's stop timed out).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.catch_up()
            except Exception as error:  # noqa: BLE001 - the database may be back next time
                if self._error is None:
                    log.warning("live feed cannot read the outbox", error=repr(error))
                self._error = repr(error)[:200]
            else:
                self._error = None

    async def catch_up(self) -> int:
        """Read every sent event after :attr:`position` and offer it; return how many."""
        if self.position is None:
            self.position = await self._newest()
            return 0
        total = 0
        while True:
            async with self.database.transaction(read_only=True) as tx:
                rows = await read_after(tx.session, self.position, limit=self.batch)
            for row in rows:
                self._dispatch(row)
            total += len(rows)
            if rows:
                self.position = rows[-1].position
            if len(rows) < self.batch:
                return total

    def _dispatch(self, row: LoggedEvent) -> None:
        streams = self._streams.get(row.workspace_id) if row.workspace_id is not None else None
        if not streams:
            return
        frame = encode_frame(row.position, row.type, row.body)
        field = self.revocations.get(row.type)
        revoked = None if field is None else _payload_field(row.body, field)
        targets = list(streams)
        for stream in targets:
            if revoked is not None and str(stream.user) == revoked:
                stream.end("revoked", REVOKED)
            else:
                stream.offer(row.position, frame)
        self._sent.inc(len(targets))

    async def _beat(self) -> None:
        """One heartbeat for every stream; membership re-checked every ``recheck_seconds``."""
        next_check = self.clock() + self.recheck_seconds
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            for streams in list(self._streams.values()):
                for stream in list(streams):
                    stream.offer(0, HEARTBEAT)
            if self.clock() >= next_check:
                next_check = self.clock() + self.recheck_seconds
                # On a task of its own: it asks authorize once per (user, workspace), one
                # after another, and the heartbeats must not wait for it. One at a time.
                if self._recheck is None or self._recheck.done():
                    self._recheck = asyncio.create_task(
                        self.recheck(), name="corestone-live-recheck"
                    )

    async def recheck(self) -> int:
        """Ask ``authorize`` again for each open (user, workspace); end the refused ones."""
        pairs: dict[tuple[str, str], list[LiveStream]] = {}
        for streams in list(self._streams.values()):
            for stream in streams:
                pairs.setdefault((str(stream.user), stream.workspace), []).append(stream)
        ended = 0
        for targets in pairs.values():
            first = targets[0]
            try:
                await self.authorize(first.user, _workspace_arg(first.workspace))
            except _DENIED:
                for stream in targets:
                    stream.end("revoked", REVOKED)
                ended += len(targets)
            except Exception as error:  # noqa: BLE001 - not a refusal: keep the stream
                log.warning("live feed: membership re-check failed", error=repr(error))
        return ended


def _payload_field(body: str, field: str) -> str | None:
    """``payload[field]`` of an outbox body, as text (None if absent or unreadable)."""
    try:
        value = orjson.loads(body).get("payload", {}).get(field)
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return None if value is None else str(value)


def _workspace_arg(workspace: str) -> Any:
    """The workspace as ``authorize`` was first given it: an int when it is one."""
    return int(workspace) if workspace.isdigit() else workspace
