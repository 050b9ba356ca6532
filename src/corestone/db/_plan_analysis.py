"""Reading a query plan for the problems an index fixes, each with a name.

Four problems, as the issue names them (:class:`PlanProblem` ``kind``):

- ``seq_scan``: a sequential scan of a large table (``large_table_rows``) that keeps a
  small fraction of it (``selective_fraction``): an index on the filter's columns reads
  only those rows;
- ``sort``: a sort of many rows (``sort_rows``) of one table: an index in that order
  hands them over sorted;
- ``unindexed_foreign_key``: a join looks rows up by a foreign key column that no index
  leads, so each lookup scans;
- ``misestimate``: the planner expected far fewer or far more rows than came
  (``misestimate_factor``; only a plan made with ANALYZE knows): stale statistics, or a
  correlation the planner cannot see.

PostgreSQL plans are the JSON of ``EXPLAIN (FORMAT JSON)``; SQLite's are the rows of
``EXPLAIN QUERY PLAN``, which have no costs or row counts, so SQLite gets the catalog's
row counts and the statement's own filters (:mod:`._predicates`) instead and never a
``misestimate``. Pure functions: they read the plan and the catalog, nothing else.

A problem's ``detail`` names tables, columns and row counts, never a condition's text:
a plan made with a real run's values has those values in its filters, and the details
are shown to operators.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from corestone._extras import requires_extra
from corestone.db._catalog import Catalog
from corestone.db._predicates import TableUse

with requires_extra(__name__, "queries"):
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError

__all__ = ["AnalysisOptions", "PlanProblem", "ProblemKind", "analyse_postgres", "analyse_sqlite"]

ProblemKind = Literal["seq_scan", "sort", "unindexed_foreign_key", "misestimate"]


@dataclass(frozen=True, slots=True)
class AnalysisOptions:
    """When a plan's shape counts as a problem (see the module doc)."""

    large_table_rows: int = 10_000
    selective_fraction: float = 0.1
    sort_rows: int = 1_000
    misestimate_factor: float = 10.0
    misestimate_rows: int = 100


@dataclass(frozen=True, slots=True)
class PlanProblem:
    """A named problem found in a plan: on which table, which columns, and the evidence."""

    kind: ProblemKind
    table: str | None
    columns: tuple[str, ...]
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "table": self.table,
            "columns": list(self.columns),
            "detail": self.detail,
        }


_JOINS: Final = ("Hash Join", "Merge Join", "Nested Loop")
_CONDITIONS: Final = ("Hash Cond", "Merge Cond", "Join Filter")


def analyse_postgres(
    plan: Mapping[str, Any], catalog: Catalog, options: AnalysisOptions, *, analyzed: bool
) -> list[PlanProblem]:
    """The problems in a PostgreSQL plan (the ``Plan`` object of the JSON)."""
    found: list[PlanProblem] = []
    for node, cut_short in _walk(plan, False):
        kind = node.get("Node Type")
        if kind == "Seq Scan":
            found.extend(_seq_scan(node, catalog, options, analyzed))
        elif kind == "Sort":
            found.extend(_sort(node, options))
        elif kind in _JOINS:
            found.extend(_join(node, catalog))
        if analyzed:
            found.extend(_misestimate(node, options, cut_short))
    return _unique(found)


def _walk(node: Mapping[str, Any], cut_short: bool) -> Iterator[tuple[Mapping[str, Any], bool]]:
    """Every node, and whether a Limit or a Merge Join above it may stop it early."""
    yield node, cut_short
    below = cut_short or node.get("Node Type") in ("Limit", "Merge Join")
    for child in node.get("Plans", ()):
        yield from _walk(child, below)


