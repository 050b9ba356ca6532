"""Observability suite: the cost of recording, of the HTTP middleware, of /metrics and /health.

``uv run python -m bench observability [--quick]``, one process, peers side by side:

- recording: prometheus_client's ``Counter.inc()``, ``.labels(...).inc()`` and
  ``Histogram.observe()`` and the OpenTelemetry SDK's ``Counter.add()``, beside the
  facade's pre-bound labelled children, its ``.labels()`` lookup (the cardinality guard)
  and its timers (bench/_observability_record.py);
- the HTTP metrics, request-context and access-log middleware on one FastAPI route,
  bare and wrapped, in µs per request (bench/_observability_http.py);
- ``Metrics.render`` with 1,000 series beside prometheus_client's ``generate_latest``;
- ``/health/ready`` on taskboard over PostgreSQL at 1,000 requests/s: the database
  checks that ran, per cache interval;
- the alert engine evaluating 50 rules over an hour of in-process history, in CPU time
  per evaluation and as a share of one core (bench/_observability_alerts.py).
"""

from __future__ import annotations

import os

from bench._observability_alerts import alert_engine_cost
from bench._observability_http import middleware_us, readiness_checks
from bench._observability_record import record_ns, render_us
from bench._report import Report

__all__ = ["run"]

_RECORDING = {
    "prometheus_client_counter_inc": "prometheus_client Counter.inc()",
    "prometheus_client_labels_inc": "prometheus_client .labels(...).inc()",
    "prometheus_client_histogram_observe": "prometheus_client Histogram.observe()",
    "otel_sdk_counter_add": "OpenTelemetry SDK Counter.add(1, attributes)",
    "facade_prebound_inc": "facade pre-bound labelled child .inc()",
    "facade_prebound_observe": "facade pre-bound labelled child .observe()",
    "facade_labels_inc": "facade .labels(...).inc() (cardinality guard)",
    "facade_timer_with": "facade pre-bound timer: with timer: pass",
    "facade_timer_decorated_call": "facade pre-bound timer: decorated no-op call",
    "bare_call": "a bare no-op call (floor)",
}


async def run(quick: bool) -> Report:
    report = Report("observability", ("operation", "time", "unit"))
    load = os.getloadavg()
    recorded = record_ns(quick)
    for key, label in _RECORDING.items():
        report.rows.append((label, recorded[key], "ns"))
        report.results[f"{key}_ns"] = recorded[key]

    middleware = await middleware_us(quick)
    for label, key in (
        ("FastAPI route, bare", "route_bare_us"),
        ("same + context, access log, metrics", "route_with_middleware_us"),
        ("  overhead: all three middleware", "middleware_overhead_us"),
        ("  overhead: HTTP metrics alone", "metrics_middleware_overhead_us"),
        ("  overhead: context + access log", "context_and_log_overhead_us"),
    ):
        report.rows.append((label, middleware[key], "µs/request"))
    report.results.update(middleware)

    rendered = render_us(quick)
    report.rows += [
        ("Metrics.render(), 1,000 series", rendered["render_1000_series_us"], "µs"),
        ("generate_latest(), 1,000 series", rendered["generate_latest_1000_series_us"], "µs"),
    ]
    report.results.update(rendered)

    ready = await readiness_checks(quick)
    report.rows += [
        ("/health/ready probes sent", ready["ready_requests"], "requests"),
        ("  achieved rate", ready["ready_requests_per_second"], "requests/s"),
        ("  answered 200 (share)", ready["ready_ok_ratio"], "ratio"),
        ("  database checks run", ready["ready_database_checks"], "checks"),
        ("  cache intervals touched", ready["ready_cache_intervals"], "intervals"),
    ]
    report.results.update(ready)

    alerts = await alert_engine_cost(quick)
    share = alerts["alert_engine_and_history_core_share"]
    report.rows += [
        ("alert engine: one evaluation of 50 rules", alerts["alert_evaluation_cpu_ms"], "CPU ms"),
        ("history: one sample of the watched series", alerts["alert_sample_cpu_ms"], "CPU ms"),
        ("  share of one core (evaluation + sampling)", share * 100, "%"),
    ]
    report.results.update(alerts)

    report.check(
        "facade pre-bound labelled inc ns / prometheus_client plain inc ns",
        recorded["facade_prebound_inc"] / recorded["prometheus_client_counter_inc"],
        "<=",
        1.0,
    )
    report.check(
        "HTTP metrics + context + logging middleware, µs per request",
        middleware["middleware_overhead_us"],
        "<=",
        20.0,
    )
    report.check(
        "render 1,000 series / generate_latest",
        rendered["render_1000_series_us"] / rendered["generate_latest_1000_series_us"],
        "<=",
        1.0,
    )
    report.check(
        "database checks per health cache interval at 1,000 /health/ready per s",
        ready["ready_database_checks_per_interval"],
        "<=",
        1.0,
    )
    report.check(
        "alert engine, 50 rules: CPU share of one core, evaluation + history sampling",
        alerts["alert_engine_and_history_core_share"],
        "<",
        0.01,
    )
    report.notes.append(
        "load average at the start: {:.2f} {:.2f} {:.2f} (2 vCPUs shared)".format(*load)
    )
    report.notes.append(
        "recording: timeit of one statement, best of the repeats, operations interleaved; "
        "a pre-bound child is the facade's counter or histogram child (the guard is in labels())"
    )
    report.notes.append(
        "middleware: best round of sequential in-process ASGI calls, access log as JSON to "
        "/dev/null; /health/ready: each probe a task, paced at 1,000/s, in process (where the "
        "process cannot keep up, the achieved rate is lower and a starved loop times the "
        "database check out: 503s; the check counts how often the database was asked)"
    )
    return report
