"""Evaluates a parsed PromQL-subset expression at one instant over a sample store.

Semantics follow Prometheus where the subset reaches: an instant selector takes each
series' latest sample in the 5-minute lookback; ``rate``/``increase`` handle counter
resets and extrapolate to the range's edges as Prometheus's ``extrapolatedRate`` does;
``histogram_quantile`` interpolates linearly inside the bucket (``bucketQuantile``);
arithmetic drops the metric name, comparisons filter and keep the left side's value (a
scalar on the left keeps the vector's). Deviation: there are no staleness markers, so a
series that stops being reported is still seen for the lookback.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from corestone.observability.promql._ast import (
    Aggregate,
    Binary,
    Call,
    Expr,
    Matcher,
    MatrixSelector,
    Number,
    VectorSelector,
)

__all__ = ["LOOKBACK_SECONDS", "Memo", "SampleStore", "Vector", "evaluate"]

LOOKBACK_SECONDS = 300.0
Labels = Mapping[str, str]
Vector = list[tuple[Labels, float]]
Selected = tuple[Labels, Sequence[float], Sequence[float]]
Memo = dict[Expr, Vector | float]


class SampleStore(Protocol):
    """Gives the series named ``name`` that match, with their samples in ``(start, end]``.

    Each as its labels, then the samples' times and their values, oldest first: two
    flat sequences (the history keeps arrays of floats, not an object per sample).
    """

    def select(
        self, name: str, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[Selected]: ...


def evaluate(expr: Expr, store: SampleStore, at: float, memo: Memo | None = None) -> Vector | float:
    """The value of ``expr`` at ``at``: an instant vector, or a scalar for a number.

    ``memo`` holds the values of subexpressions already evaluated at this ``at`` over the
    same samples (rules share ``rate(…[5m])`` of one metric), so each is computed once;
    the caller clears it when either changes. Values in it are shared: never mutated.
    """
    if memo is None:
        memo = {}
    value = memo.get(expr)
    if value is None:
        value = memo[expr] = _evaluate(expr, store, at, memo)
    return value


def _evaluate(expr: Expr, store: SampleStore, at: float, memo: Memo) -> Vector | float:
    match expr:
        case Number(value):
            return value
        case VectorSelector():
            found = store.select(expr.name or "", expr.matchers, at - LOOKBACK_SECONDS, at)
            return [(labels, values[-1]) for labels, _, values in found if values]
        case MatrixSelector():
            raise ValueError("a range selector must be the argument of a function")
        case Call():
            return _call(expr, store, at, memo)
        case Aggregate():
            return _aggregate(expr, _vector(evaluate(expr.expr, store, at, memo), expr.op))
        case Binary():
            lhs = evaluate(expr.lhs, store, at, memo)
            return _binary(expr, lhs, evaluate(expr.rhs, store, at, memo))


def _vector(value: Vector | float, where: str) -> Vector:
    if isinstance(value, float):
        raise ValueError(f"{where} needs an instant vector, not a scalar")
    return value


def _without_name(labels: Labels) -> dict[str, str]:
    out = dict(labels)  # a copy in C, cheaper than a comprehension over every series
    out.pop("__name__", None)
    return out


def _call(call: Call, store: SampleStore, at: float, memo: Memo) -> Vector:
    if call.function == "histogram_quantile":
        quantile = call.args[0]
        assert isinstance(quantile, Number)
        buckets = _vector(evaluate(call.args[1], store, at, memo), "")
        return _histogram_quantile(quantile.value, buckets)
    matrix = call.args[0]
    assert isinstance(matrix, MatrixSelector)
    start = at - matrix.range_seconds
    series = store.select(matrix.vector.name or "", matrix.vector.matchers, start, at)
    function = _RANGE_FUNCTIONS[call.function]
    result: Vector = []
    for labels, times, values in series:
        value = function(times, values, start, at)
        if value is not None:
            result.append((_without_name(labels), value))
    return result


def _extrapolated(
    times: Sequence[float], values: Sequence[float], start: float, end: float, *, per_second: bool
) -> float | None:
    """Prometheus's ``extrapolatedRate`` for counters (resets add the value before them)."""
    if len(values) < 2:
        return None
    first_t, first_v = times[0], values[0]
    last_t, last_v = times[-1], values[-1]
    delta = last_v - first_v
    previous = first_v
    for value in values:  # from the first: it is not below itself, and no slice is copied
        if value < previous:
            delta += previous
        previous = value
    sampled = last_t - first_t
    if sampled <= 0:
        return None
    average_gap = sampled / (len(values) - 1)
    to_start = first_t - start
    to_end = end - last_t
    if delta > 0 and first_v >= 0:
        to_start = min(to_start, sampled * (first_v / delta))
    threshold = average_gap * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average_gap / 2
    interval += to_end if to_end < threshold else average_gap / 2
    delta *= interval / sampled
    return delta / (end - start) if per_second else delta


_RangeFunction = Callable[[Sequence[float], Sequence[float], float, float], float | None]
_RANGE_FUNCTIONS: dict[str, _RangeFunction] = {
    "rate": lambda t, v, s, e: _extrapolated(t, v, s, e, per_second=True),
    "increase": lambda t, v, s, e: _extrapolated(t, v, s, e, per_second=False),
    "avg_over_time": lambda t, v, s, e: sum(v) / len(v) if v else None,
    "max_over_time": lambda t, v, s, e: max(v) if v else None,
    "min_over_time": lambda t, v, s, e: min(v) if v else None,
}


