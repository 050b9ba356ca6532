"""The query monitor's settings: ``CORESTONE_QUERY_MONITOR`` and its knobs.

Kept apart from :mod:`corestone.config` (and free of the ``queries`` extra), like the
email and push settings: a process with the monitor off must parse them without sqlglot.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["QuerySettings"]


class QuerySettings(BaseModel):
    """The query monitor settings of :class:`~corestone.Settings` (``CORESTONE_`` prefixed).

    A mixin, like the email settings; read them on ``Settings``.
    """

    query_monitor: bool = Field(
        False,
        description="time and fingerprint every statement, log slow ones, find N+1 (needs the"
        " 'queries' extra)",
        examples=["true"],
    )
    slow_query_ms: float = Field(
        200.0, ge=0, le=3_600_000, description="log statements slower than this", examples=[100]
    )
    query_n_plus_one_threshold: int = Field(
        5,
        ge=0,
        le=1_000_000,
        description="runs of one query shape in one request or transaction that make an N+1"
        " (0: off)",
        examples=[5],
    )
    query_max_fingerprints: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="query shapes with statistics of their own (the rest fold into 'other')",
        examples=[1000],
    )
    query_headers: bool | None = Field(
        None,
        description="X-Query-Count and X-Query-Time-Ms response headers (default: on in dev)",
        examples=["true"],
    )
