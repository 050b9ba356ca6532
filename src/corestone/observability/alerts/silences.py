"""Silences: label matchers over a time window; a silenced alert is recorded, never sent.

A silence holds one to :data:`MAX_MATCHERS` matchers, Alertmanager's four kinds:
``name=value``, ``name!=value``, ``name=~regex``, ``name!~regex``. Regular expressions are
anchored at both ends (Prometheus's rule), refused if they could backtrack without bound
(:mod:`corestone.observability._regex_guard`), and an alert matches a silence when every
matcher holds; a label the alert lacks has the value ``""``. At least one matcher must
not match the empty string, so no silence can mute everything by accident.

At most ``max_silences`` (1000) may be in force or pending at once: a create beyond
that is ConflictError. Every silence expires: ``ends_at`` is required, after
``starts_at`` and at most ``max_duration`` from now. Expiring one early sets its
``ends_at`` to now, so the row stays as a record of who silenced what. Input breaking
a rule is InvalidInputError naming the field (``matchers[1].value``, ``ends_at``),
which the API turns into a 422.

The store works in a session the caller owns.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from corestone._extras import requires_extra

with requires_extra(__name__, "postgres", "sqlite"):
    from sqlalchemy import Table, func, select, update
    from sqlalchemy.ext.asyncio import AsyncSession

from corestone.errors import ConflictError, InvalidInputError, NotFoundError
from corestone.observability._regex_guard import unsafe_regex
from corestone.observability.alerts.tables import AlertSilenceRecord

__all__ = [
    "CREATED_BY_MAX",
    "MAX_MATCHERS",
    "Matcher",
    "MatcherOp",
    "Silence",
    "SilenceStore",
    "matchers_of",
    "parse_matcher",
    "silenced",
]

MAX_MATCHERS: Final = 20
_VALUE_MAX: Final = 1024
_REGEX_MAX: Final = 256
CREATED_BY_MAX: Final = 200
"""The longest author text a silence stores (its column's width)."""
_COMMENT_MAX: Final = 1000
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TEXT = re.compile(r"^(?P<name>[^=!~]+?)\s*(?P<op>=~|!~|!=|=)\s*(?P<value>.*)$", re.DOTALL)
_TABLE: Table = AlertSilenceRecord.__table__  # type: ignore[assignment]

MatcherOp = Literal["=", "!=", "=~", "!~"]
_OPS: Final[tuple[MatcherOp, ...]] = ("=", "!=", "=~", "!~")


def _invalid(field: str, rule: str, message: str) -> InvalidInputError:
    return InvalidInputError(f"{field}: {message}", field=field, rule=rule)


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label condition; build it with :meth:`build` (validated) or :func:`parse_matcher`."""

    name: str
    op: MatcherOp
    value: str

    @classmethod
    def build(cls, name: object, op: object, value: object, *, field: str = "matcher") -> Matcher:
        """A checked matcher; InvalidInputError names ``field.name``, ``.op`` or ``.value``."""
        if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name) or len(name) > 100:
            raise _invalid(f"{field}.name", "label_name", "must be a label name ([a-zA-Z_]\\w*)")
        if op not in _OPS:
            raise _invalid(f"{field}.op", "one_of", "must be one of =, !=, =~, !~")
        if not isinstance(value, str) or len(value) > _VALUE_MAX or "\x00" in value:
            raise _invalid(f"{field}.value", "max_length", f"must be text of <= {_VALUE_MAX} chars")
        matcher = cls(name, op, value)
        if matcher.is_regex:
            if len(value) > _REGEX_MAX:
                raise _invalid(f"{field}.value", "max_length", f"a regex is <= {_REGEX_MAX} chars")
            try:
                re.compile(value)
            except re.error as error:
                message = f"is not a valid regex: {error}"
                raise _invalid(f"{field}.value", "regex", message) from None
            unsafe = unsafe_regex(value)
            if unsafe is not None:
                raise _invalid(f"{field}.value", "regex", unsafe)
        return matcher

    @property
    def is_regex(self) -> bool:
        return self.op in ("=~", "!~")

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this condition (a missing label is ``""``)."""
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = _compiled(self.value).fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "op": self.op, "value": self.value}

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


_CACHE: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    found = _CACHE.get(pattern)
    if found is None:
        if len(_CACHE) > 1000:
            _CACHE.clear()
        found = _CACHE[pattern] = re.compile(pattern)
    return found


def parse_matcher(text: str, *, field: str = "matcher") -> Matcher:
    """``alertname=HighErrorRatio``, ``severity!~info|warning`` as a :class:`Matcher`."""
    found = _TEXT.match(text.strip())
    if found is None:
        raise _invalid(field, "syntax", "must look like name=value, name!=value, =~ or !~")
    return Matcher.build(found["name"].strip(), found["op"], found["value"], field=field)


def matchers_of(raw: object, *, field: str = "matchers") -> tuple[Matcher, ...]:
    """Matchers from JSON (``[{"name", "op", "value"}, …]``), checked, naming the bad field."""
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise _invalid(field, "type", "must be a list of {name, op, value}")
    if not 1 <= len(raw) <= MAX_MATCHERS:
        raise _invalid(field, "length", f"must hold 1 to {MAX_MATCHERS} matchers")
    matchers: list[Matcher] = []
    for i, item in enumerate(raw):
        where = f"{field}[{i}]"
        if isinstance(item, str):
            matchers.append(parse_matcher(item, field=where))
        elif isinstance(item, Mapping):
            matchers.append(
                Matcher.build(item.get("name"), item.get("op", "="), item.get("value"), field=where)
            )
        else:
            raise _invalid(where, "type", "must be {name, op, value} or 'name=value'")
    if all(m.matches({}) for m in matchers):
        raise _invalid(field, "matches_empty", "at least one matcher must not match empty labels")
    return tuple(matchers)


