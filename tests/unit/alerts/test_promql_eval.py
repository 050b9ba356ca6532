"""The PromQL subset's semantics, against values computed by hand from Prometheus's rules."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pytest

from corestone.observability.promql import Matcher, evaluate, parse

Series = tuple[dict[str, str], list[tuple[float, float]]]


class _Store:
    """Samples given by hand, selected as the history selects them."""

    def __init__(self, *series: Series) -> None:
        self._series = series

    def select(
        self, name: str, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[tuple[Mapping[str, str], Sequence[float], Sequence[float]]]:
        return [
            (
                labels,
                [t for t, _ in points if start < t <= end],
                [v for t, v in points if start < t <= end],
            )
            for labels, points in self._series
            if labels["__name__"] == name
            and all(m.matches(labels.get(m.label, "")) for m in matchers)
        ]


def _at(store: _Store, expr: str, at: float = 60.0) -> dict[tuple[tuple[str, str], ...], float]:
    result = evaluate(parse(expr), store, at)
    assert not isinstance(result, float)
    return {tuple(sorted(labels.items())): value for labels, value in result}


def _counter(values: list[float], **labels: str) -> Series:
    return {"__name__": "c_total", **labels}, [(10.0 * (i + 1), v) for i, v in enumerate(values)]


def test_increase_adds_the_value_before_a_reset_and_extrapolates() -> None:
    """5,15,25 then reset to 5,15: 35 counted, +5 extrapolated toward zero, +8.75 to the end."""
    store = _Store(_counter([5, 15, 25, 5, 15]))
    assert _at(store, "increase(c_total[1m])") == {(): pytest.approx(48.75)}
    assert _at(store, "rate(c_total[1m])") == {(): pytest.approx(48.75 / 60)}


def test_rate_needs_two_samples() -> None:
    """One sample in the range gives no result, as in Prometheus."""
    store = _Store(({"__name__": "c_total"}, [(55.0, 3.0)]))
    assert _at(store, "rate(c_total[1m])") == {}


def test_over_time_functions() -> None:
    """avg/max/min_over_time reduce the samples inside the range only."""
    store = _Store(({"__name__": "g"}, [(0.0, 100.0), (20.0, 1.0), (40.0, 3.0), (60.0, 2.0)]))
    assert _at(store, "avg_over_time(g[1m])") == {(): 2.0}
    assert _at(store, "max_over_time(g[1m])") == {(): 3.0}
    assert _at(store, "min_over_time(g[1m])") == {(): 1.0}


def _buckets(**counts: float) -> list[Series]:
    return [
        ({"__name__": "h_bucket", "route": "/x", "le": le.replace("_", ".")}, [(60.0, count)])
        for le, count in counts.items()
    ]


@pytest.mark.parametrize(("q", "expected"), [(0.5, 0.3), (0.99, 0.98), (1.0, 1.0), (0.0, 0.0)])
def test_histogram_quantile_interpolates_inside_the_bucket(q: float, expected: float) -> None:
    """Buckets 0.1:10, 0.5:30, 1:40, +Inf:40 give the quantiles bucketQuantile gives."""
    store = _Store(*_buckets(**{"0_1": 10, "0_5": 30, "1": 40, "+Inf": 40}))
    result = _at(store, f"histogram_quantile({q}, h_bucket)")
    assert result == {(("route", "/x"),): pytest.approx(expected)}


def test_histogram_quantile_in_the_inf_bucket_answers_the_highest_bound() -> None:
    """A rank past the last finite bound answers that bound; no +Inf bucket answers NaN."""
    store = _Store(*_buckets(**{"0_1": 1, "+Inf": 10}))
    assert _at(store, "histogram_quantile(0.9, h_bucket)") == {(("route", "/x"),): 0.1}
    no_inf = _Store(*_buckets(**{"0_1": 1, "1": 10}))
    assert math.isnan(_at(no_inf, "histogram_quantile(0.9, h_bucket)")[(("route", "/x"),)])


def _requests() -> _Store:
    return _Store(
        ({"__name__": "r", "route": "/a", "status": "200"}, [(60.0, 6.0)]),
        ({"__name__": "r", "route": "/a", "status": "500"}, [(60.0, 2.0)]),
        ({"__name__": "r", "route": "/b", "status": "200"}, [(60.0, 4.0)]),
    )


def test_aggregations_by_and_without() -> None:
    """by keeps only the named labels, without drops them (and the name)."""
    store = _requests()
    assert _at(store, "sum by (route) (r)") == {(("route", "/a"),): 8.0, (("route", "/b"),): 4.0}
    assert _at(store, "max without (status) (r)") == {
        (("route", "/a"),): 6.0,
        (("route", "/b"),): 4.0,
    }
    assert _at(store, "count(r)") == {(): 3.0}
    assert _at(store, "avg(r)") == {(): 4.0}
    assert _at(store, "min(r)") == {(): 2.0}


def test_vector_matching_one_to_one_with_on_and_ignoring() -> None:
    """Series pair up on equal labels (or on/ignoring); arithmetic drops the name."""
    store = _requests()
    errors = 'sum by (route) (r{status="500"})'
    assert _at(store, f"{errors} / sum by (route) (r)") == {(("route", "/a"),): 0.25}
    assert _at(store, 'r{status="500"} / ignoring(status) r{status="200"}') == {
        (("route", "/a"),): pytest.approx(2 / 6)
    }
    assert _at(store, 'r{status="500"} - on(route) r{status="200"}') == {(("route", "/a"),): -4.0}


def test_comparisons_filter_and_keep_the_vector_value() -> None:
    """x > 3 keeps matching series with their values and names; 3 < x keeps x's value too."""
    store = _requests()
    assert _at(store, "r > 3") == {
        (("__name__", "r"), ("route", "/a"), ("status", "200")): 6.0,
        (("__name__", "r"), ("route", "/b"), ("status", "200")): 4.0,
    }
    assert _at(store, "5 < r") == {(("__name__", "r"), ("route", "/a"), ("status", "200")): 6.0}


def test_scalar_arithmetic_and_division_by_zero() -> None:
    """Scalars fold; x/0 is +Inf like IEEE and Prometheus."""
    store = _Store(({"__name__": "g"}, [(60.0, 2.0)]))
    assert evaluate(parse("2 * 3 - 1"), store, 60.0) == 5.0
    assert _at(store, "g / 0") == {(): math.inf}
    assert _at(store, "-g") == {(): -2.0}


def test_instant_selector_looks_back_five_minutes() -> None:
    """The latest sample within 5 minutes answers; an older one does not."""
    store = _Store(({"__name__": "g"}, [(0.0, 1.0), (100.0, 7.0)]))
    assert _at(store, "g", at=350.0) == {(("__name__", "g"),): 7.0}
    assert _at(store, "g", at=401.0) == {}


def test_duplicate_series_on_the_right_is_an_error() -> None:
    """Many-to-many matching is refused, as Prometheus refuses it."""
    store = _requests()
    with pytest.raises(ValueError, match="many-to-many"):
        _at(store, "sum by (route) (r) / on() r")