def _nodes(node: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


def _rows(node: Mapping[str, Any], analyzed: bool) -> float:
    if analyzed and "Actual Rows" in node:
        return float(node["Actual Rows"])
    return float(node.get("Plan Rows", 0))


def _seq_scan(
    node: Mapping[str, Any], catalog: Catalog, options: AnalysisOptions, analyzed: bool
) -> Iterator[PlanProblem]:
    table = node.get("Relation Name")
    condition = node.get("Filter")
    info = catalog.table(table) if table else None
    if info is None or not condition or info.rows < options.large_table_rows:
        return
    kept = _rows(node, analyzed)
    if kept > info.rows * options.selective_fraction:
        return
    alias = node.get("Alias", table)
    columns = tuple(dict.fromkeys(c for q, c in _columns(condition) if q in (None, alias)))
    yield PlanProblem(
        "seq_scan",
        table,
        columns,
        f"Seq Scan on {table} reads ~{info.rows:.0f} rows to keep ~{kept:.0f} "
        f"(filter on {', '.join(dict.fromkeys(columns)) or 'an expression'})",
    )


def _sort(node: Mapping[str, Any], options: AnalysisOptions) -> Iterator[PlanProblem]:
    children = node.get("Plans", ())
    if len(children) != 1 or _rows(children[0], False) < options.sort_rows:
        return
    source: Mapping[str, Any] = children[0]
    while "Relation Name" not in source:
        below = source.get("Plans", ())
        if len(below) != 1:
            return  # a join's or an aggregate's output: no one index orders it
        source = below[0]
    keys = [str(k) for k in node.get("Sort Key", ())]
    columns = tuple(_sort_column(k) for k in keys)
    if not columns or "" in columns:
        return
    table = source["Relation Name"]
    yield PlanProblem(
        "sort",
        table,
        columns,
        f"Sort of ~{_rows(children[0], False):.0f} rows of {table} by {', '.join(keys)} "
        f"({source.get('Node Type')} below)",
    )


_SORT_KEY = re.compile(r'^(?:[\w"]+\.)?("?)(\w+)\1(?:\s+(?:DESC|ASC|NULLS\s+\w+))*$', re.I)


def _sort_column(key: str) -> str:
    match = _SORT_KEY.match(key.strip())
    return match.group(2) if match else ""


def _join(node: Mapping[str, Any], catalog: Catalog) -> Iterator[PlanProblem]:
    aliases = {
        n.get("Alias", n["Relation Name"]): n["Relation Name"]
        for n in _nodes(node)
        if "Relation Name" in n
    }
    conditions = [str(node[key]) for key in _CONDITIONS if key in node]
    if node.get("Node Type") == "Nested Loop":
        conditions += [str(c.get("Filter")) for c in node.get("Plans", ()) if c.get("Filter")]
    for condition in conditions:
        for qualifier, column in _columns(condition):
            table = aliases.get(qualifier or "")
            if table is None or not catalog.is_foreign_key(table, column):
                continue
            if not catalog.has_leading_index(table, column):
                yield PlanProblem(
                    "unindexed_foreign_key",
                    table,
                    (column,),
                    f"{node.get('Node Type')} looks up {table} by its foreign key "
                    f"{column}, which no index leads",
                )


def _misestimate(
    node: Mapping[str, Any], options: AnalysisOptions, cut_short: bool
) -> Iterator[PlanProblem]:
    if "Actual Rows" not in node or node.get("Actual Loops", 1) == 0:
        return
    planned, actual = float(node.get("Plan Rows", 0)), float(node["Actual Rows"])
    if cut_short and actual < planned:
        return  # stopped once its consumer had enough: fewer rows than planned is no error
    high, low = max(planned, actual), max(min(planned, actual), 1.0)
    if high < options.misestimate_rows or high / low < options.misestimate_factor:
        return
    table = node.get("Relation Name")
    where = f" on {table}" if table else ""
    yield PlanProblem(
        "misestimate",
        table,
        (),
        f"{node.get('Node Type')}{where}: estimated {planned:.0f} rows, got {actual:.0f}",
    )


def _columns(condition: str) -> list[tuple[str | None, str]]:
    """(qualifier, column) of each column named in a plan's condition text."""
    try:
        tree = sqlglot.parse_one(condition, read="postgres")
    except (SqlglotError, ValueError, RecursionError, KeyError, TypeError, AttributeError):
        return []
    return [(c.table or None, c.name) for c in tree.find_all(exp.Column) if c.name]


def _unique(found: list[PlanProblem]) -> list[PlanProblem]:
    return list({(p.kind, p.table, p.columns): p for p in found}.values())


_SQLITE_STEP = re.compile(
    r"^(?P<verb>SCAN|SEARCH)\s+(?:TABLE\s+)?(?P<name>\S+)(?:\s+AS\s+(?P<alias>\S+))?"
    r"(?P<rest>.*)$"
)
_AUTOMATIC = re.compile(r"AUTOMATIC (?:PARTIAL )?COVERING INDEX \((?P<keys>[^)]*)\)")


def analyse_sqlite(
    rows: list[tuple[int, int, str]],
    uses: Mapping[str, TableUse],
    catalog: Catalog,
    options: AnalysisOptions,
) -> list[PlanProblem]:
    """The problems in SQLite's ``EXPLAIN QUERY PLAN`` rows (id, parent, detail)."""
    by_alias = {alias: use for use in uses.values() for alias in use.aliases}
    found: list[PlanProblem] = []
    for _, _, detail in rows:
        step = _SQLITE_STEP.match(detail)
        if step is not None:
            use = by_alias.get(step["alias"] or step["name"]) or uses.get(step["name"])
            if use is not None:
                found.extend(_sqlite_step(step, use, catalog, options))
        elif detail.startswith("USE TEMP B-TREE FOR ORDER BY"):
            ordered = [u for u in uses.values() if u.order_by]
            info = catalog.table(ordered[0].table) if len(ordered) == 1 else None
            if info is not None and info.rows >= options.sort_rows:
                columns = tuple(c for c, _ in ordered[0].order_by)
                found.append(
                    PlanProblem(
                        "sort",
                        info.name,
                        columns,
                        f"{detail}: ~{info.rows:.0f} rows of {info.name} sorted by "
                        f"{', '.join(columns)}",
                    )
                )
    return _unique(found)


def _sqlite_step(
    step: re.Match[str], use: TableUse, catalog: Catalog, options: AnalysisOptions
) -> Iterator[PlanProblem]:
    table, rest = use.table, step["rest"].strip()
    info = catalog.table(table)
    automatic = _AUTOMATIC.search(rest)
    if automatic is not None:
        for key in automatic["keys"].split(" AND "):
            column = key.split("=")[0].strip()
            kind: ProblemKind = (
                "unindexed_foreign_key" if catalog.is_foreign_key(table, column) else "seq_scan"
            )
            yield PlanProblem(
                kind, table, (column,), f"{step.group(0)}: an index built for each run"
            )
        return
    if step["verb"] != "SCAN" or rest or info is None:
        return
    for column in use.joins:
        if catalog.is_foreign_key(table, column) and not catalog.has_leading_index(table, column):
            yield PlanProblem(
                "unindexed_foreign_key",
                table,
                (column,),
                f"{step.group(0)}: joined on the foreign key {table}.{column}, which no "
                "index leads",
            )
    if use.filtered and info.rows >= options.large_table_rows:
        columns = (*use.equality, *use.ranges, *(c for c, _ in use.constants))
        yield PlanProblem(
            "seq_scan",
            table,
            tuple(dict.fromkeys(columns)),
            f"{step.group(0)}: all ~{info.rows:.0f} rows read to filter on {', '.join(columns)}",
        )
