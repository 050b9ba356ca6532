"""Alerting: rules over the service's own metrics, states, silences and notifications."""

from corestone.observability.alerts.defaults import default_rules
from corestone.observability.alerts.engine import AlertEngine
from corestone.observability.alerts.model import (
    Alert,
    AlertSink,
    AlertState,
    Evaluation,
    Rule,
    Severity,
    Transition,
    labels_fingerprint,
)
from corestone.observability.alerts.rules_file import (
    RuleFileError,
    dump_rules,
    load_rules,
    load_rules_file,
)
from corestone.observability.alerts.wiring import (
    Alerts,
    add_alerts,
    configured_rules,
    history_from_settings,
)

__all__ = [
    "Alert",
    "AlertEngine",
    "AlertSink",
    "AlertState",
    "Alerts",
    "Evaluation",
    "Rule",
    "RuleFileError",
    "Severity",
    "Transition",
    "add_alerts",
    "configured_rules",
    "default_rules",
    "dump_rules",
    "history_from_settings",
    "labels_fingerprint",
    "load_rules",
    "load_rules_file",
]
