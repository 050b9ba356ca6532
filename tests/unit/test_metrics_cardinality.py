"""The cardinality guard: a metric's series are capped, the excess folds into `other`."""

from __future__ import annotations

import threading
import tracemalloc

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from corestone.observability.metrics import Metrics


def _series(metrics: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    for family in text_string_to_metric_families(metrics.render().decode()):
        if family.name == name:
            return {
                tuple(sorted(sample.labels.items())): sample.value
                for sample in family.samples
                if sample.name.endswith("_total") or family.type != "counter"
            }
    return {}


def _warnings(events: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in events if "series cap" in str(e["event"])]


def test_100000_distinct_values_stay_within_the_cap_with_bounded_memory() -> None:
    """110,000 label values keep cap+1 series, little memory, one warning and a fold count."""
    metrics = Metrics(max_series=100)
    requests = metrics.counter("test_requests_total", "requests", ["user"])
    with capture_logs() as events:
        for user in range(100_000):
            requests.labels(user=f"u{user}").inc()
        tracemalloc.start()  # on for the last values only: it slows every allocation
        try:
            before, _ = tracemalloc.get_traced_memory()
            for user in range(100_000, 110_000):
                requests.labels(user=f"u{user}").inc()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()

    series = _series(metrics, "corestone_test_requests")
    assert len(series) == 101
    assert series[(("user", "other"),)] == 110_000 - 100
    assert grown < 32 * 1024  # under 4 bytes a value: nothing is kept per folded value
    assert len(_warnings(events)) == 1
    assert _warnings(events)[0]["metric"] == "corestone_test_requests_total"
    folded = _series(metrics, "corestone_metrics_series_folded")
    assert folded == {(("metric", "corestone_test_requests_total"),): 110_000 - 100}


def test_existing_children_keep_their_own_series_after_the_cap() -> None:
    """A child made before the cap, pre-bound or looked up again, still records into itself."""
    metrics = Metrics()
    hits = metrics.counter("test_hits_total", "hits", ["route", "status"], max_series=2)
    bound = hits.labels("/a", "200")
    hits.labels(route="/b", status="500").inc()
    with capture_logs():
        hits.labels("/c", "200").inc()
        bound.inc()
        hits.labels(route="/a", status="200").inc()

    assert _series(metrics, "corestone_test_hits") == {
        (("route", "/a"), ("status", "200")): 2.0,
        (("route", "/b"), ("status", "500")): 1.0,
        (("route", "other"), ("status", "other")): 1.0,
    }


def test_the_setting_is_the_default_and_a_metric_may_override_it() -> None:
    """The facade's max_series caps every metric unless the metric asks for its own cap."""
    metrics = Metrics(max_series=1)
    default = metrics.gauge("test_depth", "depth", ["queue"])
    wider = metrics.histogram("test_size_bytes", "size", ["kind"], max_series=3)
    with capture_logs() as events:
        for value in "abcd":
            default.labels(value).set(1)
            wider.labels(value).observe(1)

    assert len(_series(metrics, "corestone_test_depth")) == 2
    kinds = {
        dict(labels)["kind"]
        for labels in _series(metrics, "corestone_test_size_bytes")
        if "kind" in dict(labels)
    }
    assert kinds == {"a", "b", "c", "other"}
    assert [e["metric"] for e in _warnings(events)] == [
        "corestone_test_depth",
        "corestone_test_size_bytes",
    ]


def test_a_metric_without_labels_and_the_errors_of_labels_are_unchanged() -> None:
    """Wrong label names or counts raise prometheus_client's errors; unlabelled metrics refuse."""
    metrics = Metrics()
    labelled = metrics.counter("test_calls_total", "calls", ["a", "b"])
    plain = metrics.counter("test_plain_total", "plain")
    for call in (
        lambda: labelled.labels("x"),
        lambda: labelled.labels(a="x"),
        lambda: labelled.labels(a="x", c="y"),
        lambda: labelled.labels("x", b="y"),
        lambda: labelled.labels("x", "y").labels("z", "w"),
        lambda: plain.labels("x"),
    ):
        with pytest.raises(ValueError, match=r"[Ll]abel|chain|both"):
            call()
    assert labelled.labels(b=2, a=1) is labelled.labels("1", "2")


def test_concurrent_threads_never_exceed_the_cap() -> None:
    """Threads racing to make new series together end with exactly cap+1 series."""
    metrics = Metrics(max_series=50)
    counter = metrics.counter("test_race_total", "race", ["key"])
    start = threading.Barrier(4)

    def make(offset: int) -> None:
        start.wait()
        for key in range(offset, offset + 500):
            counter.labels(key).inc()

    threads = [threading.Thread(target=make, args=(n * 500,)) for n in range(4)]
    with capture_logs():
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    series = _series(metrics, "corestone_test_race")
    assert len(series) == 51
    assert sum(series.values()) == 2_000


def test_a_cap_below_one_is_refused() -> None:
    """max_series must allow at least one series, for the facade and for a metric."""
    with pytest.raises(ValueError, match="max_series"):
        Metrics(max_series=0)
    with pytest.raises(ValueError, match="max_series"):
        Metrics().counter("test_x_total", "x", ["a"], max_series=0)
