"""``RepositoryScope``: what one repository call may see, as a value the helpers share.

The write, bulk and cache helpers of :class:`~corestone.db.repository.Repository` take a
scope and a session, never the repository: the scope says which model, which workspace
and whether soft-deleted rows count, and builds the WHERE criteria, the execution
options, coerced ids and not-found errors from that. A scope is made per call (the
workspace comes from context at that moment) and never changes.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Table

from corestone.db._model_info import ModelInfo
from corestone.db.filters import compile_filter
from corestone.db.scoping import INCLUDE_DELETED_OPTION, WORKSPACE_OPTION, Workspace
from corestone.errors import InvalidInputError, NotFoundError

__all__ = ["RepositoryScope"]


@functools.lru_cache(maxsize=4096)
def _criteria(
    table: Table, workspace: int | None, live_only: bool
) -> tuple[ColumnElement[bool], ...]:
    # Expressions are immutable, so one per (table, workspace) serves every statement;
    # building them (operator dispatch, coercion, a bound parameter) was a twentieth of
    # a repository list.
    criteria: list[ColumnElement[bool]] = []
    if workspace is not None:
        criteria.append(table.c.workspace_id == workspace)
    if live_only:
        criteria.append(table.c.deleted_at.is_(None))
    return tuple(criteria)


_MAX_INT = 2**63


@dataclass(frozen=True, slots=True)
class RepositoryScope:
    """One model, one workspace (or none, or every one on purpose), deleted rows or not."""

    info: ModelInfo
    workspace: Workspace | None
    include_deleted: bool = False
    filter_fields: Mapping[str, Any] | None = None
    """The attributes a caller may filter on (``Repository.filterable``)."""
    user_columns: Sequence[str] = ()
    """Columns holding user ids, whose ``user:{id}`` tags a write invalidates."""

    def criteria(self, *, include_deleted: bool | None = None) -> list[ColumnElement[bool]]:
        """The WHERE terms that keep a statement inside this scope."""
        deleted = self.include_deleted if include_deleted is None else include_deleted
        workspace = self.workspace if isinstance(self.workspace, int) else None
        return list(_criteria(self.info.table, workspace, self.info.soft_delete and not deleted))

    def options(self, *, include_deleted: bool | None = None) -> dict[str, Any]:
        """Execution options for the session's scoping listener (:mod:`.scoping`)."""
        deleted = self.include_deleted if include_deleted is None else include_deleted
        options: dict[str, Any] = {INCLUDE_DELETED_OPTION: deleted}
        if self.workspace is not None:
            options[WORKSPACE_OPTION] = self.workspace
        return options

    def filter(self, filters: Mapping[str, Any] | None) -> ColumnElement[bool]:
        """``filters`` compiled against the filterable fields (docs/filters-and-pagination.md)."""
        return compile_filter(filters, self.filter_fields or {})

    def visible(self, obj: Any) -> bool:
        """Whether a loaded row belongs to this scope."""
        if isinstance(self.workspace, int) and obj.workspace_id != self.workspace:
            return False
        return not (self.info.soft_delete and not self.include_deleted and obj.deleted_at)

    def coerce_id(self, value: object) -> Any:
        """``value`` as a primary key, or InvalidInputError naming ``id``."""
        python_type = getattr(self.info.pk.type, "python_type", None)
        if python_type is int:
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise InvalidInputError("id must be an integer", field="id", rule="type")
            try:
                number = int(value)
            except ValueError:
                raise InvalidInputError("id must be an integer", field="id", rule="type") from None
            if not -_MAX_INT <= number < _MAX_INT:
                raise InvalidInputError("id is out of range", field="id", rule="range")
            return number
        return value

    def not_found(self, id_: object) -> NotFoundError:
        """The error for an id that is absent or out of scope (the two look the same)."""
        return NotFoundError(f"{self.info.entity} {id_!s:.64} not found")
