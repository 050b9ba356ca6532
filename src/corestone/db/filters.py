"""Filters and sorting as data, compiled to SQLAlchemy expressions with bound parameters only.

A filter arrives from the outside (a query string, a JSON body), so it is data, never SQL:
field names are looked up in a whitelist the repository declares, operators in a fixed
table, and every value is validated against the column's Python type and then bound.
Nothing a caller sends can become SQL text; anything unexpected is an
:class:`~corestone.errors.InvalidInputError` naming the field and the rule.

Spec shape::

    {"status": "open"}                                   # eq shorthand
    {"status": {"in": ["open", "done"]}, "assignee_id": {"is_null": True}}
    {"title": {"contains": "50%_off"}}                   # LIKE, wildcards escaped
    {"or": [{...}, {...}]}, {"and": [...]}, {"not": {...}}

Text matching (``contains``, ``startswith``, ``endswith``) is case-insensitive on every
database: SQLite's LIKE already is (for ASCII) and PostgreSQL's is not, so both compare
``lower(column)`` with the lowered pattern, and the same request gives the same rows.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from sqlalchemy import ColumnElement, and_, func, not_, or_, true

from corestone.errors import InvalidInputError

__all__ = [
    "FilterSpec",
    "MAX_CONDITIONS",
    "MAX_DEPTH",
    "MAX_IN_VALUES",
    "OPERATORS",
    "SortKey",
    "compile_filter",
    "parse_sort",
]

FilterSpec = Mapping[str, Any]

MAX_IN_VALUES: Final = 1000
MAX_DEPTH: Final = 8
MAX_CONDITIONS: Final = 100
_LIKE_ESCAPE: Final = "\\"

OPERATORS: Final = frozenset(
    {
        "eq", "ne", "in", "not_in", "lt", "le", "gt", "ge", "between",
        "contains", "startswith", "endswith", "is_null",
    }
)  # fmt: skip
_GROUPS: Final = frozenset({"and", "or", "not"})


@dataclass(frozen=True, slots=True)
class SortKey:
    """One ORDER BY term: the public name, its column, and the direction."""

    name: str
    column: ColumnElement[Any]
    descending: bool


def compile_filter(
    spec: FilterSpec | None, fields: Mapping[str, ColumnElement[Any]]
) -> ColumnElement[bool]:
    """``spec`` as a WHERE clause over the whitelisted ``fields`` (public name → column)."""
    if spec is None:
        return true()
    counter = [0]
    return _group(spec, fields, depth=1, counter=counter, path="filter")


def _group(
    spec: object,
    fields: Mapping[str, ColumnElement[Any]],
    *,
    depth: int,
    counter: list[int],
    path: str,
) -> ColumnElement[bool]:
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
            clauses.append(_combine(key, value, fields, depth=depth, counter=counter, path=path))
        elif key in fields:
            clauses.append(_field(key, fields[key], value, counter=counter))
        else:
            raise InvalidInputError(
                f"cannot filter on {key!r}; allowed: {', '.join(sorted(fields)) or 'none'}",
                field=f"filter.{key}",
                rule="unknown_field",
            )
    return and_(true(), *clauses) if clauses else true()


def _combine(
    op: str,
    value: object,
    fields: Mapping[str, ColumnElement[Any]],
    *,
    depth: int,
    counter: list[int],
    path: str,
) -> ColumnElement[bool]:
    where = f"{path}.{op}"
    if op == "not":
        return not_(_group(value, fields, depth=depth + 1, counter=counter, path=where))
    if not isinstance(value, Sequence) or isinstance(value, str | bytes) or not value:
        raise InvalidInputError(
            f"{op!r} takes a non-empty list of filters", field=where, rule="type"
        )
    parts = [_group(item, fields, depth=depth + 1, counter=counter, path=where) for item in value]
    return or_(*parts) if op == "or" else and_(*parts)


def _field(
    name: str, column: ColumnElement[Any], value: object, *, counter: list[int]
) -> ColumnElement[bool]:
    where = f"filter.{name}"
    conditions = value if isinstance(value, Mapping) else {"eq": value}
    if not conditions:
        raise InvalidInputError("an empty condition", field=where, rule="type")
    clauses = []
    for op, operand in conditions.items():
        counter[0] += 1
        if counter[0] > MAX_CONDITIONS:
            raise InvalidInputError(
                f"at most {MAX_CONDITIONS} conditions", field=where, rule="max_conditions"
            )
        if op not in OPERATORS:
            raise InvalidInputError(
                f"unknown operator {op!r}; allowed: {', '.join(sorted(OPERATORS))}",
                field=where,
                rule="unknown_operator",
            )
        clauses.append(_condition(op, column, operand, where))
    return and_(*clauses)


def _condition(op: str, column: ColumnElement[Any], operand: object, where: str) -> Any:
    if op == "is_null":
        if not isinstance(operand, bool):
            raise InvalidInputError("is_null takes true or false", field=where, rule="type")
        return column.is_(None) if operand else column.is_not(None)
    if operand is None:
        if op == "eq":
            return column.is_(None)
        if op == "ne":
            return column.is_not(None)
        raise InvalidInputError(f"{op} does not take null", field=where, rule="type")
    if op in ("in", "not_in"):
        values = _list(operand, where, op)
        if len(values) > MAX_IN_VALUES:
            raise InvalidInputError(
                f"{op} takes at most {MAX_IN_VALUES} values", field=where, rule="max_items"
            )
        coerced = [_coerce(column, item, where) for item in values]
        return column.in_(coerced) if op == "in" else column.not_in(coerced)
    if op == "between":
        bounds = _list(operand, where, op)
        if len(bounds) != 2:
            raise InvalidInputError("between takes [low, high]", field=where, rule="type")
        low, high = (_coerce(column, bound, where) for bound in bounds)
        return column.between(low, high)
    if op in ("contains", "startswith", "endswith"):
        return _like(op, column, operand, where)
    compare: dict[str, Callable[[Any], Any]] = {
        "eq": column.__eq__,
        "ne": column.__ne__,
        "lt": column.__lt__,
        "le": column.__le__,
        "gt": column.__gt__,
        "ge": column.__ge__,
    }
    return compare[op](_coerce(column, operand, where))


def _like(op: str, column: ColumnElement[Any], operand: object, where: str) -> Any:
    if _python_type(column) is not str:
        raise InvalidInputError(f"{op} applies to text fields only", field=where, rule="type")
    if not isinstance(operand, str):
        raise InvalidInputError(f"{op} takes a string", field=where, rule="type")
    escaped = (
        operand.lower()
        .replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2)
        .replace("%", _LIKE_ESCAPE + "%")
        .replace("_", _LIKE_ESCAPE + "_")
    )
    pattern = {
        "contains": f"%{escaped}%",
        "startswith": f"{escaped}%",
        "endswith": f"%{escaped}",
    }[op]
    return func.lower(column).like(pattern, escape=_LIKE_ESCAPE)


def _list(operand: object, where: str, op: str) -> Sequence[object]:
    if not isinstance(operand, Sequence) or isinstance(operand, str | bytes):
        raise InvalidInputError(f"{op} takes a list", field=where, rule="type")
    return operand


def _python_type(column: ColumnElement[Any]) -> type | None:
    try:
        return column.type.python_type
    except NotImplementedError:
        return None


def _coerce(column: ColumnElement[Any], value: object, where: str) -> object:
    """``value`` as the column's Python type, or InvalidInput; JSON gives only a few types."""
    expected = _python_type(column)
    if value is None:
        raise InvalidInputError("null is only allowed with eq, ne, is_null", field=where)
    try:
        return _convert(expected, value)
    except (TypeError, ValueError, InvalidOperation, OverflowError):
        name = getattr(expected, "__name__", "value")
        raise InvalidInputError(
            f"expected a {name}, got {type(value).__name__}", field=where, rule="type"
        ) from None


