"""Cursors that cannot be forged or replayed, seek predicates, ORDER BY terms and page types."""

from __future__ import annotations

import base64
import enum
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BindParameter

from corestone.db.filters import SortKey
from corestone.db.models import UTCDateTime
from corestone.db.pagination import (
    MAX_CURSOR_LENGTH,
    CursorCodec,
    KeysetPage,
    OffsetPage,
    check_limit,
    keyset_condition,
    order_by,
)
from corestone.errors import InvalidInputError

KEY = b"k" * 32
SCOPE = "items|-at,id|0123456789abcdef|7"

items = Table(
    "items",
    MetaData(),
    Column("id", BigInteger, primary_key=True),
    Column("n", Integer, nullable=False),
    Column("title", String(50), nullable=True),
    Column("at", UTCDateTime(), nullable=False),
)
ID_ASC = SortKey("id", items.c.id, False)
ID_DESC = SortKey("id", items.c.id, True)
N_ASC = SortKey("n", items.c.n, False)
N_DESC = SortKey("n", items.c.n, True)
TITLE_ASC = SortKey("title", items.c.title, False)
TITLE_DESC = SortKey("title", items.c.title, True)
PG = postgresql.dialect()  # type: ignore[no-untyped-call]
SQLITE = sqlite.dialect()


def _where(condition: Any, dialect: Dialect = SQLITE) -> tuple[str, list[Any]]:
    compiled = select(items.c.id).where(condition).compile(dialect=dialect)
    params = [compiled.params[name] for name in compiled.positiontup or []]
    return str(compiled).split("WHERE", 1)[1].strip(), params


def _order(keys: list[SortKey], direction: Any, dialect: Dialect = SQLITE) -> str:
    compiled = select(items.c.id).order_by(*order_by(keys, direction=direction))
    return str(compiled.compile(dialect=dialect)).split("ORDER BY", 1)[1].strip()


class Colour(enum.Enum):
    RED = "r"


# -- the codec -----------------------------------------------------------------------------

VALUES: list[Any] = [
    0,
    -(2**63),
    2**63 - 1,
    "",
    "naïve ☃ \U0001f600",
    True,
    False,
    None,
    1.5,
    -0.0,
    1e308,
    Decimal("12.3400"),
    Decimal("-1E+30"),
    datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-7))),
    date(1999, 12, 31),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
]


def test_values_round_trip_with_their_types() -> None:
    """Every supported type comes back equal and of the same type (a Decimal stays a Decimal)."""
    codec = CursorCodec(KEY)

    values, direction = codec.decode(
        codec.encode(VALUES, scope=SCOPE, direction="prev"), scope=SCOPE
    )

    assert direction == "prev"
    assert values == tuple(VALUES)
    assert [type(value) for value in values] == [type(value) for value in VALUES]
    assert str(values[11]) == "12.3400"  # the exponent too, not just the value
    assert values[14].utcoffset() == timedelta(hours=-7)


def test_enum_members_travel_as_their_names() -> None:
    """An enum sort key is carried by name, which SQLAlchemy's Enum type binds."""
    codec = CursorCodec(KEY)

    values, _ = codec.decode(codec.encode([Colour.RED], scope=SCOPE, direction="next"), scope=SCOPE)

    assert values == ("RED",)


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(max_size=20),
    st.floats(allow_nan=False),
    st.decimals(allow_nan=False, allow_infinity=False, places=4),
    # Fixed offsets only: PEP 495 makes an aware time inside a DST gap or fold unequal
    # to every time of another zone, itself included, so zoneinfo values cannot compare.
    # (whole minutes, as real offsets are).
    st.datetimes(
        timezones=st.integers(-23 * 60, 23 * 60).map(lambda m: timezone(timedelta(minutes=m)))
    ),
    st.dates(),
    st.uuids(),
)


@given(values=st.lists(_scalars, max_size=6), direction=st.sampled_from(["next", "prev"]))
def test_any_supported_values_round_trip(values: list[Any], direction: Any) -> None:
    """Generated values of every supported type round-trip exactly, with their types."""
    codec = CursorCodec(KEY)

    decoded, back = codec.decode(
        codec.encode(values, scope=SCOPE, direction=direction), scope=SCOPE
    )

    assert back == direction
    assert list(decoded) == values
    assert [type(value) for value in decoded] == [type(value) for value in values]


def test_cursors_are_url_safe_and_opaque() -> None:
    """A cursor needs no escaping in a URL and shows no plain values."""
    token = CursorCodec(KEY).encode(["secret title", 42], scope=SCOPE, direction="next")

    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert "secret" not in token


def _refused(token: Any, *, codec: CursorCodec | None = None, scope: str = SCOPE) -> None:
    with pytest.raises(InvalidInputError) as caught:
        (codec or CursorCodec(KEY)).decode(token, scope=scope)
    assert (caught.value.field, caught.value.rule) == ("cursor", "cursor")


