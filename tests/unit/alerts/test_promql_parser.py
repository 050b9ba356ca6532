"""The PromQL subset's parser: what it accepts, and errors that name what it refuses."""

from __future__ import annotations

import re

import pytest

from corestone.observability.promql import format_duration, metric_names, parse, parse_duration
from corestone.observability.promql._ast import Aggregate, Binary, Call, MatrixSelector


def test_precedence_and_grouping_follow_prometheus() -> None:
    """Comparison binds loosest, division tighter, and by(...) may come after the argument."""
    expr = parse('sum(rate(x{a=~"5.."}[5m])) by (a) / sum(rate(x[5m])) > 0.05')
    assert isinstance(expr, Binary)
    assert expr.op == ">"
    assert isinstance(expr.lhs, Binary)
    assert expr.lhs.op == "/"
    assert isinstance(expr.lhs.lhs, Aggregate)
    assert expr.lhs.lhs.grouping == ("a",)
    call = expr.lhs.lhs.expr
    assert isinstance(call, Call)
    assert isinstance(call.args[0], MatrixSelector)
    assert call.args[0].range_seconds == 300


def test_metric_names_lists_every_selector() -> None:
    """The history is told every metric an expression reads."""
    expr = parse("histogram_quantile(0.9, sum by (le) (rate(h_bucket[1m]))) > on(x) y")
    assert metric_names(expr) == {"h_bucket", "y"}


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("x offset 5m", "offset"),
        ("rate(x[5m:1m])", "subqueries"),
        ("x and y", "and"),
        ("x or y", "or"),
        ("topk(3, x)", "topk"),
        ("abs(x)", "abs"),
        ("x > bool 1", "bool"),
        ("x * on(a) group_left y", "group_left"),
        ("x % 2", "%"),
        ("x @ 100", "@"),
        ('x{a="b"', "'}'"),
        ("rate(x)", "range selector"),
        ("sum(x[5m])", "instant vector"),
        ('x{a=~"("}', "regular expression"),
        ('x{a=~"(.*)*y"}', "a repeat inside a repeat"),
        ("(" * 5000 + "x" + ")" * 5000, "nests deeper than"),
        ("-" * 5000 + "x", "nests deeper than"),
        ("x" + " + 1" * 5000, "nests deeper than"),
        ("sum(" * 100 + "x" + ")" * 100, "nests deeper than"),
        ("rate(x[" + "9" * 400 + "s])", "out of range"),
        ("rate(x[300000000y])", "out of range"),
        ("x $ 1", "'$'"),
    ],
)
def test_unsupported_or_broken_expressions_name_the_construct(source: str, named: str) -> None:
    """Each refusal is a ValueError whose message names what is not supported or wrong."""
    with pytest.raises(ValueError, match=re.escape(named)):
        parse(source)


def test_durations_read_and_write_prometheus_syntax() -> None:
    """1h30m is 5400 s, and 5400 s writes back as 1h30m."""
    assert parse_duration("1h30m") == 5400
    assert parse_duration("250ms") == 0.25
    assert format_duration(5400) == "1h30m"
    assert format_duration(0) == "0s"
    with pytest.raises(ValueError, match="duration"):
        parse_duration("5 minutes")
