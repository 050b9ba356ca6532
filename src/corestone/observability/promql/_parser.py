"""A recursive-descent parser for the PromQL subset the alert rules and the dashboard use.

Precedence and associativity follow Prometheus: comparisons bind loosest, then ``+ -``,
then ``* /``; all are left-associative. Every construct outside the subset (``offset``,
subqueries, ``bool``, ``group_left``, ``and``/``or``, other functions and aggregations)
is a ``ValueError`` that names it, so a rule never silently means something else here
than under Prometheus.

Nesting is bounded (:data:`MAX_DEPTH`): a rule of ``((((…))))`` or a chain of ten thousand
``+ 1`` would otherwise overflow the stack here or in the evaluator, a RecursionError
instead of the ValueError a rule file reports. A ``=~`` regex is refused if it could
backtrack without bound (:mod:`corestone.observability._regex_guard`).
"""

from __future__ import annotations

import re

from corestone.observability._regex_guard import unsafe_regex
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
from corestone.observability.promql._lexer import Token, parse_duration, tokenize

__all__ = ["AGGREGATIONS", "FUNCTIONS", "MAX_DEPTH", "parse"]

MAX_DEPTH = 64
"""How deep an expression may nest (parentheses, calls, operators): far beyond any rule."""

AGGREGATIONS = frozenset({"sum", "avg", "max", "min", "count"})
RANGE_FUNCTIONS = frozenset({"rate", "increase", "avg_over_time", "max_over_time", "min_over_time"})
FUNCTIONS = RANGE_FUNCTIONS | {"histogram_quantile"}
_OTHER_AGGREGATIONS = frozenset(
    {"topk", "bottomk", "quantile", "stddev", "stdvar", "count_values", "group", "limitk"}
)
_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
_SET_OPERATORS = frozenset({"and", "or", "unless"})
_MODIFIERS = frozenset({"offset", "bool", "group_left", "group_right", "@"})


def parse(source: str) -> Expr:
    """The syntax tree of ``source``; ``ValueError`` names what is wrong or unsupported."""
    parser = _Parser(source)
    expr = parser.expression()
    parser.expect_end()
    _check_depth(expr)
    return expr


