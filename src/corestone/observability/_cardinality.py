"""The cardinality guard: a cap on the series of one labelled metric.

A label fed from outside (a route template gone wrong, a user id, an error message) can
grow one metric to millions of series, and every series costs memory in each process and
in every Prometheus that scrapes it. Beyond its cap a metric therefore stops making new
series: a new combination of label values is folded into one series whose every value
is ``other``. Series that already exist keep counting as before, the fold is counted in
``corestone_metrics_series_folded_total{metric}``, and a warning is logged once per
metric, so the cause can be found and fixed.

The guard lives in ``labels()`` only. A pre-bound child (``requests.labels(...)`` kept
and reused) is prometheus_client's own child object, untouched, so recording through it
costs nothing extra. ``labels()`` itself looks an existing child up without a lock, and
takes the guard's lock only to make a new series, so the cap holds exactly under
concurrent callers. In multiprocess mode each worker keeps its own cap: the exposition
merges at most ``workers * (cap + 1)`` series per metric.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

from prometheus_client import Counter
from prometheus_client.metrics import MetricWrapperBase

from corestone.observability.logging import get_logger

__all__ = ["DEFAULT_MAX_SERIES", "FOLDED_VALUE", "CappedMetric", "SeriesCap", "capped"]

DEFAULT_MAX_SERIES: Final = 1000
FOLDED_VALUE: Final = "other"

_M = TypeVar("_M", bound=MetricWrapperBase)


class SeriesCap:
    """The cap of one metric, and what happens when it is reached (fold, count, warn once)."""

    __slots__ = ("_folded", "_folds", "_name", "lock", "max_series")

    def __init__(self, name: str, max_series: int, folded: Callable[[], Counter]) -> None:
        if max_series < 1:
            raise ValueError(f"max_series of {name!r} must be at least 1, got {max_series}")
        self.lock = threading.Lock()
        self.max_series = max_series
        self._folded = folded
        self._folds: Counter | None = None  # this metric's child of the fold count, once folded
        self._name = name

    def fold(self, width: int) -> tuple[str, ...]:
        """The ``other`` label values; counts the fold and warns the first time. Under ``lock``."""
        if self._folds is None:
            self._folds = self._folded().labels(metric=self._name)
            get_logger(__name__).warning(
                "metric reached its series cap: new label values fold into 'other'",
                metric=self._name,
                max_series=self.max_series,
            )
        self._folds.inc()
        return (FOLDED_VALUE,) * width


class CappedMetric(MetricWrapperBase):
    """A prometheus_client metric whose ``labels()`` respects a :class:`SeriesCap`.

    Mixed in before the prometheus_client class (see :func:`capped`). A metric without
    labels, and every child, has no cap and behaves exactly as prometheus_client's.
    """

    _series_cap: SeriesCap | None = None

    def labels(self, *labelvalues: Any, **labelkwargs: Any) -> Any:
        cap = self._series_cap
        if cap is None:
            return super().labels(*labelvalues, **labelkwargs)
        names = self._labelnames
        try:
            if labelkwargs:
                if labelvalues or len(labelkwargs) != len(names):
                    raise KeyError(names)
                key = tuple([str(labelkwargs[name]) for name in names])
            elif len(labelvalues) == len(names):
                key = tuple([str(value) for value in labelvalues])
            else:
                raise KeyError(names)
        except KeyError:
            return super().labels(*labelvalues, **labelkwargs)  # raises its own error
        child = self._metrics.get(key)  # a dict read is atomic: no lock for the common case
        if child is not None:
            return child
        with cap.lock:
            if key not in self._metrics and len(self._metrics) >= cap.max_series:
                key = cap.fold(len(names))
            return super().labels(*key)


def capped(kind: type[_M]) -> type[_M]:
    """``kind`` with :class:`CappedMetric` mixed in; make it once per kind, at import."""
    return type(kind.__name__, (CappedMetric, kind), {"__module__": kind.__module__})
