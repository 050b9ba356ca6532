"""Statement fingerprints: one normalised text per shape of query, whatever its values.

Two statements share a fingerprint when they differ only in their values: literals and
bound parameters (``?``, ``$1``, ``:name``) become ``?``, an IN-list of values of any
length becomes ``IN (?)``, and a VALUES list of rows of values becomes one row, so
SQLAlchemy's expanded IN parameters and its batched inserts ("insertmanyvalues") fold into
one entry. Unquoted identifiers are lowercased as the database folds them (PostgreSQL
keeps the case of quoted ones; SQLite folds all), and keywords, spacing and line breaks
come out as sqlglot writes them. ``NULL``, ``TRUE`` and ``FALSE`` stay: ``deleted_at IS
NULL`` is a shape (an index may be partial on it), not a value.

The parser is sqlglot (ADR 0037): one pure-Python parser for both dialects. It is slow
next to a query (a few hundred microseconds for a typical statement), so
:class:`Fingerprinter` caches the fingerprint of each distinct statement text in a
bounded LRU: SQLAlchemy sends the same compiled string for every run of a statement, so
the parser runs once per shape of query the application has, not once per query.

A statement sqlglot cannot parse, or parses only as an opaque command (``SAVEPOINT``,
``PRAGMA``, ``SET``), gets the fallback normalisation of :func:`normalise_text`: quoted
strings, numbers and parameters become ``?``, a parenthesised list of them becomes
``(?)``, runs of whitespace one space, the whole text uppercased outside quoted names.
Fingerprinting never raises.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, Literal

from corestone._extras import requires_extra

with requires_extra(__name__, "queries"):
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError
    from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

__all__ = ["Fingerprint", "Fingerprinter", "Operation", "fingerprint_of", "normalise_text"]


class _NoStatementText(logging.Filter):
    """Drops sqlglot's "'<statement>' contains unsupported syntax" warning.

    sqlglot logs the statement itself (values included: ``ALTER ROLE … PASSWORD '…'``)
    when it falls back to an opaque command; the fingerprint falls back too, documented,
    so the line only puts the application's values in its logs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "contains unsupported syntax" not in str(record.msg)


_SQLGLOT_LOG: Final = logging.getLogger("sqlglot")
if not any(isinstance(f, _NoStatementText) for f in _SQLGLOT_LOG.filters):
    _SQLGLOT_LOG.addFilter(_NoStatementText())

Operation = Literal["select", "insert", "update", "delete", "other"]
"""The kind of statement: the label of the query metrics (five values, by design)."""

_OPERATIONS: Final[dict[type[Any], Operation]] = {
    exp.Select: "select",
    exp.Union: "select",
    exp.Intersect: "select",
    exp.Except: "select",
    exp.Insert: "insert",
    exp.Update: "update",
    exp.Delete: "delete",
    exp.Merge: "update",
}
_SQLGLOT_DIALECTS: Final = {"postgresql": "postgres", "sqlite": "sqlite"}
# Statements sqlglot reads only as an opaque Command (and warns about each): not parsed.
_COMMANDS: Final = ("SAVEPOINT", "RELEASE", "ROLLBACK", "PRAGMA", "SET", "SHOW", "RESET")
_CONTROL: Final = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "END", "START"})
# Every kind of literal sqlglot reads: PostgreSQL's E'…', $$…$$, U&'…', N'…', X'…' and
# B'…' are not exp.Literal, and left as they are they would put values in the text.
_VALUE_TYPES: Final = (
    exp.Literal,
    exp.Placeholder,
    exp.Parameter,
    exp.ByteString,
    exp.RawString,
    exp.UnicodeString,
    exp.National,
    exp.HexString,
    exp.BitString,
)
PLACEHOLDER: Final = "?"


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """The normalised shape of a statement.

    ``id`` is 16 hex digits of a hash of ``text``, short enough for a log line or a URL.
    ``tables`` are the tables it names (CTE names left out), for an index advisor.
    ``dialect`` is SQLAlchemy's name of the database (part of the hash: the same text on
    two databases is two workloads). ``parsed`` is False when the fallback normalisation
    made ``text``. ``control`` marks transaction control (BEGIN, COMMIT, SAVEPOINT…):
    sent as SQL text on SQLite, by the driver on PostgreSQL, so not counted as a query of
    a unit of work.
    """

    id: str
    text: str
    operation: Operation
    dialect: str = ""
    tables: tuple[str, ...] = ()
    parsed: bool = True
    control: bool = False


