"""Filters and sorts as data: every operator, every refusal, and no way for input to become SQL."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    Date,
    DateTime,
    Enum,
    Float,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Uuid,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from corestone.db.filters import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_IN_VALUES,
    MAX_PATTERN_LENGTH,
    OPERATORS,
    SortKey,
    compile_filter,
    parse_sort,
)
from corestone.db.models import UTCDateTime
from corestone.errors import InvalidInputError


class Kind(enum.Enum):
    BUG = "bug"
    FEATURE = "feature"


items = Table(
    "items",
    MetaData(),
    Column("id", BigInteger, primary_key=True),
    Column("n", Integer, nullable=True),
    Column("small", SmallInteger, nullable=False),
    Column("big", BigInteger, nullable=False),
    Column("title", String(100), nullable=True),
    Column("price", Numeric(10, 2), nullable=False),
    Column("ratio", Float, nullable=False),
    Column("flag", Boolean, nullable=False),
    Column("at", UTCDateTime(), nullable=True),
    Column("naive_at", DateTime(), nullable=True),
    Column("day", Date, nullable=True),
    Column("uid", Uuid, nullable=True),
    Column("kind", Enum(Kind), nullable=True),
    Column("color", Enum("red", "green", name="color"), nullable=True),
)
FIELDS: dict[str, ColumnElement[Any]] = {
    name: items.c[name]
    for name in (
        "n", "small", "big", "title", "price", "ratio", "flag", "at", "naive_at", "day",
        "uid", "kind", "color",
    )
}  # fmt: skip
UID = uuid.UUID("12345678-1234-5678-1234-567812345678")
PG = postgresql.dialect()  # type: ignore[no-untyped-call]
PG._backslash_escapes = False  # what a connection to any supported server finds out
SQLITE = sqlite.dialect()


def _sql(spec: Any, dialect: Dialect = PG) -> tuple[str, dict[str, Any]]:
    compiled = select(items.c.id).where(compile_filter(spec, FIELDS)).compile(dialect=dialect)
    where = str(compiled).split("WHERE", 1)[1].strip() if "WHERE" in str(compiled) else ""
    return where, dict(compiled.params)


def _refused(spec: Any) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as caught:
        compile_filter(spec, FIELDS)
    return caught.value


# -- operators -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "sql", "params"),
    [
        ({"n": 5}, "items.n = %(n_1)s", {"n_1": 5}),
        ({"n": {"eq": 5}}, "items.n = %(n_1)s", {"n_1": 5}),
        ({"n": {"ne": 5}}, "items.n != %(n_1)s", {"n_1": 5}),
        ({"n": {"lt": 5}}, "items.n < %(n_1)s", {"n_1": 5}),
        ({"n": {"le": 5}}, "items.n <= %(n_1)s", {"n_1": 5}),
        ({"n": {"gt": 5}}, "items.n > %(n_1)s", {"n_1": 5}),
        ({"n": {"ge": 5}}, "items.n >= %(n_1)s", {"n_1": 5}),
        ({"n": {"between": [1, 9]}}, "items.n BETWEEN %(n_1)s AND %(n_2)s", {"n_1": 1, "n_2": 9}),
        ({"n": {"in": [1, 2]}}, "items.n IN (__[POSTCOMPILE_n_1])", {"n_1": [1, 2]}),
        ({"n": {"not_in": [1, 2]}}, "(items.n NOT IN (__[POSTCOMPILE_n_1]))", {"n_1": [1, 2]}),
        ({"n": {"is_null": True}}, "items.n IS NULL", {}),
        ({"n": {"is_null": False}}, "items.n IS NOT NULL", {}),
        ({"n": None}, "items.n IS NULL", {}),
        ({"n": {"ne": None}}, "items.n IS NOT NULL", {}),
    ],
)
def test_comparison_operators_compile_to_bound_parameters(
    spec: dict[str, Any], sql: str, params: dict[str, Any]
) -> None:
    """Each comparison operator becomes its SQL operator with the value bound, never inlined."""
    assert _sql(spec) == (sql, params)


@pytest.mark.parametrize(
    ("op", "pattern"),
    [("contains", "%abc%"), ("startswith", "abc%"), ("endswith", "%abc")],
)
def test_text_operators_fold_ascii_case_the_same_way_on_both_databases(
    op: str, pattern: str
) -> None:
    """contains/startswith/endswith fold A-Z only: translate() on PostgreSQL, lower() on SQLite."""
    pg_sql, pg_params = _sql({"title": {op: "AbC"}}, PG)
    lite_sql, lite_params = _sql({"title": {op: "AbC"}}, SQLITE)

    upper, lower = "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"
    assert pg_sql == f"translate(items.title, '{upper}', '{lower}') LIKE %(param_1)s ESCAPE '\\'"
    assert lite_sql == "lower(items.title) LIKE ? ESCAPE '\\'"
    assert pg_params == lite_params == {"param_1": pattern}


def test_text_operators_leave_non_ascii_letters_as_they_are() -> None:
    """Only ASCII is folded, so É and é stay distinct on every database and locale."""
    _, params = _sql({"title": {"contains": "ÉtÉ Straße"}})

    assert params == {"param_1": "%ÉtÉ straße%"}


def test_like_wildcards_and_the_escape_character_are_escaped() -> None:
    """%, _ and the backslash in a search term match themselves, not any text."""
    _, params = _sql({"title": {"startswith": "50%_off\\now"}})

    assert params == {"param_1": "50\\%\\_off\\\\now%"}


def test_fields_are_combined_with_and() -> None:
    """Several fields, and several operators on one field, must all hold."""
    sql, params = _sql({"n": {"gt": 1, "lt": 9}, "title": "x"})

    assert sql == "items.n > %(n_1)s AND items.n < %(n_2)s AND items.title = %(title_1)s"
    assert params == {"n_1": 1, "n_2": 9, "title_1": "x"}


def test_or_and_groups_nest() -> None:
    """or/and take lists of filters and nest."""
    sql, _ = _sql({"or": [{"n": 1}, {"and": [{"n": 2}, {"title": "x"}]}]})

    assert sql == "items.n = %(n_1)s OR items.n = %(n_2)s AND items.title = %(title_1)s"


def test_not_is_the_complement_even_where_a_field_is_null() -> None:
    """not wraps its group in coalesce(…, false): a NULL field makes the group false, not NULL."""
    pg_sql, _ = _sql({"not": {"n": {"lt": 5}}}, PG)
    lite_sql, _ = _sql({"not": {"n": {"lt": 5}}}, SQLITE)

    assert pg_sql == "NOT coalesce(items.n < %(n_1)s, false)"
    assert lite_sql == "coalesce(items.n < ?, 0) = 0"


def test_empty_lists_match_nothing_or_every_non_null_value() -> None:
    """in [] matches no row; not_in [] every row with a value (SQL would also match NULLs)."""
    assert _sql({"n": {"in": []}}) == ("false", {})
    assert _sql({"n": {"not_in": []}}) == ("items.n IS NOT NULL", {})


@pytest.mark.parametrize("spec", [None, {}])
def test_no_filter_is_true(spec: dict[str, Any] | None) -> None:
    """None and {} select every row."""
    assert _sql(spec) == ("true", {})


# -- values are checked against the column's type -------------------------------------------


@pytest.mark.parametrize(
    ("field", "given", "bound"),
    [
        ("n", 7, 7),
        ("big", 2**63 - 1, 2**63 - 1),
        ("small", -(2**15), -(2**15)),
        ("price", "12.50", Decimal("12.50")),
        ("price", 3, Decimal("3")),
        ("ratio", 2, 2.0),
        ("title", "'; DROP TABLE items; --", "'; DROP TABLE items; --"),
        ("at", "2026-01-02T03:04:05+02:00", datetime(2026, 1, 2, 1, 4, 5, tzinfo=UTC)),
        ("at", "2026-01-02T03:04:05Z", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("naive_at", "2026-01-02T03:04:05-01:00", datetime(2026, 1, 2, 4, 4, 5)),
        ("day", "2026-02-28", date(2026, 2, 28)),
        ("uid", str(UID), UID),
        ("kind", "bug", Kind.BUG),
        ("kind", "FEATURE", Kind.FEATURE),
        ("color", "red", "red"),
    ],
)  # fmt: skip
def test_values_are_coerced_to_the_columns_type(field: str, given: object, bound: object) -> None:
    """JSON values become the column's Python type (timestamps in UTC) before they are bound."""
    _, params = _sql({field: {"eq": given}})

    (value,) = params.values()
    assert value == bound
    assert type(value) is type(bound)


