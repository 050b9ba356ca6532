"""Filters and sorting as data, compiled to SQLAlchemy expressions with bound parameters only.

A filter arrives from the outside (a query string, a JSON body), so it is data, never SQL:
field names are looked up in a whitelist the caller declares, operators in a fixed table,
and every value is checked against the column's type and then bound. Nothing a caller
sends becomes SQL text; anything unexpected is an :class:`~corestone.errors.InvalidInputError`
naming the field (``filter.<name>``, ``sort``) and the rule that was broken.

Spec shape::

    {"status": "open"}                                   # eq shorthand
    {"status": {"in": ["open", "done"]}, "assignee_id": {"is_null": True}}   # AND
    {"title": {"contains": "50%_off"}}                   # LIKE, wildcards escaped
    {"or": [{...}, {...}]}, {"and": [...]}, {"not": {...}}

Semantics, identical on SQLite and PostgreSQL (docs/filters-and-pagination.md):

- **NULL.** A comparison (``eq``/``ne``/``in``/``not_in``/``lt``/…/``contains``) never
  matches a NULL field; ``is_null``, ``{"eq": null}`` and ``{"ne": null}`` test for it.
  ``not`` is the exact complement of its group (SQL's three-valued ``NOT`` would drop
  the NULL rows from both a group and its negation).
- **Text matching** (``contains``, ``startswith``, ``endswith``) ignores ASCII case only:
  SQLite's ``lower()`` folds ASCII alone, and PostgreSQL's follows the database locale,
  so both sides are folded with an ASCII-only mapping and non-ASCII letters match
  exactly, whatever the database and its locale.
- **Ordering** of strings (``lt``, ``between``, sort) follows the column's collation:
  SQLite compares code points, PostgreSQL uses the column's collation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import ColumnElement, String, and_, false, func, not_, or_, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from corestone.db._filter_values import coerce, is_text, text_value
from corestone.errors import InvalidInputError

__all__ = [
    "MAX_CONDITIONS",
    "MAX_DEPTH",
    "MAX_IN_VALUES",
    "MAX_PATTERN_LENGTH",
    "MAX_SORT_KEYS",
    "OPERATORS",
    "FilterSpec",
    "SortKey",
    "ascii_lower",
    "compile_filter",
    "parse_sort",
]

FilterSpec = Mapping[str, Any]

MAX_IN_VALUES: Final = 1000
MAX_DEPTH: Final = 8
MAX_CONDITIONS: Final = 100
MAX_PATTERN_LENGTH: Final = 1000
MAX_SORT_KEYS: Final = 8
_LIKE_ESCAPE: Final = "\\"
_UPPER: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER: Final = "abcdefghijklmnopqrstuvwxyz"
_FOLD: Final = str.maketrans(_UPPER, _LOWER)

OPERATORS: Final = frozenset(
    {
        "eq", "ne", "in", "not_in", "lt", "le", "gt", "ge", "between",
        "contains", "startswith", "endswith", "is_null",
    }
)  # fmt: skip
_GROUPS: Final = frozenset({"and", "or", "not"})
_COMPARE: Final = {"eq": "__eq__", "ne": "__ne__", "lt": "__lt__", "le": "__le__",
                   "gt": "__gt__", "ge": "__ge__"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class SortKey:
    """One ORDER BY term: the public name, its column, and the direction."""

    name: str
    column: ColumnElement[Any]
    descending: bool


class ascii_lower(FunctionElement[str]):  # noqa: N801 - named like the SQL function it is
    """``expr`` with A-Z folded to a-z and nothing else, the same on every database."""

    type = String()
    name = "ascii_lower"
    inherit_cache = True


@compiles(ascii_lower)
def _ascii_lower_default(element: ascii_lower, compiler: SQLCompiler, **kw: Any) -> str:
    # Constant letters, not input: translate() is locale-independent, unlike lower().
    return f"translate({compiler.process(element.clauses, **kw)}, '{_UPPER}', '{_LOWER}')"


@compiles(ascii_lower, "sqlite")
def _ascii_lower_sqlite(element: ascii_lower, compiler: SQLCompiler, **kw: Any) -> str:
    return f"lower({compiler.process(element.clauses, **kw)})"  # SQLite folds ASCII only


def compile_filter(
    spec: FilterSpec | None, fields: Mapping[str, ColumnElement[Any]]
) -> ColumnElement[bool]:
    """``spec`` as a WHERE clause over the whitelisted ``fields`` (public name → column).

    ``None`` or ``{}`` is ``true()``. Field names ``and``, ``or`` and ``not`` cannot be
    whitelisted: they are the group keywords.
    """
    if spec is None:
        return true()
    clash = _GROUPS.intersection(fields)
    if clash:
        raise ValueError(f"{sorted(clash)} are filter keywords, not field names")
    return _Compiler(fields).group(spec, depth=1, path="filter")


class _Compiler:
    """One compilation: the whitelist and the running condition count."""

    def __init__(self, fields: Mapping[str, ColumnElement[Any]]) -> None:
        self.fields = fields
        self.count = 0

    def tick(self, where: str) -> None:
        """Count one condition: an operator, an and/or/not, or an empty group."""
        self.count += 1
        if self.count > MAX_CONDITIONS:
            raise InvalidInputError(
                f"a filter has at most {MAX_CONDITIONS} conditions",
                field=where,
                rule="max_conditions",
            )

    def group(self, spec: object, *, depth: int, path: str) -> ColumnElement[bool]:
        if depth > MAX_DEPTH:
            raise InvalidInputError(
                f"filters nest at most {MAX_DEPTH} levels deep", field=path, rule="max_depth"
            )
        if not isinstance(spec, Mapping):
            raise InvalidInputError("a filter must be an object", field=path, rule="type")
        clauses: list[ColumnElement[bool]] = []
        for key, value in spec.items():
            if not isinstance(key, str):
                raise InvalidInputError("filter keys must be strings", field=path, rule="type")
            if key in _GROUPS:
                clauses.append(self.combine(key, value, depth=depth, path=f"{path}.{key}"))
            elif key in self.fields:
                clauses.append(self.field(key, self.fields[key], value))
            else:
                allowed = ", ".join(sorted(self.fields)) or "none"
                raise InvalidInputError(
                    f"cannot filter on {_shown(key)}; allowed: {allowed}",
                    field=f"filter.{_shown(key, quote=False)}",
                    rule="unknown_field",
                )
        if not clauses:
            if depth > 1:
                self.tick(path)  # empty groups count too, or [{}] * 10**6 would be free
            return true()
        return clauses[0] if len(clauses) == 1 else and_(*clauses)

    def combine(self, op: str, value: object, *, depth: int, path: str) -> ColumnElement[bool]:
        self.tick(path)
        if op == "not":
            inner = self.group(value, depth=depth + 1, path=path)
            # Two-valued NOT: a group that is NULL for a row (a NULL field) counts as false.
            return not_(func.coalesce(inner, false()))
        if not isinstance(value, Sequence) or isinstance(value, str | bytes) or not value:
            raise InvalidInputError(
                f"{op!r} takes a non-empty list of filters", field=path, rule="type"
            )
        parts = []
        for index, item in enumerate(value):
            parts.append(self.group(item, depth=depth + 1, path=f"{path}[{index}]"))
        return or_(*parts) if op == "or" else and_(*parts)

    def field(self, name: str, column: ColumnElement[Any], value: object) -> ColumnElement[bool]:
        where = f"filter.{name}"
        conditions = value if isinstance(value, Mapping) else {"eq": value}
        if not conditions:
            raise InvalidInputError("an empty condition", field=where, rule="type")
        clauses = []
        for op, operand in conditions.items():
            self.tick(where)
            if op not in OPERATORS:
                raise InvalidInputError(
                    f"unknown operator {_shown(op)}; allowed: {', '.join(sorted(OPERATORS))}",
                    field=where,
                    rule="unknown_operator",
                )
            clauses.append(_condition(op, column, operand, where))
        return clauses[0] if len(clauses) == 1 else and_(*clauses)


def _condition(op: str, column: ColumnElement[Any], operand: object, where: str) -> Any:
    if op == "is_null":
        if not isinstance(operand, bool):
            raise InvalidInputError("is_null takes true or false", field=where, rule="type")
        return column.is_(None) if operand else column.is_not(None)
    if operand is None:
        if op in ("eq", "ne"):
            return column.is_(None) if op == "eq" else column.is_not(None)
        raise InvalidInputError(f"{op} does not take null", field=where, rule="null")
    if op in ("in", "not_in"):
        values = _list(operand, where, op)
        if len(values) > MAX_IN_VALUES:
            raise InvalidInputError(
                f"{op} takes at most {MAX_IN_VALUES} values", field=where, rule="max_items"
            )
        coerced = [coerce(column, item, where) for item in values]
        if not coerced:  # spelled out: SQL's "NULL NOT IN (empty)" would be true
            return false() if op == "in" else column.is_not(None)
        return column.in_(coerced) if op == "in" else column.not_in(coerced)
    if op == "between":
        bounds = _list(operand, where, op)
        if len(bounds) != 2:
            raise InvalidInputError("between takes [low, high]", field=where, rule="between")
        low, high = (coerce(column, bound, where) for bound in bounds)
        return column.between(low, high)
    if op in ("contains", "startswith", "endswith"):
        return _like(op, column, operand, where)
    return getattr(column, _COMPARE[op])(coerce(column, operand, where))


def _like(op: str, column: ColumnElement[Any], operand: object, where: str) -> Any:
    if not is_text(column):
        raise InvalidInputError(f"{op} applies to text fields only", field=where, rule="text_only")
    text = text_value(operand, where)
    if len(text) > MAX_PATTERN_LENGTH:
        raise InvalidInputError(
            f"{op} takes at most {MAX_PATTERN_LENGTH} characters", field=where, rule="max_length"
        )
    escaped = (
        text.translate(_FOLD)
        .replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2)
        .replace("%", _LIKE_ESCAPE + "%")
        .replace("_", _LIKE_ESCAPE + "_")
    )
    pattern = {"contains": f"%{escaped}%", "startswith": f"{escaped}%", "endswith": f"%{escaped}"}
    return ascii_lower(column).like(pattern[op], escape=_LIKE_ESCAPE)


def _list(operand: object, where: str, op: str) -> Sequence[object]:
    if not isinstance(operand, Sequence) or isinstance(operand, str | bytes):
        raise InvalidInputError(f"{op} takes a list", field=where, rule="type")
    return operand


def _shown(name: str, *, quote: bool = True) -> str:
    """A caller-supplied name, cut short so an error message cannot be used as a megaphone."""
    cut = name if len(name) <= 40 else name[:40] + "…"
    return repr(cut) if quote else cut


def parse_sort(
    sort: str | Sequence[str] | None,
    fields: Mapping[str, ColumnElement[Any]],
    *,
    default: Sequence[str] = (),
    tiebreak: ColumnElement[Any],
) -> tuple[SortKey, ...]:
    """``"-created_at,title"`` as sort keys over whitelisted ``fields``, then ``tiebreak``.

    ``sort`` is a comma-separated string or a list of terms, ``-`` for descending;
    ``None`` or ``[]`` means ``default``; an empty term (``""``, ``"a,,b"``) is refused.
    The tiebreak (the primary key) is appended unless a key already sorts by it, so every
    ordering is total and keyset pagination never skips or repeats a tie. It takes the
    direction of the last key: ``-created_at`` becomes ``created_at DESC, id DESC``, one
    direction throughout, which one index on ``(created_at, id)`` serves (read backwards)
    and a single row-value comparison seeks.
    """
    terms = _sort_terms(sort) or list(default)
    keys: list[SortKey] = []
    seen: set[str] = set()
    for term in terms:
        descending = term.startswith("-")
        name = term[1:] if descending else term
        if not name or name not in fields:
            allowed = ", ".join(sorted(fields)) or "none"
            raise InvalidInputError(
                f"cannot sort by {_shown(name)}; allowed: {allowed} (prefix - for descending)",
                field="sort",
                rule="unknown_field",
            )
        if name in seen:
            raise InvalidInputError(f"{name!r} appears twice", field="sort", rule="duplicate")
        seen.add(name)
        keys.append(SortKey(name, fields[name], descending))
    target = _expression(tiebreak)
    if not any(_expression(key.column).compare(target) for key in keys):
        name = str(getattr(tiebreak, "key", None) or "id")
        keys.append(SortKey(name, tiebreak, keys[-1].descending if keys else False))
    return tuple(keys)


def _expression(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """The Core expression behind an ORM attribute (whose own ``compare`` is identity)."""
    inner = getattr(column, "__clause_element__", None)
    return inner() if callable(inner) else column


def _sort_terms(sort: str | Sequence[str] | None) -> list[str]:
    if sort is None:
        return []
    if isinstance(sort, str):
        raw: list[object] = list(sort.split(","))
    elif isinstance(sort, Sequence):
        raw = list(sort)
    else:
        raise InvalidInputError("sort is a string or a list of strings", field="sort", rule="type")
    if len(raw) > MAX_SORT_KEYS:
        raise InvalidInputError(
            f"at most {MAX_SORT_KEYS} sort terms", field="sort", rule="max_items"
        )
    terms = []
    for term in raw:
        if not isinstance(term, str):
            raise InvalidInputError("sort terms must be strings", field="sort", rule="type")
        stripped = term.strip()
        if not stripped:
            raise InvalidInputError("an empty sort term", field="sort", rule="empty")
        terms.append(stripped)
    return terms