def test_every_single_character_edit_is_refused() -> None:
    """Changing any one character of a cursor, anywhere, makes it invalid."""
    token = CursorCodec(KEY).encode([5, "x", None], scope=SCOPE, direction="next")
    alphabet = "Aa0-_."
    for index, char in enumerate(token):
        for replacement in alphabet:
            if replacement != char:
                _refused(token[:index] + replacement + token[index + 1 :])


def test_a_cursor_forged_with_edited_values_is_refused() -> None:
    """Re-encoding the body with other values cannot produce a valid signature."""
    token = CursorCodec(KEY).encode([5], scope=SCOPE, direction="next")
    _, mac = token.split(".")
    forged = base64.urlsafe_b64encode(b'{"v":[0],"d":"next"}').decode().rstrip("=")

    _refused(f"{forged}.{mac}")


@pytest.mark.parametrize(
    "other_scope",
    [
        "items|at,id|0123456789abcdef|7",  # another sort
        "items|-at,id|fedcba9876543210|7",  # another filter
        "items|-at,id|0123456789abcdef|8",  # another workspace
        "widgets|-at,id|0123456789abcdef|7",  # another model
        "",
    ],
)
def test_a_cursor_is_valid_only_for_its_own_scope(other_scope: str) -> None:
    """A cursor replayed against another query shape is refused."""
    token = CursorCodec(KEY).encode([1], scope=SCOPE, direction="next")

    _refused(token, scope=other_scope)


def test_a_cursor_made_with_another_key_is_refused() -> None:
    """Another deployment's (or an attacker's) key does not verify."""
    token = CursorCodec(b"x" * 32).encode([1], scope=SCOPE, direction="next")

    _refused(token)


def test_scope_and_body_cannot_be_re_split() -> None:
    """The scope is length-prefixed: moving bytes between scope and body breaks the signature."""
    codec = CursorCodec(KEY)
    token = codec.encode([1], scope="a", direction="next")

    _refused(token, codec=codec, scope="a\x00")


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        ".",
        "not-a-cursor",
        "abc.def",
        "!!!.???",
        "A" * (MAX_CURSOR_LENGTH + 1),
        "é.é",
        "eyJ2IjpbMV0sImQiOiJuZXh0In0",  # a valid body with no signature
        None,
        12345,
        b"bytes.bytes",
    ],
)
def test_garbage_is_refused(garbage: Any) -> None:
    """Anything that is not a cursor made here is InvalidInput on 'cursor', never another error."""
    _refused(garbage)