def test_booleans_compare_as_boolean_constants() -> None:
    """A JSON boolean is compared as SQL's own true/false, with no text from the caller."""
    assert _sql({"flag": False}) == ("items.flag = false", {})
    assert _sql({"flag": {"ne": True}}) == ("items.flag != true", {})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", "5"),
        ("n", 1.5),
        ("n", True),
        ("n", 2**31),
        ("small", 2**15),
        ("big", 2**63),
        ("big", -(2**63) - 1),
        ("title", 5),
        ("title", "nul\x00byte"),
        ("title", "lone \ud800 surrogate"),
        ("price", "twelve"),
        ("price", "NaN"),
        ("price", "1e5000"),
        ("price", True),
        ("ratio", float("inf")),
        ("ratio", float("nan")),
        ("ratio", "1.5"),
        ("flag", "true"),
        ("flag", 1),
        ("at", "2026-01-02T03:04:05"),  # no timezone
        ("at", "yesterday"),
        ("at", 1767225600),
        ("day", "2026-02-30"),
        ("day", datetime(2026, 1, 1, tzinfo=UTC)),
        ("uid", "not-a-uuid"),
        ("kind", "epic"),
        ("kind", ["bug"]),
        ("color", "blue"),
        ("n", {"nested": 1}),
        ("n", [1, 2]),
    ],
)
def test_values_of_the_wrong_type_are_refused(field: str, value: object) -> None:
    """A value the column cannot hold is InvalidInput (rule type), never a driver error."""
    error = _refused({field: {"eq": value}})

    assert (error.field, error.rule) == (f"filter.{field}", "type")


