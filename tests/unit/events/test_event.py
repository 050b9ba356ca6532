"""Events: UUIDv7 ids in order, an exact byte round trip, a registry that upcasts and refuses."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from corestone import context
from corestone.errors import InvalidInputError, PayloadTooLargeError, UnknownEventTypeError
from corestone.events import MAX_EVENT_BYTES, DomainEvent, EventPayload, EventRegistry
from corestone.events._uuid7 import Uuid7Generator, uuid7, uuid7_time_ms


class TaskCreated(EventPayload):
    event_type: ClassVar[str] = "task.created"
    schema_version: ClassVar[int] = 3
    title: str
    priority: str
    tags: tuple[str, ...] = ()


def _v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "priority": "normal"}


def _v2_to_v3(payload: dict[str, Any]) -> dict[str, Any]:
    return {"title": payload["name"], "priority": payload["priority"]}


def _registry() -> EventRegistry:
    registry = EventRegistry()
    registry.register(TaskCreated, upcasters={1: _v1_to_v2, 2: _v2_to_v3})
    return registry


def _event(**payload: Any) -> DomainEvent:
    return DomainEvent.create(
        TaskCreated(title="Write", priority="high", **payload),
        aggregate_type="task",
        aggregate_id=7,
        workspace_id=3,
    )


def test_uuid7_ids_increase_within_one_millisecond_and_carry_the_time() -> None:
    """Ids made in one millisecond still sort in the order they were made; the time is kept."""
    make = Uuid7Generator()
    ids = [make(now_ms=1_700_000_000_000) for _ in range(5000)]

    assert ids == sorted(ids)
    assert len(set(ids)) == 5000
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert uuid7_time_ms(ids[0]) == 1_700_000_000_000


def test_create_takes_the_context_and_the_payload_type() -> None:
    """create() fills type, version, correlation id, actor and workspace from the context."""
    with context.bind(correlation="req-1", actor=42, workspace=9):
        event = DomainEvent.create(
            TaskCreated(title="t", priority="low"), aggregate_type="task", aggregate_id=1
        )

    assert (event.type, event.schema_version) == ("task.created", 3)
    assert (event.correlation_id, event.actor, event.workspace_id) == ("req-1", "42", "9")
    assert event.payload == {"title": "t", "priority": "low", "tags": []}
    assert event.stream_key == "task:1"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@given(
    payload=st.dictionaries(st.text(max_size=10), json_values, max_size=6),
    micros=st.integers(0, 999_999),
    offset=st.integers(-12, 12),
    actor=st.none() | st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=50),
)
def test_serialisation_round_trips_exactly(
    payload: dict[str, Any], micros: int, offset: int, actor: str | None
) -> None:
    """Decoding an event's bytes gives an equal event, microseconds and all."""
    when = datetime(2024, 5, 6, 7, 8, 9, micros, tzinfo=timezone(timedelta(hours=offset)))
    event = DomainEvent(
        id=uuid7(), type="x.y", aggregate_type="a", aggregate_id="1", occurred_at=when,
        schema_version=1, payload=payload, actor=actor, correlation_id="c", workspace_id=None,
    )  # fmt: skip

    back = DomainEvent.from_json(event.to_json())

    assert back == event
    assert back.to_json() == event.to_json()
    assert back.occurred_at.tzinfo == UTC


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(id="not-a-uuid"), "id"),
        (lambda d: d.update(id=d["id"].upper()), "id"),
        (lambda d: d.update(type=""), "type"),
        (lambda d: d.update(type="t" * 201), "type"),
        (lambda d: d.update(occurred_at="2024-01-01T00:00:00"), "occurred_at"),
        (lambda d: d.update(schema_version=True), "schema_version"),
        (lambda d: d.update(schema_version=0), "schema_version"),
        (lambda d: d.update(payload=[1, 2]), "payload"),
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d.pop("aggregate_id"), "aggregate_id"),
        (lambda d: d.update(actor=5), "actor"),
    ],
)
def test_decoding_names_the_field_that_is_wrong(mutate: Any, field: str) -> None:
    """Bytes that are not exactly an event are refused with the field they break."""
    raw = orjson.loads(_event().to_json())
    mutate(raw)

    with pytest.raises(InvalidInputError) as caught:
        DomainEvent.from_json(orjson.dumps(raw))

    assert caught.value.field == field


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b"\xff\xfe", b"null", b'"x"'])
def test_garbage_is_an_invalid_input_error(data: bytes) -> None:
    """Bytes that are not a JSON object are refused, not a crash."""
    with pytest.raises(InvalidInputError):
        DomainEvent.from_json(data)


