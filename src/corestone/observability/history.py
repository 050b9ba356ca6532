"""The service's own recent metrics, sampled in process and queried with a PromQL subset.

Alert rules and the operations dashboard need rates and quantiles over the last minutes
without a Prometheus server next to every deployment. :class:`MetricsHistory` samples
the process's :class:`~corestone.observability.metrics.Metrics` every ``step`` seconds
(in multiprocess mode the merged view of every worker, as ``/metrics`` shows it) and
answers :class:`~corestone.observability.series.MetricsQuery` over what it kept.

It keeps only what someone asked for: ``watch(expr)`` registers the metric names an
expression reads, and only those are kept (in one process only their collectors are
asked; see :meth:`Metrics.collect`). Each series keeps ``retention`` seconds of points
(bisected by their times, trimmed as they age); the number of series is capped (new
series beyond the cap are dropped, counted, and logged once per pass), and a series
unseen for the retention window is forgotten. Timestamps come from the injected wall
clock, so tests drive it by hand. Queries at one instant share the values of common
subexpressions until the next sample (the rules of one evaluation read the same rates).
Not thread-safe: sample and query from one event loop.
"""

from __future__ import annotations

import bisect
import time
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from corestone.background import PassLoop
from corestone.observability.logging import get_logger
from corestone.observability.metrics import Metrics
from corestone.observability.promql import (
    Expr,
    Matcher,
    Memo,
    evaluate,
    metric_names,
    parse,
)
from corestone.observability.series import InstantSample, RangeSeries

__all__ = ["MetricsHistory"]

log = get_logger(__name__)

_LabelKey = frozenset[tuple[str, str]]


@dataclass(slots=True)
class _Series:
    """One series' samples, oldest first, in two arrays of floats.

    16 bytes a sample where a list of tuples takes about 88 (a tuple, a float object and a
    pointer), and a window is read as contiguous floats, not an object per sample.
    """

    labels: dict[str, str]
    times: array[float] = field(default_factory=lambda: array("d"))
    values: array[float] = field(default_factory=lambda: array("d"))


class MetricsHistory:
    """A bounded, in-process history of the watched metrics (see the module docstring).

    A managed component: ``start`` samples every ``step`` seconds until ``aclose``.
    """

    name = "metrics-history"

    def __init__(
        self,
        metrics: Metrics,
        *,
        step: float = 10.0,
        retention: float = 3600.0,
        max_series: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if step <= 0 or retention < step or max_series < 1:
            raise ValueError("step must be positive, retention at least one step, a series kept")
        self._metrics = metrics
        self.step = step
        self.retention = retention
        self.max_series = max_series
        self._clock = clock
        self._names: set[str] = set()
        self._series: dict[str, dict[_LabelKey, _Series]] = {}
        self._count = 0
        self._parsed: dict[str, Expr] = {}
        self._memo: Memo = {}
        self._memo_at: float | None = None
        self._dropped = metrics.counter(
            "metrics_history_dropped_series_total",
            "Series the history did not keep: it held its maximum number of series.",
        )
        metrics.gauge(
            "metrics_history_series", "Series the in-process metrics history holds."
        ).set_function(lambda: float(self._count))
        self._loop = PassLoop(
            self.name, self._pass, poll_seconds=step, drain_seconds=1.0, wait_first=False
        )

    @property
    def series_count(self) -> int:
        return self._count

    def watch(self, expr: str) -> None:
        """Keep the metrics ``expr`` reads from now on (a ``ValueError`` if it cannot parse)."""
        self._names |= metric_names(self._parse(expr))

    async def start(self) -> None:
        self._loop.start()

    async def aclose(self) -> None:
        await self._loop.stop()

    async def _pass(self) -> bool:
        self.sample()
        return False

    def sample(self) -> None:
        """Read the watched metrics once and append them; forget what is too old."""
        if not self._names:
            return
        self._memo, self._memo_at = {}, None
        at = self._clock()
        dropped = 0
        for name, labels, value in self._collect():
            dropped += not self._append(name, labels, value, at)
        if dropped:
            self._dropped.inc(dropped)
            log.warning(
                "metrics history is full: series dropped", dropped=dropped, cap=self.max_series
            )
        self._forget(at - self.retention)

    def _collect(self) -> Iterable[tuple[str, dict[str, str], float]]:
        names = self._names
        for family in self._metrics.collect(names):
            for sample in family.samples:
                if sample.name in names:
                    yield sample.name, sample.labels, sample.value

    def _append(self, name: str, labels: dict[str, str], value: float, at: float) -> bool:
        by_labels = self._series.setdefault(name, {})
        key = frozenset(labels.items())
        series = by_labels.get(key)
        if series is None:
            if self._count >= self.max_series:
                return False
            series = by_labels[key] = _Series({"__name__": name, **labels})
            self._count += 1
        series.times.append(at)
        series.values.append(value)
        return True

    def _forget(self, horizon: float) -> None:
        for name, by_labels in list(self._series.items()):
            for key, series in list(by_labels.items()):
                times = series.times
                if times and times[0] <= horizon:
                    old = bisect.bisect_right(times, horizon)
                    del times[:old], series.values[:old]
                if not times:
                    del by_labels[key]
                    self._count -= 1
            if not by_labels:
                del self._series[name]

    def select(
        self, name: str, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[tuple[Mapping[str, str], Sequence[float], Sequence[float]]]:
        """The samples in ``(start, end]`` of the series of ``name`` that match (SampleStore)."""
        found: list[tuple[Mapping[str, str], Sequence[float], Sequence[float]]] = []
        for series in self._series.get(name, {}).values():
            labels = series.labels
            if matchers and not all(m.matches(labels.get(m.label, "")) for m in matchers):
                continue
            times = series.times
            low = bisect.bisect_right(times, start)
            high = bisect.bisect_right(times, end)
            if low < high:
                found.append((labels, times[low:high], series.values[low:high]))
        return found

    def query(self, expr: str, *, at: float | None = None) -> list[InstantSample]:
        """``expr`` at ``at`` (now by default); a scalar answers as one unlabelled sample.

        Queries at one instant between two samples share the values of their common
        subexpressions (the rules of one evaluation read the same rates).
        """
        at = self._clock() if at is None else at
        if at != self._memo_at:
            self._memo, self._memo_at = {}, at
        result = evaluate(self._parse(expr), self, at, self._memo)
        if isinstance(result, float):
            return [InstantSample({}, result)]
        return [InstantSample(dict(labels), value) for labels, value in result]

    def query_range(self, expr: str, *, start: float, end: float, step: float) -> list[RangeSeries]:
        """``expr`` at every ``step`` from ``start`` to ``end``, one series per label set."""
        if step <= 0 or end < start:
            raise ValueError("step must be positive and end not before start")
        if (end - start) / step > 11_000:
            raise ValueError("too many points: at most 11,000 per series, as in Prometheus")
        parsed = self._parse(expr)
        series: dict[_LabelKey, tuple[dict[str, str], list[tuple[float, float]]]] = {}
        at = start
        while at <= end:
            result = evaluate(parsed, self, at)
            samples = [({}, result)] if isinstance(result, float) else result
            for labels, value in samples:
                key = frozenset(labels.items())
                series.setdefault(key, (dict(labels), []))[1].append((at, value))
            at += step
        return [RangeSeries(labels, points) for labels, points in series.values()]

    def _parse(self, expr: str) -> Expr:
        parsed = self._parsed.get(expr)
        if parsed is None:
            if len(self._parsed) >= 1024:
                self._parsed.clear()
            parsed = self._parsed[expr] = parse(expr)
        return parsed
