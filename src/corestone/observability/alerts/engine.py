"""The alert engine: evaluates the rules every interval and hands each outcome to a sink.

Each rule's expression is asked of a :class:`~corestone.observability.series.
MetricsQuery` (the in-process history); every series it returns is an alert of that
rule. States follow Prometheus: a new series is *pending* (or *firing* at once when the
rule has no ``for``), *firing* once it has held ``for_seconds``, and, once it stops
holding and ``keep_firing_for_seconds`` more have passed, *resolved* for one evaluation
and then forgotten. A pending alert that stops holding is dropped (a transition to
*inactive*, never reported as resolved). Durations are measured on the monotonic clock;
the times alerts carry come from the wall clock. Both are injected.

The sink is never waited on by the evaluation: each :class:`~corestone.observability.
alerts.model.Evaluation` goes into a small queue that a task of its own feeds to
``sink.accept`` under a timeout. When the sink falls behind, the oldest waiting
evaluation is dropped (counted and logged): each evaluation holds every active alert, so
the next one carries the current state, though a dropped evaluation's transitions are
lost. A rule whose expression fails is logged and counted, and its alerts keep their
state until it evaluates again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from corestone.background import PassLoop, cancel_and_wait
from corestone.observability.alerts.model import (
    Alert,
    AlertSink,
    AlertState,
    Evaluation,
    Rule,
    Transition,
    labels_fingerprint,
)
from corestone.observability.alerts.templates import check_template, render
from corestone.observability.health import CheckResult, HealthStatus
from corestone.observability.logging import get_logger
from corestone.observability.metrics import Metrics
from corestone.observability.series import InstantSample, MetricsQuery

__all__ = ["AlertEngine"]

log = get_logger(__name__)


@dataclass(slots=True)
class _Tracked:
    """An alert the engine holds, with the monotonic readings its timers need."""

    alert: Alert
    since: float
    cleared: float | None = None


class AlertEngine:
    """Evaluates ``rules`` over ``query`` every ``interval`` seconds; a managed component."""

    name = "alert-engine"

    def __init__(
        self,
        query: MetricsQuery,
        sink: AlertSink,
        rules: Sequence[Rule],
        *,
        metrics: Metrics,
        interval: float = 15.0,
        sink_timeout: float = 10.0,
        sink_backlog: int = 8,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if sink_timeout <= 0 or sink_backlog < 1:
            raise ValueError("sink_timeout must be positive and sink_backlog at least 1")
        for rule in rules:  # rules built in code have not met the file loader's checks
            for key, template in rule.annotations.items():
                try:
                    check_template(template)
                except ValueError as error:
                    raise ValueError(f"rule {rule.name!r}, annotation {key!r}: {error}") from None
        self._query = query
        self._sink = sink
        self._rules = tuple(rules)
        self._wall = wall
        self._monotonic = monotonic
        self._sink_timeout = sink_timeout
        self._queue: asyncio.Queue[Evaluation] = asyncio.Queue(sink_backlog)
        self._tracked: list[dict[str, _Tracked]] = [{} for _ in self._rules]
        self._delivery: asyncio.Task[None] | None = None
        self._loop = PassLoop(self.name, self._pass, poll_seconds=interval, drain_seconds=5.0)
        self._seconds = metrics.histogram(
            "alerts_evaluation_seconds", "Time to evaluate every alert rule once."
        )
        active = metrics.gauge(
            "alerts_active", "Alerts pending or firing.", ["state"], multiprocess_mode="livemax"
        )
        self._pending = active.labels(state=AlertState.PENDING.value)
        self._firing = active.labels(state=AlertState.FIRING.value)
        self._errors = metrics.counter(
            "alerts_rule_errors_total", "Rule evaluations that failed.", ["rule"]
        )
        self._dropped = metrics.counter(
            "alerts_sink_dropped_total", "Evaluations dropped: the alert sink fell behind."
        )
        self._sink_failures = metrics.counter(
            "alerts_sink_failures_total", "Evaluations the alert sink raised on or timed out."
        )

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._rules

    def active(self) -> list[Alert]:
        """The alerts pending or firing now."""
        return [tracked.alert for by_rule in self._tracked for tracked in by_rule.values()]

    async def check(self) -> CheckResult:
        """Readiness: the evaluation loop and the sink's task are alive; firing alerts counted."""
        firing = sum(a.state is AlertState.FIRING for a in self.active())
        if self._loop.died or (self._delivery is not None and self._delivery.done()):
            return CheckResult(HealthStatus.FAIL, firing, "alerts", "the alert engine stopped")
        return CheckResult(HealthStatus.PASS, firing, "alerts")

    async def start(self) -> None:
        if self._delivery is None or self._delivery.done():
            self._delivery = asyncio.create_task(self._deliver(), name="corestone-alert-sink")
        self._loop.start()

    async def aclose(self) -> None:
        """Stop evaluating, give the sink what is queued (up to its timeout), then stop."""
        await self._loop.stop()
        task, self._delivery = self._delivery, None
        if task is None:
            return
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._sink_timeout):
                    await self._queue.join()
        finally:
            await cancel_and_wait(task, "alert-sink")

    async def flush(self) -> None:
        """Wait until the sink has taken every queued evaluation (needs ``start``)."""
        await self._queue.join()

    async def _pass(self) -> bool:
        await self.evaluate()
        return False

    async def evaluate(self) -> Evaluation:
        """Evaluate every rule once, queue the outcome for the sink, and return it."""
        started = self._monotonic()
        now_wall, now = self._wall(), started
        at = datetime.fromtimestamp(now_wall, UTC)
        transitions: list[Transition] = []
        resolved: list[Alert] = []
        for index, rule in enumerate(self._rules):
            try:
                samples = self._query.query(rule.expr, at=now_wall)
            except Exception as error:  # noqa: BLE001 - one broken rule must not stop the rest
                self._errors.labels(rule=rule.name).inc()
                log.warning("alert rule failed", rule=rule.name, error=repr(error))
                continue
            self._step(rule, self._tracked[index], samples, now, at, transitions, resolved)
        alerts = self.active()
        self._pending.set(sum(a.state is AlertState.PENDING for a in alerts))
        self._firing.set(sum(a.state is AlertState.FIRING for a in alerts))
        evaluation = Evaluation(at=at, alerts=[*alerts, *resolved], transitions=transitions)
        self._offer(evaluation)
        self._seconds.observe(self._monotonic() - started)
        return evaluation

    def _step(
        self,
        rule: Rule,
        tracked: dict[str, _Tracked],
        samples: list[InstantSample],
        now: float,
        at: datetime,
        transitions: list[Transition],
        resolved: list[Alert],
    ) -> None:
        seen: set[str] = set()
        for sample in samples:
            series = {k: v for k, v in sample.labels.items() if k != "__name__"}
            labels = {**series, **rule.labels, "alertname": rule.name}
            key = labels_fingerprint(labels)
            if key in seen:
                continue  # two series with the same labels once the name is gone
            seen.add(key)
            annotations = {k: render(t, series, sample.value) for k, t in rule.annotations.items()}
            current = tracked.get(key)
            if current is None:
                state = AlertState.FIRING if rule.for_seconds <= 0 else AlertState.PENDING
                alert = Alert(
                    rule.name, labels, annotations, state, sample.value, at,
                    fired_at=at if state is AlertState.FIRING else None,
                )  # fmt: skip
                tracked[key] = _Tracked(alert, now)
                transitions.append(Transition(alert, AlertState.INACTIVE))
                continue
            alert = replace(current.alert, annotations=annotations, value=sample.value)
            current.cleared = None
            if alert.state is AlertState.PENDING and now - current.since >= rule.for_seconds:
                alert = replace(alert, state=AlertState.FIRING, fired_at=at)
                transitions.append(Transition(alert, AlertState.PENDING))
            current.alert = alert
        for key in [key for key in tracked if key not in seen]:
            current = tracked[key]
            if current.alert.state is AlertState.PENDING:
                del tracked[key]
                gone = replace(current.alert, state=AlertState.INACTIVE)
                transitions.append(Transition(gone, AlertState.PENDING))
                continue
            if current.cleared is None:
                current.cleared = now
            if now - current.cleared < rule.keep_firing_for_seconds:
                continue
            del tracked[key]
            done = replace(current.alert, state=AlertState.RESOLVED, resolved_at=at)
            resolved.append(done)
            transitions.append(Transition(done, AlertState.FIRING))

    def _offer(self, evaluation: Evaluation) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self._queue.task_done()
            self._dropped.inc()
            log.warning("alert sink is behind: an evaluation was dropped")
        self._queue.put_nowait(evaluation)

    async def _deliver(self) -> None:
        while True:
            evaluation = await self._queue.get()
            try:
                async with asyncio.timeout(self._sink_timeout):
                    await self._sink.accept(evaluation)
            except Exception as error:  # noqa: BLE001 - the sink must not stop the engine
                self._sink_failures.inc()
                log.warning("alert sink failed", error=repr(error))
            finally:
                self._queue.task_done()
