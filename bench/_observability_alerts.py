"""The alert engine's cost: 50 rules over an hour of in-process history, in CPU time.

The history holds what a busy service would give it: HTTP requests for 20 routes and
four statuses and a latency histogram per route, sampled every ``step`` for an hour (the
retention), with the 13 default rules and 37 more over the HTTP metrics (per-route error
ratios, p99 and p50 latencies, request rates) watched. Then the engine evaluates every
rule, ``evaluations`` times, each one ``interval`` later with a fresh sample in between,
and the CPU seconds (``time.process_time``) of the evaluations alone and of the sampling
alone are what it costs; divided by their intervals, the share of one core.
"""

from __future__ import annotations

import random
import time
from typing import Any

from corestone._alert_settings import AlertSettings
from corestone.observability import Metrics
from corestone.observability.alerts import AlertEngine, Evaluation, Rule
from corestone.observability.alerts.defaults import default_rules
from corestone.observability.history import MetricsHistory
from corestone.testing import ManualClock

__all__ = ["alert_engine_cost"]

_ROUTES = [f"/api/resource{n}/{{id}}" for n in range(20)]
_STATUSES = ("200", "201", "404", "500")
_HTTP = "corestone_http_requests_total"
_LATENCY = "corestone_http_request_duration_seconds_bucket"


class _Discard:
    async def accept(self, evaluation: Evaluation) -> None:
        return None


def _rules() -> list[Rule]:
    rules = default_rules()
    for index, route in enumerate(_ROUTES[:12]):
        where = f'route="{route}"'
        rules.append(
            Rule(
                name=f"RouteErrors{index}",
                expr=f'sum(rate({_HTTP}{{{where},status=~"5.."}}[5m]))'
                f" / sum(rate({_HTTP}{{{where}}}[5m])) > 0.05",
                for_seconds=300,
            )
        )
        rules.append(
            Rule(
                name=f"RouteP99{index}",
                expr=f"histogram_quantile(0.99, sum by (le) (rate({_LATENCY}{{{where}}}[5m])))"
                " > 0.5",
                for_seconds=300,
            )
        )
        rules.append(
            Rule(name=f"RouteRate{index}", expr=f"sum(rate({_HTTP}{{{where}}}[1m])) > 1000")
        )
    rules.append(
        Rule(
            name="P50ByRoute",
            expr=f"histogram_quantile(0.5, sum by (le, route) (rate({_LATENCY}[5m]))) > 0.25",
        )
    )
    return rules


def _traffic(metrics: Metrics, rng: random.Random) -> Any:
    requests = metrics.counter("http_requests_total", "r", ["method", "route", "status"])
    latency = metrics.histogram("http_request_duration_seconds", "l", ["method", "route"])
    counters = [requests.labels("GET", r, s) for r in _ROUTES for s in _STATUSES]
    histograms = [latency.labels("GET", r) for r in _ROUTES]

    def step() -> None:
        for counter in counters:
            counter.inc(rng.randint(0, 50))
        for histogram in histograms:
            for _ in range(5):
                histogram.observe(rng.expovariate(20.0))

    return step


async def alert_engine_cost(quick: bool) -> dict[str, float]:
    """CPU seconds per evaluation and per sample, and their share of one core."""
    settings = AlertSettings.model_validate({})
    interval, step = settings.alerts_interval_seconds, settings.alerts_history_step_seconds
    wall, mono = ManualClock(1_700_000_000.0), ManualClock(0.0)
    metrics = Metrics()
    traffic = _traffic(metrics, random.Random(17))
    history = MetricsHistory(metrics, step=step, retention=3600.0, clock=wall)
    rules = _rules()
    for rule in rules:
        history.watch(rule.expr)
    evaluations = 10 if quick else 40
    engine = AlertEngine(
        history, _Discard(), rules, metrics=metrics, interval=interval,
        sink_backlog=evaluations + 1, wall=wall, monotonic=mono,
    )  # fmt: skip
    for _ in range(int(3600 / step)):  # an hour of history: what the rules look back on
        traffic()
        history.sample()
        wall.advance(step)
    evaluate_cpu = sample_cpu = 0.0
    for _ in range(evaluations):
        traffic()
        started = time.process_time()
        history.sample()
        sample_cpu += time.process_time() - started
        started = time.process_time()
        await engine.evaluate()
        evaluate_cpu += time.process_time() - started
        wall.advance(interval)
        mono.advance(interval)
    per_evaluation = evaluate_cpu / evaluations
    per_sample = sample_cpu / evaluations
    return {
        "alert_rules": float(len(rules)),
        "alert_history_series": float(history.series_count),
        "alert_evaluation_cpu_ms": per_evaluation * 1e3,
        "alert_sample_cpu_ms": per_sample * 1e3,
        "alert_evaluation_core_share": per_evaluation / interval,
        "alert_engine_and_history_core_share": per_evaluation / interval + per_sample / step,
    }