def _histogram_quantile(q: float, vector: Vector) -> Vector:
    groups: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = defaultdict(list)
    for labels, value in vector:
        le = labels.get("le")
        if le is None:
            continue
        try:
            bound = float(le)
        except ValueError:
            continue
        key = tuple(sorted((k, v) for k, v in labels.items() if k not in ("le", "__name__")))
        groups[key].append((bound, value))
    return [(dict(key), _bucket_quantile(q, buckets)) for key, buckets in groups.items()]


def _bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's ``bucketQuantile``: linear interpolation inside the bucket."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    buckets.sort()
    if len(buckets) < 2 or buckets[-1][0] != math.inf:
        return math.nan
    counts: list[float] = []
    for _, count in buckets:  # counts must not fall (a scrape between two increments)
        counts.append(max(count, counts[-1]) if counts else count)
    observations = counts[-1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next(i for i, count in enumerate(counts) if count >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, end, count = 0.0, buckets[b][0], counts[b]
    if b > 0:
        start = buckets[b - 1][0]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (end - start) * (rank / count)


def _aggregate(aggregate: Aggregate, vector: Vector) -> Vector:
    groups: dict[tuple[tuple[str, str], ...], list[float]] = defaultdict(list)
    for labels, value in vector:
        if aggregate.without:
            drop = set(aggregate.grouping) | {"__name__"}
            kept = {k: v for k, v in labels.items() if k not in drop}
        else:
            kept = {k: labels[k] for k in aggregate.grouping if k in labels}
        groups[tuple(sorted(kept.items()))].append(value)
    reduce = _REDUCERS[aggregate.op]
    return [(dict(key), reduce(values)) for key, values in groups.items()]


_REDUCERS: dict[str, Callable[[list[float]], float]] = {
    "sum": math.fsum,
    "avg": lambda values: math.fsum(values) / len(values),
    "max": max,
    "min": min,
    "count": lambda values: float(len(values)),
}


def _divide(a: float, b: float) -> float:
    """IEEE division, as Prometheus does it: x/0 is ±Inf, 0/0 is NaN."""
    if b:
        return a / b
    if a == 0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


_ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _divide,
}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
}


def _binary(binary: Binary, lhs: Vector | float, rhs: Vector | float) -> Vector | float:
    op = binary.op
    comparison = op in _COMPARE
    if isinstance(lhs, float) and isinstance(rhs, float):
        if comparison:
            raise ValueError("comparing two scalars needs 'bool', which is not supported")
        return _ARITHMETIC[op](lhs, rhs)
    if isinstance(lhs, float) or isinstance(rhs, float):
        return _vector_scalar(op, lhs, rhs)
    return _vector_vector(binary, lhs, rhs)


def _vector_scalar(op: str, lhs: Vector | float, rhs: Vector | float) -> Vector:
    scalar_right = isinstance(rhs, float)
    vector = lhs if scalar_right else rhs
    scalar = rhs if scalar_right else lhs
    assert not isinstance(vector, float)
    assert isinstance(scalar, float)

    def operands(value: float) -> tuple[float, float]:
        return (value, scalar) if scalar_right else (scalar, value)

    if op in _COMPARE:  # a filter that keeps the vector's value on either side
        compare = _COMPARE[op]
        return [(labels, value) for labels, value in vector if compare(*operands(value))]
    function = _ARITHMETIC[op]
    return [(_without_name(labels), function(*operands(value))) for labels, value in vector]


def _signature(
    labels: Labels, matching: tuple[str, tuple[str, ...]] | None
) -> tuple[tuple[str, str], ...]:
    if matching is not None and matching[0] == "on":
        return tuple(sorted((k, labels[k]) for k in matching[1] if k in labels))
    ignored = set(matching[1]) if matching else set()
    ignored.add("__name__")
    return tuple(sorted((k, v) for k, v in labels.items() if k not in ignored))


def _vector_vector(binary: Binary, lhs: Vector, rhs: Vector) -> Vector:
    """One-to-one matching; a side with two series of one signature is an error, as there."""
    right: dict[tuple[tuple[str, str], ...], float] = {}
    for labels, value in rhs:
        key = _signature(labels, binary.matching)
        if key in right:
            raise ValueError("many-to-many matching: the right side has duplicate series")
        right[key] = value
    seen: set[tuple[tuple[str, str], ...]] = set()
    result: Vector = []
    for labels, value in lhs:
        key = _signature(labels, binary.matching)
        if key not in right:
            continue
        if key in seen:
            raise ValueError("many-to-one matching needs group_left, which is not supported")
        seen.add(key)
        if binary.op in _COMPARE:
            if _COMPARE[binary.op](value, right[key]):
                result.append((labels, value))
            continue
        out = _without_name(labels)
        if binary.matching is not None and binary.matching[0] == "on":
            out = {k: v for k, v in out.items() if k in binary.matching[1]}
        elif binary.matching is not None:
            out = {k: v for k, v in out.items() if k not in binary.matching[1]}
        result.append((out, _ARITHMETIC[binary.op](value, right[key])))
    return result
