"""The dispatcher: the :class:`~.model.AlertSink` that records, groups, silences and sends.

:meth:`Dispatcher.accept` only queues the evaluation (a bounded queue: when it is full
the oldest waiting evaluation is dropped, counted and logged, since the next one carries
the whole state again) and returns; it never raises. One worker task takes evaluations in
order and, for each:

1. writes every transition to ``corestone_alert_history``;
2. reads the silences in force, and folds the alerts into their groups (:mod:`.grouping`);
3. for every group that is due, claims the next send in the database (:func:`.store.claim`):
   several processes evaluate the same rules, and only the one whose claim went in
   sends. A group whose every alert is silenced gets ``silenced`` rows and no send;
4. starts one background task per channel of a won claim. At most ``max_sends`` run at
   once; beyond that the worker waits (and evaluations queue, then drop), so a hanging
   receiver can hold up delivery but never the engine.

Each channel's outcome is written to its notification row (``sent`` or ``failed``, the
attempts, the last error) and counted in ``corestone_alerts_notifications_total``
{channel, outcome}. :meth:`aclose` refuses new evaluations, lets the queued ones and
the sends finish for up to ``drain_seconds``, then cancels what is left (a cancelled
send's row stays ``sending``), and closes the channels that have an ``aclose``.

Rows older than ``retention`` (30 days) are deleted, at most once an hour per process:
history, claims, notifications, and silences that ended before then.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from corestone.background import cancel_and_wait
from corestone.db.database import Database
from corestone.db.models import utc_now
from corestone.observability.alerts import store
from corestone.observability.alerts.channels import AlertNotification, Channel, DeliveryError
from corestone.observability.alerts.grouping import (
    Group,
    GroupStatus,
    Timing,
    finished,
    group_labels_of,
    plan,
)
from corestone.observability.alerts.model import (
    Alert,
    AlertState,
    Evaluation,
    labels_fingerprint,
)
from corestone.observability.alerts.silences import Silence, SilenceStore, silenced
from corestone.observability.alerts.tables import NotificationStatus
from corestone.observability.logging import get_logger
from corestone.observability.metrics import Metrics

__all__ = ["NOTIFICATIONS_METRIC", "Dispatcher"]

log = get_logger(__name__)

_PRUNE_EVERY = timedelta(hours=1)

NOTIFICATIONS_METRIC = (
    "alerts_notifications_total",
    "Alert notifications by channel and outcome: sent, failed, silenced.",
)


class Dispatcher:
    """Takes the engine's evaluations and delivers notifications (see the module doc)."""

    name = "alert-dispatcher"

    def __init__(
        self,
        database: Database,
        channels: Sequence[Channel],
        *,
        timing: Timing | None = None,
        silences: SilenceStore | None = None,
        metrics: Metrics | None = None,
        now: Callable[[], datetime] = utc_now,
        max_sends: int = 8,
        queue_size: int = 16,
        drain_seconds: float = 5.0,
        retention: timedelta = timedelta(days=30),
    ) -> None:
        if max_sends < 1 or queue_size < 1:
            raise ValueError("max_sends and queue_size must be >= 1")
        if retention <= (timing or Timing()).repeat_interval:
            raise ValueError("retention must be longer than repeat_interval")
        if len({channel.name for channel in channels}) != len(channels):
            raise ValueError("channel names must be unique")
        self.database, self.channels = database, tuple(channels)
        self.timing = timing or Timing()
        self.silences = silences or SilenceStore()
        self.now, self.drain_seconds, self.retention = now, drain_seconds, retention
        self._pruned_at: datetime | None = None
        self.latest: Evaluation | None = None
        """The newest evaluation accepted (what ``GET /api/ops/alerts`` shows)."""
        self.muted: frozenset[str] = frozenset()
        """Fingerprints of the alerts silenced at the last evaluation processed."""
        self._groups: dict[str, Group] = {}
        self._queue: asyncio.Queue[Evaluation] = asyncio.Queue(queue_size)
        self._slots = asyncio.Semaphore(max_sends)
        self._sends: set[asyncio.Task[None]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        registry = metrics or Metrics()
        self._counter = registry.counter(*NOTIFICATIONS_METRIC, ["channel", "outcome"])
        self._dropped = registry.counter(
            "alerts_evaluations_dropped_total",
            "Evaluations the dispatcher dropped because its queue was full.",
        )

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Run the worker (``accept`` also starts it on first use)."""
        self._closed = False
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name="alert-dispatcher")

    async def aclose(self) -> None:
        """Stop taking evaluations; for up to ``drain_seconds`` finish the queued ones
        (the engine hands over its last before it stops) and the sends; cancel the rest."""
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_seconds
        if self._worker is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self._queue.join()
            await cancel_and_wait(self._worker, self.name)
            self._worker = None
        if self._sends:
            await asyncio.wait(set(self._sends), timeout=max(0.0, deadline - loop.time()))
        for task in list(self._sends):
            await cancel_and_wait(task, "alert-send")
        for channel in self.channels:
            closer = getattr(channel, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()

    async def __aenter__(self) -> Dispatcher:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # -- the sink ----------------------------------------------------------------------

    async def accept(self, evaluation: Evaluation) -> None:
        """Queue ``evaluation``; returns at once and never raises."""
        try:
            if self._closed:
                return
            self.latest = evaluation
            if self._worker is None or self._worker.done():
                await self.start()
            while True:
                try:
                    self._queue.put_nowait(evaluation)
                    return
                except asyncio.QueueFull:
                    self._queue.get_nowait()
                    self._queue.task_done()
                    self._dropped.inc()
                    log.warning("alert dispatcher behind: dropped the oldest evaluation")
        except Exception as error:  # noqa: BLE001 - the engine must never see a failure
            log.error("alert dispatcher could not take an evaluation", error=repr(error))

    async def flush(self) -> None:
        """Wait until every queued evaluation is processed and every send has ended."""
        await self._queue.join()
        while self._sends:
            await asyncio.wait(set(self._sends))

    # -- the worker --------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            evaluation = await self._queue.get()
            try:
                await self._process(evaluation)
            except Exception as error:  # noqa: BLE001 - the next evaluation may succeed
                log.error("alert dispatch failed", error=repr(error))
            finally:
                self._queue.task_done()

    async def _process(self, evaluation: Evaluation) -> None:
        now = self.now()
        async with self.database.transaction() as tx:
            await store.record_transitions(tx.session, evaluation.transitions, evaluation.at)
            active = await self.silences.active(tx.session, now=now)
            if self._pruned_at is None or now - self._pruned_at >= _PRUNE_EVERY:
                self._pruned_at = now
                await store.prune(tx.session, before=now - self.retention)
        self._fold(evaluation.alerts, active, now)
        for key in sorted(self._groups):
            await self._consider(self._groups[key], now)

    def _fold(self, alerts: Sequence[Alert], active: Sequence[Silence], now: datetime) -> None:
        seen = {alert.fingerprint for alert in alerts}
        muted: set[str] = set()
        for alert in alerts:
            labels = group_labels_of(alert, self.timing.group_by)
            key = labels_fingerprint(labels)
            group = self._groups.get(key)
            if group is None:
                if alert.state is not AlertState.FIRING:
                    continue
                group = self._groups[key] = Group(labels, now)
            is_muted = silenced(alert.labels, active)
            if is_muted:
                muted.add(alert.fingerprint)
            group.update(alert, muted=is_muted)
        for group in self._groups.values():
            for fingerprint in [fp for fp in group.firing if fp not in seen]:
                group.firing.pop(fingerprint)
                group.silenced.discard(fingerprint)
        self.muted = frozenset(muted)

    async def _consider(self, group: Group, now: datetime) -> None:
        async with self.database.transaction() as tx:
            last = await store.last_send(tx.session, group.key)
            due = plan(group, last, now, self.timing)
            won = None
            if due is not None:
                alerts = group.alerts()
                won = await store.claim(
                    tx.session,
                    group_key=group.key,
                    seq=due.seq,
                    content=due.content,
                    status=due.status,
                    group_labels=group.labels,
                    alerts=len(alerts),
                    channels=[channel.name for channel in self.channels],
                    now=now,
                )
        if due is None:
            if finished(group, last, self.timing):
                self._groups.pop(group.key, None)
            return
        group.sent()
        if not group.firing:
            self._groups.pop(group.key, None)
        if won is None:
            return
        if due.status is GroupStatus.SILENCED:
            for channel in self.channels:
                self._counter.labels(channel=channel.name, outcome="silenced").inc()
            return
        notification = AlertNotification(
            group.key, due.seq, due.status.value, dict(group.labels), tuple(alerts), now
        )
        for channel in self.channels:
            await self._slots.acquire()
            task = asyncio.create_task(self._deliver(channel, notification, won.rows[channel.name]))
            self._sends.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        # A done callback, not a ``finally``: a task cancelled before it ever ran has
        # run no ``finally``, and its slot must come back all the same.
        self._sends.discard(task)
        self._slots.release()

    async def _deliver(self, channel: Channel, notification: AlertNotification, row: int) -> None:
        status, error = NotificationStatus.SENT, None
        try:
            attempts = await channel.send(notification)
        except DeliveryError as failure:
            status, error, attempts = NotificationStatus.FAILED, str(failure), failure.attempts
        except Exception as failure:  # noqa: BLE001 - any channel failure is recorded
            status, error, attempts = NotificationStatus.FAILED, repr(failure), 1
        self._counter.labels(channel=channel.name, outcome=status.value).inc()
        if error is not None:
            log.warning(
                "alert notification failed",
                channel=channel.name,
                group_key=notification.group_key,
                attempts=attempts,
                error=error,
            )
        await self._finish(row, status, attempts, error)

    async def _finish(
        self, row: int, status: NotificationStatus, attempts: int, error: str | None
    ) -> None:
        try:
            async with self.database.transaction() as tx:
                await store.finish(
                    tx.session, row, status=status, attempts=attempts, error=error, now=self.now()
                )
        except Exception as failure:  # noqa: BLE001 - the row stays "sending"; logged
            log.error("could not record an alert notification", row=row, error=repr(failure))

    def snapshot(self) -> dict[str, Any]:
        """This process's view: the latest evaluation's alerts, each with ``silenced``."""
        latest = self.latest
        alerts = [] if latest is None else list(latest.alerts)
        return {
            "at": None if latest is None else latest.at.isoformat(),
            "alerts": [
                {**alert.as_json(), "silenced": alert.fingerprint in self.muted}
                for alert in alerts
                if alert.state in (AlertState.FIRING, AlertState.PENDING)
            ],
        }

    async def overview(self, *, notifications: int = 50) -> dict[str, Any]:
        """What an operator looks at: :meth:`snapshot`, the silences in force, and the
        newest ``notifications`` of every process (``GET /api/ops/alerts``, the dashboard)."""
        now = self.now()
        async with self.database.transaction(read_only=True) as tx:
            active = await self.silences.active(tx.session, now=now)
            recent = await store.recent_notifications(tx.session, limit=notifications)
        return {
            **self.snapshot(),
            "silences": [silence.as_json(now) for silence in active],
            "notifications": [entry.as_json() for entry in recent],
        }
