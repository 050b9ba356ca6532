"""The 4-bit count-min sketch behind L1 admission: never under-counts, saturates, ages."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from corestone.cache._sketch import FrequencySketch, spread


def h(key: object) -> int:
    return spread(hash(key))


@given(st.lists(st.integers(min_value=0, max_value=300), max_size=400))
def test_never_underestimates_before_ageing(keys: list[int]) -> None:
    """Before any halving, each key's estimate is at least its true count (capped at 15)."""
    sketch = FrequencySketch(64, sample_factor=1000)  # no halving within this test
    for key in keys:
        sketch.increment(h(key))
    for key, count in Counter(keys).items():
        assert sketch.frequency(h(key)) >= min(count, 15)


def test_counters_saturate_at_fifteen() -> None:
    """40 increments of one key estimate 15: the 4-bit counters stop there instead of wrapping."""
    sketch = FrequencySketch(16, sample_factor=1000)
    for _ in range(40):
        sketch.increment(h("hot"))
    assert sketch.frequency(h("hot")) == 15


@given(st.lists(st.integers(min_value=0, max_value=50), max_size=300))
def test_halving_halves_every_estimate(keys: list[int]) -> None:
    """halve() turns every key's estimate into its floor half."""
    sketch = FrequencySketch(32, sample_factor=1000)
    for key in keys:
        sketch.increment(h(key))
    before = {key: sketch.frequency(h(key)) for key in set(keys)}
    sketch.halve()
    for key, estimate in before.items():
        assert sketch.frequency(h(key)) == estimate // 2  # floor(min/2) == min(floor(x/2))


def test_ageing_happens_after_sample_size_increments() -> None:
    """After sample_size (10 x capacity) fresh increments an old key's count has at least halved."""
    sketch = FrequencySketch(100)  # sample size 10 x capacity
    assert sketch.sample_size == 1000
    for _ in range(12):
        sketch.increment(h("old"))
    assert sketch.frequency(h("old")) == 12
    for i in range(sketch.sample_size):  # fresh traffic: the old count must fade
        sketch.increment(h(("new", i)))
    assert sketch.frequency(h("old")) <= 6


def test_estimates_are_mostly_exact_at_design_load() -> None:
    """At capacity distinct keys, 95% of seen keys estimate 1 and 95% of unseen keys estimate 0."""
    capacity = 1000
    sketch = FrequencySketch(capacity, sample_factor=1000)
    for i in range(capacity):
        sketch.increment(h(("k", i)))
    exact = sum(sketch.frequency(h(("k", i))) == 1 for i in range(capacity))
    assert exact >= 0.95 * capacity
    unseen = sum(sketch.frequency(h(("other", i))) == 0 for i in range(capacity))
    assert unseen >= 0.95 * capacity


def test_clear_resets_every_count_to_zero() -> None:
    """After clear() a key that was counted estimates 0."""
    sketch = FrequencySketch(16)
    sketch.increment(h("k"))
    sketch.clear()
    assert sketch.frequency(h("k")) == 0


def test_spread_is_64_bit_and_mixes_small_ints() -> None:
    """spread gives non-negative 64-bit values whose low bits differ for consecutive small ints."""
    values = [spread(hash(i)) for i in range(1000)]
    assert all(0 <= v < 1 << 64 for v in values)
    assert len({v & 0xFFF for v in values}) > 600  # low bits differ although hash(i) == i
    assert spread(hash(-1)) >= 0
