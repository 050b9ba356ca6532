"""What a statement asks of each table it reads: the raw material of an index.

:func:`table_uses` parses a statement with sqlglot (the parser the monitor fingerprints
with) and, for each table, collects the columns of its top-level conjunctive filters by
kind, because an index serves them in a fixed order:

- ``equality``: ``col = value``, ``col IN (values)``: they lead an index;
- ``ranges``: ``<``, ``<=``, ``>``, ``>=``, ``BETWEEN``: one of them can follow;
- ``order_by``: the ORDER BY columns of a single-table order, which an index can hand over
  sorted when nothing but equalities precede them;
- ``constants``: ``col IS NULL``, ``col IS NOT NULL``, ``col = TRUE/FALSE``: the same in
  every run (a soft-delete filter), so they make a partial index's WHERE, not a column;
- ``joins``: ``a.col = b.col``: the columns a join looks rows up by.

A "value" is anything without a column in it (a literal, a bound parameter, ``now()``).
Filters under an OR, on an expression of a column (``lower(email)``) or in a form not
listed are left out: the advisor proposes plain b-tree indexes on columns, nothing it
cannot prove with a plan. Columns without a table name are given to the one table of
the scope that has such a column (``columns``: the catalog's), else left out. A
statement that does not parse gives nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from corestone._extras import requires_extra

with requires_extra(__name__, "queries"):
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError

__all__ = ["Constant", "TableUse", "table_uses"]

Constant = tuple[str, Literal["IS NULL", "IS NOT NULL", "= TRUE", "= FALSE"]]
"""A column and the constant test it always gets (a partial index's predicate)."""

_DIALECTS: Final = {"postgresql": "postgres", "sqlite": "sqlite"}
_RANGES: Final = (exp.GT, exp.GTE, exp.LT, exp.LTE)


@dataclass(slots=True)
class TableUse:
    """The filters, order and joins one statement puts on one table (module doc)."""

    table: str
    equality: list[str] = field(default_factory=list)
    ranges: list[str] = field(default_factory=list)
    order_by: list[tuple[str, bool]] = field(default_factory=list)
    constants: list[Constant] = field(default_factory=list)
    joins: list[str] = field(default_factory=list)
    aliases: set[str] = field(default_factory=set)

    @property
    def filtered(self) -> bool:
        """Whether any filter at all narrows this table's rows."""
        return bool(self.equality or self.ranges or self.constants)


def table_uses(
    statement: str,
    dialect: str,
    columns: Mapping[str, frozenset[str]],
    schema: str | None = None,
) -> dict[str, TableUse]:
    """Each table's :class:`TableUse` in ``statement`` (empty when it does not parse).

    ``columns`` are the tables of ``schema`` (the catalog's): a table qualified with
    another schema (``archive.child``) is left out, not taken for ``child``.
    """
    try:
        tree = sqlglot.parse_one(statement, read=_DIALECTS.get(dialect, dialect))
    except (SqlglotError, ValueError, RecursionError, KeyError, TypeError, AttributeError):
        return {}
    uses: dict[str, TableUse] = {}
    for scope in _scopes(tree):
        _ScopeReader(scope, columns, uses, schema).read()
    return uses


def _scopes(tree: Any) -> Iterator[Any]:
    if isinstance(tree, exp.Update | exp.Delete):
        yield tree
    yield from tree.find_all(exp.Select)


class _ScopeReader:
    """Reads one SELECT (or UPDATE/DELETE) into ``uses``."""

    def __init__(
        self,
        scope: Any,
        columns: Mapping[str, frozenset[str]],
        uses: dict[str, TableUse],
        schema: str | None = None,
    ) -> None:
        self.scope = scope
        self.schema = schema
        self.columns = columns
        self.uses = uses
        self.aliases: dict[str, str] = {}

    def read(self) -> None:
        scope = self.scope
        tables: list[Any] = []
        if isinstance(scope, exp.Update | exp.Delete):
            tables.append(scope.this)
        else:
            source = scope.args.get("from") or scope.args.get("from_")
            if source is not None:
                tables.append(source.this)
        joins = scope.args.get("joins") or []
        tables.extend(join.this for join in joins)
        for table in tables:
            if isinstance(table, exp.Table) and table.name and self._ours(table):
                self.aliases[table.alias_or_name] = table.name
                self.uses.setdefault(table.name, TableUse(table.name)).aliases.add(
                    table.alias_or_name
                )
        if not self.aliases:
            return
        where = scope.args.get("where")
        if where is not None:
            self._conditions(where.this)
        for join in joins:
            on = join.args.get("on")
            if on is not None:
                self._conditions(on)
        order = scope.args.get("order")
        if order is not None:
            self._order(order)

    def _ours(self, table: Any) -> bool:
        """Unqualified, or qualified with the catalog's schema (when it is known)."""
        return not table.db or self.schema is None or table.db == self.schema

    def _conditions(self, node: Any) -> None:
        for part in _conjuncts(node):
            self._condition(part)

    def _condition(self, node: Any) -> None:
        if isinstance(node, exp.Not) and isinstance(node.this, exp.Is):
            found = self._column(node.this.this)
            if found is not None and isinstance(node.this.expression, exp.Null):
                self._use(found).constants.append((found[1], "IS NOT NULL"))
            return
        if isinstance(node, exp.Is):
            found = self._column(node.this)
            if found is not None and isinstance(node.expression, exp.Null):
                self._use(found).constants.append((found[1], "IS NULL"))
            return
        if isinstance(node, exp.In):
            found = self._column(node.this)
            if found is not None and node.expressions and all(map(_is_value, node.expressions)):
                self._add(self._use(found).equality, found[1])
            return
        if isinstance(node, exp.Between):
            found = self._column(node.this)
            if found is not None:
                self._add(self._use(found).ranges, found[1])
            return
        if isinstance(node, (exp.EQ, exp.NullSafeEQ, *_RANGES)):
            self._comparison(node)

    def _comparison(self, node: Any) -> None:
        left, right = self._column(node.this), self._column(node.expression)
        if left is not None and right is not None:
            if isinstance(node, exp.EQ) and left[0] != right[0]:
                self._add(self._use(left).joins, left[1])
                self._add(self._use(right).joins, right[1])
            return
        found, other = (left, node.expression) if left is not None else (right, node.this)
        if found is None or not _is_value(other):
            return
        use = self._use(found)
        if isinstance(node, _RANGES):
            self._add(use.ranges, found[1])
        elif isinstance(_unwrap(other), exp.Boolean):
            use.constants.append((found[1], "= TRUE" if _unwrap(other).this else "= FALSE"))
        else:
            self._add(use.equality, found[1])

    def _order(self, order: Any) -> None:
        found: list[tuple[tuple[str, str], bool]] = []
        for ordered in order.expressions:
            column = self._column(ordered.this)
            if column is None:
                return
            found.append((column, bool(ordered.args.get("desc"))))
        if found and len({table for (table, _), _ in found}) == 1:
            self._use(found[0][0]).order_by = [(name, desc) for (_, name), desc in found]

    def _column(self, node: Any) -> tuple[str, str] | None:
        """(table, column) of a plain column reference, else None."""
        node = _unwrap(node)
        if not isinstance(node, exp.Column) or not node.name:
            return None
        qualifier = node.table
        if qualifier:
            table = self.aliases.get(qualifier)
            return None if table is None else (table, node.name)
        owners = {t for t in self.aliases.values() if node.name in self.columns.get(t, ())}
        if len(owners) == 1:
            return owners.pop(), node.name
        if len(set(self.aliases.values())) == 1 and not self.columns:
            return next(iter(self.aliases.values())), node.name
        return None

    def _use(self, found: tuple[str, str]) -> TableUse:
        return self.uses.setdefault(found[0], TableUse(found[0]))

    @staticmethod
    def _add(into: list[str], column: str) -> None:
        if column not in into:
            into.append(column)


def _conjuncts(node: Any) -> Iterator[Any]:
    node = node.this if isinstance(node, exp.Paren) else node
    if isinstance(node, exp.And):
        yield from _conjuncts(node.this)
        yield from _conjuncts(node.expression)
    else:
        yield node


def _unwrap(node: Any) -> Any:
    while isinstance(node, exp.Cast | exp.Paren):
        node = node.this
    return node


def _is_value(node: Any) -> bool:
    """No column and no subquery in it: the same for every row of the table."""
    return node.find(exp.Column) is None and node.find(exp.Select) is None
