"""The registry of event types: each type's payload model, and upcasters from old versions.

A producer records events at the payload model's current ``schema_version``; consumers
may read events recorded by older code (still in the outbox, the broker, the dead
letters) at an older one. An *upcaster* turns a version-``n`` payload into a
version-``n+1`` payload; the registry chains them, then validates the result against
the current model::

    registry = EventRegistry()
    registry.register(TaskCreated, upcasters={1: lambda p: {**p, "priority": "normal"}})
    payload = registry.payload(event)            # a TaskCreated, whatever version came in

Errors are the caller's to map: :class:`~corestone.errors.UnknownEventTypeError` for a type
(or a version newer than the registered model) it does not know, and
:class:`~corestone.errors.InvalidInputError` naming the field for a payload that does not
match, or an event over :data:`~corestone.events.event.MAX_EVENT_BYTES`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import pydantic

from corestone.errors import InvalidInputError, PayloadTooLargeError, UnknownEventTypeError
from corestone.events.event import MAX_EVENT_BYTES, DomainEvent, EventPayload

__all__ = ["EventRegistry", "EventType", "Upcaster"]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns a payload of version ``n`` (the key it is registered under) into version ``n + 1``."""


@dataclass(frozen=True, slots=True)
class EventType:
    """One registered type: its payload model and its upcasters by source version."""

    name: str
    model: type[EventPayload]
    upcasters: Mapping[int, Upcaster]

    @property
    def version(self) -> int:
        return self.model.schema_version


class EventRegistry:
    """Event types by name. Register every type at start-up, before recording or consuming.

    ``max_event_bytes`` bounds an event serialised (recording refuses a larger one).
    """

    def __init__(self, *, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self._types: dict[str, EventType] = {}

    def register(
        self, model: type[EventPayload], *, upcasters: Mapping[int, Upcaster] | None = None
    ) -> EventType:
        """Register ``model`` under its ``event_type``; ``upcasters[n]`` lifts version n to n+1.

        Every version below the model's must have an upcaster (a gap would make some
        stored events unreadable); registering a name twice with another model is refused.
        """
        name, version = model.event_type, model.schema_version
        if not name or len(name) > 200:
            raise ValueError(f"{model.__name__}.event_type must be 1 to 200 characters")
        if version < 1:
            raise ValueError(f"{model.__name__}.schema_version must be at least 1")
        steps = dict(upcasters or {})
        missing = [v for v in range(1, version) if v not in steps]
        extra = [v for v in steps if not 1 <= v < version]
        if missing or extra:
            raise ValueError(
                f"{name}: upcasters are needed for versions {list(range(1, version))}, "
                f"got {sorted(steps)}"
            )
        known = self._types.get(name)
        if known is not None and known.model is not model:
            raise ValueError(f"event type {name!r} is already registered to {known.model}")
        entry = EventType(name, model, MappingProxyType(steps))
        self._types[name] = entry
        return entry

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[EventType]:
        return iter(self._types.values())

    def get(self, name: str) -> EventType:
        """The registered type ``name``, or :class:`UnknownEventTypeError`."""
        entry = self._types.get(name)
        if entry is None:
            raise UnknownEventTypeError(name)
        return entry

    def check(self, event: DomainEvent) -> bytes:
        """Check ``event`` is fit to record; return its bytes.

        Its fields must fit the outbox (:meth:`DomainEvent.check_fields`), its type must
        be registered, at the model's current version, with a payload
        the model accepts unchanged, and the whole no larger than the limit.
        """
        event.check_fields()
        entry = self.get(event.type)
        if event.schema_version != entry.version:
            raise InvalidInputError(
                f"{event.type}: recorded at schema version {event.schema_version}, "
                f"the model is at {entry.version}",
                field="schema_version",
                rule="current",
            )
        self._validate(entry, event.payload, exact=True)
        data = event.to_json()
        if len(data) > self.max_event_bytes:
            raise PayloadTooLargeError(self.max_event_bytes, what="event", field="payload")
        return data

    def upcast(self, event: DomainEvent) -> DomainEvent:
        """``event`` at its type's current schema version (itself, if it already is)."""
        entry = self.get(event.type)
        version = event.schema_version
        if version > entry.version:
            raise UnknownEventTypeError(
                event.type,
                f"{event.type}: schema version {version} is newer than this code's {entry.version}",
            )
        if version == entry.version:
            return event
        payload = dict(event.payload)
        for step in range(version, entry.version):
            try:
                payload = entry.upcasters[step](payload)
            except Exception as error:  # the stored payload (or the upcaster) is at fault
                raise InvalidInputError(
                    f"{event.type}: upcasting from version {step} failed: {error!r}"[:300],
                    field="payload",
                    rule="upcast",
                ) from error
        return dataclasses.replace(event, schema_version=entry.version, payload=payload)

    def payload(self, event: DomainEvent) -> EventPayload:
        """The typed payload of ``event``, upcast to the current version and validated."""
        current = self.upcast(event)
        return self._validate(self.get(current.type), current.payload)

    def decode(self, data: bytes | str) -> DomainEvent:
        """Bytes from a broker to an event at the current version, checked; errors name why."""
        event = self.upcast(DomainEvent.from_json(data, max_bytes=self.max_event_bytes))
        self._validate(self.get(event.type), event.payload)
        return event

    @staticmethod
    def _validate(
        entry: EventType, payload: Mapping[str, Any], *, exact: bool = False
    ) -> EventPayload:
        try:
            model = entry.model.model_validate(payload)
        except pydantic.ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "payload"
            raise InvalidInputError(
                f"{entry.name}: payload.{where}: {first['msg']}"[:300],
                field=f"payload.{where}"[:100],
                rule=str(first["type"]),
            ) from error
        if exact and model.model_dump(mode="json") != payload:
            # Accepted only after coercion ("1" for an int): what a consumer reads back
            # would differ from what was recorded.
            raise InvalidInputError(
                f"{entry.name}: payload is not in its model's JSON form",
                field="payload",
                rule="exact",
            )
        return model
