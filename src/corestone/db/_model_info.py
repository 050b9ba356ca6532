"""What a repository needs to know about a model, computed once per model class.

Also validates write values against the model's columns, so a bad field name or value is
an :class:`~corestone.errors.InvalidInputError` naming the field and the rule — never a
driver error, never a partial write.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Enum,
    Float,
    Integer,
    Numeric,
    String,
    Table,
    inspect,
)
from sqlalchemy.types import TypeDecorator, TypeEngine

from corestone.db.models import AuditedMixin, SoftDeleteMixin, TenantMixin, VersionMixin
from corestone.errors import InvalidInputError

__all__ = ["ModelInfo", "model_info", "table_identity"]

# Columns a caller never sets directly: the repository manages them.
_MANAGED = frozenset({"version", "deleted_at", "deleted_by", "updated_at"})


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model's table, key and capabilities (tenant, soft delete, version, audit)."""

    model: type[Any]
    table: Table
    pk: Column[Any]
    pk_name: str
    columns: Mapping[str, Column[Any]]  # attribute name -> column
    tenant: bool
    soft_delete: bool
    versioned: bool
    audited: bool
    audit_exclude: frozenset[str]
    entity: str
    """The class name: what error messages and audit rows call the model."""
    identity: str
    """The schema-qualified table name: unique per model, so cache keys and tags use it."""

    def attribute_values(self, obj: Any) -> dict[str, Any]:
        """Every column attribute of a loaded instance."""
        return {name: getattr(obj, name) for name in self.columns}

    validators: Mapping[str, Validator]
    required: frozenset[str]
    # Field-name tuples already found valid for a create: bulk rows skip the set checks.
    valid_key_sets: set[tuple[str, ...]]

    def check_create(self, values: Mapping[str, Any], *, field_prefix: str = "") -> None:
        """Raise InvalidInputError unless ``values`` can make a new row."""
        names = tuple(values)
        if names not in self.valid_key_sets:
            self._check_names(values.keys(), field_prefix)
            if len(self.valid_key_sets) < 256:
                self.valid_key_sets.add(names)
        validators = self.validators
        for name, value in values.items():
            problem = validators[name](value)
            if problem is not None:
                raise _invalid(f"{field_prefix}{name}", problem)

    def _check_names(self, keys: Any, field_prefix: str) -> None:
        unknown = keys - self.columns.keys()
        if unknown:
            raise _unknown(min(unknown, key=str), field_prefix)
        for name in keys & _MANAGED:
            field = f"{field_prefix}{name}"
            raise InvalidInputError(
                f"{field} is managed by the repository", field=field, rule="read_only"
            )
        missing = self.required - keys
        if missing:
            field = f"{field_prefix}{min(missing)}"
            raise InvalidInputError(f"{field} is required", field=field, rule="required")

    def check_update(self, values: Mapping[str, Any]) -> None:
        """Raise InvalidInputError unless ``values`` is a valid partial update."""
        unknown = values.keys() - self.columns.keys()
        if unknown:
            raise _unknown(min(unknown, key=str), "")
        for name, value in values.items():
            column = self.columns[name]
            if name in _MANAGED or column is self.pk or (self.tenant and name == "workspace_id"):
                raise InvalidInputError(f"{name} cannot be changed", field=name, rule="read_only")
            problem = self.validators[name](value)
            if problem is not None:
                raise _invalid(name, problem)


Validator = Callable[[Any], "tuple[str, str] | None"]
"""Checks one value: None if fine, else (what is wrong, rule name)."""


def _unknown(name: object, prefix: str) -> InvalidInputError:
    field = f"{prefix}{name!s:.64}"
    return InvalidInputError(f"unknown field {field}", field=field, rule="unknown")


def _invalid(field: str, problem: tuple[str, str]) -> InvalidInputError:
    return InvalidInputError(f"{field} {problem[0]}", field=field, rule=problem[1])


