"""The plan, advisor and database-statistics settings (``CORESTONE_QUERY_PLAN_*``,
``CORESTONE_QUERY_ADVISOR_*``, ``CORESTONE_DATABASE_STATS_*``).

Kept apart from :mod:`corestone.config` (and free of the ``queries`` extra), like the
email, push and query-monitor settings.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["AdvisorSettings"]


class AdvisorSettings(BaseModel):
    """A mixin of :class:`~corestone.Settings`; read the values on ``Settings``."""

    query_plan_analyze: bool = Field(
        False,
        description="plan slow SELECTs with EXPLAIN ANALYZE (runs them, rolled back)",
        examples=["true"],
    )
    query_plan_timeout_ms: int = Field(
        2000, ge=10, le=600_000, description="statement_timeout of an EXPLAIN", examples=[2000]
    )
    query_advisor_min_gain: float = Field(
        0.3,
        gt=0,
        lt=1,
        description="fraction of a plan's estimated cost an index must cut to be recommended",
        examples=[0.3],
    )
    database_stats_seconds: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="how long a sample of the database's statistics serves scrapes",
        examples=[5],
    )
    database_stats_top_tables: int = Field(
        20, ge=1, le=1000, description="tables (largest first) with per-table gauges", examples=[20]
    )
    database_stats_health: bool = Field(
        False,
        description="add the database statistics' warnings (locks, long queries, cache hit"
        " ratio, dead rows) to readiness as a non-critical check",
        examples=["true"],
    )
    database_long_query_seconds: float = Field(
        60.0, gt=0, le=86_400, description="a query running longer than this is long", examples=[60]
    )
