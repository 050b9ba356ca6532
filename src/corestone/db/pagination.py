"""Keyset and offset pagination: signed opaque cursors, seek predicates, page types.

Keyset pagination seeks past the last row seen (``WHERE (k1, k2, id) > (:v1, :v2, :id)``)
instead of counting rows to skip, so page 1,000 costs what page 1 costs and rows inserted
while a client pages through never shift it into repeating or skipping one.

A cursor is the sort-key values of the boundary row, typed, plus a direction, signed with
HMAC-SHA256 over the query's *scope* (model, sort, filters, workspace — whatever the
repository passes). A cursor edited by hand, cut short, made with another key, or replayed
against another query fails the signature check and is an
:class:`~corestone.errors.InvalidInputError` naming ``cursor``; it never reaches SQL.

NULLs sort as the largest value on both databases (ascending NULLS LAST, descending NULLS
FIRST — PostgreSQL's default, made explicit for SQLite), and the seek predicate follows
the same rule, so nullable sort keys page correctly.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Generic, Literal, TypeVar

import orjson
from sqlalchemy import ColumnElement, and_, false, or_, tuple_

from corestone.db.filters import SortKey
from corestone.errors import InvalidInputError

__all__ = [
    "CursorCodec",
    "Direction",
    "KeysetPage",
    "MAX_CURSOR_LENGTH",
    "OffsetPage",
    "check_limit",
    "keyset_condition",
    "order_by",
]

T = TypeVar("T")
Direction = Literal["next", "prev"]

MAX_CURSOR_LENGTH: Final = 1024
_MAC_BYTES: Final = 16  # 128-bit tag: forging one is as hard as guessing the key


@dataclass(frozen=True, slots=True)
class KeysetPage(Generic[T]):
    """A page of a keyset walk; a ``None`` cursor means there is nothing that way."""

    items: list[T]
    next_cursor: str | None
    prev_cursor: str | None


@dataclass(frozen=True, slots=True)
class OffsetPage(Generic[T]):
    """A numbered page (1-based) with the total number of matching rows."""

    items: list[T]
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


class CursorCodec:
    """Encodes sort-key values into opaque, signed, URL-safe cursors and back."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the cursor key must be at least 16 bytes")
        self._key = key

    def encode(self, values: Sequence[Any], *, scope: str, direction: Direction) -> str:
        body = orjson.dumps({"v": [_tag(value) for value in values], "d": direction})
        token = _b64(body) + "." + _b64(self._mac(scope, body))
        if len(token) > MAX_CURSOR_LENGTH:
            raise ValueError("the sort values are too large for a cursor")
        return token

    def decode(self, token: str, *, scope: str) -> tuple[tuple[Any, ...], Direction]:
        """The values and direction in ``token``, if it was made here for ``scope``."""
        try:
            if len(token) > MAX_CURSOR_LENGTH:
                raise ValueError("not a cursor")
            encoded_body, _, encoded_mac = token.partition(".")
            body = _unb64(encoded_body)
            if not hmac.compare_digest(_unb64(encoded_mac), self._mac(scope, body)):
                raise ValueError("bad signature")
            payload = orjson.loads(body)
            direction = payload["d"]
            if direction not in ("next", "prev") or not isinstance(payload["v"], list):
                raise ValueError("bad payload")
            return tuple(_untag(value) for value in payload["v"]), direction
        except (ValueError, TypeError, KeyError, binascii.Error, InvalidOperation):
            raise InvalidInputError(
                "not a cursor issued for this query; start again without one",
                field="cursor",
                rule="cursor",
            ) from None

    def _mac(self, scope: str, body: bytes) -> bytes:
        message = scope.encode() + b"\x00" + body
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tag(value: Any) -> Any:
    """JSON keeps int, str, bool, float and null apart; tag the other types it would blur."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return {"f": repr(value)}
    if isinstance(value, Decimal):
        return {"n": str(value)}
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    if isinstance(value, date):
        return {"D": value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {"u": str(value)}
    raise TypeError(f"cannot put a {type(value).__name__} in a cursor")


def _untag(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((tag, text),) = value.items()
        if isinstance(text, str):
            readers: dict[str, Any] = {
                "f": float,
                "n": Decimal,
                "t": datetime.fromisoformat,
                "D": date.fromisoformat,
                "u": uuid.UUID,
            }
            if tag in readers:
                return readers[tag](text)
    raise ValueError("unknown value in cursor")


def check_limit(limit: int | None, *, default: int = 50, maximum: int = 500) -> int:
    """``limit`` if it is 1..maximum (``None`` means ``default``), else InvalidInput."""
    if limit is None:
        return default
    if type(limit) is not int or not 1 <= limit <= maximum:
        raise InvalidInputError(
            f"must be an integer from 1 to {maximum}", field="limit", rule="range"
        )
    return limit


def _nullable(column: ColumnElement[Any]) -> bool:
    return bool(getattr(column, "nullable", True))


def order_by(keys: Sequence[SortKey], *, direction: Direction) -> list[ColumnElement[Any]]:
    """ORDER BY terms for ``keys``; for ``prev`` every term is reversed (reverse the rows)."""
    terms: list[ColumnElement[Any]] = []
    for key in keys:
        descending = key.descending != (direction == "prev")
        term = key.column.desc() if descending else key.column.asc()
        if _nullable(key.column):
            term = term.nulls_first() if descending else term.nulls_last()
        terms.append(term)
    return terms


def keyset_condition(
    keys: Sequence[SortKey], values: Sequence[Any], *, direction: Direction
) -> ColumnElement[bool]:
    """Rows strictly after (``next``) or before (``prev``) the row whose keys are ``values``."""
    if len(keys) != len(values):
        raise InvalidInputError("the cursor does not match the sort", field="cursor", rule="cursor")
    same_direction = len({key.descending for key in keys}) == 1
    if same_direction and not any(
        value is None or _nullable(key.column) for key, value in zip(keys, values, strict=True)
    ):
        # One row-value comparison: both databases turn it into an index range scan.
        row = tuple_(*(key.column for key in keys))
        bound = tuple_(*values)
        ascending_seek = keys[0].descending == (direction == "prev")
        seek: ColumnElement[bool] = row > bound if ascending_seek else row < bound
        return seek
    alternatives = []
    for index, (key, value) in enumerate(zip(keys, values, strict=True)):
        equal = [_equals(k.column, v) for k, v in zip(keys[:index], values[:index], strict=True)]
        greater = key.descending == (direction == "prev")
        step = _greater(key.column, value) if greater else _smaller(key.column, value)
        alternatives.append(and_(*equal, step))
    return or_(*alternatives)


def _equals(column: ColumnElement[Any], value: Any) -> ColumnElement[bool]:
    return column.is_(None) if value is None else column == value


def _greater(column: ColumnElement[Any], value: Any) -> ColumnElement[bool]:
    """After ``value`` in ascending order, where NULL is the largest value."""
    if value is None:
        return false()
    if _nullable(column):
        return or_(column > value, column.is_(None))
    after: ColumnElement[bool] = column > value
    return after


def _smaller(column: ColumnElement[Any], value: Any) -> ColumnElement[bool]:
    """Before ``value`` in ascending order, where NULL is the largest value."""
    if value is None:
        return column.is_not(None)
    before: ColumnElement[bool] = column < value
    return before
