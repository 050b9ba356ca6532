"""The facade's faster inc() and observe() record exactly what prometheus_client's do."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from corestone.observability.metrics import LATENCY_BUCKETS, Metrics

_VALUES = [0.0, 0.0005, 0.001, 0.0011, 0.3, 1.0, 2.5, 7.0, 10.0, 11.0, -1.0, math.inf, math.nan]


def _lines(exposition: bytes) -> list[str]:
    return [line for line in exposition.decode().splitlines() if "_created" not in line]


def test_histogram_children_fill_the_same_buckets_as_prometheus_client() -> None:
    """Boundaries, negatives, infinity and NaN land in prometheus_client's buckets."""
    metrics = Metrics()
    ours = metrics.histogram("test_latency_seconds", "latency", ["route"]).labels("/a")
    registry = CollectorRegistry()
    theirs = Histogram(
        "corestone_test_latency_seconds",
        "latency",
        ["route"],
        registry=registry,
        buckets=LATENCY_BUCKETS,
    ).labels("/a")
    for value in _VALUES:
        ours.observe(value)
        theirs.observe(value)
    ours.observe(0.2, {"trace_id": "abc"})
    theirs.observe(0.2, {"trace_id": "abc"})

    assert _lines(metrics.render()) == _lines(generate_latest(registry))


def test_counter_children_count_as_prometheus_client_and_refuse_what_it_refuses() -> None:
    """Increments match; a negative amount and an unbound labelled parent still raise."""
    metrics = Metrics()
    counter = metrics.counter("test_things_total", "things", ["kind"])
    registry = CollectorRegistry()
    theirs = Counter("corestone_test_things_total", "things", ["kind"], registry=registry)
    for amount in (1, 2.5, 0):
        counter.labels("a").inc(amount)
        theirs.labels("a").inc(amount)
    counter.labels("a").inc(1, {"trace_id": "abc"})
    theirs.labels("a").inc(1, {"trace_id": "abc"})

    assert _lines(metrics.render()) == _lines(generate_latest(registry))
    with pytest.raises(ValueError, match="non-negative"):
        counter.labels("a").inc(-1)
    with pytest.raises(ValueError, match="label"):
        counter.inc()
    with pytest.raises(ValueError, match="label"):
        metrics.histogram("test_size_bytes", "size", ["kind"]).observe(1.0)