# -- refusals ------------------------------------------------------------------------------

_DEEP: dict[str, Any] = {"n": 1}
for _ in range(MAX_DEPTH):
    _DEEP = {"not": _DEEP}


@pytest.mark.parametrize(
    ("spec", "field", "rule"),
    [
        ({"secret": 1}, "filter.secret", "unknown_field"),
        ({"n; DROP TABLE items": 1}, "filter.n; DROP TABLE items", "unknown_field"),
        ({"or": [{"nope": 1}]}, "filter.nope", "unknown_field"),
        ({"n": {"like": "%"}}, "filter.n", "unknown_operator"),
        ({"n": {"eq": 1, "regex": ".*"}}, "filter.n", "unknown_operator"),
        ({"n": {}}, "filter.n", "type"),
        ({"n": {"in": 5}}, "filter.n", "type"),
        ({"n": {"in": "12"}}, "filter.n", "type"),
        ({"n": {"in": [1, "x"]}}, "filter.n", "type"),
        ({"n": {"in": list(range(MAX_IN_VALUES + 1))}}, "filter.n", "max_items"),
        ({"n": {"not_in": list(range(MAX_IN_VALUES + 1))}}, "filter.n", "max_items"),
        ({"n": {"between": [1]}}, "filter.n", "between"),
        ({"n": {"between": [1, 2, 3]}}, "filter.n", "between"),
        ({"n": {"between": 5}}, "filter.n", "type"),
        ({"n": {"between": [1, None]}}, "filter.n", "null"),
        ({"n": {"lt": None}}, "filter.n", "null"),
        ({"n": {"in": [1, None]}}, "filter.n", "null"),
        ({"n": {"contains": "1"}}, "filter.n", "text_only"),
        ({"kind": {"contains": "b"}}, "filter.kind", "text_only"),
        ({"color": {"startswith": "r"}}, "filter.color", "text_only"),
        ({"title": {"contains": 5}}, "filter.title", "type"),
        ({"title": {"contains": None}}, "filter.title", "null"),
        ({"title": {"contains": "x" * (MAX_PATTERN_LENGTH + 1)}}, "filter.title", "max_length"),
        ({"n": {"is_null": "yes"}}, "filter.n", "type"),
        ({"n": {"is_null": None}}, "filter.n", "type"),
        ({"or": []}, "filter.or", "type"),
        ({"or": {"n": 1}}, "filter.or", "type"),
        ({"and": "n=1"}, "filter.and", "type"),
        ({"or": [5]}, "filter.or[0]", "type"),
        ({"not": [{"n": 1}]}, "filter.not", "type"),
        (_DEEP, "filter" + ".not" * MAX_DEPTH, "max_depth"),
        ({"or": [{"n": i} for i in range(MAX_CONDITIONS)]}, "filter.n", "max_conditions"),
        ({"and": [{}] * (MAX_CONDITIONS + 1)}, "filter.and[99]", "max_conditions"),
        ({1: 1}, "filter", "type"),
        (["n", 1], "filter", "type"),
        ("n = 1", "filter", "type"),
    ],
)
def test_bad_filters_name_the_field_and_rule(spec: Any, field: str, rule: str) -> None:
    """Every refusal is InvalidInput naming the field (filter.<name>) and the broken rule."""
    error = _refused(spec)

    assert (error.field, error.rule) == (field, rule)


