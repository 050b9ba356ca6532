"""PostgreSQL: the audit row written by the statement that makes the change.

What the audited insert (:mod:`._audited_insert`) and update (:mod:`._audited_update`)
share: which columns the server may write the audit JSON of, that JSON, the audit
INSERT as a CTE over the rows the change returned, and the statement cache.

The rule both follow: the log never depends on which path wrote it. The server writes a
field's JSON only where it writes exactly what :func:`~corestone.db.audit.audit_value`
writes of the value the generic path reads back:

- integers, strings and booleans (``to_jsonb``), not an ``Enum`` (stored by name,
  logged by value) nor any other ``TypeDecorator`` (it may change the value on the way
  out);
- :class:`~corestone.db.models.UTCDateTime`, formatted by hand as
  ``datetime.isoformat()`` writes it (``to_jsonb`` writes the session's zone and trims
  trailing zeros of the fraction), infinities as asyncpg reads them;
- any field in ``__audit_exclude__`` (``"<redacted>"``, whatever its type).

A model with any other field that the change can write takes the generic path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    Enum,
    Integer,
    String,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.base import instance_state

from corestone import context
from corestone.db.audit import REDACTED, AuditAction, audit_table
from corestone.db.models import UTCDateTime, utc_now

if TYPE_CHECKING:
    from sqlalchemy import CTE, Column
    from sqlalchemy.ext.asyncio import AsyncSession

    from corestone.db._model_info import ModelInfo

__all__ = [
    "NOISE",
    "as_entity",
    "audit_cte",
    "audit_params",
    "cached_statement",
    "changes_object",
    "empty_changes",
    "field_pair",
    "json_exact",
    "merge_objects",
    "param_prefix",
    "row_columns",
    "workspace_exact",
]

NOISE: Final = frozenset({"version", "updated_at"})
"""Fields the audit log leaves out: they change on every write and say nothing new."""

_EXACT_JSON = (Integer, String, Boolean)
# jsonb_build_object takes at most 100 arguments: 50 key/value pairs.
_MAX_PAIRS = 50


def json_exact(column: Column[Any]) -> bool:
    """Whether the server writes the audit JSON of ``column``'s values as Python would."""
    type_ = column.type
    if isinstance(type_, UTCDateTime):
        return True
    return isinstance(type_, _EXACT_JSON) and not isinstance(type_, Enum)


def _text(value: str) -> ColumnElement[str]:
    """One of this module's constants, in the SQL text rather than bound on every call."""
    return literal_column("'" + value + "'", String)


def _name(name: str) -> ColumnElement[str]:
    """A name the statement writes: in its text when it is a plain identifier (fewer
    parameters to build and send per call), else bound."""
    if name.isascii() and name.isidentifier():
        return _text(name)
    return cast(literal(name, String), String)


def _utc_iso(value: ColumnElement[Any]) -> ColumnElement[Any]:
    """``value`` (a timestamptz) as jsonb, the string ``datetime.isoformat()`` writes of
    it in UTC: no fraction when the microseconds are 0, six digits otherwise, ``+00:00``.
    asyncpg reads ±infinity as ``datetime.max``/``min``, which UTCDateTime makes UTC."""
    utc = func.timezone(_text("UTC"), value)
    micro = func.to_char(utc, _text("US"))
    fraction = case((micro == _text("000000"), _text("")), else_=_text(".").op("||")(micro))
    iso = (
        func.to_char(utc, _text('YYYY-MM-DD"T"HH24:MI:SS'))
        .op("||")(fraction)
        .op("||")(_text("+00:00"))
    )
    return case(
        (value == literal_column("'infinity'::timestamptz"), _json("9999-12-31T23:59:59.999999")),
        (value == literal_column("'-infinity'::timestamptz"), _json("0001-01-01T00:00:00")),
        else_=func.to_jsonb(iso, type_=JSONB),
    )


def _json(moment: str) -> ColumnElement[Any]:
    return literal_column(f"""'"{moment}+00:00"'::jsonb""", JSONB)


def _json_of(column: Column[Any], value: ColumnElement[Any]) -> ColumnElement[Any]:
    if isinstance(column.type, UTCDateTime):
        return _utc_iso(value)
    return func.to_jsonb(value, type_=JSONB)


def field_pair(
    info: ModelInfo, name: str, before: ColumnElement[Any] | None, after: ColumnElement[Any]
) -> ColumnElement[Any]:
    """``{"before": …, "after": …}`` of field ``name`` as jsonb; ``before=None`` for a
    row that did not exist (JSON null). Redacted when the model excludes the field."""
    if name in info.audit_exclude:
        return func.jsonb_build_object(
            _text("before"), _text(REDACTED), _text("after"), _text(REDACTED), type_=JSONB
        )
    column = info.columns[name]
    old = literal_column("NULL::jsonb", JSONB) if before is None else _json_of(column, before)
    return func.jsonb_build_object(
        _text("before"), old, _text("after"), _json_of(column, after), type_=JSONB
    )


def empty_changes() -> ColumnElement[Any]:
    return literal_column("'{}'::jsonb", JSONB)


