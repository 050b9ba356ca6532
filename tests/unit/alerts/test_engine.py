"""The alert engine's state machine, its metrics, and its independence from a slow sink."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from corestone.observability.alerts import AlertEngine, AlertState, Evaluation, Rule
from corestone.observability.metrics import Metrics
from corestone.observability.series import InstantSample, RangeSeries
from corestone.testing import ManualClock

_WALL = 1_700_000_000.0


class _Query:
    """Answers each expression with the samples a test sets (a failing one raises)."""

    def __init__(self) -> None:
        self.answers: dict[str, list[InstantSample]] = {}
        self.asked_at: list[float | None] = []
        self.failing = {"broken"}

    def set(self, expr: str, *values: tuple[Mapping[str, str], float]) -> None:
        self.answers[expr] = [InstantSample(labels, value) for labels, value in values]

    def query(self, expr: str, *, at: float | None = None) -> list[InstantSample]:
        self.asked_at.append(at)
        if expr in self.failing:
            raise ValueError("broken on purpose")
        return self.answers.get(expr, [])

    def query_range(self, expr: str, *, start: float, end: float, step: float) -> list[RangeSeries]:
        raise AssertionError("the engine asks instant queries only")


class _Sink:
    def __init__(self) -> None:
        self.evaluations: list[Evaluation] = []
        self.release = asyncio.Event()
        self.release.set()

    async def accept(self, evaluation: Evaluation) -> None:
        await self.release.wait()
        self.evaluations.append(evaluation)


class _Rig:
    def __init__(self, *rules: Rule, backlog: int = 8) -> None:
        self.wall, self.mono = ManualClock(_WALL), ManualClock(0.0)
        self.query, self.sink, self.metrics = _Query(), _Sink(), Metrics()
        self.engine = AlertEngine(
            self.query, self.sink, rules, metrics=self.metrics, interval=3600,
            sink_backlog=backlog, wall=self.wall, monotonic=self.mono,
        )  # fmt: skip

    def advance(self, seconds: float) -> None:
        self.wall.advance(seconds)
        self.mono.advance(seconds)

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


_RULE = Rule(
    name="QueueDeep",
    expr="depth > 10",
    for_seconds=60,
    keep_firing_for_seconds=30,
    labels={"severity": "critical"},
    annotations={"summary": "{{ $labels.queue }} holds {{ $value }}"},
)
_DEEP = ({"__name__": "depth", "queue": "mail"}, 42.0)


def _states(evaluation: Evaluation) -> list[tuple[AlertState, AlertState]]:
    return [(t.previous, t.alert.state) for t in evaluation.transitions]


async def test_lifecycle_pending_firing_kept_then_resolved() -> None:
    """Pending at once, firing after `for`, kept `keep_firing_for` after clearing, resolved."""
    rig = _Rig(_RULE)
    rig.query.set("depth > 10", _DEEP)
    first = await rig.engine.evaluate()
    assert _states(first) == [(AlertState.INACTIVE, AlertState.PENDING)]
    (alert,) = first.alerts
    assert alert.labels == {"queue": "mail", "severity": "critical", "alertname": "QueueDeep"}
    assert alert.annotations == {"summary": "mail holds 42"}
    assert rig.query.asked_at == [_WALL]
    rig.advance(30)
    assert _states(await rig.engine.evaluate()) == []
    rig.advance(30)
    firing = await rig.engine.evaluate()
    assert _states(firing) == [(AlertState.PENDING, AlertState.FIRING)]
    assert firing.firing()[0].fired_at == firing.at
    assert rig.value("corestone_alerts_active", state="firing") == 1
    rig.query.set("depth > 10")
    for _ in range(2):  # cleared at +0, still kept at +15
        rig.advance(15)
        kept = await rig.engine.evaluate()
        assert [a.state for a in kept.alerts] == [AlertState.FIRING]
    rig.advance(15)
    resolved = await rig.engine.evaluate()
    assert _states(resolved) == [(AlertState.FIRING, AlertState.RESOLVED)]
    assert resolved.alerts[0].resolved_at == resolved.at
    assert rig.engine.active() == []
    rig.advance(15)
    assert (await rig.engine.evaluate()).alerts == []
    assert rig.value("corestone_alerts_active", state="firing") == 0


async def test_a_flapping_series_never_fires() -> None:
    """Holding for 45 s out of every 60 restarts `for` each time: pending, dropped, pending."""
    rig = _Rig(_RULE)
    seen: list[tuple[AlertState, AlertState]] = []
    for _ in range(4):
        for holds in (True, True, True, False):
            rig.query.set("depth > 10", *([_DEEP] if holds else []))
            seen += _states(await rig.engine.evaluate())
            rig.advance(15)
    assert AlertState.FIRING not in {state for _, state in seen}
    assert seen[:2] == [
        (AlertState.INACTIVE, AlertState.PENDING),
        (AlertState.PENDING, AlertState.INACTIVE),
    ]
    assert len(seen) == 8


async def test_keep_firing_is_reset_when_the_condition_returns() -> None:
    """Clearing and returning inside keep_firing_for keeps the alert firing, never resolved."""
    rig = _Rig(_RULE)
    rig.query.set("depth > 10", _DEEP)
    await rig.engine.evaluate()
    rig.advance(60)
    await rig.engine.evaluate()
    for holds in (False, True, False, True):
        rig.query.set("depth > 10", *([_DEEP] if holds else []))
        rig.advance(20)
        evaluation = await rig.engine.evaluate()
        assert [a.state for a in evaluation.alerts] == [AlertState.FIRING]


async def test_without_for_an_alert_fires_at_once_and_value_updates() -> None:
    """A rule with no `for` fires in the first evaluation; later values reach the alert."""
    rule = Rule(name="Now", expr="now", annotations={"v": "{{ $value | humanize }}"})
    rig = _Rig(rule)
    rig.query.set("now", ({}, 1500.0))
    first = await rig.engine.evaluate()
    assert _states(first) == [(AlertState.INACTIVE, AlertState.FIRING)]
    rig.query.set("now", ({}, 2500.0))
    (alert,) = (await rig.engine.evaluate()).alerts
    assert (alert.value, alert.annotations["v"]) == (2500.0, "2.5k")


async def test_a_failing_rule_is_counted_and_the_others_still_run() -> None:
    """A runtime error is logged and counted; its alerts keep their state."""
    broken = Rule(name="Broken", expr="broken")
    rig = _Rig(broken, _RULE)
    rig.query.set("depth > 10", _DEEP)
    evaluation = await rig.engine.evaluate()
    assert [a.rule for a in evaluation.alerts] == ["QueueDeep"]
    assert rig.value("corestone_alerts_rule_errors_total", rule="Broken") == 1
    assert rig.value("corestone_alerts_evaluation_seconds_count") == 1


async def test_a_rule_that_breaks_keeps_its_alerts() -> None:
    """A firing alert stays firing while its rule fails, rather than resolving."""
    rule = Rule(name="Flaky", expr="flaky")
    rig = _Rig(rule)
    rig.query.set("flaky", ({}, 1.0))
    await rig.engine.evaluate()
    rig.query.failing.add("flaky")
    rig.advance(15)
    evaluation = await rig.engine.evaluate()
    assert [a.state for a in evaluation.alerts] == [AlertState.FIRING]
    assert evaluation.transitions == []


async def test_a_slow_sink_never_delays_evaluations() -> None:
    """With the sink stuck, evaluations go on; the backlog stays bounded, the rest counted."""
    rig = _Rig(_RULE, backlog=4)
    rig.sink.release.clear()
    await rig.engine.start()
    try:
        rig.query.set("depth > 10", _DEEP)
        for _ in range(20):
            await rig.engine.evaluate()
            await asyncio.sleep(0)  # let the delivery task take one
            rig.advance(15)
        assert rig.value("corestone_alerts_sink_dropped_total") == 20 - 1 - 4
        rig.sink.release.set()
        await rig.engine.flush()
        assert len(rig.sink.evaluations) == 5
        assert rig.sink.evaluations[-1].firing()
    finally:
        await rig.engine.aclose()


async def test_a_raising_sink_is_counted_and_delivery_goes_on() -> None:
    """A sink that raises does not stop the delivery of the next evaluation."""
    rig = _Rig(_RULE)
    calls: list[Evaluation] = []

    async def accept(evaluation: Evaluation) -> None:
        calls.append(evaluation)
        if len(calls) == 1:
            raise RuntimeError("receiver down")

    rig.sink.accept = accept  # type: ignore[method-assign]
    await rig.engine.start()
    try:
        await rig.engine.evaluate()
        await rig.engine.evaluate()
        await rig.engine.flush()
    finally:
        await rig.engine.aclose()
    assert len(calls) == 2
    assert rig.value("corestone_alerts_sink_failures_total") == 1


async def test_readiness_reports_firing_alerts() -> None:
    """The check passes with the number firing while the engine runs."""
    rig = _Rig(Rule(name="Now", expr="now"))
    rig.query.set("now", ({}, 1.0))
    await rig.engine.evaluate()
    result = await rig.engine.check()
    assert (result.status.value, result.observed_value) == ("pass", 1)


def test_options_are_checked() -> None:
    """An empty backlog, or an annotation the templates cannot render, is refused."""
    with pytest.raises(ValueError, match="sink_backlog"):
        _Rig(_RULE, backlog=0)
    bad = Rule(name="Bad", expr="x", annotations={"summary": "{{ .Value }}"})
    with pytest.raises(ValueError, match="rule 'Bad', annotation 'summary'"):
        _Rig(bad)