def _check_depth(expr: Expr) -> None:
    """ValueError if ``expr`` nests deeper than :data:`MAX_DEPTH` (read without recursion)."""
    pending: list[tuple[Expr, int]] = [(expr, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"the expression nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, Binary):
            pending += [(node.lhs, depth + 1), (node.rhs, depth + 1)]
        elif isinstance(node, Aggregate):
            pending.append((node.expr, depth + 1))
        elif isinstance(node, Call):
            pending += [(arg, depth + 1) for arg in node.args]


class _Parser:
    def __init__(self, source: str) -> None:
        self._tokens = tokenize(source)
        self._index = 0
        self._depth = 0

    @property
    def _peek(self) -> Token:
        return self._tokens[self._index]

    def _next(self) -> Token:
        token = self._tokens[self._index]
        if token.kind != "end":
            self._index += 1
        return token

    def _accept(self, text: str) -> bool:
        if self._peek.kind in ("op", "ident") and self._peek.text == text:
            self._index += 1
            return True
        return False

    def _expect(self, text: str) -> None:
        token = self._peek
        if not self._accept(text):
            raise ValueError(f"expected {text!r} at {token.position}, found {_shown(token)}")

    def expect_end(self) -> None:
        token = self._peek
        if token.kind != "end":
            self._refuse_modifier(token)
            raise ValueError(f"unexpected {_shown(token)} at {token.position}")

    def expression(self) -> Expr:
        return self._binary(0)

    _LEVELS: tuple[tuple[str, ...], ...] = (_COMPARISONS, ("+", "-"), ("*", "/"))

    def _binary(self, level: int) -> Expr:
        if level == len(self._LEVELS):
            return self._unary()
        lhs = self._binary(level + 1)
        while True:
            token = self._peek
            if token.kind == "ident" and token.text in _SET_OPERATORS:
                raise ValueError(f"the set operator {token.text!r} is not supported")
            if token.kind == "op" and token.text in ("%", "^"):
                raise ValueError(f"the operator {token.text!r} is not supported")
            if not (token.kind == "op" and token.text in self._LEVELS[level]):
                return lhs
            self._next()
            matching = self._matching()
            rhs = self._binary(level + 1)
            lhs = Binary(token.text, lhs, rhs, matching)

    def _matching(self) -> tuple[str, tuple[str, ...]] | None:
        token = self._peek
        if token.kind == "ident" and token.text in ("bool", "group_left", "group_right"):
            raise ValueError(f"the {token.text!r} modifier is not supported")
        if token.kind == "ident" and token.text in ("on", "ignoring"):
            self._next()
            labels = self._label_list()
            following = self._peek
            if following.kind == "ident" and following.text in ("group_left", "group_right"):
                raise ValueError(f"the {following.text!r} modifier is not supported")
            return token.text, labels
        return None

    def _unary(self) -> Expr:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ValueError(f"the expression nests deeper than {MAX_DEPTH} levels")
            return self._signed()
        finally:
            self._depth -= 1

    def _signed(self) -> Expr:
        if self._accept("-"):
            operand = self._unary()
            if isinstance(operand, Number):
                return Number(-operand.value)
            return Binary("*", Number(-1.0), operand)
        if self._accept("+"):
            return self._unary()
        return self._postfix(self._primary())

    def _postfix(self, expr: Expr) -> Expr:
        if self._peek.text == "[" and self._peek.kind == "op":
            start = self._next()
            if not isinstance(expr, VectorSelector):
                raise ValueError(f"a range [..] at {start.position} must follow a selector")
            duration = self._next()
            if duration.kind != "duration":
                raise ValueError(f"expected a duration at {duration.position}")
            if self._peek.text.startswith(":"):
                raise ValueError("subqueries are not supported")
            self._expect("]")
            expr = MatrixSelector(expr, parse_duration(duration.text))
        self._refuse_modifier(self._peek)
        return expr

    @staticmethod
    def _refuse_modifier(token: Token) -> None:
        if token.text in _MODIFIERS:
            raise ValueError(f"the {token.text!r} modifier is not supported")

    def _primary(self) -> Expr:
        token = self._next()
        if token.kind == "number":
            return Number(float(token.text))
        if token.kind == "op" and token.text == "(":
            inner = self.expression()
            self._expect(")")
            return inner
        if token.kind == "op" and token.text == "{":
            return self._selector(None)
        if token.kind == "ident":
            name = token.text
            if name in ("Inf", "inf", "NaN", "nan"):
                return Number(float(name))
            if name in AGGREGATIONS:
                return self._aggregate(name)
            if name in _OTHER_AGGREGATIONS:
                raise ValueError(f"the aggregation {name!r} is not supported")
            if self._peek.text == "(" and self._peek.kind == "op":
                return self._call(name)
            if self._accept("{"):
                return self._selector(name)
            return VectorSelector(name, ())
        raise ValueError(f"unexpected {_shown(token)} at {token.position}")

    def _selector(self, name: str | None) -> VectorSelector:
        matchers: list[Matcher] = []
        while not self._accept("}"):
            label = self._next()
            if label.kind != "ident":
                raise ValueError(f"expected a label name at {label.position}")
            op = self._next()
            if op.text not in ("=", "!=", "=~", "!~"):
                raise ValueError(f"expected =, !=, =~ or !~ at {op.position}")
            value = self._next()
            if value.kind != "string":
                raise ValueError(f"expected a quoted value at {value.position}")
            text = _unquote(value.text)
            pattern = None
            if op.text in ("=~", "!~"):
                try:
                    pattern = re.compile(text)
                except re.error as error:
                    raise ValueError(f"invalid regular expression {text!r}: {error}") from None
                if (unsafe := unsafe_regex(text)) is not None:
                    raise ValueError(f"regular expression {text!r} refused: {unsafe}")
            matchers.append(Matcher(label.text, op.text, text, pattern))
            if not self._accept(","):
                self._expect("}")
                break
        named = [m for m in matchers if m.label == "__name__" and m.op == "="]
        if name is None and named:
            name = named[0].value
            matchers = [m for m in matchers if m is not named[0]]
        if name is None:
            raise ValueError("a selector needs a metric name")
        return VectorSelector(name, tuple(matchers))

    def _label_list(self) -> tuple[str, ...]:
        self._expect("(")
        labels: list[str] = []
        while not self._accept(")"):
            token = self._next()
            if token.kind != "ident":
                raise ValueError(f"expected a label name at {token.position}")
            labels.append(token.text)
            if not self._accept(","):
                self._expect(")")
                break
        return tuple(labels)

    def _aggregate(self, op: str) -> Aggregate:
        grouping: tuple[str, ...] = ()
        without = False
        clause = False
        if self._peek.text in ("by", "without"):
            without = self._next().text == "without"
            grouping, clause = self._label_list(), True
        self._expect("(")
        expr = self.expression()
        if self._accept(","):
            raise ValueError(f"{op} takes one argument")
        self._expect(")")
        if not clause and self._peek.text in ("by", "without"):
            without = self._next().text == "without"
            grouping = self._label_list()
        if isinstance(expr, MatrixSelector | Number):
            raise ValueError(f"{op} needs an instant vector")
        return Aggregate(op, expr, grouping, without)

    def _call(self, name: str) -> Call:
        if name not in FUNCTIONS:
            raise ValueError(f"the function {name!r} is not supported")
        self._expect("(")
        args: list[Expr] = []
        while not self._accept(")"):
            args.append(self.expression())
            if not self._accept(","):
                self._expect(")")
                break
        if name in RANGE_FUNCTIONS:
            if len(args) != 1 or not isinstance(args[0], MatrixSelector):
                raise ValueError(f"{name} takes one range selector, like x[5m]")
        elif len(args) != 2 or not isinstance(args[0], Number):
            raise ValueError(f"{name} takes a number and an instant vector")
        elif isinstance(args[1], MatrixSelector):
            raise ValueError(f"{name} needs an instant vector, not a range")
        return Call(name, tuple(args))


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def _shown(token: Token) -> str:
    return "the end" if token.kind == "end" else repr(token.text)
