"""Plan helpers that need no database: the read-only test and the bounded plan store."""

from __future__ import annotations

import pytest

from corestone.db.plans import CapturedPlan, PlanStore, is_read_only


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("SELECT * FROM t WHERE a = $1", True),
        ("SELECT a FROM t UNION SELECT b FROM u", True),
        ("UPDATE t SET a = 1", False),
        ("DELETE FROM t", False),
        ("WITH gone AS (DELETE FROM t RETURNING *) SELECT * FROM gone", False),
        ("SELECT * FROM t FOR UPDATE", False),
        ("SELECT nextval('s')", False),
        ("SELECT pg_sleep(10)", False),
        ("this is not sql at all (", False),
    ],
)
def test_only_a_plain_select_may_be_analyzed(statement: str, expected: bool) -> None:
    """EXPLAIN ANALYZE runs the statement: only a SELECT without effects qualifies."""
    assert is_read_only(statement, "postgresql") is expected


def test_the_plan_store_keeps_at_most_its_cap() -> None:
    """The store forgets the least recently used plan beyond max_entries."""
    store = PlanStore(max_entries=3)
    for n in range(10):
        store.put(CapturedPlan(f"f{n}", "q", None))
    assert len(store) == 3
    assert store.get("f0") is None
    assert store.get("f9") is not None


def test_a_plan_older_than_max_age_is_captured_again() -> None:
    """An index created since may have changed the plan: an old one is not returned."""
    from corestone.testing.clock import ManualClock

    clock = ManualClock()
    store = PlanStore(max_age_seconds=60, clock=clock)
    store.put(CapturedPlan("f", "q", None))
    clock.advance(59)
    assert store.get("f") is not None
    clock.advance(2)
    assert store.get("f") is None
