"""Candidate indexes for one statement's use of a table, their DDL, and indexes to drop.

A candidate's columns follow the order a b-tree can serve (:mod:`._predicates`): the
equality columns first, then one range column, then the ORDER BY columns (only when no
range column comes between, or the range column is the first ORDER BY column). Constant
tests (``deleted_at IS NULL``) become the WHERE of a partial index. A join column makes a
candidate of its own (the lookup side of a join). Each multi-column candidate also has
its leading column alone as a rival, so the advisor can prefer the narrower index when
the wider one gains nothing more.

Every name in the DDL is one the catalog returned (a column the table has), quoted by the
dialect's identifier preparer; the predicate is built from the four constant tests only.
No text of a statement is ever copied into DDL.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from corestone.db._catalog import Catalog, IndexInfo, same_predicate
from corestone.db._predicates import Constant, TableUse

__all__ = ["Candidate", "DropCandidate", "candidates", "drop_candidates", "index_ddl"]

_MAX_NAME = 63  # PostgreSQL's identifier limit (NAMEDATALEN - 1)


@dataclass(frozen=True, slots=True)
class Candidate:
    """An index that might serve a statement: table, ordered key columns, partial WHERE."""

    table: str
    columns: tuple[tuple[str, bool], ...]
    constants: tuple[Constant, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    @property
    def predicate(self) -> str | None:
        """The partial index's WHERE, unquoted (to compare with an existing index's)."""
        if not self.constants:
            return None
        return " AND ".join(f"{column} {test}" for column, test in self.constants)

    @property
    def name(self) -> str:
        """``ix_<table>_<columns>[_partial]``, cut to 63 characters with a hash when longer."""
        base = "_".join(["ix", self.table, *self.names, *(["partial"] if self.constants else [])])
        if len(base) <= _MAX_NAME:
            return base
        digest = hashlib.blake2b(base.encode(), digest_size=4).hexdigest()
        return f"{base[: _MAX_NAME - 9]}_{digest}"


def candidates(use: TableUse, catalog: Catalog) -> list[Candidate]:
    """The candidates for ``use`` that no index of ``catalog`` serves already."""
    info = catalog.table(use.table)
    if info is None:
        return []
    known = info.columns
    equality = [c for c in use.equality if c in known]
    ranges = [c for c in use.ranges if c in known and c not in equality]
    order = [(c, d) for c, d in use.order_by if c in known]
    if len({d for _, d in order}) == 1:  # one direction: a b-tree scans either way
        order = [(c, False) for c, _ in order]
    keys: list[tuple[str, bool]] = [(c, False) for c in equality]
    if ranges and not (order and order[0][0] == ranges[0]):
        keys.append((ranges[0], False))
    elif not ranges or order[0][0] == ranges[0]:
        keys.extend(o for o in order if o[0] not in equality)
    constants = tuple(
        (c, t) for c, t in dict.fromkeys(use.constants) if c in known and c not in dict(keys)
    )
    found: list[Candidate] = []
    if keys:
        found.append(Candidate(use.table, tuple(keys), constants))
        if len(keys) > 1:
            found.append(Candidate(use.table, tuple(keys[:1]), constants))
    for join in use.joins:
        if join in known and (join, False) not in keys[:1]:
            found.append(Candidate(use.table, ((join, False),)))
    return [
        c
        for c in dict.fromkeys(found)
        if catalog.serving_index(c.table, c.names, c.predicate) is None
    ]


def index_ddl(candidate: Candidate, quote: Any, *, concurrently: bool = False) -> str:
    """``CREATE INDEX`` for ``candidate``; ``quote`` is the dialect's identifier quoter."""
    columns = ", ".join(f"{quote(c)}{' DESC' if desc else ''}" for c, desc in candidate.columns)
    where = ""
    if candidate.constants:
        where = " WHERE " + " AND ".join(f"{quote(c)} {t}" for c, t in candidate.constants)
    how = "CONCURRENTLY IF NOT EXISTS " if concurrently else ""
    return (
        f"CREATE INDEX {how}{quote(candidate.name)} ON {quote(candidate.table)} ({columns}){where}"
    )


@dataclass(frozen=True, slots=True)
class DropCandidate:
    """An index that costs writes and space for nothing: unused, or covered by another."""

    table: str
    index: str
    reason: str
    size_bytes: int | None = None
    covered_by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "index": self.index,
            "reason": self.reason,
            "size_bytes": self.size_bytes,
            "covered_by": self.covered_by,
        }


def drop_candidates(catalog: Catalog) -> list[DropCandidate]:
    """INVALID indexes (a failed concurrent build: written to, never read), duplicate and
    prefix-redundant ones, then never-scanned ones (PostgreSQL counts).

    An index that enforces something (primary key, unique) is never one to drop, unless
    another index enforces the same on the same columns.
    """
    found: dict[str, DropCandidate] = {
        i.name: DropCandidate(i.table, i.name, "invalid", i.size_bytes)
        for i in catalog.indexes
        if not i.valid
    }
    indexes = [i for i in catalog.indexes if i.valid and "" not in i.columns]
    for index in indexes:
        for other in indexes:
            if other is index or other.table != index.table or other.method != index.method:
                continue
            if _covers(other, index):
                found[index.name] = DropCandidate(
                    index.table,
                    index.name,
                    "duplicate" if other.columns == index.columns else "prefix",
                    index.size_bytes,
                    other.name,
                )
                break
    for index in indexes:
        if index.scans == 0 and not (index.unique or index.primary) and index.name not in found:
            found[index.name] = DropCandidate(index.table, index.name, "unused", index.size_bytes)
    return list(found.values())


def _covers(other: IndexInfo, index: IndexInfo) -> bool:
    """Whether ``other`` makes ``index`` redundant (of two equal ones, the later name goes)."""
    if other.columns[: len(index.columns)] != index.columns:
        return False
    if not same_predicate(other.predicate, index.predicate):
        return False
    if index.primary:
        return False
    if index.unique:
        same = other.columns == index.columns
        return same and (other.primary or (other.unique and other.name < index.name))
    if other.columns == index.columns:
        return other.primary or other.unique or other.name < index.name
    return True