def merge_objects(parts: Sequence[ColumnElement[Any]]) -> ColumnElement[Any]:
    """jsonb objects ``a || b || …`` (``{}`` for none)."""
    result: ColumnElement[Any] = parts[0] if parts else empty_changes()
    for part in parts[1:]:
        result = result.op("||", return_type=JSONB)(part)
    return result


def changes_object(pairs: Sequence[tuple[str, ColumnElement[Any]]]) -> ColumnElement[Any]:
    """``{name: pair, …}`` as jsonb, in as few ``jsonb_build_object`` calls as fit."""
    parts = []
    for start in range(0, len(pairs), _MAX_PAIRS):
        arguments: list[ColumnElement[Any]] = []
        for name, pair in pairs[start : start + _MAX_PAIRS]:
            arguments += [_name(name), pair]
        parts.append(func.jsonb_build_object(*arguments, type_=JSONB))
    return merge_objects(parts)


def audit_cte(
    info: ModelInfo,
    source: Any,
    action: AuditAction,
    changes: ColumnElement[Any],
    *,
    prefix: str,
    skip_unchanged: bool = False,
) -> CTE:
    """``INSERT INTO corestone_audit_log … SELECT … FROM source``: one entry per row.

    ``source`` is the CTE the change returned its rows from; the time, actor and
    correlation id are the parameters of :func:`audit_params` (same ``prefix``).
    ``skip_unchanged``: a row whose changes are ``{}`` logs nothing (an update that
    changed nothing).
    """
    audit = audit_table()
    pk = info.pk.name
    workspace = info.columns.get("workspace_id")
    entry = select(
        bindparam(f"{prefix}at", type_=audit.c.at.type),
        _name(info.entity),
        cast(source.c[pk], String),
        _name(action),
        bindparam(f"{prefix}actor", type_=String()),
        # As the generic path: the row's workspace_id attribute, if it has one.
        literal(None, Integer) if workspace is None else source.c[workspace.name],
        cast(changes, JSON),
        bindparam(f"{prefix}correlation", type_=String()),
    ).select_from(source)
    if skip_unchanged:
        entry = entry.where(changes != empty_changes())
    names = ["at", "entity", "entity_id", "action", "actor_id", "workspace_id", "changes"]
    return insert(audit).from_select([*names, "correlation_id"], entry).cte("aud")


def workspace_exact(info: ModelInfo) -> bool:
    """Whether the server records the row's workspace as the generic path does (an
    integer, or no such field)."""
    workspace = info.columns.get("workspace_id")
    return workspace is None or isinstance(workspace.type, Integer)


_PREFIXES: dict[type[Any], str] = {}


def param_prefix(info: ModelInfo) -> str:
    """A prefix for the statement's own parameters that no column's key starts with.

    SQLAlchemy takes an execution parameter named like a column as a value for that
    column (an UPDATE adds it to its SET clause): ``cs_at`` must not meet a column
    ``cs_at``.
    """
    prefix = _PREFIXES.get(info.model)
    if prefix is None:
        prefix = "cs_"
        while any(column.key.startswith(prefix) for column in info.columns.values()):
            prefix = f"_{prefix}"
        _PREFIXES[info.model] = prefix
    return prefix


def audit_params(prefix: str) -> dict[str, Any]:
    """The bound values :func:`audit_cte` reads: now, the actor, the correlation id."""
    actor = context.actor_id()
    correlation = context.correlation_id()
    return {
        f"{prefix}at": utc_now(),
        f"{prefix}actor": actor[:64] if actor else None,
        f"{prefix}correlation": (
            correlation[: context.MAX_CORRELATION_ID_LENGTH] if correlation else None
        ),
    }


S = TypeVar("S")

_STATEMENTS: dict[object, Any] = {}
_MAX_STATEMENTS = 512


def cached_statement(shape: object, build: Callable[[], S]) -> S:
    """The statement for ``shape``, built once: SQLAlchemy then reuses its cache key and
    compiled form, where building the tree per call cost more than the saved round trip."""
    stmt = _STATEMENTS.get(shape)
    if stmt is None:
        if len(_STATEMENTS) >= _MAX_STATEMENTS:
            _STATEMENTS.clear()
        stmt = _STATEMENTS[shape] = build()
    return stmt


async def as_entity(
    info: ModelInfo, session: AsyncSession, row: Sequence[Any], *, new: bool = False
) -> Any:
    """The session's instance for ``row`` (values in ``info.columns`` order), refreshed.

    The values go straight into the instance's dict, as the ORM's loader puts them (no
    attribute events, no history), and the instance becomes detached with its identity.
    ``merge(load=False)`` then copies that state onto the instance the session already
    holds for the identity (or adds this one) without SQL, and leaves it clean. A
    ``new`` row is simply added when the session holds nothing under its identity (half
    the cost of a merge).
    """
    obj = info.model.__mapper__.class_manager.new_instance()
    state = instance_state(obj)
    state.dict.update(zip(info.columns, row, strict=True))
    make_transient_to_detached(obj)
    if new and state.key is not None and state.key not in session.sync_session.identity_map:
        session.add(obj)
        return obj
    return await session.merge(obj, load=False)


def row_columns(info: ModelInfo, source: Any) -> list[Any]:
    """``source``'s columns in ``info.columns`` order (what :func:`as_entity` reads)."""
    return [source.c[column.name] for column in info.columns.values()]
