"""The operations dashboard of a running :class:`~corestone.Infrastructure`: its panels.

:func:`add_dashboard` builds a :class:`~corestone.observability.dashboard.Dashboard` with
the panels every corestone service has, registers it as a service (a route reads it with
``service(Dashboard)``) and as a component (stopped with the infrastructure):

``traffic``
    request rate, error ratio and latency p50/p95/p99 over the last hour, from the
    in-process metric history (``infra.alerts.history``, which samples only what is
    watched: the panel registers its expressions when the infrastructure starts), one
    point a minute;
``health``
    the readiness report (``infra.health.ready()``, cached by the registry);
``breakers``
    every breaker's state and counters;
``cache``
    hits, misses and the hit ratio per tier (L1 in process, L2 Redis), the L2 breaker
    and the backplane;
``queries``
    the slowest statements and the index advisor's proven suggestions (the query
    report, cached 30 s by ``database_report``; its first build may take longer than a
    poll, and then shows at the next one);
``backlogs``
    the email outbox (by status, backlog, oldest, recent deliveries), the events outbox
    (backlog, lag) and the consumers' lag per group;
``live``
    live (SSE) streams open, frames sent, clients dropped.

Extra panels (an application's own, the alert store's) are passed as ``extra``.

What a panel shows is never a workspace's data: no cache keys, statements as
fingerprints, and recent deliveries without recipients, subjects or error texts (an
owner of one workspace may read the dashboard; the messages are other workspaces').
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from corestone.db.report import REPORT_TTL_SECONDS, database_report
from corestone.email.tracking import EmailTracker
from corestone.errors import ConfigurationError
from corestone.observability.dashboard import Dashboard, Panel, PanelSource
from corestone.observability.metrics import Metrics
from corestone.observability.series import MetricsQuery

if TYPE_CHECKING:
    from corestone.runtime import Infrastructure

__all__ = [
    "HISTORY_STEP_SECONDS",
    "HISTORY_WINDOW_SECONDS",
    "RECENT_DELIVERIES",
    "HistorySource",
    "WatchedHistory",
    "add_dashboard",
    "standard_panels",
    "traffic_expressions",
]

HISTORY_WINDOW_SECONDS = 3600.0
"""How far back the traffic charts go."""
HISTORY_STEP_SECONDS = 60.0
"""One chart point per this many seconds: 60 points an hour, cheap to send every poll."""
RECENT_DELIVERIES = 8
"""How many of the newest emails the backlogs panel lists."""
_COUNTERS_TTL = 2.0
"""Counters and gauges: cheap, but several pages polling at once read them once."""


class WatchedHistory(MetricsQuery, Protocol):
    """A metric history that keeps only the metrics of the expressions it was given."""

    def watch(self, expr: str) -> None: ...


HistorySource = Callable[[], WatchedHistory]
"""Where the traffic panel finds the history, asked once the infrastructure starts (the
alerts wiring may add it after the dashboard); raising says why there is none."""


def traffic_expressions(metrics: Metrics) -> dict[str, str]:
    """The traffic panel's PromQL, by series name, over ``metrics``' HTTP metric names.

    The same expressions run unchanged under Prometheus (``deploy/grafana``'s panels).
    """
    requests = metrics.full_name("http_requests_total")
    buckets = metrics.full_name("http_request_duration_seconds_bucket")
    answer = {
        "request_rate": f"sum(rate({requests}[1m]))",
        "error_ratio": (f'sum(rate({requests}{{status=~"5.."}}[5m])) / sum(rate({requests}[5m]))'),
    }
    for name, q in (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99")):
        answer[name] = f"histogram_quantile({q}, sum by (le) (rate({buckets}[5m])))"
    return answer


def standard_panels(
    infra: Infrastructure,
    *,
    history: HistorySource | None = None,
    wall: Callable[[], float] = time.time,
) -> list[Panel]:
    """The panels every corestone service has (the module doc lists them)."""
    tracker = EmailTracker(infra.db)
    traffic = _Traffic(infra.metrics, history, wall)
    return [
        Panel("traffic", traffic.load, ttl=_COUNTERS_TTL, on_start=traffic.start),
        Panel("health", _health(infra), timeout=5.0),
        Panel("breakers", _breakers(infra)),
        Panel("cache", _cache(infra)),
        Panel("queries", _queries(infra), ttl=REPORT_TTL_SECONDS, timeout=3.0),
        Panel("backlogs", _backlogs(infra.metrics, tracker), ttl=_COUNTERS_TTL),
        Panel("live", _live(infra.metrics), ttl=_COUNTERS_TTL),
    ]


def add_dashboard(
    infra: Infrastructure,
    *,
    history: HistorySource | None = None,
    extra: Sequence[Panel] = (),
) -> Dashboard:
    """The standard panels and ``extra`` as a registered service and component.

    ``history`` (default: ``infra.alerts.history``, the alert engine's) is asked for when
    the infrastructure starts; without one the traffic panel says so.
    """

    def alerts_history() -> WatchedHistory:
        return infra.alerts.history

    source = history if history is not None else alerts_history
    dashboard = Dashboard([*standard_panels(infra, history=source), *extra])
    infra.services.register_value(Dashboard, dashboard)
    infra.add(dashboard, component_type="component", critical=False)
    return dashboard


class _Traffic:
    """The traffic panel: its expressions registered with the history when it starts."""

    def __init__(
        self, metrics: Metrics, history: HistorySource | None, wall: Callable[[], float]
    ) -> None:
        self.expressions = traffic_expressions(metrics)
        self._source = history
        self._wall = wall
        self._history: MetricsQuery | None = None
        self._missing = "no metric history in this process"

    def start(self) -> None:
        if self._source is None:
            return
        try:
            history = self._source()
        except ConfigurationError:  # infra.alerts without add_alerts
            self._missing = "no metric history in this process: alerts are not set up"
            return
        for expr in self.expressions.values():
            history.watch(expr)
        self._history = history

    async def load(self) -> dict[str, Any]:
        if self._history is None:
            raise LookupError(self._missing)
        end = self._wall()
        start = end - HISTORY_WINDOW_SECONDS
        series: dict[str, list[list[float | None]]] = {}
        for name, expr in self.expressions.items():
            found = self._history.query_range(expr, start=start, end=end, step=HISTORY_STEP_SECONDS)
            points = found[0].points if found else ()
            series[name] = [[round(t, 3), _finite(v)] for t, v in points]
        return {
            "window_seconds": HISTORY_WINDOW_SECONDS,
            "step_seconds": HISTORY_STEP_SECONDS,
            "expressions": self.expressions,
            "series": series,
        }


def _finite(value: float) -> float | None:
    """JSON has no NaN: a ratio over no requests is a gap in the chart, not a zero."""
    return None if value != value or value in (float("inf"), float("-inf")) else value


def _health(infra: Infrastructure) -> PanelSource:
    async def load() -> dict[str, Any]:
        return (await infra.health.ready()).as_json()

    return load


def _breakers(infra: Infrastructure) -> PanelSource:
    async def load() -> dict[str, Any]:
        return infra.breakers.as_json()

    return load


def _ratio(hits: int, misses: int) -> float | None:
    total = hits + misses
    return None if total == 0 else round(hits / total, 4)


def _cache(infra: Infrastructure) -> PanelSource:
    async def load() -> dict[str, Any]:
        snapshot = infra.cache.snapshot()
        stats = snapshot["stats"]
        l1 = (stats["l1_hits"], stats["l1_misses"])
        l2 = (stats["l2_hits"], stats["l2_misses"])
        return {
            "name": snapshot["name"],
            "tiers": [
                {"tier": "l1", "hits": l1[0], "misses": l1[1], "hit_ratio": _ratio(*l1)},
                {
                    "tier": "l2",
                    "hits": l2[0],
                    "misses": l2[1],
                    "errors": stats["l2_errors"],
                    "hit_ratio": _ratio(*l2),
                    "configured": snapshot["l2"] is not None,
                },
            ],
            "l1_entries": snapshot["l1"]["entries"],
            "l2": snapshot["l2"],
            "backplane": snapshot["backplane"],
        }

    return load


def _queries(infra: Infrastructure) -> PanelSource:
    async def load() -> dict[str, Any]:
        report = await database_report(infra.db, infra.settings, limit=10)
        keep = ("fingerprint", "query", "calls", "mean_ms", "p95_ms", "total_ms", "source")
        return {
            "dialect": report["dialect"],
            "sources": report["sources"],
            "top": [{k: q.get(k) for k in keep} for q in report["top"][:5]],
            "suggestions": [
                {k: s.get(k) for k in ("table", "columns", "statement", "gain", "verified")}
                for s in report["suggestions"][:5]
            ],
            "n_plus_one": len(report["n_plus_one"]),
            "errors": report["errors"],
        }

    return load


def _samples(
    metrics: Metrics, names: Iterable[str]
) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The current samples of the named series (full names), of this process's registry."""
    wanted = {metrics.full_name(name): name for name in names}
    found: dict[str, list[tuple[dict[str, str], float]]] = {name: [] for name in wanted.values()}
    for family in metrics.registry.collect():
        for sample in family.samples:
            short = wanted.get(sample.name)
            if short is not None:
                found[short].append((dict(sample.labels), float(sample.value)))
    return found


def _single(samples: Sequence[tuple[Mapping[str, str], float]]) -> float | None:
    """An unlabelled gauge's value (summed across ``pid`` series), None when never set."""
    return sum(value for _, value in samples) if samples else None


def _backlogs(metrics: Metrics, tracker: EmailTracker) -> PanelSource:
    gauges = (
        "email_outbox_backlog",
        "email_outbox_oldest_seconds",
        "events_outbox_backlog",
        "events_outbox_lag_seconds",
        "events_consumer_lag",
    )

    async def load() -> dict[str, Any]:
        found = _samples(metrics, gauges)
        counts = await tracker.counts()
        recent = await tracker.messages(limit=RECENT_DELIVERIES)
        lag_by_group: dict[str, float] = {}
        for labels, value in found["events_consumer_lag"]:
            group = labels.get("group", "")
            lag_by_group[group] = lag_by_group.get(group, 0.0) + value
        return {
            "email": {
                "counts": counts,
                "backlog": _single(found["email_outbox_backlog"]),
                "oldest_seconds": _single(found["email_outbox_oldest_seconds"]),
                "recent": [
                    {
                        "id": m.id,
                        "status": m.status,
                        "provider": m.provider,
                        "attempts": m.attempts,
                        "updated_at": m.updated_at.isoformat(),
                    }
                    for m in recent
                ],
            },
            "events": {
                "backlog": _single(found["events_outbox_backlog"]),
                "lag_seconds": _single(found["events_outbox_lag_seconds"]),
            },
            "consumers": [
                {"group": group, "lag": lag} for group, lag in sorted(lag_by_group.items())
            ],
        }

    return load


def _live(metrics: Metrics) -> PanelSource:
    async def load() -> dict[str, Any]:
        found = _samples(
            metrics, ("live_streams_open", "live_events_sent_total", "live_clients_dropped_total")
        )
        return {
            "open": _single(found["live_streams_open"]) or 0,
            "events_sent": _single(found["live_events_sent_total"]) or 0,
            "dropped": {
                labels.get("reason", ""): value
                for labels, value in found["live_clients_dropped_total"]
            },
        }

    return load
