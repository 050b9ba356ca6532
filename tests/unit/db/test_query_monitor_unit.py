"""The monitor's bookkeeping without a database: ranking, thresholds, scopes, call sites."""

from __future__ import annotations

from corestone import context
from corestone.db._call_site import call_site
from corestone.db._fingerprint import fingerprint_of
from corestone.db._query_scope import scope_of_request
from corestone.db.monitor import MonitorOptions, QueryMonitor
from corestone.observability import Metrics


def _monitor(**options: object) -> QueryMonitor:
    return QueryMonitor(MonitorOptions(**options), metrics=Metrics())  # type: ignore[arg-type]


def _run(monitor: QueryMonitor, statement: str, seconds: float = 0.001) -> None:
    monitor.observe(
        fingerprint_of(statement, "postgresql"), seconds, 1, False, statement, (), "primary"
    )


def test_slowest_ranks_by_p95_and_leaves_other_out() -> None:
    """slowest() orders by p95, highest first, without the evicted-fingerprints entry."""
    monitor = _monitor(max_fingerprints=2)
    for _ in range(20):
        _run(monitor, "SELECT a FROM t", 0.001)
        _run(monitor, "SELECT b FROM t", 0.010)
    _run(monitor, "SELECT c FROM t", 0.5)  # evicts "a" into other

    ranked = [s.fingerprint.text for s in monitor.slowest()]
    assert ranked == ["SELECT c FROM t", "SELECT b FROM t"]
    assert monitor.statistics()[-1].fingerprint.id == "other"


def test_a_threshold_of_zero_turns_n_plus_one_off() -> None:
    """With the threshold at 0 nothing is ever reported, however often a query runs."""
    monitor = _monitor(n_plus_one_threshold=0)
    with context.request_scope():
        for _ in range(50):
            _run(monitor, "SELECT a FROM t WHERE id = $1")

    assert monitor.n_plus_one() == []


def test_the_report_names_the_line_that_ran_the_query_and_reset_forgets_it() -> None:
    """Outside any library, the call site is the caller's own line; reset() clears findings."""
    monitor = _monitor(n_plus_one_threshold=3)
    with context.request_scope():
        for _ in range(3):
            _run(monitor, "SELECT a FROM t WHERE id = $1")

    (finding,) = monitor.n_plus_one()
    assert finding.location is not None
    assert finding.location.startswith(f"{__file__}:")
    monitor.reset()
    assert monitor.n_plus_one() == []
    assert monitor.statistics() == []


def test_transaction_control_is_not_a_query_of_the_request() -> None:
    """BEGIN and COMMIT are in the statistics but not in the request's count."""
    monitor = _monitor()
    with context.request_scope() as state:
        for statement in ("BEGIN", "SELECT a FROM t", "COMMIT"):
            _run(monitor, statement)
        scope = scope_of_request(state)

    assert scope is not None
    assert scope.queries == 1
    assert sum(s.calls for s in monitor.statistics()) == 3


def test_outside_a_request_or_transaction_nothing_is_counted_for_n_plus_one() -> None:
    """With no unit of work there is no scope: statistics only."""
    monitor = _monitor(n_plus_one_threshold=2)
    for _ in range(10):
        _run(monitor, "SELECT a FROM t WHERE id = $1")

    assert monitor.n_plus_one() == []
    assert monitor.statistics()[0].calls == 10


def test_call_site_skips_the_libraries_it_is_told_to() -> None:
    """The innermost frame outside the skipped packages: this file, unless it is skipped."""
    here = call_site()
    assert here is not None
    assert here.startswith(f"{__file__}:")
    assert call_site(skip=frozenset({"tests", "_pytest", "pytest", "pluggy", "__main__"})) != here
