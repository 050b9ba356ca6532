"""The http suite's checks: issue 11's targets, computed from one run's loads.

Ratios compare taskboard on PostgreSQL + Redis with the minimal app on the same
PostgreSQL, each at 16 connections; the pool targets read taskboard's list of 20 at 64
connections. A check whose row is missing is reported with a null value, not met, and
a note saying why.
"""

from __future__ import annotations

from collections.abc import Callable

from bench._http_load import Load
from bench._report import Report

__all__ = ["add_checks"]


def add_checks(report: Report, loads: dict[str, Load], missing: dict[str, str]) -> None:
    """Every target of issue 11 as a check on ``report``."""

    def ratio(
        name: str,
        ours: str,
        theirs: str,
        op: str,
        limit: float,
        figure: Callable[[Load], float | None],
    ) -> None:
        a, b = loads.get(ours), loads.get(theirs)
        value = None
        if a is not None and b is not None:
            top, bottom = figure(a), figure(b)
            if top is not None and bottom:
                value = top / bottom
        report.check(name, value, op, limit, _note(missing, ours, theirs))

    def single(
        name: str, row: str, op: str, limit: float, figure: Callable[[Load], float | None]
    ) -> None:
        found = loads.get(row)
        report.check(name, None if found is None else figure(found), op, limit, _note(missing, row))

    def rps(load: Load) -> float:
        return load.rps

    def p99(load: Load) -> float:
        return load.p99_ms

    single(
        "cached GET: DB round trips per request",
        "taskboard_pg_get_cached_c16",
        "==",
        0,
        lambda load: load.round_trips_per_request,
    )
    ratio(
        "cached GET requests/s ÷ minimal GET requests/s",
        "taskboard_pg_get_cached_c16",
        "minimal_pg_get_c16",
        ">=",
        2,
        rps,
    )
    ratio(
        "cached GET p99 ÷ minimal GET p99",
        "taskboard_pg_get_cached_c16",
        "minimal_pg_get_c16",
        "<",
        1,
        p99,
    )
    ratio(
        "GET, task cache off, requests/s ÷ minimal GET requests/s",
        "taskboard_pg_get_uncached_c16",
        "minimal_pg_get_c16",
        ">=",
        0.9,
        rps,
    )
    ratio(
        "list 20 requests/s ÷ minimal list 20 requests/s",
        "taskboard_pg_list20_c16",
        "minimal_pg_list20_c16",
        ">=",
        0.8,
        rps,
    )
    ratio(
        "create (+ audit row) requests/s ÷ minimal insert requests/s",
        "taskboard_pg_create_c16",
        "minimal_pg_create_c16",
        ">=",
        0.6,
        rps,
    )
    ratio(
        "--workers 2 cached GET requests/s ÷ one process",
        "taskboard_pg_workers2_get_cached_c16",
        "taskboard_pg_get_cached_c16",
        ">=",
        1.4,
        rps,
    )
    single(
        "64 connections: PostgreSQL connections opened in the steady phase",
        "taskboard_pg_list20_c64",
        "==",
        0,
        lambda load: None if load.counts is None else float(load.counts.connections),
    )
    single(
        "64 connections: p99 ÷ p50",
        "taskboard_pg_list20_c64",
        "<",
        10,
        lambda load: load.p99_ms / load.p50_ms if load.p50_ms else None,
    )


def _note(missing: dict[str, str], *rows: str) -> str:
    return "; ".join(f"{row} missing: {missing[row]}" for row in rows if row in missing)
