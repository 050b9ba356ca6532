"""Wire the alert engine into an :class:`~corestone.Infrastructure`.

``add_alerts(infra, sink)`` builds the metric history over ``infra.metrics``, registers
every rule's expression with it, builds the engine, manages both as components (the
history first, so it is sampling before the first evaluation) and exposes them as
``infra.alerts``::

    alerts = add_alerts(infra, sink)          # the default rules and CORESTONE_ALERTS_RULES_FILE
    alerts.history.watch("rate(corestone_http_requests_total[1m])")  # the dashboard's own
    async with infra:
        infra.alerts.engine.active()

Takes a small protocol rather than the runtime, which names :class:`Alerts` for its
``alerts`` property (the two would import each other).

One engine per process: under several workers (``--workers N``) each evaluates the
merged view of all of them, so run the sink's notifications from one of them only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from corestone._alert_settings import AlertSettings
from corestone.observability.alerts.defaults import default_rules
from corestone.observability.alerts.engine import AlertEngine
from corestone.observability.alerts.model import AlertSink, Rule
from corestone.observability.alerts.rules_file import load_rules_file
from corestone.observability.history import MetricsHistory

if TYPE_CHECKING:
    from corestone.observability.health import CheckResult
    from corestone.observability.metrics import Metrics

__all__ = ["Alerts", "AlertsHost", "add_alerts", "configured_rules", "history_from_settings"]


class AlertsHost(Protocol):
    """The parts of an infrastructure the alerts wiring uses (``Infrastructure`` is one)."""

    @property
    def settings(self) -> AlertSettings: ...

    metrics: Metrics

    @property
    def alerts(self) -> Any: ...

    @alerts.setter
    def alerts(self, alerts: Any) -> None: ...

    def add(
        self,
        component: Any,
        *,
        check: Callable[[], Awaitable[CheckResult | None]] | None = None,
        component_type: str = "component",
        critical: bool = True,
    ) -> Any: ...


class Alerts:
    """What :func:`add_alerts` wired into one infrastructure (``infra.alerts``)."""

    def __init__(self, engine: AlertEngine, history: MetricsHistory) -> None:
        self.engine = engine
        self.history = history


def configured_rules(settings: AlertSettings) -> list[Rule]:
    """The default rules (unless turned off), then those of ``alerts_rules_file``."""
    rules = default_rules(settings) if settings.alerts_default_rules else []
    if settings.alerts_rules_file is not None:
        rules.extend(load_rules_file(settings.alerts_rules_file))
    return rules


def history_from_settings(infra: AlertsHost) -> MetricsHistory:
    """The metric history as the ``CORESTONE_ALERTS_HISTORY_…`` settings size it, unmanaged.

    :func:`add_alerts` makes one for its engine; a process that runs no engine (taskboard's
    ``serve --no-worker``) makes one for its dashboard alone and adds it as a component.
    """
    settings = infra.settings
    return MetricsHistory(
        infra.metrics,
        step=settings.alerts_history_step_seconds,
        retention=settings.alerts_history_retention_seconds,
        max_series=settings.alerts_history_max_series,
    )


def add_alerts(
    infra: AlertsHost, sink: AlertSink, *, rules: Sequence[Rule] | None = None
) -> Alerts:
    """Build, manage and expose the history and the engine (``rules``: the configured ones)."""
    settings = infra.settings
    chosen = list(configured_rules(settings) if rules is None else rules)
    history = history_from_settings(infra)
    for rule in chosen:
        history.watch(rule.expr)
    engine = AlertEngine(
        history, sink, chosen, metrics=infra.metrics, interval=settings.alerts_interval_seconds
    )
    infra.add(history, critical=False)
    infra.add(engine, check=engine.check, component_type="alerts", critical=False)
    alerts = Alerts(engine, history)
    infra.alerts = alerts
    return alerts
