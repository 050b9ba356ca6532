"""Per-fingerprint statistics: exact counts, a p95 within its bound, memory that stays capped."""

from __future__ import annotations

import math
import random
import threading
import uuid
from decimal import Decimal

import pytest

from corestone.db._fingerprint import Fingerprint
from corestone.db._latency_sketch import RELATIVE_ERROR, LatencySketch
from corestone.db._query_stats import QueryStatsTable, redact_parameters


def _fp(n: int) -> Fingerprint:
    return Fingerprint(f"{n:016x}", f"SELECT c{n} FROM t WHERE id = ?", "select", "sqlite")


def _record(table: QueryStatsTable, fp: Fingerprint, seconds: float, rows: int = 1) -> None:
    table.record(fp, seconds, rows, False, fp.text, (1,), "primary")


def test_calls_total_mean_max_and_rows_are_exact() -> None:
    """The counters are exact; the mean is total over calls."""
    table = QueryStatsTable()
    for seconds, rows in ((0.001, 1), (0.003, 0), (0.002, 5)):
        _record(table, _fp(1), seconds, rows)

    (stats,) = table.snapshot()
    assert stats.calls == 3
    assert stats.rows == 6
    assert stats.total_ms == pytest.approx(6.0)
    assert stats.mean_ms == pytest.approx(2.0)
    assert stats.max_ms == pytest.approx(3.0)


def test_the_sample_is_the_slowest_call_with_its_parameters() -> None:
    """The sample an EXPLAIN would need is the slowest call's statement and values."""
    table = QueryStatsTable()
    fp = _fp(1)
    table.record(fp, 0.001, 1, False, "SELECT ... $1", ("fast",), "primary")
    table.record(fp, 0.009, 1, False, "SELECT ... $1", ("slow",), "replica1")
    table.record(fp, 0.002, 1, False, "SELECT ... $1", ("mid",), "primary")

    (stats,) = table.snapshot()
    assert stats.sample is not None
    assert stats.sample.parameters == ("slow",)
    assert stats.sample.target == "replica1"
    assert stats.as_dict()["sample"]["parameters"] == ["str"]


def test_failed_calls_are_counted_as_errors_and_calls() -> None:
    """A failed statement is a call and an error."""
    table = QueryStatsTable()
    table.record(_fp(1), 0.001, 0, True, "SELECT", None, "primary")
    _record(table, _fp(1), 0.001)

    (stats,) = table.snapshot()
    assert (stats.calls, stats.errors) == (2, 1)


@pytest.mark.parametrize(
    "draw",
    [
        lambda r: r.expovariate(1 / 0.002),
        lambda r: r.lognormvariate(math.log(0.0005), 1.0),
        lambda r: r.uniform(0.0001, 0.05),
        lambda r: 0.003,
    ],
)
def test_the_p95_is_within_the_sketch_bound_of_the_exact_one(draw: object) -> None:
    """The sketch's p95 is within its documented relative error of the exact p95."""
    rng = random.Random(7)
    values = [draw(rng) for _ in range(20_000)]  # type: ignore[operator]
    sketch = LatencySketch()
    for v in values:
        sketch.add(v)

    exact = sorted(values)[math.ceil(0.95 * len(values)) - 1]
    assert abs(sketch.quantile(0.95) - exact) <= RELATIVE_ERROR * exact + 1e-12


def test_the_p95_never_exceeds_the_max() -> None:
    """A p95 read from a bucket's middle is capped at the largest duration seen."""
    table = QueryStatsTable()
    for _ in range(20):
        _record(table, _fp(1), 0.001736)

    (stats,) = table.snapshot()
    assert stats.p95_ms <= stats.max_ms == pytest.approx(1.736)


def test_merged_sketches_answer_as_one_sketch_of_everything() -> None:
    """Merging adds bucket counts: the same quantiles as one sketch fed both streams."""
    rng = random.Random(3)
    a, b, both = LatencySketch(), LatencySketch(), LatencySketch()
    for n in range(5000):
        value = rng.expovariate(1000)
        (a if n % 2 else b).add(value)
        both.add(value)
    a.merge(b)

    assert a.count == both.count
    assert a.quantile(0.95) == both.quantile(0.95)
    assert a.quantile(0.5) == both.quantile(0.5)


