"""The metrics facade: get-or-create, naming rules, its own registry, valid exposition."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from corestone.observability.metrics import LATENCY_BUCKETS, Metrics


def _families(metrics: Metrics) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}


def test_asking_again_returns_the_same_metric() -> None:
    """A second request for a name with the same type and labels gives the same object."""
    metrics = Metrics()

    assert metrics.counter("jobs_total", "Jobs.", ["queue"]) is metrics.counter(
        "jobs_total", "Jobs.", ["queue"]
    )
    assert metrics.gauge("queue_depth", "Depth.") is metrics.gauge("queue_depth", "Depth.")
    assert metrics.histogram("job_seconds", "Time.") is metrics.histogram("job_seconds", "Time.")


def test_another_type_for_an_existing_name_is_refused() -> None:
    """Asking for a gauge under a histogram's name raises instead of returning the wrong kind."""
    metrics = Metrics()
    metrics.histogram("job_seconds", "Time.")

    with pytest.raises(ValueError, match="another type or labels"):
        metrics.gauge("job_seconds", "Time.")


def test_other_labels_for_an_existing_name_are_refused() -> None:
    """Asking for a metric with different labels raises."""
    metrics = Metrics()
    metrics.counter("jobs_total", "Jobs.", ["queue"])

    with pytest.raises(ValueError, match="another type or labels"):
        metrics.counter("jobs_total", "Jobs.", ["queue", "status"])
    with pytest.raises(ValueError, match="another type or labels"):
        metrics.counter("jobs_total", "Jobs.")


def test_counter_names_must_end_in_total() -> None:
    """A counter without the _total suffix breaks the naming contract and is refused."""
    with pytest.raises(ValueError, match="_total"):
        Metrics().counter("jobs", "Jobs.")


@pytest.mark.parametrize("bad", ["Queue_depth", "queue-depth", "1queue", "_queue", "a b", ""])
def test_names_must_be_lower_snake_case(bad: str) -> None:
    """Names with capitals, dashes, spaces or a leading digit or underscore are refused."""
    with pytest.raises(ValueError, match="lower_snake_case"):
        Metrics().gauge(bad, "Bad.")
    with pytest.raises(ValueError, match="lower_snake_case"):
        Metrics().counter(f"{bad}_total", "Bad.")


def test_names_are_prefixed_with_corestone() -> None:
    """Every metric appears in the exposition as corestone_<name>."""
    metrics = Metrics()
    metrics.counter("cache_hits_total", "Hits.").inc()
    metrics.gauge("cache_entries", "Entries.").set(3)

    text = metrics.render().decode()

    assert "corestone_cache_hits_total 1.0" in text
    assert "corestone_cache_entries 3.0" in text
    assert metrics.full_name("cache_entries") == "corestone_cache_entries"


def test_a_custom_prefix_is_used() -> None:
    """The prefix can be changed, for a service that wants its own namespace."""
    metrics = Metrics(prefix="taskboard")
    metrics.gauge("tasks_open", "Open tasks.").set(1)

    assert "taskboard_tasks_open 1.0" in metrics.render().decode()


def test_render_parses_as_prometheus_text() -> None:
    """render() output is valid Prometheus text with the samples that were recorded."""
    metrics = Metrics()
    metrics.counter("http_requests_total", "Requests.", ["method", "status"]).labels(
        method="GET", status="200"
    ).inc(2)
    metrics.gauge("pool_in_use", "In use.").set(4)
    metrics.histogram("query_seconds", "Query time.", ["op"]).labels(op="select").observe(0.003)

    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}

    requests = families["corestone_http_requests"]
    assert requests.type == "counter"
    [total] = [s for s in requests.samples if s.name == "corestone_http_requests_total"]
    assert total.labels == {"method": "GET", "status": "200"}
    assert total.value == 2.0
    assert families["corestone_pool_in_use"].samples[0].value == 4.0
    query = families["corestone_query_seconds"]
    assert query.type == "histogram"
    count = next(s for s in query.samples if s.name == "corestone_query_seconds_count")
    assert count.value == 1.0
    buckets = [s for s in query.samples if s.name == "corestone_query_seconds_bucket"]
    assert len(buckets) == len(LATENCY_BUCKETS) + 1


