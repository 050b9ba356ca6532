"""The metrics settings: ``CORESTONE_METRICS_MAX_SERIES``.

Kept apart from :mod:`corestone.config`, like the other mixins, so the knobs of one
capability live beside each other.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from corestone.observability._cardinality import DEFAULT_MAX_SERIES

__all__ = ["MetricsSettings"]


class MetricsSettings(BaseModel):
    """The metrics settings of :class:`~corestone.Settings` (``CORESTONE_`` prefixed there).

    A mixin, like the email settings; read them on ``Settings``.
    """

    metrics_max_series: int = Field(
        DEFAULT_MAX_SERIES,
        ge=1,
        le=10_000_000,
        description="series one labelled metric may have; new label values beyond it fold"
        " into one 'other' series",
        examples=[1000],
    )