@dataclass(frozen=True, slots=True)
class Silence:
    """A stored silence; :meth:`active_at` says whether it applies at a moment."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    created_at: datetime

    def active_at(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(matcher.matches(labels) for matcher in self.matchers)

    def as_json(self, now: datetime) -> dict[str, Any]:
        state = "pending" if now < self.starts_at else "active" if now < self.ends_at else "expired"
        return {
            "id": self.id,
            "matchers": [m.as_json() for m in self.matchers],
            "starts_at": self.starts_at.isoformat(),
            "ends_at": self.ends_at.isoformat(),
            "created_by": self.created_by,
            "comment": self.comment,
            "created_at": self.created_at.isoformat(),
            "state": state,
        }


def _silence(row: Any) -> Silence:
    return Silence(
        id=row.id,
        matchers=tuple(Matcher(m["name"], m["op"], m["value"]) for m in row.matchers),
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        created_by=row.created_by,
        comment=row.comment,
        created_at=row.created_at,
    )


def _text(value: object, field: str, limit: int, *, required: bool) -> str:
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise _invalid(field, "max_length", f"must be text of <= {limit} characters")
    if required and not value.strip():
        raise _invalid(field, "required", "must not be empty")
    return value.strip()


class SilenceStore:
    """Create, list and expire silences (in the caller's session); ``max_duration`` caps them."""

    def __init__(
        self, *, max_duration: timedelta = timedelta(days=30), max_silences: int = 1000
    ) -> None:
        if max_silences < 1:
            raise ValueError("max_silences must be at least 1")
        self.max_duration = max_duration
        self.max_silences = max_silences

    async def create(
        self,
        session: AsyncSession,
        *,
        matchers: object,
        ends_at: datetime,
        created_by: str,
        comment: str = "",
        starts_at: datetime | None = None,
        now: datetime,
    ) -> Silence:
        """Store a checked silence; InvalidInputError names the first bad field."""
        checked = matchers_of(matchers)
        start = starts_at or now
        if start.tzinfo is None or ends_at.tzinfo is None:
            raise _invalid("ends_at", "timezone", "times must carry a timezone")
        if ends_at <= max(start, now):
            raise _invalid("ends_at", "after_start", "must be later than starts_at and now")
        if ends_at - now > self.max_duration:
            raise _invalid("ends_at", "max_duration", f"must be within {self.max_duration} of now")
        # Every silence not yet ended is matched against every alert at each evaluation:
        # without a cap, a loop of creates would make each evaluation as slow as it likes.
        in_force = select(func.count()).select_from(_TABLE).where(_TABLE.c.ends_at > now)
        if (await session.scalar(in_force) or 0) >= self.max_silences:
            raise ConflictError(
                f"{self.max_silences} silences are already in force: expire one first"
            )
        silence = Silence(
            id=str(uuid.uuid4()),
            matchers=checked,
            starts_at=start,
            ends_at=ends_at,
            created_by=_text(created_by, "created_by", CREATED_BY_MAX, required=True),
            comment=_text(comment, "comment", _COMMENT_MAX, required=False),
            created_at=now,
        )
        await session.execute(
            _TABLE.insert().values(
                id=silence.id,
                matchers=[m.as_json() for m in checked],
                starts_at=start,
                ends_at=ends_at,
                created_by=silence.created_by,
                comment=silence.comment,
                created_at=now,
            )
        )
        return silence

    async def get(self, session: AsyncSession, silence_id: str) -> Silence:
        row = (await session.execute(select(_TABLE).where(_TABLE.c.id == silence_id))).first()
        if row is None:
            raise NotFoundError("no such silence")
        return _silence(row)

    async def all(
        self,
        session: AsyncSession,
        *,
        now: datetime,
        include_expired: bool = False,
        limit: int = 200,
    ) -> list[Silence]:
        """Silences newest first: those not yet ended, or every one with ``include_expired``."""
        query = select(_TABLE).order_by(_TABLE.c.created_at.desc(), _TABLE.c.id).limit(limit)
        if not include_expired:
            query = query.where(_TABLE.c.ends_at > now)
        return [_silence(row) for row in await session.execute(query)]

    async def active(self, session: AsyncSession, *, now: datetime) -> list[Silence]:
        """The silences in force at ``now``."""
        query = select(_TABLE).where(_TABLE.c.starts_at <= now, _TABLE.c.ends_at > now)
        return [_silence(row) for row in await session.execute(query)]

    async def expire(self, session: AsyncSession, silence_id: str, *, now: datetime) -> Silence:
        """End ``silence_id`` now (NotFoundError if unknown); an ended one stays as it was."""
        silence = await self.get(session, silence_id)
        if silence.ends_at <= now:
            return silence
        start = min(silence.starts_at, now)
        await session.execute(
            update(_TABLE).where(_TABLE.c.id == silence_id).values(ends_at=now, starts_at=start)
        )
        return await self.get(session, silence_id)


def silenced(labels: Mapping[str, str], silences: Iterable[Silence]) -> bool:
    """Whether any of ``silences`` (already known active) mutes ``labels``."""
    return any(silence.matches(labels) for silence in silences)
