"""taskboard's domain events: what each one says, and the bus its writes record them with.

Every event belongs to the workspace it happened in (the envelope's ``workspace_id``, set
from the write, never from whatever the context holds) and carries a small payload: ids,
the names of the fields a change wrote, the version it produced (and, in
``task.assigned``, the title). No names, email addresses or descriptions: a consumer that
needs them reads the current row, in its own transaction, scoped to the event's workspace.

| type | aggregate | recorded by |
| --- | --- | --- |
| ``workspace.created`` | ``workspace`` | the last step of the ``create_workspace`` saga |
| ``member.added`` | ``workspace`` | ``WorkspaceService.add_member`` |
| ``member.removed`` | ``workspace`` | ``WorkspaceService.remove_member`` |
| ``task.created`` | ``task`` | ``TaskService.create``, ``create_many`` |
| ``task.updated`` | ``task`` | ``TaskService.update`` |
| ``task.assigned`` | ``task`` | a create with an assignee, an update that changes it |
| ``task.deleted`` / ``task.restored`` | ``task`` | ``TaskService.delete`` / ``restore`` |

Each is recorded with the bus in the transaction of the change it announces: a write
that rolls back records nothing. All go to one topic, :data:`TOPIC`.
"""

from __future__ import annotations

import weakref
from typing import ClassVar, Final

from corestone.db import Database, Transaction
from corestone.events import DomainEvent, EventBus, EventPayload, EventRegistry
from taskboard.domain.models import Task

__all__ = [
    "REGISTRY",
    "TOPIC",
    "MemberAdded",
    "MemberRemoved",
    "TaskAssigned",
    "TaskCreated",
    "TaskDeleted",
    "TaskRestored",
    "TaskUpdated",
    "WorkspaceCreated",
    "bus_for",
    "record_task_events",
    "register_bus",
    "task_event",
    "topic_for",
]

TOPIC: Final = "taskboard.events"
"""The topic (stream, subject, exchange) every taskboard event is published to."""


class WorkspaceCreated(EventPayload):
    """A workspace exists, with its owner: its saga's last step committed."""

    event_type: ClassVar[str] = "workspace.created"
    workspace_id: int
    owner_id: int


class MemberAdded(EventPayload):
    """A user joined a workspace (the owner's own membership is in ``workspace.created``)."""

    event_type: ClassVar[str] = "member.added"
    workspace_id: int
    user_id: int
    role: str


class MemberRemoved(EventPayload):
    """A user left a workspace (an owner removed them): their live streams of it end."""

    event_type: ClassVar[str] = "member.removed"
    workspace_id: int
    user_id: int
    role: str


class TaskCreated(EventPayload):
    event_type: ClassVar[str] = "task.created"
    task_id: int
    version: int


class TaskUpdated(EventPayload):
    """A task changed; ``fields`` are the ones the update wrote, sorted.

    ``assignee_id`` (the assignee after the change) and ``reassigned`` (the assignee
    changed: a ``task.assigned`` follows) were added for the notifications consumer; an
    event recorded before them parses with the defaults (then the consumer reads the
    task's current assignee).
    """

    event_type: ClassVar[str] = "task.updated"
    task_id: int
    version: int
    fields: tuple[str, ...]
    assignee_id: int | None = None
    reassigned: bool = False


class TaskAssigned(EventPayload):
    """A task's assignee changed (``assignee_id`` None: it was unassigned).

    It carries the title the task had then, the one payload field that is not an id: the
    assignment note names the task as it was assigned, not as it is by the time the mail
    consumer gets to it (a rename in between would otherwise change the note).
    """

    event_type: ClassVar[str] = "task.assigned"
    task_id: int
    version: int
    title: str
    assignee_id: int | None
    previous_assignee_id: int | None


class TaskDeleted(EventPayload):
    """A task was (soft) deleted; ``assignee_id`` its assignee then (optional, added later)."""

    event_type: ClassVar[str] = "task.deleted"
    task_id: int
    version: int
    assignee_id: int | None = None


class TaskRestored(EventPayload):
    event_type: ClassVar[str] = "task.restored"
    task_id: int
    version: int


REGISTRY = EventRegistry()
"""Every taskboard event type (all at schema version 1)."""
for _payload in (
    WorkspaceCreated,
    MemberAdded,
    TaskCreated,
    TaskUpdated,
    TaskAssigned,
    TaskDeleted,
    TaskRestored,
    MemberRemoved,
):
    REGISTRY.register(_payload)


def topic_for(_event_type: str) -> str:
    """The topic of every taskboard event: :data:`TOPIC`."""
    return TOPIC


def task_event(payload: EventPayload, task: Task, actor_id: int) -> DomainEvent:
    """``payload`` as an event of ``task``, in its workspace, by ``actor_id``."""
    return DomainEvent.create(
        payload,
        aggregate_type="task",
        aggregate_id=task.id,
        workspace_id=task.workspace_id,
        actor=actor_id,
    )


async def record_task_events(
    database: Database, tx: Transaction, actor_id: int, *changes: tuple[EventPayload, Task]
) -> None:
    """Record each ``(payload, task)`` in ``tx``, in the order given."""
    if changes:
        events = [task_event(payload, task, actor_id) for payload, task in changes]
        await bus_for(database).record(*events, transaction=tx)


_BUSES: weakref.WeakKeyDictionary[Database, EventBus] = weakref.WeakKeyDictionary()


def register_bus(database: Database, bus: EventBus) -> None:
    """Make ``bus`` the one taskboard's writes on ``database`` record with (done by
    ``setup_events``)."""
    _BUSES[database] = bus


def bus_for(database: Database) -> EventBus:
    """The bus registered for ``database``, else one that only writes the outbox.

    A process that did not wire events (``corestone saga recover`` finishing a saga)
    still records them: the outbox keeps them until a relay elsewhere publishes them.
    """
    found = _BUSES.get(database)
    if found is None:
        found = EventBus(database, REGISTRY)
        _BUSES[database] = found
    return found
