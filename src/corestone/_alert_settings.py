"""The alert engine's settings: ``CORESTONE_ALERTS_*``.

Kept apart from :mod:`corestone.config`, like the email and query settings. The
thresholds feed the default rules (:mod:`corestone.observability.alerts.defaults`), so
``corestone alerts export`` writes the rules this process would evaluate.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

__all__ = ["AlertSettings"]


class AlertSettings(BaseModel):
    """The alerting settings of :class:`~corestone.Settings` (``CORESTONE_`` prefixed).

    A mixin, like the email settings; read them on ``Settings``.
    """

    alerts_interval_seconds: float = Field(
        15.0, gt=0, le=3600, description="evaluate every alert rule this often", examples=[15]
    )
    alerts_history_step_seconds: float = Field(
        10.0, gt=0, le=600, description="sample the watched metrics this often", examples=[10]
    )
    alerts_history_retention_seconds: float = Field(
        3600.0, gt=0, le=86_400, description="keep this much metric history", examples=[3600]
    )
    alerts_history_max_series: int = Field(
        10_000, ge=1, le=1_000_000, description="series the history keeps at most", examples=[1]
    )
    alerts_rules_file: Path | None = Field(
        None,
        description="a Prometheus rule file evaluated as well as (or instead of) the defaults",
        examples=["deploy/prometheus/rules.yml"],
    )
    alerts_default_rules: bool = Field(
        True, description="evaluate corestone's default rules", examples=["false"]
    )
    alerts_http_error_ratio: float = Field(
        0.05, gt=0, le=1, description="5xx share of HTTP responses that alerts", examples=[0.05]
    )
    alerts_http_p99_seconds: float = Field(
        1.0, gt=0, description="HTTP p99 latency that alerts", examples=[0.5]
    )
    alerts_db_pool_saturation_ratio: float = Field(
        0.9, gt=0, le=1, description="share of the pool checked out that alerts", examples=[0.9]
    )
    alerts_cache_hit_ratio: float = Field(
        0.5, ge=0, le=1, description="L1 hit ratio under which the cache alerts", examples=[0.5]
    )
    alerts_email_backlog: float = Field(
        1000, gt=0, description="queued emails that alert", examples=[1000]
    )
    alerts_outbox_lag_seconds: float = Field(
        300.0, gt=0, description="age of the oldest unpublished event that alerts", examples=[60]
    )
    alerts_consumer_lag: float = Field(
        10_000, gt=0, description="messages a consumer group is behind that alert", examples=[1]
    )
    alerts_slow_queries_per_second: float = Field(
        0.5, gt=0, description="slow statements per second that alert", examples=[0.5]
    )
    alerts_disk_free_ratio: float = Field(
        0.1, gt=0, lt=1, description="free disk share under which a path alerts", examples=[0.1]
    )
    alerts_memory_used_ratio: float = Field(
        0.9, gt=0, le=1, description="system memory share in use that alerts", examples=[0.9]
    )
    alerts_resident_memory_bytes: float = Field(
        2 * 1024**3, gt=0, description="process resident memory that alerts", examples=[1e9]
    )
    alerts_event_loop_lag_seconds: float = Field(
        0.5, gt=0, description="event loop lag that alerts", examples=[0.2]
    )
