"""What the alert engine hands on: rules, alerts, transitions, and the sink that takes them.

The engine (:mod:`corestone.observability.alerts.engine`) evaluates rules over the
process's recent metric history and, after every evaluation, gives one
:class:`Evaluation` to its :class:`AlertSink`: the dispatcher that records transitions,
groups, silences, repeats and sends notifications. The two meet only here, so either
can be tested alone: the engine with a sink that collects what it is given, the
dispatcher with evaluations built by hand.

States follow Prometheus's alerting rules: a rule whose condition holds for a series
makes an alert *pending*; held for ``for_seconds`` it is *firing*; once the condition
clears (and ``keep_firing_for_seconds`` more have passed) it is *resolved*, reported in
that one evaluation, and then forgotten (*inactive*).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson

__all__ = [
    "Alert",
    "AlertSink",
    "AlertState",
    "Evaluation",
    "Rule",
    "Severity",
    "Transition",
    "labels_fingerprint",
]


class AlertState(enum.StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class Severity(enum.StrEnum):
    """The ``severity`` label's values, in rising order."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Rule:
    """One alerting rule, as a Prometheus rule file holds it (a subset of PromQL in ``expr``).

    ``labels`` are added to every alert of the rule and carry ``severity``;
    ``annotations`` are templates (``{{ $value }}``, ``{{ $labels.name }}``) rendered per
    alert.
    """

    name: str
    expr: str
    for_seconds: float = 0.0
    keep_firing_for_seconds: float = 0.0
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    group: str = "corestone"

    @property
    def severity(self) -> Severity:
        return Severity(self.labels.get("severity", Severity.WARNING))


def labels_fingerprint(labels: Mapping[str, str]) -> str:
    """A stable id for a label set: the same labels give the same id in every process."""
    encoded = orjson.dumps(dict(sorted(labels.items())))
    return hashlib.blake2b(encoded, digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class Alert:
    """One series of one rule, in one state.

    ``labels`` are the series' labels plus the rule's, plus ``alertname``;
    ``annotations`` are rendered. Times are wall-clock UTC: they are stored and shown.
    """

    rule: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    state: AlertState
    value: float
    active_since: datetime
    fired_at: datetime | None = None
    resolved_at: datetime | None = None

    @property
    def fingerprint(self) -> str:
        return labels_fingerprint(self.labels)

    @property
    def severity(self) -> Severity:
        return Severity(self.labels.get("severity", Severity.WARNING))

    def as_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "fingerprint": self.fingerprint,
            "state": self.state.value,
            "severity": self.severity.value,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "value": self.value,
            "active_since": self.active_since.isoformat(),
            "fired_at": self.fired_at.isoformat() if self.fired_at else None,
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
        }


@dataclass(frozen=True, slots=True)
class Transition:
    """An alert that changed state in this evaluation (``previous`` → ``alert.state``)."""

    alert: Alert
    previous: AlertState


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The outcome of one evaluation of every rule.

    ``alerts`` holds every alert that is pending or firing now, and those resolved in
    this evaluation; ``transitions`` the ones whose state changed.
    """

    at: datetime
    alerts: Sequence[Alert]
    transitions: Sequence[Transition]

    def firing(self) -> list[Alert]:
        return [alert for alert in self.alerts if alert.state is AlertState.FIRING]


class AlertSink(Protocol):
    """Takes every evaluation: records, groups, silences and notifies.

    ``accept`` must return quickly and never raise: a slow or failing receiver is the
    sink's to retry in the background, and must not hold up the next evaluation.
    """

    async def accept(self, evaluation: Evaluation) -> None: ...
