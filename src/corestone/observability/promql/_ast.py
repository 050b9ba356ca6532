"""The syntax tree of the PromQL subset: plain frozen values the evaluator walks."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "Aggregate",
    "Binary",
    "Call",
    "Expr",
    "Matcher",
    "MatrixSelector",
    "Number",
    "VectorSelector",
    "metric_names",
]


@dataclass(frozen=True, slots=True)
class Matcher:
    """``label op "value"``; regular expressions are anchored, as in Prometheus."""

    label: str
    op: str
    value: str
    pattern: re.Pattern[str] | None = None

    def matches(self, actual: str) -> bool:
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self.pattern is not None
        found = self.pattern.fullmatch(actual) is not None
        return found if self.op == "=~" else not found


@dataclass(frozen=True, slots=True)
class Number:
    value: float


@dataclass(frozen=True, slots=True)
class VectorSelector:
    name: str | None
    matchers: tuple[Matcher, ...]


@dataclass(frozen=True, slots=True)
class MatrixSelector:
    vector: VectorSelector
    range_seconds: float


@dataclass(frozen=True, slots=True)
class Call:
    function: str
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Aggregate:
    op: str
    expr: Expr
    grouping: tuple[str, ...]
    without: bool


@dataclass(frozen=True, slots=True)
class Binary:
    """``lhs op rhs``; ``matching`` is None (all labels), or ``on``/``ignoring`` labels."""

    op: str
    lhs: Expr
    rhs: Expr
    matching: tuple[str, tuple[str, ...]] | None = None


Expr = Number | VectorSelector | MatrixSelector | Call | Aggregate | Binary


def metric_names(expr: Expr) -> set[str]:
    """The metric names an expression reads (what the history must keep for it)."""
    match expr:
        case VectorSelector(name=name):
            return {name} if name else set()
        case MatrixSelector(vector=vector):
            return metric_names(vector)
        case Call(args=args):
            return set().union(*(metric_names(arg) for arg in args))
        case Aggregate(expr=inner):
            return metric_names(inner)
        case Binary(lhs=lhs, rhs=rhs):
            return metric_names(lhs) | metric_names(rhs)
    return set()