def fingerprint_of(statement: str, dialect: str) -> Fingerprint:
    """The fingerprint of ``statement`` as ``dialect`` (SQLAlchemy's name) reads it.

    Uncached: use a :class:`Fingerprinter` on a path that runs per query.
    """
    head = statement.lstrip(" \t\r\n(").split(None, 1)
    first = head[0].upper().rstrip(";") if head else ""
    if first in _CONTROL:
        text = normalise_text(statement)
        return Fingerprint(_hash(dialect, text), text, "other", dialect, parsed=False, control=True)
    if not head or first in _COMMANDS:
        return _fallback(statement, dialect)
    read = _SQLGLOT_DIALECTS.get(dialect, dialect)
    try:
        trees: list[Any] = [t for t in sqlglot.parse(statement, read=read) if t is not None]
        if not trees or any(isinstance(t, exp.Command) for t in trees):
            return _fallback(statement, dialect)
        shaped = [_shape(normalize_identifiers(t, dialect=read)) for t in trees]
        text = "; ".join(t.sql(dialect=read) for t in shaped)
    except (SqlglotError, ValueError, RecursionError, KeyError, TypeError, AttributeError):
        return _fallback(statement, dialect)
    root = trees[0]
    ctes = {c.alias_or_name for t in trees for c in t.find_all(exp.CTE)}
    tables = tuple(
        dict.fromkeys(
            t.name for tree in trees for t in tree.find_all(exp.Table) if t.name not in ctes
        )
    )
    operation: Operation = _operation(root)
    return Fingerprint(_hash(dialect, text), text, operation, dialect, tables)


def _operation(root: Any) -> Operation:
    """The statement's kind; a SELECT over a data-modifying CTE is that CTE's write."""
    operation = _OPERATIONS.get(type(root), "other")
    if operation == "select":
        for cte in root.find_all(exp.CTE):
            written = _OPERATIONS.get(type(cte.this), "other")
            if written not in ("select", "other"):
                return written
    return operation


def _shape(tree: Any) -> Any:
    """``tree`` with values as placeholders and value lists collapsed to one item."""

    def collapse(node: exp.Expression) -> exp.Expression:
        if _is_position(node):
            return node
        if not isinstance(node, exp.Tuple | exp.Paren) and _is_value(node):
            return exp.Var(this=PLACEHOLDER)
        if isinstance(node, exp.In | exp.Values | exp.Array) and len(node.expressions) > 1:
            items = node.expressions
            if all(_is_value(item) for item in items) and _same_shape(items):
                node.set("expressions", items[:1])
        return node

    return tree.transform(collapse, copy=True)


def _is_position(node: exp.Expression) -> bool:
    """An output column's position (``GROUP BY 1``, ``ORDER BY 2``): shape, not a value.

    ``ORDER BY 1`` and ``ORDER BY 2`` sort by different columns (PostgreSQL's own
    fingerprint tells them apart too); in a window's ORDER BY a number is a constant.
    """
    if not (isinstance(node, exp.Literal) and node.is_int):
        return False
    parent = node.parent
    if isinstance(parent, exp.Group):
        return True
    order = parent.parent if isinstance(parent, exp.Ordered) else None
    return isinstance(order, exp.Order) and not isinstance(order.parent, exp.Window)


def _is_value(node: exp.Expression) -> bool:
    """A literal or a parameter, possibly negated or cast (``-5``, ``$1::INTEGER``), or a
    row of them (``($1, 0)``, an item of a VALUES list or of a composite IN).

    A placeholder already put in by the transform counts too (it runs bottom-up).
    """
    while isinstance(node, exp.Neg | exp.Cast | exp.Paren):
        node = node.this
    if isinstance(node, exp.Tuple):
        return bool(node.expressions) and all(_is_value(item) for item in node.expressions)
    if isinstance(node, exp.Var):
        return node.name == PLACEHOLDER
    return isinstance(node, _VALUE_TYPES)


def _same_shape(items: list[exp.Expression]) -> bool:
    """Rows of one width (a VALUES list may not mix them; a list of scalars is width 1)."""
    widths = {len(i.expressions) if isinstance(i, exp.Tuple) else 1 for i in items}
    return len(widths) == 1


# The fallback: quoted strings, dollar/numbered parameters, numbers and named parameters.
_QUOTED_NAME = re.compile(r'"(?:[^"]|"")*"')
_VALUE = re.compile(
    r"(?s:\$\$.*?\$\$|\$([A-Za-z_]\w*)\$.*?\$\1\$)"  # a dollar-quoted string (a DO body)
    r"|(?<!\w)[Ee]'(?:[^'\\]|\\.|'')*'"  # an E'' string, backslash escapes in it
    r"|'(?:[^']|'')*'"  # a string literal
    r"|(?<![\w$])\$\d+"  # $1
    r"|(?<![\w:]):[A-Za-z_]\w*"  # :name
    r"|%\(\w+\)s|%s"  # pyformat / format
    r"|(?<![\w.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])"  # a number, not part of a name
)
# SET's value may be a bare word or a "quoted" one (SET app.key TO s3cret): all of it.
_SET_VALUE = re.compile(
    r"^(\s*SET\s+(?:LOCAL\s+|SESSION\s+)?[\w.\"]+\s*(?:=|\bTO\b)\s*)\S.*$",
    re.IGNORECASE | re.DOTALL,
)
_VALUE_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)*\s*\)")
_SPACE = re.compile(r"\s+")


