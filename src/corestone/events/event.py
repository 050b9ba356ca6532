"""Domain events: the envelope every event travels in, its payload base, and its bytes.

A :class:`DomainEvent` says *what happened to which aggregate*: its id (a UUIDv7, so
ids sort by time), a ``type`` such as ``"task.created"``, the aggregate's type and id,
the workspace, when, who, the request's correlation id, the payload's schema version,
and the payload itself (a JSON object). Payloads are declared as :class:`EventPayload`
models (pydantic), one per event type, and registered in an
:class:`~corestone.events.EventRegistry`, which checks them and upcasts old versions.

:meth:`DomainEvent.to_json` / :meth:`DomainEvent.from_json` are the one wire format
(orjson): decoding the bytes of an event gives back an equal event, field for field,
microseconds and zone of ``occurred_at`` included. Decoding refuses, with an error that
names the field, anything that is not exactly an event: an unknown or missing field, a
wrong type, an over-long string, or more than :data:`MAX_EVENT_BYTES` bytes.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, ConfigDict

from corestone import context
from corestone.errors import InvalidInputError, PayloadTooLargeError
from corestone.events._uuid7 import uuid7

__all__ = ["FIELD_LIMITS", "MAX_EVENT_BYTES", "DomainEvent", "EventPayload"]

MAX_EVENT_BYTES = 256 * 1024
"""The largest event, serialised, that is recorded or accepted: 256 KiB.