def test_histogram_buckets_can_be_chosen() -> None:
    """Explicit buckets replace the latency defaults."""
    metrics = Metrics()
    metrics.histogram("payload_bytes", "Sizes.", buckets=[100, 1000]).observe(50)

    buckets = [
        s.labels["le"]
        for s in _families(metrics)["corestone_payload_bytes"].samples  # type: ignore[attr-defined]
        if s.name.endswith("_bucket")
    ]
    assert buckets == ["100.0", "1000.0", "+Inf"]


def test_content_type_is_the_prometheus_text_format() -> None:
    """The content type served with render() is Prometheus text."""
    assert Metrics.content_type.startswith("text/plain; version=")


def test_each_facade_has_its_own_registry_never_the_global_one() -> None:
    """Metrics never touch prometheus_client's global REGISTRY, so instances do not collide."""
    first, second = Metrics(), Metrics()
    first.counter("isolated_total", "Isolated.").inc()
    second.counter("isolated_total", "Isolated.")

    assert first.registry is not REGISTRY
    assert first.registry is not second.registry
    assert REGISTRY.get_sample_value("corestone_isolated_total") is None
    assert first.registry.get_sample_value("corestone_isolated_total") == 1.0
    assert second.registry.get_sample_value("corestone_isolated_total") == 0.0


def test_a_given_registry_is_used() -> None:
    """A registry passed in is the one metrics are registered in."""
    registry = CollectorRegistry()
    Metrics(registry).gauge("given", "Given.").set(9)

    assert registry.get_sample_value("corestone_given") == 9.0


def test_custom_collectors_are_rendered() -> None:
    """A registered collector's values are computed at scrape time and exposed."""
    metrics = Metrics()
    calls: list[int] = []

    class Uptime:
        def collect(self) -> list[GaugeMetricFamily]:
            calls.append(1)
            return [GaugeMetricFamily("corestone_process_uptime_seconds", "Uptime.", value=12.0)]

    metrics.register_collector(Uptime())  # type: ignore[arg-type]
    calls.clear()

    text = metrics.render().decode()

    assert "corestone_process_uptime_seconds 12.0" in text
    assert calls == [1]


def test_scrape_time_collectors_describe_their_families() -> None:
    """The cache and breaker collectors name their families, so a plain registry refuses twins."""
    from corestone.cache.stats import StatsCollector
    from corestone.resilience.registry import BreakerRegistry, _Collector

    breakers = BreakerRegistry()
    makers: list[Callable[[], Any]] = [
        lambda: StatsCollector("corestone_cache", lambda: iter(())),
        lambda: _Collector(breakers, "corestone_breaker"),
    ]
    for make in makers:
        registry = CollectorRegistry()
        first = make()
        assert first.describe(), "describe() must name the families"
        registry.register(first)
        with pytest.raises(ValueError, match="Duplicated"):
            registry.register(make())


class _Depth:
    """A described collector of one gauge family, one series per queue."""

    def __init__(self, values: dict[str, float], name: str = "corestone_queue_depth") -> None:
        self.values = values
        self.name = name

    def _family(self, values: dict[str, float]) -> GaugeMetricFamily:
        family = GaugeMetricFamily(self.name, "Depth.", labels=["queue"])
        for queue, value in values.items():
            family.add_metric([queue], value)
        return family

    def describe(self) -> list[GaugeMetricFamily]:
        return [self._family({})]

    def collect(self) -> list[GaugeMetricFamily]:
        return [self._family(self.values)]


def test_collectors_of_the_same_families_are_merged_and_the_newest_wins_a_series() -> None:
    """A shared family is exposed once: distinct series merged, a shared series from the newest."""
    metrics = Metrics()
    metrics.register_collector(_Depth({"mail": 1.0, "jobs": 2.0}))  # type: ignore[arg-type]
    metrics.register_collector(_Depth({"jobs": 5.0, "push": 3.0}))  # type: ignore[arg-type]

    [family] = list(text_string_to_metric_families(metrics.render().decode()))

    assert {s.labels["queue"]: s.value for s in family.samples} == {
        "mail": 1.0,
        "jobs": 5.0,
        "push": 3.0,
    }
    assert len(family.samples) == 3


def test_a_collector_partly_overlapping_another_is_refused() -> None:
    """Families shared only in part cannot be merged, so the registration raises."""

    class Both(_Depth):
        def describe(self) -> list[GaugeMetricFamily]:
            return [self._family({}), GaugeMetricFamily("corestone_queue_age_seconds", "Age.")]

    metrics = Metrics()
    metrics.register_collector(_Depth({}))  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="Duplicated"):
        metrics.register_collector(Both({}))  # type: ignore[arg-type]
