"""Keyset and offset pagination: signed opaque cursors, seek predicates, page types.

Keyset pagination seeks past the last row seen (``WHERE (k1, k2, id) > (:v1, :v2, :id)``)
instead of counting rows to skip, so page 1,000 costs what page 1 costs and rows inserted
while a client pages through never shift it into repeating or skipping one.

A cursor is the sort-key values of the boundary row, typed, plus a direction, signed with
HMAC-SHA256 over the query's *scope* (model, sort, filters, workspace — whatever the
repository passes). A cursor edited by hand, cut short, made with another key, or replayed
against another query fails the signature check and is an
:class:`~corestone.errors.InvalidInputError` naming ``cursor``; it never reaches SQL.

Values keep their type through a cursor: int, str, bool, None, float, Decimal, datetime,
date and UUID (JSON alone would turn a Decimal into a float and a datetime into a string,
and the seek predicate would then compare the wrong things).

NULLs sort as the largest value on both databases (ascending NULLS LAST, descending NULLS
FIRST — PostgreSQL's default, made explicit for SQLite), and the seek predicate follows
the same rule, so nullable sort keys page correctly.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Generic, Literal, TypeVar

import orjson
from sqlalchemy import ColumnElement, and_, false, literal, or_, tuple_

from corestone.db.filters import SortKey
from corestone.errors import InvalidInputError

__all__ = [
    "MAX_CURSOR_LENGTH",
    "CursorCodec",
    "Direction",
    "KeysetPage",
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
        """A cursor for the row whose sort keys are ``values``, valid only for ``scope``.

        Values of the types listed in the module docstring round-trip with their type; an
        enum member travels as its name. ``ValueError`` if the cursor would exceed
        :data:`MAX_CURSOR_LENGTH` (sort keys holding ~700 bytes of text or more).
        """
        body = orjson.dumps({"v": [_tag(value) for value in values], "d": direction})
        token = _b64(body) + "." + _b64(self._mac(scope, body))
        if len(token) > MAX_CURSOR_LENGTH:
            raise ValueError("the sort values are too large for a cursor")
        return token

    def decode(self, token: str, *, scope: str) -> tuple[tuple[Any, ...], Direction]:
        """The values and direction in ``token``, if it was made here for ``scope``.

        Anything else — edited, cut short, padded, made with another key or for another
        scope, longer than :data:`MAX_CURSOR_LENGTH` — is InvalidInput on ``cursor``.
        """
        try:
            text: object = token  # typed as str, but it came from a request
            if not isinstance(text, str) or len(text) > MAX_CURSOR_LENGTH:
                raise ValueError("not a cursor")
            encoded_body, dot, encoded_mac = token.partition(".")
            if not dot:
                raise ValueError("not a cursor")
            body = _unb64(encoded_body)
            if not hmac.compare_digest(_unb64(encoded_mac), self._mac(scope, body)):
                raise ValueError("bad signature")
            payload = orjson.loads(body)
            if not isinstance(payload, dict) or not isinstance(payload.get("v"), list):
                raise ValueError("bad payload")
            direction = payload.get("d")
            if direction not in ("next", "prev"):
                raise ValueError("bad payload")
            return tuple(_untag(value) for value in payload["v"]), direction
        except (ValueError, TypeError, KeyError, binascii.Error, InvalidOperation):
            raise InvalidInputError(
                "not a cursor issued for this query; start again without one",
                field="cursor",
                rule="cursor",
            ) from None

    def _mac(self, scope: str, body: bytes) -> bytes:
        # Length-prefixed, so no (scope, body) pair can be re-split into another.
        encoded = scope.encode("utf-8", "surrogatepass")
        message = len(encoded).to_bytes(4, "big") + encoded + body
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    """Strict: only the URL-safe alphabet, no padding, and the one canonical spelling."""
    if not text.isascii():
        raise ValueError("not base64")
    raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    if _b64(raw) != text:  # other spellings of the same bytes are edits too
        raise ValueError("not canonical base64")
    return raw


def _tag(value: Any) -> Any:
    """JSON keeps int, str, bool, float and null apart; tag the other types it would blur."""
    if isinstance(value, enum.Enum):
        return {"e": value.name}  # SQLAlchemy's Enum type binds a member by its name
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
                "e": str,
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
    """Rows strictly after (``next``) or before (``prev``) the row whose keys are ``values``.

    When every key has the same direction and none can be NULL this is one row-value
    comparison, ``(k1, k2, id) > (:v1, :v2, :id)``, which PostgreSQL and SQLite both run as
    an index range scan. Otherwise it is the expanded form, ``k1 > v1 OR (k1 = v1 AND
    k2 < v2) OR …``, with NULL taken as the largest value, as :func:`order_by` sorts it,
    and led by the implied ``k1 >= v1`` (when ``k1`` is NOT NULL) so an index on ``k1``
    still bounds the scan.
    """
    if not keys:
        raise ValueError("keyset pagination needs at least one sort key")
    if len(keys) != len(values):
        raise InvalidInputError("the cursor does not match the sort", field="cursor", rule="cursor")
    same_direction = len({key.descending for key in keys}) == 1
    if same_direction and not any(
        value is None or _nullable(key.column) for key, value in zip(keys, values, strict=True)
    ):
        # One row-value comparison: both databases turn it into an index range scan.
        row = tuple_(*(key.column for key in keys))
        bound = tuple_(*(literal(v, k.column.type) for k, v in zip(keys, values, strict=True)))
        ascending_seek = keys[0].descending == (direction == "prev")
        seek: ColumnElement[bool] = row > bound if ascending_seek else row < bound
        return seek
    alternatives = []
    for index, (key, value) in enumerate(zip(keys, values, strict=True)):
        equal = [_equals(k.column, v) for k, v in zip(keys[:index], values[:index], strict=True)]
        greater = key.descending == (direction == "prev")
        step = _greater(key.column, value) if greater else _smaller(key.column, value)
        if step is not None:
            alternatives.append(and_(*equal, step))
    if not alternatives:  # only possible for a lone nullable key at NULL: nothing after it
        return false()
    seek_any = or_(*alternatives)
    first, first_value = keys[0], values[0]
    if first_value is None or _nullable(first.column):
        return seek_any
    # Implied by the OR, but an index range condition a planner can use on its own.
    if first.descending == (direction == "prev"):
        return and_(first.column >= first_value, seek_any)
    return and_(first.column <= first_value, seek_any)


def _equals(column: ColumnElement[Any], value: Any) -> ColumnElement[bool]:
    return column.is_(None) if value is None else column == value


def _greater(column: ColumnElement[Any], value: Any) -> ColumnElement[bool] | None:
    """After ``value`` in ascending order, where NULL is the largest value (None: nothing)."""
    if value is None:
        return None
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