def test_a_filter_at_the_limits_is_accepted() -> None:
    """Exactly MAX_DEPTH levels, MAX_IN_VALUES values and MAX_CONDITIONS conditions are fine."""
    deep: dict[str, Any] = {"n": 1}
    for _ in range(MAX_DEPTH - 1):
        deep = {"not": deep}
    compile_filter(deep, FIELDS)
    compile_filter({"n": {"in": list(range(MAX_IN_VALUES))}}, FIELDS)
    compile_filter({"or": [{"n": i} for i in range(MAX_CONDITIONS // 2)]}, FIELDS)


def test_unknown_field_messages_are_cut_short() -> None:
    """A huge hostile field name is not echoed back whole."""
    error = _refused({"x" * 10_000: 1})

    assert len(str(error)) < 300
    assert error.field is not None
    assert len(error.field) < 60


def test_the_message_lists_what_is_allowed() -> None:
    """An unknown field or operator error says which ones exist."""
    assert "allowed: at, big, color" in str(_refused({"nope": 1}))
    assert "between, contains" in str(_refused({"n": {"nope": 1}}))


def test_group_keywords_cannot_be_whitelisted_as_fields() -> None:
    """A field called 'or' would be unreachable; declaring one is a programming error."""
    with pytest.raises(ValueError, match="keywords"):
        compile_filter({}, {"or": items.c.n})


@pytest.mark.parametrize(
    "hostile",
    [
        "' OR '1'='1",
        "1; DROP TABLE items; --",
        "x') UNION SELECT password FROM users --",
        '"; DELETE FROM items; --',
        "\\'; --",
    ],
)
def test_sql_in_values_only_ever_reaches_a_bound_parameter(hostile: str) -> None:
    """Hostile strings appear in the parameters, never in the SQL text."""
    spec = {
        "or": [{"title": hostile}, {"title": {"contains": hostile}}, {"title": {"in": [hostile]}}]
    }
    for dialect in (PG, SQLITE):
        sql, params = _sql(spec, dialect)

        for word in ("DROP", "UNION", "DELETE", "'1'", "--"):
            assert word not in sql
        assert any(hostile in str(value) for value in params.values())


def test_every_documented_operator_is_known() -> None:
    """The operator table is exactly the documented set."""
    documented = "eq ne in not_in lt le gt ge between contains startswith endswith is_null"
    assert sorted(OPERATORS) == sorted(documented.split(" "))


def test_timezones_other_than_utc_are_normalised() -> None:
    """A +05:30 timestamp is bound as the same instant in UTC."""
    local = datetime(2026, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    _, params = _sql({"at": {"gt": local.isoformat()}})

    assert params == {"at_1": local.astimezone(UTC)}


# -- sort ------------------------------------------------------------------------------------

SORTABLE: dict[str, ColumnElement[Any]] = {
    "n": items.c.n,
    "title": items.c.title,
    "created": items.c.at,
    "id": items.c.id,
}


def _keys(sort: Any, **kwargs: Any) -> list[tuple[str, bool]]:
    keys = parse_sort(sort, SORTABLE, tiebreak=items.c.id, **kwargs)
    return [(key.name, key.descending) for key in keys]


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("title", [("title", False), ("id", False)]),
        ("-created,title", [("created", True), ("title", False), ("id", False)]),
        ("title,-created", [("title", False), ("created", True), ("id", True)]),
        (["-n", " title "], [("n", True), ("title", False), ("id", False)]),
        ("-n", [("n", True), ("id", True)]),
        ("-id", [("id", True)]),
        ("n,id", [("n", False), ("id", False)]),
        ("id,-n", [("id", False), ("n", True)]),
        (None, [("id", False)]),
        ([], [("id", False)]),
    ],
)
def test_sort_terms_parse_and_the_id_breaks_ties_in_the_last_keys_direction(
    sort: Any, expected: list[tuple[str, bool]]
) -> None:
    """'-' is descending; the id is appended in the last key's direction unless already there."""
    assert _keys(sort) == expected


def test_the_default_sort_applies_when_none_is_given() -> None:
    """No sort means the default, which is parsed the same way."""
    assert _keys(None, default=("-created",)) == [("created", True), ("id", True)]
    assert _keys("title", default=("-created",)) == [("title", False), ("id", False)]


def test_sort_keys_carry_their_columns() -> None:
    """A SortKey holds the whitelisted column itself."""
    keys = parse_sort("-title", SORTABLE, tiebreak=items.c.id)

    assert keys[0] == SortKey("title", items.c.title, True)
    assert keys[1].column is items.c.id


class _Base(DeclarativeBase):
    pass


class Task(_Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]


def test_an_orm_tiebreak_already_sorted_on_is_not_appended_twice() -> None:
    """ORM attributes are compared by their columns (their own compare() is identity)."""
    fields: dict[str, ColumnElement[Any]] = {"id": Task.id, "title": Task.title}  # type: ignore[dict-item]

    keys = parse_sort("-id", fields, tiebreak=Task.id)  # type: ignore[arg-type]

    assert [(key.name, key.descending) for key in keys] == [("id", True)]
    appended = parse_sort("title", fields, tiebreak=Task.id)  # type: ignore[arg-type]
    assert [(key.name, key.descending) for key in appended] == [("title", False), ("id", False)]


@pytest.mark.parametrize(
    ("sort", "rule"),
    [
        ("secret", "unknown_field"),
        ("title; DROP TABLE items", "unknown_field"),
        ("-(SELECT 1)", "unknown_field"),
        ("title desc", "unknown_field"),
        ("+title", "unknown_field"),
        ("-", "unknown_field"),
        ("--title", "unknown_field"),
        ("title,title", "duplicate"),
        ("title,-title", "duplicate"),
        ("", "empty"),
        ("title,,n", "empty"),
        ("title,", "empty"),
        ([" "], "empty"),
        (["title", 5], "type"),
        (5, "type"),
        ({"title": "asc"}, "type"),
        (",".join(["n"] * 9), "max_items"),
    ],
)
def test_bad_sorts_name_the_sort_field(sort: Any, rule: str) -> None:
    """Unknown, duplicate, empty or malformed sort terms are InvalidInput on 'sort'."""
    with pytest.raises(InvalidInputError) as caught:
        parse_sort(sort, SORTABLE, tiebreak=items.c.id)

    assert (caught.value.field, caught.value.rule) == ("sort", rule)