def normalise_text(statement: str) -> str:
    """The fallback normalisation, for SQL the parser does not read (see the module doc).

    Quoted names keep their case; everything else is uppercased.
    """
    text = _SET_VALUE.sub(rf"\1{PLACEHOLDER}", _VALUE.sub(PLACEHOLDER, statement))
    text = _VALUE_LIST.sub(f"({PLACEHOLDER})", text)
    text = _SPACE.sub(" ", text).strip().rstrip(";").strip()
    pieces: list[str] = []
    last = 0
    for match in _QUOTED_NAME.finditer(text):
        pieces.append(text[last : match.start()].upper())
        pieces.append(match.group())
        last = match.end()
    pieces.append(text[last:].upper())
    return "".join(pieces)


def _fallback(statement: str, dialect: str) -> Fingerprint:
    text = normalise_text(statement)
    return Fingerprint(_hash(dialect, text), text, "other", dialect, parsed=False)


def _hash(dialect: str, text: str) -> str:
    return hashlib.blake2b(f"{dialect}\n{text}".encode(), digest_size=8).hexdigest()


# Long statements: lists of values are collapsed by text before parsing. A 30,000-item
# expanding IN is a 230 kB text that sqlglot takes over a second to parse, on the event
# loop, and each length of it is a new text; a 1,000-row batched INSERT takes 200 ms.
# Only lists of parameters and numbers after IN or VALUES are touched (what the parse
# would collapse the same way), so the fingerprint is the one of the short form.
LONG_STATEMENT: Final = 1000
MAX_CACHED_STATEMENT: Final = 16_384
"""Longer texts (still, after their lists are cut: a document spliced into the SQL) are
fingerprinted on each run and never kept: 4,096 cached 1 MB texts would be 4 GB. The
tokenizer takes ~20 ms per MB, less than the database takes to read it."""
_ITEM = (
    r"(?:\$\d+|\?|%s|%\(\w+\)s|:\w+|-?\d+(?:\.\d+)?)"
    r"(?:\s*::\s*[A-Za-z_][\w ]*?(?:\(\d+(?:\s*,\s*\d+)?\))?(?:\[\])?)?"
)
_ROW = rf"\(\s*{_ITEM}(?:\s*,\s*{_ITEM})*\s*\)"
_LONG_IN = re.compile(rf"(\bIN\s*\(\s*{_ITEM})(?:\s*,\s*{_ITEM})+(\s*\))", re.IGNORECASE)
_LONG_VALUES = re.compile(rf"(\bVALUES\s*{_ROW})(?:\s*,\s*{_ROW})+", re.IGNORECASE)


def collapse_long_lists(statement: str) -> str:
    """``statement`` with each IN list and VALUES list of parameters cut to its first item.

    For statements over :data:`LONG_STATEMENT` characters, before they are parsed and
    cached: the parse then costs what the short form's does, and the cache holds one
    short text per shape instead of one long text per list length.
    """
    return _LONG_VALUES.sub(r"\1", _LONG_IN.sub(r"\1\2", statement))


class Fingerprinter:
    """Fingerprints for one dialect, cached per statement text in a bounded LRU.

    A hit costs a dictionary lookup (the statement string's hash is cached on the string,
    and SQLAlchemy hands over the same string object for each run of a compiled
    statement). Thread-safe: ``functools.lru_cache`` guards its own table.
    """

    def __init__(self, dialect: str, *, cache_size: int = 4096) -> None:
        self.dialect = dialect
        self._cached: Callable[[str], Fingerprint] = lru_cache(maxsize=cache_size)(self._uncached)

    def __call__(self, statement: str) -> Fingerprint:
        """The fingerprint of ``statement``; never raises."""
        if len(statement) > LONG_STATEMENT:
            statement = collapse_long_lists(statement)
            if len(statement) > MAX_CACHED_STATEMENT:  # a value spliced into the text
                return self._uncached(statement)
        return self._cached(statement)

    def _uncached(self, statement: str) -> Fingerprint:
        return fingerprint_of(statement, self.dialect)

    def cache_info(self) -> tuple[int, int, int]:
        """(hits, misses, entries) of the cache, to check that it is doing its job."""
        info = self._cached.cache_info()  # type: ignore[attr-defined]
        return info.hits, info.misses, info.currsize