def test_durations_outside_the_range_land_in_the_end_buckets() -> None:
    """Zero, sub-microsecond and hours-long durations are counted, never an error."""
    sketch = LatencySketch()
    for value in (0.0, 1e-9, 1e-6, 86_400.0):
        sketch.add(value)

    assert sketch.count == 4
    assert sketch.quantile(0.25) == pytest.approx(1e-6)
    assert sketch.quantile(1.0) > 3000  # the last bucket: about an hour


def test_an_empty_sketch_reads_zero() -> None:
    """No duration yet: every quantile is 0."""
    assert LatencySketch().quantile(0.95) == 0.0


def test_a_hundred_thousand_fingerprints_keep_the_table_within_its_cap() -> None:
    """100,000 distinct fingerprints: at most the cap have entries; 'other' keeps the totals."""
    cap = 500
    table = QueryStatsTable(max_fingerprints=cap)
    for n in range(100_000):
        _record(table, _fp(n), 0.001, 2)
        assert len(table) <= cap

    snapshot = table.snapshot()
    assert len(snapshot) == cap + 1
    other = snapshot[-1]
    assert other.fingerprint.id == "other"
    assert other.calls == 100_000 - cap
    assert sum(s.calls for s in snapshot) == 100_000
    assert sum(s.rows for s in snapshot) == 200_000
    assert sum(s.total_ms for s in snapshot) == pytest.approx(100_000 * 1.0)


def test_eviction_keeps_the_recently_used_fingerprints() -> None:
    """A fingerprint in steady use survives a flood of one-off shapes."""
    table = QueryStatsTable(max_fingerprints=10)
    hot = _fp(-1)
    for n in range(1000):
        _record(table, hot, 0.001)
        _record(table, _fp(n), 0.001)

    found = table.get(hot.id)
    assert found is not None
    assert found.calls == 1000


def test_concurrent_threads_lose_no_call() -> None:
    """Updates from several threads (a sync engine's) are all counted."""
    table = QueryStatsTable(max_fingerprints=50)

    def work(offset: int) -> None:
        for n in range(5000):
            _record(table, _fp((n + offset) % 80), 0.0001)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sum(s.calls for s in table.snapshot()) == 20_000


def test_a_cap_below_one_is_refused() -> None:
    """A table that could hold nothing is a configuration mistake."""
    with pytest.raises(ValueError, match="at least 1"):
        QueryStatsTable(max_fingerprints=0)


def test_clear_starts_a_new_period() -> None:
    """After clear() nothing is left, 'other' included."""
    table = QueryStatsTable(max_fingerprints=1)
    _record(table, _fp(1), 0.001)
    _record(table, _fp(2), 0.001)
    table.clear()

    assert table.snapshot() == []


@pytest.mark.parametrize(
    ("parameters", "redacted"),
    [
        (("ada@example.com", 42, None), ["str", "int", None]),
        ({"email": "ada@example.com", "id": uuid.uuid4()}, {"email": "str", "id": "UUID"}),
        ([b"\x00secret", Decimal("1.5")], ["bytes", "Decimal"]),
        ("a whole string", "str"),
        (None, None),
    ],
)
def test_redaction_keeps_types_and_drops_every_value(parameters: object, redacted: object) -> None:
    """Parameters are shown as their types only, whatever their container."""
    assert redact_parameters(parameters) == redacted


def test_a_sample_keeps_no_huge_value() -> None:
    """The slowest call of an upload (a 5 MB blob, a 100,000-id list) is the sample: its
    short values are kept for EXPLAIN, the huge ones as None, not held in memory for good."""
    table = QueryStatsTable()
    blob, ids = b"x" * 5_000_000, list(range(100_000))
    table.record(_fp(1), 0.5, 1, False, "INSERT ... ($1, $2, $3)", (7, blob, ids), "primary")
    table.record(_fp(2), 0.5, 1, False, "SELECT ... :a :b", {"a": "k", "b": "y" * 2000}, "primary")

    first, second = (table.get(_fp(n).id) for n in (1, 2))
    assert first is not None
    assert first.sample is not None
    assert first.sample.parameters == (7, None, None)
    assert second is not None
    assert second.sample is not None
    assert second.sample.parameters == {"a": "k", "b": None}


def test_the_json_form_has_no_statement_text() -> None:
    """as_dict shows the fingerprint, never the statement as sent (values spliced into the
    text, E'…' or not, would be in it)."""
    table = QueryStatsTable()
    table.record(_fp(1), 0.1, 1, False, "SELECT c1 FROM t WHERE id = 's3cr3t'", None, "primary")

    (stats,) = table.snapshot()
    assert "s3cr3t" not in repr(stats.as_dict())
