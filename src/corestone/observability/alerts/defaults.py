"""The rules every corestone service gets, over the metrics corestone itself exposes.

Thresholds come from the settings (``CORESTONE_ALERTS_*``), so the file ``corestone
alerts export`` writes for Prometheus holds the same numbers this process evaluates.
Every expression stays inside the supported PromQL subset and runs unchanged under
Prometheus; ``deploy/prometheus/tests`` proves each one with ``promtool test rules``.
Aggregations drop ``pid`` where a value is the same for every worker (a backlog read
from the database) and keep it where it is the worker's own (its memory).
"""

from __future__ import annotations

from corestone._alert_settings import AlertSettings
from corestone.observability.alerts.model import Rule

__all__ = ["default_rules"]


def _n(value: float) -> str:
    """A threshold as PromQL reads it: ``2147483648`` rather than ``2.147483648e9``."""
    text = repr(float(value))
    return text.removesuffix(".0")


def default_rules(settings: AlertSettings | None = None) -> list[Rule]:
    """The default rules with the thresholds of ``settings`` (the defaults if None)."""
    s = settings if settings is not None else AlertSettings.model_validate({})
    http = "corestone_http_requests_total"
    return [
        Rule(
            name="CorestoneHttpErrorRatioHigh",
            expr=f'sum(rate({http}{{status=~"5.."}}[5m])) / sum(rate({http}[5m]))'
            f" > {_n(s.alerts_http_error_ratio)}",
            for_seconds=300,
            labels={"severity": "critical"},
            annotations={
                "summary": "HTTP 5xx ratio is {{ $value | humanizePercentage }}",
                "description": "More than "
                f"{_n(s.alerts_http_error_ratio * 100)}% of responses were 5xx for 5 minutes.",
            },
            group="corestone-http",
        ),
        Rule(
            name="CorestoneHttpLatencyHigh",
            expr="histogram_quantile(0.99, sum by (le) "
            "(rate(corestone_http_request_duration_seconds_bucket[5m])))"
            f" > {_n(s.alerts_http_p99_seconds)}",
            for_seconds=600,
            labels={"severity": "warning"},
            annotations={
                "summary": "HTTP p99 latency is {{ $value | humanizeDuration }}",
                "description": "The 99th percentile of request durations stayed above "
                f"{_n(s.alerts_http_p99_seconds)}s for 10 minutes.",
            },
            group="corestone-http",
        ),
        Rule(
            name="CorestoneBreakerOpen",
            expr='max by (name) (corestone_breaker_state{state="open"}) > 0',
            for_seconds=60,
            labels={"severity": "warning"},
            annotations={
                "summary": "Circuit breaker {{ $labels.name }} is open",
                "description": "Calls to {{ $labels.name }} are refused while it recovers.",
            },
            group="corestone-dependencies",
        ),
        Rule(
            name="CorestoneDatabasePoolSaturated",
            expr="corestone_db_pool_checked_out / corestone_db_pool_size"
            f" > {_n(s.alerts_db_pool_saturation_ratio)}",
            for_seconds=300,
            labels={"severity": "warning"},
            annotations={
                "summary": "Database pool {{ $labels.pool }} is "
                "{{ $value | humanizePercentage }} checked out",
                "description": "Requests wait for connections; raise the pool size or find "
                "the long transactions.",
            },
            group="corestone-dependencies",
        ),
        Rule(
            name="CorestoneCacheHitRatioLow",
            expr="sum by (cache) "
            '(rate(corestone_cache_requests_total{tier="l1",result="hit"}[10m]))'
            ' / sum by (cache) (rate(corestone_cache_requests_total{tier="l1"}[10m]))'
            f" < {_n(s.alerts_cache_hit_ratio)}",
            for_seconds=900,
            labels={"severity": "info"},
            annotations={
                "summary": "Cache {{ $labels.cache }} hits {{ $value | humanizePercentage }} in L1",
                "description": "The in-process hit ratio collapsed: an invalidation storm, "
                "or an L1 too small for the working set.",
            },
            group="corestone-dependencies",
        ),
        Rule(
            name="CorestoneSlowQueriesFrequent",
            expr="sum(rate(corestone_db_slow_queries_total[5m]))"
            f" > {_n(s.alerts_slow_queries_per_second)}",
            for_seconds=600,
            labels={"severity": "warning"},
            annotations={
                "summary": "{{ $value | humanize }} slow statements per second",
                "description": "See `corestone queries` for the slowest shapes and their plans.",
            },
            group="corestone-dependencies",
        ),
        Rule(
            name="CorestoneEmailBacklogHigh",
            expr=f"max(corestone_email_outbox_backlog) > {_n(s.alerts_email_backlog)}",
            for_seconds=900,
            labels={"severity": "warning"},
            annotations={
                "summary": "{{ $value | humanize }} emails are waiting to be sent",
                "description": "The email outbox is not draining: check the providers.",
            },
            group="corestone-queues",
        ),
        Rule(
            name="CorestoneOutboxLagHigh",
            expr=f"max(corestone_events_outbox_lag_seconds) > {_n(s.alerts_outbox_lag_seconds)}",
            for_seconds=300,
            labels={"severity": "warning"},
            annotations={
                "summary": "The oldest unpublished event is {{ $value | humanizeDuration }} old",
                "description": "The outbox relay is not publishing: check the broker.",
            },
            group="corestone-queues",
        ),
        Rule(
            name="CorestoneConsumerLagHigh",
            expr=f"max by (group) (corestone_events_consumer_lag) > {_n(s.alerts_consumer_lag)}",
            for_seconds=600,
            labels={"severity": "warning"},
            annotations={
                "summary": "Consumer group {{ $labels.group }} is {{ $value | humanize }} "
                "messages behind",
                "description": "Handlers are slower than producers, or failing.",
            },
            group="corestone-queues",
        ),
        Rule(
            name="CorestoneDiskSpaceLow",
            expr="min by (path) (corestone_system_disk_free_ratio)"
            f" < {_n(s.alerts_disk_free_ratio)}",
            for_seconds=300,
            labels={"severity": "critical"},
            annotations={
                "summary": "{{ $labels.path }} has {{ $value | humanizePercentage }} free",
                "description": "Free disk space before writes fail.",
            },
            group="corestone-system",
        ),
        Rule(
            name="CorestoneMemoryPressure",
            expr=f"max(corestone_system_memory_used_ratio) > {_n(s.alerts_memory_used_ratio)}",
            for_seconds=600,
            labels={"severity": "warning"},
            annotations={
                "summary": "System memory is {{ $value | humanizePercentage }} used",
                "description": "The host is close to swapping or the OOM killer.",
            },
            group="corestone-system",
        ),
        Rule(
            name="CorestoneProcessMemoryHigh",
            expr=f"corestone_process_resident_memory_bytes > {_n(s.alerts_resident_memory_bytes)}",
            for_seconds=600,
            labels={"severity": "warning"},
            annotations={
                "summary": "A worker uses {{ $value | humanize }}B of resident memory",
                "description": "Resident memory above the limit: a leak, or a cache too large.",
            },
            group="corestone-system",
        ),
        Rule(
            name="CorestoneEventLoopLagHigh",
            expr="avg_over_time(corestone_event_loop_lag_seconds[1m])"
            f" > {_n(s.alerts_event_loop_lag_seconds)}",
            for_seconds=300,
            labels={"severity": "warning"},
            annotations={
                "summary": "The event loop lags {{ $value | humanizeDuration }}",
                "description": "Blocking work on the loop delays every request of the worker.",
            },
            group="corestone-system",
        ),
    ]