def test_an_oversized_event_is_refused_before_parsing() -> None:
    """More than the limit is refused with the limit, whether recorded or received."""
    registry = _registry()
    big = _event(tags=["x" * 1000] * (MAX_EVENT_BYTES // 1000))

    with pytest.raises(PayloadTooLargeError) as recorded:
        registry.check(big)
    with pytest.raises(PayloadTooLargeError):
        registry.decode(big.to_json())

    assert recorded.value.limit_bytes == MAX_EVENT_BYTES
    assert "event exceeds" in recorded.value.message


def test_an_unknown_type_is_a_clear_error() -> None:
    """A type nobody registered is UnknownEventTypeError naming it."""
    event = DomainEvent(
        id=uuid7(), type="task.exploded", aggregate_type="task", aggregate_id="1",
        occurred_at=datetime.now(UTC), schema_version=1,
    )  # fmt: skip

    with pytest.raises(UnknownEventTypeError) as caught:
        _registry().check(event)
    with pytest.raises(UnknownEventTypeError):
        _registry().decode(event.to_json())

    assert caught.value.event_type == "task.exploded"
    assert caught.value.code == "unknown_event_type"


def test_a_payload_that_does_not_match_its_model_is_refused() -> None:
    """A wrong field type, an unknown field or a coerced value is an error naming the field."""
    registry = _registry()
    good = _event()
    wrong = [
        {**good.payload, "priority": 5},
        {**good.payload, "surprise": 1},
        {"title": "t"},
    ]
    fields = []
    for payload in wrong:
        event = DomainEvent(**{**_fields(good), "payload": payload})
        with pytest.raises(InvalidInputError) as caught:
            registry.check(event)
        fields.append(caught.value.field)

    assert fields == ["payload.priority", "payload.surprise", "payload.priority"]


def _fields(event: DomainEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in DomainEvent.__dataclass_fields__}


def test_old_versions_are_upcast_through_every_step() -> None:
    """A version-1 event reads as the current model, through each upcaster in turn."""
    registry = _registry()
    v1 = DomainEvent(**{**_fields(_event()), "schema_version": 1, "payload": {"name": "Old"}})

    decoded = registry.decode(v1.to_json())

    assert decoded.schema_version == 3
    assert registry.payload(decoded) == TaskCreated(title="Old", priority="normal")
    assert registry.payload(v1) == TaskCreated(title="Old", priority="normal")


def test_a_version_newer_than_the_code_is_unknown() -> None:
    """An event from newer code is refused as unknown rather than misread."""
    newer = DomainEvent(**{**_fields(_event()), "schema_version": 4})

    with pytest.raises(UnknownEventTypeError, match="newer"):
        _registry().decode(newer.to_json())


def test_recording_an_old_version_is_refused() -> None:
    """Only the current version is recorded: old shapes exist only in stored events."""
    old = DomainEvent(**{**_fields(_event()), "schema_version": 2})

    with pytest.raises(InvalidInputError) as caught:
        _registry().check(old)

    assert caught.value.field == "schema_version"


def test_a_failing_upcaster_is_an_invalid_input_error() -> None:
    """An upcaster that breaks on a stored payload says which step failed."""
    v2 = DomainEvent(**{**_fields(_event()), "schema_version": 2, "payload": {}})

    with pytest.raises(InvalidInputError, match="from version 2"):
        _registry().decode(v2.to_json())


def test_registration_needs_every_upcaster_and_one_model_per_type() -> None:
    """A gap in the upcasters, or a second model for a name, is refused at registration."""
    registry = EventRegistry()

    with pytest.raises(ValueError, match="upcasters"):
        registry.register(TaskCreated, upcasters={1: _v1_to_v2})

    class Other(EventPayload):
        event_type: ClassVar[str] = "task.created"

    registry.register(TaskCreated, upcasters={1: _v1_to_v2, 2: _v2_to_v3})
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Other)


@pytest.mark.parametrize(
    ("field", "value"),
    [("aggregate_id", "x" * 201), ("aggregate_id", "a\x00b"), ("actor", ""), ("type", "")],
)
def test_recording_refuses_fields_the_outbox_cannot_store(field: str, value: str) -> None:
    """A NUL, an empty or over-long string is refused before it reaches a database."""
    event = DomainEvent(**{**_fields(_event()), field: value})

    with pytest.raises(InvalidInputError) as caught:
        _registry().check(event)

    assert caught.value.field == field
