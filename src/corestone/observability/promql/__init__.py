"""A subset of PromQL over the in-process metric history, with Prometheus's semantics.

Supported: selectors with ``= != =~ !~`` matchers, ranges (``[5m]``), ``rate``,
``increase``, ``avg_over_time``/``max_over_time``/``min_over_time``,
``histogram_quantile``, ``sum``/``avg``/``max``/``min``/``count`` with ``by``/``without``,
``+ - * /`` between scalars and vectors (one-to-one, ``on``/``ignoring``) and filtering
comparisons. Anything else is a ``ValueError`` naming it, so the same rules run unchanged
under Prometheus and mean the same there.
"""

from corestone.observability.promql._ast import Expr, Matcher, metric_names
from corestone.observability.promql._eval import (
    LOOKBACK_SECONDS,
    Memo,
    SampleStore,
    Vector,
    evaluate,
)
from corestone.observability.promql._lexer import format_duration, parse_duration
from corestone.observability.promql._parser import parse

__all__ = [
    "LOOKBACK_SECONDS",
    "Expr",
    "Matcher",
    "Memo",
    "SampleStore",
    "Vector",
    "evaluate",
    "format_duration",
    "metric_names",
    "parse",
    "parse_duration",
]
