"""Statistics per fingerprint, in bounded memory: the workload a report or an advisor reads.

:class:`QueryStatsTable` keeps one :class:`QueryStats` per fingerprint, at most
``max_fingerprints`` of them. When a new fingerprint arrives at a full table, the least
recently used one is evicted and its numbers are folded into one ``other`` entry, so the
table's totals (calls, time, rows) stay the process's totals while the memory stays
fixed: ``max_fingerprints + 1`` entries of about 2 kB each (the latency sketch is most of
it). A workload that makes unbounded shapes of SQL (values spliced into the text instead
of bound) shows up as a large, growing ``other``.

Each entry keeps a sample for the tools that need a real statement, not its shape: the
statement text and parameters of its slowest call (``EXPLAIN`` needs values to plan
with). The parameters are the application's data: they stay in memory, and everything
that leaves the process shows only :func:`redact_parameters`'s types.

Thread-safe: one lock around each update (an uncontended lock costs tens of nanoseconds,
and the sync engine events may come from several threads of a sync engine).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from corestone.db._fingerprint import Fingerprint
from corestone.db._latency_sketch import LatencySketch

__all__ = [
    "MAX_SAMPLE_VALUE",
    "OTHER",
    "QueryStats",
    "QueryStatsSnapshot",
    "QueryStatsTable",
    "StatementSample",
    "bounded_parameters",
    "first_parameters",
    "redact_parameters",
]

OTHER: Final = Fingerprint(
    id="other", text="(fingerprints evicted from the table)", operation="other", parsed=False
)
"""The entry that holds the numbers of evicted fingerprints."""


@dataclass(frozen=True, slots=True)
class StatementSample:
    """One real run of a fingerprint: the statement as sent, its parameters, its engine.

    ``parameters`` are the values themselves (one set of an executemany): for a plan
    capturer that has to run ``EXPLAIN`` with them. Never log them; :attr:`redacted` is
    the form to show.
    """

    statement: str
    parameters: Any = field(repr=False)
    seconds: float
    target: str

    @property
    def redacted(self) -> Any:
        """The parameters with each value replaced by its type name."""
        return redact_parameters(self.parameters)


def redact_parameters(parameters: Any) -> Any:
    """``parameters`` with every value replaced by its type (``'str'``, ``'UUID'``…).

    ``None`` stays ``None`` (it is a shape, ``IS NULL``); mappings keep their keys,
    sequences their length. Never raises.
    """
    if parameters is None:
        return None
    if isinstance(parameters, Mapping):
        return {str(k): _type_of(v) for k, v in parameters.items()}
    if isinstance(parameters, Sequence) and not isinstance(parameters, str | bytes):
        return [_type_of(v) for v in parameters]
    return _type_of(parameters)


def _type_of(value: Any) -> str | None:
    return None if value is None else type(value).__name__


class QueryStats:
    """The running numbers of one fingerprint (mutated under the table's lock)."""

    __slots__ = ("calls", "errors", "fingerprint", "max", "rows", "sample", "sketch", "total")

    def __init__(self, fingerprint: Fingerprint) -> None:
        self.fingerprint = fingerprint
        self.calls = 0
        self.errors = 0
        self.total = 0.0
        self.max = 0.0
        self.rows = 0
        self.sketch = LatencySketch()
        self.sample: StatementSample | None = None

    def fold(self, other: QueryStats) -> None:
        """Add ``other``'s numbers to these (an eviction into ``other``)."""
        self.calls += other.calls
        self.errors += other.errors
        self.total += other.total
        self.rows += other.rows
        if other.max > self.max:
            self.max, self.sample = other.max, other.sample
        self.sketch.merge(other.sketch)

    def snapshot(self) -> QueryStatsSnapshot:
        calls = self.calls
        return QueryStatsSnapshot(
            fingerprint=self.fingerprint,
            calls=calls,
            errors=self.errors,
            total_ms=self.total * 1000,
            mean_ms=self.total * 1000 / calls if calls else 0.0,
            # A bucket's middle may lie above the largest duration in it: never past max.
            p95_ms=min(self.sketch.quantile(0.95), self.max) * 1000,
            max_ms=self.max * 1000,
            rows=self.rows,
            sample=self.sample,
        )


@dataclass(frozen=True, slots=True)
class QueryStatsSnapshot:
    """A fingerprint's numbers at one moment; times in milliseconds.

    ``p95_ms`` comes from a latency sketch (within 4.8% of the true value); the others
    are exact. ``errors`` counts the calls that failed (they are in ``calls`` too).
    """

    fingerprint: Fingerprint
    calls: int
    errors: int
    total_ms: float
    mean_ms: float
    p95_ms: float
    max_ms: float
    rows: int
    sample: StatementSample | None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form, parameters redacted."""
        sample = self.sample
        return {
            "fingerprint": self.fingerprint.id,
            "query": self.fingerprint.text,
            "operation": self.fingerprint.operation,
            "tables": list(self.fingerprint.tables),
            "calls": self.calls,
            "errors": self.errors,
            "total_ms": round(self.total_ms, 3),
            "mean_ms": round(self.mean_ms, 3),
            "p95_ms": round(self.p95_ms, 3),
            "max_ms": round(self.max_ms, 3),
            "rows": self.rows,
            "sample": None
            if sample is None
            else {
                "parameters": sample.redacted,
                "ms": round(sample.seconds * 1000, 3),
                "target": sample.target,
            },
        }


class QueryStatsTable:
    """At most ``max_fingerprints`` fingerprints' stats plus ``other`` (see the module doc)."""

    def __init__(self, max_fingerprints: int = 1000) -> None:
        if max_fingerprints < 1:
            raise ValueError("max_fingerprints must be at least 1")
        self.max_fingerprints = max_fingerprints
        self._entries: OrderedDict[str, QueryStats] = OrderedDict()
        self._other = QueryStats(OTHER)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many fingerprints have their own entry (``other`` not counted)."""
        return len(self._entries)

    def record(
        self,
        fingerprint: Fingerprint,
        seconds: float,
        rows: int,
        failed: bool,
        statement: str,
        parameters: Any,
        target: str,
    ) -> None:
        """Count one call of ``fingerprint`` (positional: this runs for every query).

        ``statement``, ``parameters`` (one set) and ``target`` (the engine's label) become
        the sample when this call is the slowest so far.
        """
        with self._lock:
            entries = self._entries
            stats = entries.get(fingerprint.id)
            if stats is None:
                stats = entries[fingerprint.id] = QueryStats(fingerprint)
                if len(entries) > self.max_fingerprints:
                    _, evicted = entries.popitem(last=False)
                    self._other.fold(evicted)
            else:
                entries.move_to_end(fingerprint.id)
            stats.calls += 1
            stats.total += seconds
            stats.rows += rows
            stats.sketch.add(seconds)
            if failed:
                stats.errors += 1
            if seconds > stats.max or stats.sample is None:
                stats.max = max(stats.max, seconds)
                stats.sample = StatementSample(
                    statement, bounded_parameters(parameters), seconds, target
                )

    def snapshot(self) -> list[QueryStatsSnapshot]:
        """Every entry's numbers, most total time first; ``other`` last, if it has any."""
        with self._lock:
            found = [s.snapshot() for s in self._entries.values()]
            other = self._other.snapshot() if self._other.calls else None
        found.sort(key=lambda s: s.total_ms, reverse=True)
        return [*found, other] if other is not None else found

    def get(self, fingerprint_id: str) -> QueryStatsSnapshot | None:
        """One fingerprint's numbers (``"other"`` for the evicted ones), or None."""
        with self._lock:
            if fingerprint_id == OTHER.id:
                return self._other.snapshot()
            stats = self._entries.get(fingerprint_id)
            return None if stats is None else stats.snapshot()

    def clear(self) -> None:
        """Forget everything (a new measurement period)."""
        with self._lock:
            self._entries.clear()
            self._other = QueryStats(OTHER)


MAX_SAMPLE_VALUE: Final = 1024
"""Longest value (characters, bytes, items) a sample keeps; a longer one is kept as None."""


def bounded_parameters(parameters: Any) -> Any:
    """``parameters`` with each value longer than :data:`MAX_SAMPLE_VALUE` as None.

    A sample lives as long as its fingerprint is the slowest: the 50 MB file of a slow
    upload, or a 100,000-id array, would stay in memory for good, once per fingerprint.
    A plan barely depends on such a value (a key, a filter value is short).
    """
    if isinstance(parameters, Mapping):
        return {k: _bounded(v) for k, v in parameters.items()}
    if isinstance(parameters, Sequence) and not isinstance(parameters, str | bytes):
        return tuple(_bounded(v) for v in parameters)
    return _bounded(parameters)


def _bounded(value: Any) -> Any:
    if isinstance(value, str | bytes | bytearray | memoryview | list | tuple | dict | set):
        return None if len(value) > MAX_SAMPLE_VALUE else value
    return value


def first_parameters(parameters: Any, executemany: bool) -> Any:
    """The first parameter set of an executemany, or ``parameters`` as they are."""
    if executemany and isinstance(parameters, Sequence) and parameters:
        return parameters[0]
    return parameters
