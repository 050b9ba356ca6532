"""taskboard's notifications: which events concern whom, and what they tell them.

The consumer group :data:`NOTIFY_GROUP` turns events into notifications
(corestone's :class:`~corestone.push.Notifier`), in the consumer's transaction, whose
inbox row makes each event handled once per group:

| event | who | kind |
| --- | --- | --- |
| ``task.assigned`` | the new assignee | ``task.assigned`` |
| ``task.updated`` | the task's assignee | ``task.changed`` |
| ``task.deleted`` | the task's assignee | ``task.deleted`` |
| ``member.added`` | the added user | ``workspace.member_added`` |

The actor is never notified of their own action, and nobody is notified about a
workspace they are not a member of (any more). An update that changed the assignee
notifies the new one by ``task.assigned`` only (not ``task.changed`` as well).

Each handler reads what it says (the task's title, names) in that transaction, scoped
to the event's workspace: a task of another tenant is not found there, so an event is
never told as another workspace's. Titles are plain text in the feed and the push
payload (the page renders them as text), and merge data in email templates.

An event older than :data:`MAX_AGE` when it is handled makes no notification: news of
something a day past is noise, and a new consumer group (this one, on its first
deploy) starts at the beginning of the broker's retained stream, whose old
assignments were mailed already by the consumer that used to send them.

Email: ``task.assigned`` carries the assignment note (its own template); the other kinds
a short generic one, sent only to those who turned email on for that kind. Each note's
unsubscribe link turns off that kind's email for its recipient.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

from corestone.db import Transaction
from corestone.email.message import EmailMessage
from corestone.events import DomainEvent
from corestone.events.consumer import ConsumerHandler
from corestone.observability import get_logger
from corestone.push import Channels, Notice, Notifier
from corestone.push.notifier import EmailBuilder
from taskboard.domain.models import Task
from taskboard.events import REGISTRY, MemberAdded, TaskAssigned, TaskDeleted, TaskUpdated
from taskboard.services.notifications import Notifier as Mail
from taskboard.services.notifications import Recipient, one_line
from taskboard.services.repositories import (
    MembershipRepository,
    TaskRepository,
    UserRepository,
    WorkspaceRepository,
)

__all__ = ["KINDS", "MAX_AGE", "NOTIFY_GROUP", "notify_handlers", "task_url"]

MAX_AGE: Final = timedelta(hours=24)
"""Events older than this when handled notify no one (see the module doc)."""

log = get_logger(__name__)

NOTIFY_GROUP: Final = "taskboard-notify"
"""The consumer group that turns events into notifications."""

KINDS: Final = {
    "task.assigned": Channels(in_app=True, email=True, push=True),
    "task.changed": Channels(in_app=True, email=False, push=True),
    "task.deleted": Channels(in_app=True, email=False, push=True),
    "workspace.member_added": Channels(in_app=True, email=False, push=True),
}
"""Every notification kind and its default channels (a user's preferences override them)."""


def task_url(workspace_id: int, task_id: int | None = None) -> str:
    """Where the page shows a workspace (and a task in it): the push payload's ``url``."""
    url = f"/?workspace={workspace_id}"
    return url if task_id is None else f"{url}&task={task_id}"


def notify_handlers(
    notifier: Notifier,
    mail: Mail,
    *,
    max_age: timedelta = MAX_AGE,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, ConsumerHandler]:
    """The :data:`NOTIFY_GROUP` consumer's handlers (``now``: the clock ages are read by)."""
    on = _NotifyOnEvents(notifier, mail, max_age, now)
    return {
        TaskAssigned.event_type: on.assigned,
        TaskUpdated.event_type: on.updated,
        TaskDeleted.event_type: on.deleted,
        MemberAdded.event_type: on.member_added,
    }


def _user_id(actor: str | None) -> int | None:
    """The user id an event's actor names (taskboard records user ids), else None."""
    if actor is None or not (actor.isascii() and actor.isdigit()) or len(actor) > 18:
        return None
    return int(actor)


class _NotifyOnEvents:
    def __init__(
        self, notifier: Notifier, mail: Mail, max_age: timedelta, now: Callable[[], datetime]
    ) -> None:
        self.notifier = notifier
        self.mail = mail
        self.max_age = max_age
        self.now = now

    async def assigned(self, event: DomainEvent, tx: Transaction) -> None:
        payload = REGISTRY.payload(event)
        assert isinstance(payload, TaskAssigned)
        task = await self._task(event, tx, payload.task_id)
        if task is None or payload.assignee_id is None:
            return
        title = one_line(payload.title)  # the title it was assigned under
        await self._tell(
            event,
            tx,
            payload.assignee_id,
            "task.assigned",
            task,
            lambda actor, ws: (
                f"Assigned to you: {title}",
                f"{actor} assigned you “{title}” in {ws}",
            ),
            assigned_title=payload.title,
        )

    async def updated(self, event: DomainEvent, tx: Transaction) -> None:
        payload = REGISTRY.payload(event)
        assert isinstance(payload, TaskUpdated)
        if payload.reassigned:
            return  # the new assignee hears of it by task.assigned
        task = await self._task(event, tx, payload.task_id)
        if task is None:
            return
        # An event recorded before the field existed: the task's assignee now.
        set_in_event = "assignee_id" in payload.model_fields_set
        assignee = payload.assignee_id if set_in_event else task.assignee_id
        title = one_line(task.title)
        changed = ", ".join(f.replace("_id", "").replace("_", " ") for f in payload.fields)
        await self._tell(
            event,
            tx,
            assignee,
            "task.changed",
            task,
            lambda actor, ws: (
                f"Changed: {title}",
                f"{actor} changed the {changed} of “{title}” in {ws}",
            ),
        )

    async def deleted(self, event: DomainEvent, tx: Transaction) -> None:
        payload = REGISTRY.payload(event)
        assert isinstance(payload, TaskDeleted)
        task = await self._task(event, tx, payload.task_id)
        if task is None:
            return
        set_in_event = "assignee_id" in payload.model_fields_set
        assignee = payload.assignee_id if set_in_event else task.assignee_id
        title = one_line(task.title)
        await self._tell(
            event,
            tx,
            assignee,
            "task.deleted",
            task,
            lambda actor, ws: (f"Deleted: {title}", f"{actor} deleted “{title}” in {ws}"),
        )

    async def member_added(self, event: DomainEvent, tx: Transaction) -> None:
        payload = REGISTRY.payload(event)
        assert isinstance(payload, MemberAdded)
        if event.workspace_id != str(payload.workspace_id):
            return  # not this workspace's event
        role = one_line(payload.role, 20)
        await self._tell(
            event,
            tx,
            payload.user_id,
            "workspace.member_added",
            None,
            lambda actor, ws: (f"Added to {ws}", f"{actor} added you to {ws} as {role}"),
            workspace_id=payload.workspace_id,
        )

    async def _task(self, event: DomainEvent, tx: Transaction, task_id: int) -> Task | None:
        """The event's task, in the event's workspace (deleted ones too), else None."""
        ws = event.workspace_id
        if ws is None or not (ws.isascii() and ws.isdigit()) or len(ws) > 18:
            return None
        tasks = TaskRepository(tx, workspace=int(ws))
        return await tasks.with_deleted().find(task_id)

    async def _tell(
        self,
        event: DomainEvent,
        tx: Transaction,
        user_id: int | None,
        kind: str,
        task: Task | None,
        words: Callable[[str, str], tuple[str, str]],
        *,
        workspace_id: int | None = None,
        assigned_title: str | None = None,
    ) -> None:
        """Notify ``user_id`` unless it is nobody, the actor, or no member of the workspace.

        ``words(actor name, workspace name)`` gives the title and the body.
        """
        by = _user_id(event.actor)
        if user_id is None or user_id == by:
            return
        if self.now() - event.occurred_at > self.max_age:
            log.info("event too old to notify", event_id=str(event.id), type=event.type)
            return
        ws = task.workspace_id if task is not None else workspace_id
        assert ws is not None
        if not await MembershipRepository(tx, workspace=ws).is_member(user_id):
            return  # left the workspace since
        users = UserRepository(tx)
        person = await users.find(user_id)
        workspace = await WorkspaceRepository(tx).find(ws)
        if person is None or workspace is None:
            return
        actor = await users.find(by) if by is not None else None
        actor_name = one_line(actor.name, 60) if actor is not None else "Someone"
        title, body = words(actor_name, one_line(workspace.name))
        task_id = task.id if task is not None else None
        notice = Notice(
            user_id=user_id,
            kind=kind,
            event_id=str(event.id),
            title=title,
            body=body,
            workspace_id=ws,
            data={"task_id": task_id, "url": task_url(ws, task_id)},
        )
        recipient = Recipient(person.id, person.name, person.email)
        email = self._email(event, notice, recipient, task_id)
        if assigned_title is not None and task_id is not None:
            email = self._assigned_email(
                event, recipient, workspace.name, actor_name, task_id, assigned_title
            )
        await self.notifier.notify(tx, notice, email=email)

    def _email(
        self, event: DomainEvent, notice: Notice, recipient: Recipient, task_id: int | None
    ) -> EmailBuilder:
        async def build() -> EmailMessage:
            return self.mail.notice_message(
                kind=notice.kind,
                subject=notice.title,
                text=notice.body,
                recipient=recipient,
                task_id=task_id,
                correlation_id=event.correlation_id,
            )

        return build

    def _assigned_email(
        self,
        event: DomainEvent,
        recipient: Recipient,
        workspace: str,
        actor: str,
        task_id: int,
        title: str,
    ) -> EmailBuilder:
        async def build() -> EmailMessage:
            return self.mail.assigned_message(
                workspace=workspace,
                task_id=task_id,
                title=title,
                assignee=recipient,
                actor=actor,
                correlation_id=event.correlation_id,
            )

        return build
