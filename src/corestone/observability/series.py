"""What a query over the recent metric history answers, and who can answer it.

The in-process history (:mod:`corestone.observability.history`) keeps the last hour of
the service's own metrics and answers a subset of PromQL over it; the alert engine and
the operations dashboard ask through :class:`MetricsQuery`, so neither depends on how the
samples are stored, and the same expressions run unchanged under Prometheus.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["InstantSample", "MetricsQuery", "RangeSeries"]


@dataclass(frozen=True, slots=True)
class InstantSample:
    """One series' value at one instant (the result of an instant query)."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class RangeSeries:
    """One series over a range: ``points`` are ``(unix seconds, value)``, oldest first."""

    labels: Mapping[str, str]
    points: Sequence[tuple[float, float]]


class MetricsQuery(Protocol):
    """Evaluates PromQL-subset expressions over the recent history.

    An expression outside the subset raises ``ValueError`` naming what is not supported.
    A range wider than the history answers the part the history holds.
    """

    def query(self, expr: str, *, at: float | None = None) -> list[InstantSample]: ...

    def query_range(
        self, expr: str, *, start: float, end: float, step: float
    ) -> list[RangeSeries]: ...
