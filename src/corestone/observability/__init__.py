"""Observability: metrics, health checks and structured logs."""

from corestone.observability.health import (
    CheckResult,
    HealthCheck,
    HealthRegistry,
    HealthReport,
    HealthStatus,
)
from corestone.observability.logging import SecretRedactor, configure_logging, get_logger
from corestone.observability.metrics import LATENCY_BUCKETS, Metrics
from corestone.observability.timers import Timer

__all__ = [
    "LATENCY_BUCKETS",
    "CheckResult",
    "HealthCheck",
    "HealthRegistry",
    "HealthReport",
    "HealthStatus",
    "Metrics",
    "SecretRedactor",
    "Timer",
    "configure_logging",
    "get_logger",
]