@cache
def model_info(model: type[Any]) -> ModelInfo:
    """The :class:`ModelInfo` of a mapped class (cached)."""
    mapper = inspect(model)
    if len(mapper.primary_key) != 1:
        raise TypeError(f"{model.__name__}: repositories need a single-column primary key")
    table = mapper.local_table
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__}: repositories need a model mapped to one table")
    columns: dict[str, Column[Any]] = {}
    for prop in mapper.column_attrs:
        if len(prop.columns) == 1 and isinstance(prop.columns[0], Column):
            columns[prop.key] = prop.columns[0]
    pk = mapper.primary_key[0]
    pk_name = next(name for name, column in columns.items() if column is pk)
    tenant = issubclass(model, TenantMixin)
    required = frozenset(
        name
        for name, column in columns.items()
        if not column.nullable
        and name not in _MANAGED
        and column.default is None
        and column.server_default is None
        and not (column is pk and column.autoincrement in (True, "auto"))
        and not (tenant and name == "workspace_id")
    )
    return ModelInfo(
        model=model,
        table=table,
        pk=pk,
        pk_name=pk_name,
        columns=columns,
        tenant=tenant,
        soft_delete=issubclass(model, SoftDeleteMixin),
        versioned=issubclass(model, VersionMixin),
        audited=issubclass(model, AuditedMixin),
        audit_exclude=frozenset(getattr(model, "__audit_exclude__", ())),
        entity=model.__name__,
        identity=table_identity(table),
        validators={name: _validator(column) for name, column in columns.items()},
        required=required,
        valid_key_sets=set(),
    )


def table_identity(table: Table) -> str:
    """The name cache keys and tags give ``table``: ``Table.fullname`` when unambiguous.

    A name or schema that holds a ``.`` (or a ``"``) is quoted, so table ``"billing.invoices"``
    and table ``invoices`` of schema ``billing`` never share an identity.
    """
    parts = [table.name] if table.schema is None else [table.schema, table.name]
    if any("." in part or '"' in part for part in parts):
        return ".".join('"' + part.replace('"', '""') + '"' for part in parts)
    return table.fullname


def _base_type(type_: TypeEngine[Any]) -> TypeEngine[Any]:
    while isinstance(type_, TypeDecorator):
        type_ = type_.impl_instance
    return type_


_MAX_INT = 2**63


def _validator(column: Column[Any]) -> Validator:
    """A checker for values of ``column``, built once per column."""
    nullable = bool(column.nullable)
    type_ = _base_type(column.type)

    def null_or(check: Callable[[Any], tuple[str, str] | None]) -> Validator:
        def validate(value: Any) -> tuple[str, str] | None:
            if value is None:
                return None if nullable else ("may not be null", "not_null")
            return check(value)

        return validate

    if isinstance(type_, Boolean):
        return null_or(lambda v: None if isinstance(v, bool) else ("must be a boolean", "type"))
    if isinstance(type_, Integer):

        def integer(v: Any) -> tuple[str, str] | None:
            if isinstance(v, bool) or not isinstance(v, int):
                return ("must be an integer", "type")
            return None if -_MAX_INT <= v < _MAX_INT else ("is out of range", "range")

        return null_or(integer)
    if isinstance(type_, Float | Numeric):

        def number(v: Any) -> tuple[str, str] | None:
            if isinstance(v, bool) or not isinstance(v, int | float | decimal.Decimal):
                return ("must be a number", "type")
            return None

        return null_or(number)
    if isinstance(type_, Enum):  # a String subclass: its members are not strings
        enum_class, allowed = type_.enum_class, frozenset(type_.enums)

        def choice(v: Any) -> tuple[str, str] | None:
            if enum_class is not None and isinstance(v, enum_class):
                return None
            return None if isinstance(v, str) and v in allowed else ("is not allowed", "enum")

        return null_or(choice)
    if isinstance(type_, String):
        length = type_.length

        def string(v: Any) -> tuple[str, str] | None:
            if not isinstance(v, str):
                return ("must be a string", "type")
            if length is not None and len(v) > length:
                return (f"is longer than {length} characters", "max_length")
            return ("contains a NUL character", "type") if "\x00" in v else None

        return null_or(string)
    if isinstance(type_, JSON):
        return null_or(lambda v: None)
    python_type = _python_type(type_)
    if python_type is dt.datetime:
        # A column with a zone takes aware values only; one declared without a zone
        # (DateTime(timezone=False)) stores wall-clock time and takes naive values only:
        # the driver refuses the other kind (asyncpg), so it is a named 422, not a 500.
        zoned = not isinstance(type_, DateTime) or bool(type_.timezone)

        def moment(v: Any) -> tuple[str, str] | None:
            if not isinstance(v, dt.datetime):
                return ("must be a datetime", "type")
            if zoned:
                return None if v.tzinfo is not None else ("must be timezone-aware", "timezone")
            if v.tzinfo is None:
                return None
            return ("must be naive: the column stores no time zone", "timezone")

        return null_or(moment)
    if python_type in (dt.date, dt.time, uuid.UUID, bytes):
        expected: type = python_type
        message = f"must be a {expected.__name__}"
        return null_or(lambda v: None if isinstance(v, expected) else (message, "type"))
    return null_or(lambda v: None)


def _python_type(type_: TypeEngine[Any]) -> type | None:
    try:
        return type_.python_type
    except NotImplementedError:
        return None
