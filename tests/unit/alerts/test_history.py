"""The in-process metric history: what it samples, how long it keeps it, and its bound."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from corestone.observability.history import MetricsHistory
from corestone.observability.metrics import Metrics
from corestone.testing import ManualClock

_START = 1_700_000_000.0


def _history(metrics: Metrics, clock: ManualClock, **options: float) -> MetricsHistory:
    return MetricsHistory(metrics, clock=clock, **options)  # type: ignore[arg-type]


def test_only_watched_metrics_are_sampled() -> None:
    """A metric no expression reads is never kept."""
    metrics, clock = Metrics(), ManualClock(_START)
    metrics.counter("watched_total", "w", ["route"]).labels(route="/a").inc()
    metrics.counter("other_total", "o").inc()
    history = _history(metrics, clock)
    history.sample()
    assert history.series_count == 0
    history.watch("rate(corestone_watched_total[1m])")
    history.sample()
    assert history.series_count == 1
    assert history.query("corestone_other_total") == []


def test_rate_over_sampled_counter() -> None:
    """Samples every 10 s of a counter growing 5 per step give a rate of 0.5/s."""
    metrics, clock = Metrics(), ManualClock(_START)
    counter = metrics.counter("hits_total", "h")
    history = _history(metrics, clock)
    history.watch("rate(corestone_hits_total[1m])")
    for _ in range(7):
        history.sample()
        counter.inc(5)
        clock.advance(10)
    (sample,) = history.query("rate(corestone_hits_total[1m])", at=clock() - 10)
    assert sample.labels == {}
    assert sample.value == pytest.approx(0.5)


def test_histogram_quantile_over_a_real_histogram() -> None:
    """Observations in the 0.25-0.5 bucket put the median inside it."""
    metrics, clock = Metrics(), ManualClock(_START)
    histogram = metrics.histogram("op_seconds", "o", ["route"])
    history = _history(metrics, clock)
    expr = "histogram_quantile(0.5, sum by (le) (rate(corestone_op_seconds_bucket[1m])))"
    history.watch(expr)
    for _ in range(4):
        history.sample()
        for _ in range(10):
            histogram.labels(route="/a").observe(0.3)
        clock.advance(10)
    (sample,) = history.query(expr, at=clock() - 10)
    assert 0.25 < sample.value <= 0.5


def test_series_unseen_for_the_retention_are_forgotten() -> None:
    """Points older than the retention go; a series with none left is dropped."""
    metrics, clock = Metrics(), ManualClock(_START)
    gauge = metrics.gauge("depth", "d", ["queue"])
    gauge.labels(queue="a").set(1)
    history = _history(metrics, clock, step=10, retention=60)
    history.watch("corestone_depth")
    history.sample()
    gauge.remove("a")
    gauge.labels(queue="b").set(2)
    clock.advance(30)
    history.sample()
    assert history.series_count == 2
    clock.advance(40)
    history.sample()
    assert history.series_count == 1
    assert [s.labels["queue"] for s in history.query("corestone_depth")] == ["b"]


class _Flood:
    """A collector that reports a new label value on every scrape: unbounded cardinality."""

    def __init__(self, per_scrape: int) -> None:
        self._per_scrape = per_scrape
        self._next = 0

    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily("corestone_flood", "f", labels=["id"])]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("corestone_flood", "f", labels=["id"])
        for _ in range(self._per_scrape):
            family.add_metric([str(self._next)], 1.0)
            self._next += 1
        yield family


def test_100000_series_stay_within_the_cap() -> None:
    """100,000 distinct series offered: the history holds the cap, counts the rest dropped."""
    metrics, clock = Metrics(), ManualClock(_START)
    metrics.register_collector(_Flood(20_000))
    history = _history(metrics, clock, max_series=1000)
    history.watch("corestone_flood")
    for _ in range(5):
        history.sample()
        clock.advance(10)
    assert history.series_count == 1000
    dropped = metrics.registry.get_sample_value("corestone_metrics_history_dropped_series_total")
    assert dropped == 99_000


def test_query_range_steps_through_the_history() -> None:
    """One point per step, oldest first, per label set."""
    metrics, clock = Metrics(), ManualClock(_START)
    gauge = metrics.gauge("level", "l")
    history = _history(metrics, clock)
    history.watch("corestone_level")
    for value in (1, 2, 3):
        gauge.set(value)
        history.sample()
        clock.advance(10)
    (series,) = history.query_range("corestone_level * 2", start=_START, end=_START + 20, step=10)
    assert series.points == [(_START, 2.0), (_START + 10, 4.0), (_START + 20, 6.0)]
    with pytest.raises(ValueError, match="step"):
        history.query_range("corestone_level", start=_START, end=_START, step=0)


def test_unsupported_expressions_are_refused_when_watched() -> None:
    """watch() parses: a rule the subset cannot run fails before it is sampled for."""
    history = _history(Metrics(), ManualClock(_START))
    with pytest.raises(ValueError, match="stddev"):
        history.watch("stddev(corestone_x)")


async def test_as_a_component_it_samples_at_start() -> None:
    """start() takes a first sample at once; aclose() stops the loop."""
    metrics, clock = Metrics(), ManualClock(_START)
    metrics.gauge("level", "l").set(1)
    history = _history(metrics, clock)
    history.watch("corestone_level")
    await history.start()
    try:
        for _ in range(3):
            await asyncio.sleep(0)
        assert history.series_count == 1
    finally:
        await history.aclose()
