"""Queries suite: what the query monitor adds to a query (issue 16's "Benchmark").

``uv run python -m bench queries [--quick]`` on the PostgreSQL at ``SERVER_URL``. It
creates a database ``bench_persistence_<random>`` with 1,000 task rows, then runs one
workload through corestone's repository on one :class:`~corestone.db.Database` in three
modes, interleaved (the order rotating), each operation in a request
scope as a web request would be:

- ``off``: no listener;
- ``events``: the bare SQLAlchemy recipe (two listeners that only time the statement:
  the floor any event-based monitor pays);
- ``monitor``: :class:`~corestone.db.monitor.QueryMonitor` attached (statistics,
  fingerprint cache, histogram, N+1 scope, slow check).

The workload: a primary-key ``get`` in a read-only transaction (one statement) and a
single-row ``update`` in a write transaction (its statements counted by the monitor).
Each figure is the median µs of single operations, the modes taking turns every ten
operations; the overhead per query is the added µs per operation over the statements
per operation, and as a percentage of the operation's time without the monitor. The
monitor's own bookkeeping per statement is also timed in process (no I/O), which the
noise of a shared machine does not blur, and shown as a share of a get's time.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from bench._persistence_setup import WORKSPACE, TaskRepository, bench_database, task_rows
from bench._report import Report
from corestone import context
from corestone.db import Database
from corestone.db._statement_hooks import EngineHooks
from corestone.db.monitor import MonitorOptions, QueryMonitor
from corestone.observability import Metrics

__all__ = ["run"]

_ROWS = 1_000
_MODES = ("off", "events", "monitor")
_BLOCK = 10


async def run(quick: bool) -> Report:
    blocks = 40 if quick else 300
    load_before = os.getloadavg()[0]
    report = Report(suite="queries", columns=("workload", "mode", "figure", "unit"))
    async with bench_database() as bench:
        db = Database(bench.url, metrics=Metrics())
        await db.start()
        try:
            await _seed(db)
            monitor = QueryMonitor(MonitorOptions(slow_query_ms=10_000), metrics=Metrics())
            modes = _Modes(db, monitor)
            workloads: dict[str, Callable[[int], Awaitable[None]]] = {
                "get": lambda n: _get(db, n),
                "update": lambda n: _update(db, n),
            }
            per_statement = await _statements_per_op(db, workloads)
            per_statement_get = per_statement["get"]
            for name, work in workloads.items():
                medians = await _measure(modes, work, blocks=blocks)
                statements = per_statement[name]
                for mode in _MODES:
                    report.rows.append(
                        (f"{name} ({statements:g} statements)", mode, medians[mode], "µs/op")
                    )
                    report.results[f"{name}_{mode}_us_per_op"] = medians[mode]
                off = medians["off"]
                for mode in ("events", "monitor"):
                    added = (medians[mode] - off) / statements
                    pct = 100 * (medians[mode] - off) / off
                    report.results[f"{name}_{mode}_added_us_per_query"] = added
                    report.results[f"{name}_{mode}_overhead_pct"] = pct
                    report.rows.append((name, f"{mode}: added per query", added, "µs"))
                    report.rows.append((name, f"{mode}: overhead", pct, "%"))
        finally:
            await db.aclose()
    bookkeeping = _bookkeeping_us()
    report.rows.append(("in process, no I/O", "monitor hooks per statement", bookkeeping, "µs"))
    report.results["monitor_hooks_us_per_statement"] = bookkeeping
    get_off = report.results["get_off_us_per_op"]
    if get_off:
        share = 100 * bookkeeping * per_statement_get / get_off
        report.rows.append(("get", "monitor hooks, share of the op", share, "%"))
        report.results["get_monitor_hooks_share_pct"] = share
    for name in ("get", "update"):
        report.check(
            f"monitor adds under 5% per query ({name})",
            report.results[f"{name}_monitor_overhead_pct"],
            "<",
            5.0,
        )
    report.notes += [
        f"{blocks * _BLOCK:,} operations per mode and workload, the modes taking turns every"
        f" {_BLOCK} (order rotating), each operation in a request scope; figures are medians"
        " of single operations",
        "overhead % = (mode - off) / off per operation: a query's whole cost through corestone"
        " (transaction, session, repository, driver, PostgreSQL round trips)",
        f"load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end, on"
        f" {os.cpu_count()} CPUs (PostgreSQL on the same machine)",
    ]
    return report


class _Modes:
    """Switches the engine between no listener, bare timing listeners, and the monitor."""

    def __init__(self, db: Database, monitor: QueryMonitor) -> None:
        self.db = db
        self.monitor = monitor
        self._sync: Engine = db.engine.sync_engine
        self.mode = "off"

    def set(self, mode: str) -> None:
        if mode == self.mode:
            return
        if self.mode == "events":
            event.remove(self._sync, "before_cursor_execute", _before)
            event.remove(self._sync, "after_cursor_execute", _after)
        elif self.mode == "monitor":
            self.monitor.detach(self.db.engine)
        if mode == "events":
            event.listen(self._sync, "before_cursor_execute", _before)
            event.listen(self._sync, "after_cursor_execute", _after)
        elif mode == "monitor":
            self.monitor.attach(self.db.engine)
        self.mode = mode


_timings: list[float] = []


def _before(_c: Any, _cur: Any, _s: str, _p: Any, context: Any, _m: bool) -> None:
    context._bench_started = time.perf_counter()


def _after(_c: Any, _cur: Any, _s: str, _p: Any, context: Any, _m: bool) -> None:
    _timings.append(time.perf_counter() - context._bench_started)
    if len(_timings) > 10_000:
        _timings.clear()


async def _seed(db: Database) -> None:
    async with db.transaction() as tx:
        await TaskRepository(tx.session, workspace=WORKSPACE).create_many(task_rows(_ROWS))


async def _get(db: Database, n: int) -> None:
    with context.request_scope():
        async with db.transaction(read_only=True) as tx:
            task = await TaskRepository(tx.session, workspace=WORKSPACE).get(1 + n % _ROWS)
            assert task.id == 1 + n % _ROWS


async def _update(db: Database, n: int) -> None:
    with context.request_scope():
        async with db.transaction() as tx:
            await TaskRepository(tx.session, workspace=WORKSPACE).update(
                1 + n % _ROWS, {"title": f"renamed {n}"}
            )


async def _statements_per_op(
    db: Database, workloads: dict[str, Callable[[int], Awaitable[None]]]
) -> dict[str, float]:
    """Statements each operation sends (counted by a monitor of its own, BEGIN included)."""
    found = {}
    for name, work in workloads.items():
        counter = QueryMonitor(metrics=Metrics())
        counter.attach(db.engine)
        try:
            for n in range(20):
                await work(n)
        finally:
            counter.detach(db.engine)
        found[name] = sum(s.calls for s in counter.statistics()) / 20
    return found


async def _measure(
    modes: _Modes, work: Callable[[int], Awaitable[None]], *, blocks: int
) -> dict[str, float]:
    """Median µs per operation of each mode, from blocks of ``_BLOCK`` operations.

    The modes take turns block by block (the order rotating), so a burst of load from the
    machine's other work falls on all of them alike; the median of the single operations
    then leaves the bursts out.
    """
    samples: dict[str, list[int]] = {mode: [] for mode in _MODES}
    for mode in _MODES:  # warm-up: prepared statements, fingerprint cache, pool
        modes.set(mode)
        for n in range(50):
            await work(n)
    n = 0
    for block in range(blocks):
        order = _MODES[block % 3 :] + _MODES[: block % 3]
        for mode in order:
            modes.set(mode)
            taken = samples[mode]
            for _ in range(_BLOCK):
                started = time.perf_counter_ns()
                await work(n)
                taken.append(time.perf_counter_ns() - started)
                n += 1
    modes.set("off")
    return {mode: statistics.median(values) / 1000 for mode, values in samples.items()}


def _bookkeeping_us() -> float:
    """µs per statement of the monitor's before+after hooks, in process (cached fingerprint)."""
    calls = 50_000
    # The count per fingerprint runs; the report (once per scope) is kept out of the loop.
    monitor = QueryMonitor(MonitorOptions(n_plus_one_threshold=calls + 1), metrics=Metrics())
    hooks = EngineHooks(monitor, monitor.fingerprinter("postgresql"), "primary")
    statement = "SELECT bench_tasks.id FROM bench_tasks WHERE bench_tasks.id = $1::BIGINT"
    cursor = type("Cursor", (), {"rowcount": 1})()
    parameters = (1,)
    best = float("inf")
    for _ in range(5):
        with context.request_scope():
            started = time.perf_counter()
            for _ in range(calls):
                ctx = _Context()
                hooks.before(None, cursor, statement, parameters, ctx, False)
                hooks.after(None, cursor, statement, parameters, ctx, False)
            best = min(best, (time.perf_counter() - started) * 1e6 / calls)
    return best


class _Context:
    """Stands in for SQLAlchemy's execution context: an object the hooks can stamp."""