def _convert(expected: type | None, value: object) -> object:
    if expected is None:
        if isinstance(value, str | int | float | bool):
            return value
        raise TypeError("unsupported value")
    if expected is bool:
        if isinstance(value, bool):
            return value
        raise TypeError("not a bool")
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("not an int")
        if not -(2**63) <= value < 2**63:
            raise OverflowError("out of range")
        return value
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError("not a number")
        return float(value)
    if expected is Decimal:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise TypeError("not a number")
        return Decimal(str(value))
    if expected is str:
        if not isinstance(value, str):
            raise TypeError("not a string")
        return value
    if expected is datetime:
        parsed = value if isinstance(value, datetime) else datetime.fromisoformat(_text(value))
        if parsed.tzinfo is None:
            raise ValueError("a timestamp needs a timezone")
        return parsed
    if expected is date:
        return value if isinstance(value, date) else date.fromisoformat(_text(value))
    if expected is uuid.UUID:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(_text(value))
    if issubclass(expected, enum.Enum):
        return expected(value)
    if isinstance(value, expected):
        return value
    raise TypeError("unsupported value")


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def parse_sort(
    sort: str | Sequence[str] | None,
    fields: Mapping[str, ColumnElement[Any]],
    *,
    default: Sequence[str] = (),
    tiebreak: ColumnElement[Any],
) -> tuple[SortKey, ...]:
    """``"-created_at,title"`` as sort keys over whitelisted ``fields``, then ``tiebreak``.

    The tiebreak (the primary key) is appended ascending unless a key already sorts by it,
    so every ordering is total and keyset pagination never skips or repeats a tie.
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
                f"cannot sort by {name!r}; allowed: {allowed} (prefix - for descending)",
                field="sort",
                rule="unknown_field",
            )
        if name in seen:
            raise InvalidInputError(f"{name!r} appears twice", field="sort", rule="duplicate")
        seen.add(name)
        keys.append(SortKey(name, fields[name], descending))
    if not any(key.column.compare(tiebreak) for key in keys):
        name = getattr(tiebreak, "key", None) or "id"
        keys.append(SortKey(str(name), tiebreak, False))
    return tuple(keys)


def _sort_terms(sort: str | Sequence[str] | None) -> list[str]:
    if sort is None:
        return []
    raw = sort.split(",") if isinstance(sort, str) else list(sort)
    terms = []
    for term in raw:
        if not isinstance(term, str):
            raise InvalidInputError("sort terms must be strings", field="sort", rule="type")
        stripped = term.strip()
        if not stripped:
            raise InvalidInputError("an empty sort term", field="sort", rule="format")
        terms.append(stripped)
    if len(terms) > 8:
        raise InvalidInputError("at most 8 sort terms", field="sort", rule="max_items")
    return terms
