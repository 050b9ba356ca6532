"""Recording and rendering: the facade beside prometheus_client and the OpenTelemetry SDK.

Each operation is timed with ``timeit`` (a tight loop of one statement, so the call's own
overhead is in the figure, as in the issue's table); the operations are interleaved
within each repeat so machine noise hits them alike, and the best repeat is kept.
"""

from __future__ import annotations

import timeit
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from corestone.observability import Metrics

__all__ = ["record_ns", "render_us"]


def _otel_counter() -> Any:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return provider.get_meter("bench").create_counter("requests")


def _bare() -> None:
    return None


def record_ns(quick: bool) -> dict[str, float]:
    """ns per operation, best of the repeats, for every recording path compared."""
    registry = CollectorRegistry()
    plain = Counter("plain_total", "plain", registry=registry)
    labelled = Counter("labelled_total", "labelled", ["method", "route"], registry=registry)
    histogram = Histogram("latency_seconds", "latency", registry=registry)
    metrics = Metrics()
    facade_counter = metrics.counter("bench_requests_total", "r", ["method", "route"])
    facade_histogram = metrics.histogram("bench_latency_seconds", "l", ["method", "route"])
    timer = metrics.timer("bench_work_seconds", "w", ["route"])
    bound_timer = timer.labels(route="/x")
    timed = bound_timer(_bare)
    names: dict[str, Any] = {
        "plain": plain,
        "labelled": labelled,
        "histogram": histogram,
        "otel": _otel_counter(),
        "attributes": {"method": "GET", "route": "/x"},
        "child": facade_counter.labels("GET", "/x"),
        "facade": facade_counter,
        "hchild": facade_histogram.labels("GET", "/x"),
        "timer": bound_timer,
        "timed": timed,
        "bare": _bare,
    }
    cases = {
        "prometheus_client_counter_inc": "plain.inc()",
        "prometheus_client_labels_inc": "labelled.labels('GET', '/x').inc()",
        "prometheus_client_histogram_observe": "histogram.observe(0.1)",
        "otel_sdk_counter_add": "otel.add(1, attributes)",
        "facade_prebound_inc": "child.inc()",
        "facade_prebound_observe": "hchild.observe(0.1)",
        "facade_labels_inc": "facade.labels('GET', '/x').inc()",
        "facade_timer_with": "with timer: pass",
        "facade_timer_decorated_call": "timed()",
        "bare_call": "bare()",
    }
    number, repeats = (20_000, 5) if quick else (200_000, 15)
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(repeats):
        for key, statement in cases.items():
            seconds = timeit.timeit(statement, number=number, globals=names)
            best[key] = min(best[key], seconds / number * 1e9)
    return best


def render_us(quick: bool, series: int = 1000) -> dict[str, float]:
    """µs to render ``series`` counter series: Metrics.render vs generate_latest."""
    metrics = Metrics()
    facade = metrics.counter("bench_hits_total", "hits", ["key"], max_series=series)
    registry = CollectorRegistry()
    peer = Counter("corestone_bench_hits_total", "hits", ["key"], registry=registry)
    for key in range(series):
        facade.labels(key=str(key)).inc(key)
        peer.labels(key=str(key)).inc(key)
    number, repeats = (10, 3) if quick else (50, 7)
    best = {"facade": float("inf"), "generate_latest": float("inf")}
    for _ in range(repeats):
        for key, render in (
            ("facade", metrics.render),
            ("generate_latest", lambda: generate_latest(registry)),
        ):
            best[key] = min(best[key], timeit.timeit(render, number=number) / number * 1e6)
    return {
        "render_1000_series_us": best["facade"],
        "generate_latest_1000_series_us": best["generate_latest"],
        "render_1000_series_bytes": float(len(metrics.render())),
        "generate_latest_1000_series_bytes": float(len(generate_latest(registry))),
    }