def test_truncated_padded_and_oversized_cursors_are_refused() -> None:
    """Cut short, padded with '=', with junk added, or over the length limit: refused."""
    token = CursorCodec(KEY).encode([1, "abc"], scope=SCOPE, direction="next")
    for bad in (
        token[:-1],
        token[: len(token) // 2],
        token + "=",
        token + "==",
        token + "A",
        "A" + token,
        token.replace(".", ".."),
        token + "." + token,
        token + " ",
        token + "\n",
    ):
        _refused(bad)


def test_a_cursor_over_the_limit_is_not_made() -> None:
    """Sort values too large for a cursor raise ValueError at encode time (a programming limit)."""
    with pytest.raises(ValueError, match="too large"):
        CursorCodec(KEY).encode(["x" * MAX_CURSOR_LENGTH], scope=SCOPE, direction="next")


def test_values_of_unsupported_types_are_not_encoded() -> None:
    """A value with no exact round-trip (bytes, lists) is refused rather than mangled."""
    with pytest.raises(TypeError):
        CursorCodec(KEY).encode([b"raw"], scope=SCOPE, direction="next")
    with pytest.raises(TypeError):
        CursorCodec(KEY).encode([[1, 2]], scope=SCOPE, direction="next")


def test_short_keys_are_refused() -> None:
    """An HMAC key under 128 bits is a configuration mistake."""
    with pytest.raises(ValueError, match="16 bytes"):
        CursorCodec(b"short")


# -- limits and page types -----------------------------------------------------------------


@pytest.mark.parametrize(("limit", "expected"), [(None, 50), (1, 1), (500, 500), (77, 77)])
def test_limits_in_range_are_kept(limit: int | None, expected: int) -> None:
    """None is the default; 1..maximum is used as given."""
    assert check_limit(limit) == expected


@pytest.mark.parametrize("limit", [0, -1, 501, 10**9, 2**70, True, 5.0, "10"])
def test_limits_out_of_range_are_invalid_input(limit: Any) -> None:
    """Zero, negative, too large or not an integer: refused, not clamped."""
    with pytest.raises(InvalidInputError) as caught:
        check_limit(limit)

    assert (caught.value.field, caught.value.rule) == ("limit", "range")


def test_limit_default_and_maximum_are_configurable() -> None:
    """A repository can choose its own default and maximum."""
    assert check_limit(None, default=20, maximum=100) == 20
    with pytest.raises(InvalidInputError):
        check_limit(101, default=20, maximum=100)


@pytest.mark.parametrize(("total", "pages"), [(0, 1), (1, 1), (10, 1), (11, 2), (100, 10)])
def test_offset_pages_count_whole_pages(total: int, pages: int) -> None:
    """pages rounds up, and an empty result still has one (empty) page."""
    assert OffsetPage(items=[], total=total, page=1, page_size=10).pages == pages


def test_keyset_page_holds_items_and_cursors() -> None:
    """A KeysetPage is a frozen value."""
    page = KeysetPage(items=[1, 2], next_cursor="n", prev_cursor=None)

    with pytest.raises(AttributeError):
        page.next_cursor = "other"  # type: ignore[misc]


# -- ORDER BY and the seek predicate -------------------------------------------------------


def test_order_by_makes_null_placement_explicit_for_nullable_keys_only() -> None:
    """NULL is the largest value: ASC NULLS LAST, DESC NULLS FIRST; NOT NULL keys stay plain."""
    assert _order([TITLE_ASC, ID_ASC], "next") == "items.title ASC NULLS LAST, items.id ASC"
    assert _order([TITLE_DESC, ID_DESC], "next") == "items.title DESC NULLS FIRST, items.id DESC"


def test_order_by_reverses_every_term_for_prev() -> None:
    """Walking backwards reads the exact reverse order (the caller reverses the rows)."""
    assert _order([TITLE_ASC, N_DESC, ID_DESC], "prev") == (
        "items.title DESC NULLS FIRST, items.n ASC, items.id ASC"
    )


@pytest.mark.parametrize(
    ("keys", "direction", "sql"),
    [
        ([N_ASC, ID_ASC], "next", "(items.n, items.id) > (?, ?)"),
        ([N_ASC, ID_ASC], "prev", "(items.n, items.id) < (?, ?)"),
        ([N_DESC, ID_DESC], "next", "(items.n, items.id) < (?, ?)"),
        ([N_DESC, ID_DESC], "prev", "(items.n, items.id) > (?, ?)"),
    ],
)
def test_one_direction_not_null_keys_seek_with_a_row_value(
    keys: list[SortKey], direction: Any, sql: str
) -> None:
    """Same-direction NOT NULL keys become one row-value comparison an index can seek."""
    assert _where(keyset_condition(keys, [3, 9], direction=direction)) == (sql, [3, 9])


def test_mixed_directions_expand_with_a_leading_index_bound() -> None:
    """Mixed directions: an OR of ANDs, led by the implied bound on the first key."""
    sql, params = _where(keyset_condition([N_DESC, ID_ASC], [3, 9], direction="next"))

    assert sql == "items.n <= ? AND (items.n < ? OR items.n = ? AND items.id > ?)"
    assert params == [3, 3, 3, 9]


def test_a_nullable_key_after_a_value_includes_the_nulls() -> None:
    """Ascending, after 'b': greater titles and then every NULL title."""
    sql, params = _where(keyset_condition([TITLE_ASC, ID_ASC], ["b", 9], direction="next"))

    assert sql == ("items.title > ? OR items.title IS NULL OR items.title = ? AND items.id > ?")
    assert params == ["b", "b", 9]


def test_a_null_in_the_cursor_seeks_among_the_nulls() -> None:
    """After a NULL title (the largest), only NULL titles with a larger id remain."""
    sql, params = _where(keyset_condition([TITLE_ASC, ID_ASC], [None, 9], direction="next"))

    assert sql == "items.title IS NULL AND items.id > ?"
    assert params == [9]


def test_before_a_null_descending_every_non_null_follows() -> None:
    """Descending puts NULLs first; after a NULL come the NULLs with smaller ids, then values."""
    sql, params = _where(keyset_condition([TITLE_DESC, ID_DESC], [None, 9], direction="next"))

    assert sql == "items.title IS NOT NULL OR items.title IS NULL AND items.id < ?"
    assert params == [9]


def test_row_value_bounds_are_bound_with_the_columns_type() -> None:
    """Values in a row value are bound with their column's type (a timestamp goes via UTC)."""
    at = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    keys = [SortKey("at", items.c.at, False), ID_ASC]
    condition = keyset_condition(keys, [at, 1], direction="next")

    binds = [node for node in visitors.iterate(condition) if isinstance(node, BindParameter)]
    assert [type(bind.type) for bind in binds] == [UTCDateTime, BigInteger]


def test_a_cursor_with_the_wrong_number_of_values_is_invalid() -> None:
    """Values that do not match the sort (a cursor from another shape) are InvalidInput."""
    with pytest.raises(InvalidInputError) as caught:
        keyset_condition([N_ASC, ID_ASC], [1], direction="next")

    assert caught.value.field == "cursor"


def test_no_keys_is_a_programming_error() -> None:
    """Keyset pagination needs at least the tiebreak."""
    with pytest.raises(ValueError, match="at least one"):
        keyset_condition([], [], direction="next")


def test_postgresql_renders_the_same_predicates() -> None:
    """The PostgreSQL dialect renders the same shapes with its own placeholders."""
    sql, _ = _where(keyset_condition([TITLE_ASC, ID_ASC], ["b", 9], direction="next"), PG)

    assert sql == (
        "items.title > %(title_1)s OR items.title IS NULL "
        "OR items.title = %(title_2)s AND items.id > %(id_1)s"
    )