Events announce changes; a payload that needs more should carry a reference to the
data, not the data (brokers cap messages too: NATS at 1 MiB by default).
"""

FIELD_LIMITS: Mapping[str, int] = {
    "type": 200,
    "aggregate_type": 100,
    "aggregate_id": 200,
    "workspace_id": 64,
    "actor": 200,
    "correlation_id": 128,
}
"""The longest value of each string field (the outbox's column widths)."""

_FIELDS = (
    "id", "type", "aggregate_type", "aggregate_id", "workspace_id", "occurred_at", "actor",
    "correlation_id", "schema_version", "payload",
)  # fmt: skip
_OPTIONAL = frozenset({"workspace_id", "actor", "correlation_id"})


class EventPayload(BaseModel):
    """The payload of one event type: subclass it, name the type, and register it.

    ::

        class TaskCreated(EventPayload):
            event_type: ClassVar[str] = "task.created"
            schema_version: ClassVar[int] = 1
            task_id: int
            title: str

    Payloads are frozen, refuse unknown fields and non-finite floats (JSON has no NaN),
    so what is recorded is exactly what a consumer reads back.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    event_type: ClassVar[str] = ""
    schema_version: ClassVar[int] = 1


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """One thing that happened, as recorded, published and consumed.

    Build one with :meth:`create` (it fills the id, the time and the context's actor,
    workspace and correlation id). ``payload`` is the JSON object of the payload model;
    treat it as read-only.
    """

    id: uuid.UUID
    type: str
    aggregate_type: str
    aggregate_id: str
    occurred_at: datetime
    schema_version: int
    payload: Mapping[str, Any] = field(default_factory=dict)
    workspace_id: str | None = None
    actor: str | None = None
    correlation_id: str | None = None

    @classmethod
    def create(
        cls,
        payload: EventPayload,
        *,
        aggregate_type: str,
        aggregate_id: str | int,
        workspace_id: str | int | None = None,
        actor: str | int | None = None,
        occurred_at: datetime | None = None,
    ) -> DomainEvent:
        """An event carrying ``payload``, about one aggregate, happening now.

        ``workspace_id`` and ``actor`` default to the ones bound to the context
        (:mod:`corestone.context`); the correlation id is always the context's.
        """
        if not payload.event_type:
            raise InvalidInputError(
                f"{type(payload).__name__} has no event_type", field="type", rule="required"
            )
        workspace = context.workspace_id() if workspace_id is None else str(workspace_id)
        who = context.actor_id() if actor is None else str(actor)
        return cls(
            id=uuid7(),
            type=payload.event_type,
            aggregate_type=aggregate_type,
            aggregate_id=str(aggregate_id),
            occurred_at=occurred_at or datetime.now(UTC),
            schema_version=payload.schema_version,
            payload=payload.model_dump(mode="json"),
            workspace_id=workspace,
            actor=who,
            correlation_id=context.correlation_id(),
        )

    def check_fields(self) -> None:
        """Raise :class:`InvalidInputError` for a string field that is empty, too long
        (:data:`FIELD_LIMITS`) or holds a NUL (PostgreSQL text refuses it), or a bad version."""
        for name, limit in FIELD_LIMITS.items():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            if not isinstance(value, str) or not value or len(value) > limit or "\x00" in value:
                raise _bad(name, f"a string of 1 to {limit} characters without NUL", "string")
        if type(self.schema_version) is not int or not 1 <= self.schema_version <= 1_000_000:
            raise _bad("schema_version", "an integer from 1 to 1000000", "range")

    @property
    def stream_key(self) -> str:
        """``aggregate_type:aggregate_id``: the unit events are kept in order within."""
        return f"{self.aggregate_type}:{self.aggregate_id}"

    def to_json(self) -> bytes:
        """The event as orjson bytes (the outbox's and every broker's format)."""
        return orjson.dumps(
            {
                "id": str(self.id),
                "type": self.type,
                "aggregate_type": self.aggregate_type,
                "aggregate_id": self.aggregate_id,
                "workspace_id": self.workspace_id,
                "occurred_at": self.occurred_at.astimezone(UTC).isoformat(),
                "actor": self.actor,
                "correlation_id": self.correlation_id,
                "schema_version": self.schema_version,
                "payload": self.payload,
            }
        )

    @classmethod
    def from_json(cls, data: bytes | str, *, max_bytes: int = MAX_EVENT_BYTES) -> DomainEvent:
        """The event ``data`` encodes; :class:`InvalidInputError` naming the field if it is not one.

        Over ``max_bytes`` it is refused before parsing
        (:class:`~corestone.errors.PayloadTooLargeError`).
        """
        size = len(data.encode() if isinstance(data, str) else data)
        if size > max_bytes:
            raise PayloadTooLargeError(max_bytes, what="event", field="event")
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as error:
            raise InvalidInputError(
                f"event: not JSON ({str(error)[:120]})", field="event", rule="json"
            ) from error
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: object) -> DomainEvent:
        """The event a decoded JSON object describes (see :meth:`from_json`)."""
        if not isinstance(raw, dict):
            raise InvalidInputError("event: must be a JSON object", field="event", rule="object")
        unknown = sorted(set(raw) - set(_FIELDS))
        if unknown:
            raise InvalidInputError(
                f"event: unknown field {unknown[0][:60]!r}", field=unknown[0][:60], rule="unknown"
            )
        values: dict[str, Any] = {}
        for name in FIELD_LIMITS:
            values[name] = _string(raw, name, optional=name in _OPTIONAL)
        values["id"] = _uuid(raw)
        values["occurred_at"] = _timestamp(raw)
        version = raw.get("schema_version")
        if type(version) is not int or not 1 <= version <= 1_000_000:
            raise _bad("schema_version", "an integer from 1 to 1000000", "range")
        values["schema_version"] = version
        payload = raw.get("payload")
        if not isinstance(payload, dict):
            raise _bad("payload", "a JSON object", "object")
        values["payload"] = payload
        return cls(**values)


def _bad(name: str, expected: str, rule: str) -> InvalidInputError:
    return InvalidInputError(f"event.{name}: must be {expected}", field=name, rule=rule)


def _string(raw: dict[str, Any], name: str, *, optional: bool) -> str | None:
    value = raw.get(name)
    if value is None and optional:
        return None
    limit = FIELD_LIMITS[name]
    if not isinstance(value, str) or not value or len(value) > limit or "\x00" in value:
        what = f"a string of 1 to {limit} characters" + (" or null" if optional else "")
        raise _bad(name, what, "string")
    return value


def _uuid(raw: dict[str, Any]) -> uuid.UUID:
    value = raw.get("id")
    try:
        parsed = uuid.UUID(value) if isinstance(value, str) and len(value) == 36 else None
    except ValueError:
        parsed = None
    if parsed is None or str(parsed) != value:
        raise _bad("id", "a UUID in its canonical form", "uuid")
    return parsed


def _timestamp(raw: dict[str, Any]) -> datetime:
    value = raw.get("occurred_at")
    try:
        parsed = (
            datetime.fromisoformat(value) if isinstance(value, str) and len(value) <= 40 else None
        )
    except ValueError:
        parsed = None
    if parsed is None or parsed.utcoffset() is None:
        raise _bad("occurred_at", "an ISO 8601 time with its UTC offset", "datetime")
    return parsed.astimezone(UTC)
