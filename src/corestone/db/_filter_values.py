"""Filter values checked against a column's type before they are bound.

A value that the database would reject (an out-of-range integer for an ``INTEGER``
column, a NUL character PostgreSQL cannot store, a string that is not a member of a
native ENUM, a naive timestamp) would otherwise surface as a driver error — an HTTP 500
for what is bad input. Checking here turns each of them into an
:class:`~corestone.errors.InvalidInputError` naming the field, and keeps SQLite and
PostgreSQL answering the same way.

Accepted per Python type of the column (JSON gives only strings, numbers, booleans):

=========== ==========================================================================
``int``     an integer (not a bool) within the column's range (16, 32 or 64 bits)
``float``   a finite number
``Decimal`` a finite number or numeric string, exponent within ±1000
``bool``    ``true`` / ``false``
``str``     a string without NUL characters or lone surrogates
``datetime``an ISO 8601 string **with** a timezone (or an aware ``datetime``); UTC
``date``    an ISO 8601 date string (or a ``date`` that is not a ``datetime``)
``UUID``    a UUID string (or a ``UUID``)
enums       a member, its value or its name (for a string ENUM: one of its values)
=========== ==========================================================================
"""

from __future__ import annotations

import enum
import math
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from sqlalchemy import BigInteger, ColumnElement, DateTime, SmallInteger
from sqlalchemy import Enum as SAEnum
from sqlalchemy.types import TypeDecorator, TypeEngine

from corestone.errors import InvalidInputError

__all__ = ["coerce", "is_text", "python_type", "text_value"]

_MAX_DECIMAL_EXPONENT: Final = 1000


def python_type(column: ColumnElement[Any]) -> type | None:
    """The Python type of ``column``'s values, or ``None`` if the type does not say."""
    for kind in (column.type, _base_type(column)):  # a TypeDecorator may not say; its impl does
        try:
            return kind.python_type
        except NotImplementedError:
            continue
    return None


def is_text(column: ColumnElement[Any]) -> bool:
    """Whether ``column`` holds strings (a string ENUM does not count: it has no LIKE)."""
    return python_type(column) is str and not isinstance(_base_type(column), SAEnum)


def coerce(column: ColumnElement[Any], value: object, where: str) -> object:
    """``value`` as ``column``'s Python type, or InvalidInput naming ``where``."""
    if value is None:
        raise InvalidInputError(
            "null is only allowed with eq, ne and is_null", field=where, rule="null"
        )
    expected = python_type(column)
    try:
        return _convert(column, expected, value, where)
    except (TypeError, ValueError, InvalidOperation, OverflowError, KeyError):
        name = getattr(expected, "__name__", "value")
        raise InvalidInputError(
            f"expected a {name}, got {type(value).__name__}", field=where, rule="type"
        ) from None


def text_value(value: object, where: str) -> str:
    """``value`` if it is a string both databases can store, else InvalidInput."""
    if not isinstance(value, str):
        raise InvalidInputError(
            f"expected a string, got {type(value).__name__}", field=where, rule="type"
        )
    if "\x00" in value:
        raise InvalidInputError("strings cannot contain NUL characters", field=where, rule="type")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError("not valid Unicode text", field=where, rule="type") from None
    return value


def _base_type(column: ColumnElement[Any]) -> TypeEngine[Any]:
    kind: TypeEngine[Any] = column.type
    while isinstance(kind, TypeDecorator):
        kind = kind.impl_instance
    return kind


def _int_bits(column: ColumnElement[Any]) -> int:
    kind = _base_type(column)
    if isinstance(kind, BigInteger):
        return 64
    if isinstance(kind, SmallInteger):
        return 16
    return 32


def _convert(
    column: ColumnElement[Any], expected: type | None, value: object, where: str
) -> object:
    kind = _base_type(column)
    if isinstance(kind, SAEnum):
        return _enum(kind, value)
    if expected is None:
        if isinstance(value, str):
            return text_value(value, where)
        if isinstance(value, int | float | bool):
            return value
        raise TypeError("unsupported value")
    if expected is bool:
        if isinstance(value, bool):
            return value
        raise TypeError("not a bool")
    if expected is int:
        return _int(value, _int_bits(column))
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError("not a number")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError("not finite")
        return number
    if expected is Decimal:
        return _decimal(value)
    if expected is str:
        return text_value(value, where)
    if expected is datetime:
        return _datetime(value, aware=not isinstance(kind, DateTime) or kind.timezone)
    if expected is date:
        if isinstance(value, datetime):
            raise TypeError("a timestamp where a date is expected")
        return value if isinstance(value, date) else date.fromisoformat(_text(value))
    if expected is uuid.UUID:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(_text(value))
    if issubclass(expected, enum.Enum):
        return _member(expected, value)
    raise TypeError(f"cannot filter on values of type {expected.__name__}")


def _int(value: object, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("not an int")
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        raise OverflowError("out of the column's range")
    return value


def _decimal(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise TypeError("not a number")
    number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    if not number.is_finite() or abs(number.adjusted()) > _MAX_DECIMAL_EXPONENT:
        raise ValueError("not a finite number of reasonable size")
    return number


def _datetime(value: object, *, aware: bool) -> datetime:
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(_text(value))
    if parsed.tzinfo is None:
        raise ValueError("a timestamp needs a timezone")
    utc = parsed.astimezone(UTC)
    # A column without a zone stores UTC wall-clock time; asyncpg refuses aware values there.
    return utc if aware else utc.replace(tzinfo=None)


def _enum(kind: SAEnum, value: object) -> object:
    if kind.enum_class is None:
        if isinstance(value, str) and value in kind.enums:
            return value
        raise ValueError("not one of the allowed values")
    return _member(kind.enum_class, value)


def _member(enum_class: type[enum.Enum], value: object) -> enum.Enum:
    if isinstance(value, enum_class):
        return value
    if isinstance(value, str | int) and not isinstance(value, bool):
        for member in enum_class:
            if member.value == value or member.name == value:
                return member
    raise ValueError("not one of the allowed values")


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value
