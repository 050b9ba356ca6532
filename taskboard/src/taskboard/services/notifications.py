"""taskboard's email: a welcome when a workspace is created, a note when a task is assigned.

Both are driven by domain events: the consumer group :data:`MAIL_GROUP` handles
``workspace.created`` and ``task.assigned`` (:func:`mail_handlers`) and queues the
message through corestone's email outbox in the consumer's transaction, the one that
also records the event in its inbox. So the mail is queued once per event however often
the broker delivers it (a second delivery finds the inbox row and does nothing), and
never for a change that rolled back (its event was never recorded). Each message
carries the request's correlation id in ``X-Correlation-Id`` (the event's) and an
idempotency key, so a handler run again outside the inbox (a replayed dead letter after
all) still queues one message.

User input (workspace names, task titles, user names) is merge *data* of sandboxed
templates, never template source: ``{{ 7*7 }}`` in a title arrives as those characters.
It is also kept to one line before it goes near a header (the subject, a display name),
so no title can add a header, whatever its characters.
"""

from __future__ import annotations

import os
import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from corestone.context import correlation_id as current_correlation_id
from corestone.db import Database, Transaction
from corestone.email.message import Address
from corestone.email.service import EmailService
from corestone.email.templates import EmailTemplates
from corestone.email.unsubscribe import UnsubscribeTokens, with_unsubscribe
from corestone.events import DomainEvent
from corestone.events.consumer import ConsumerHandler
from taskboard.events import REGISTRY, TaskAssigned, WorkspaceCreated
from taskboard.services.repositories import (
    MembershipRepository,
    TaskRepository,
    UserRepository,
    WorkspaceRepository,
)

__all__ = [
    "ASSIGNMENTS_LIST",
    "CORRELATION_HEADER",
    "MAIL_FROM_ENV",
    "MAIL_GROUP",
    "PUBLIC_URL_ENV",
    "UNSUBSCRIBE_PATH",
    "Notifier",
    "Recipient",
    "mail_handlers",
    "notifier_for",
    "one_line",
    "register_notifier",
]

CORRELATION_HEADER: Final = "X-Correlation-Id"
ASSIGNMENTS_LIST: Final = "task-assignments"
MAIL_FROM_ENV: Final = "TASKBOARD_MAIL_FROM"
PUBLIC_URL_ENV: Final = "TASKBOARD_PUBLIC_URL"
UNSUBSCRIBE_PATH: Final = "/email/unsubscribe"
MAIL_GROUP: Final = "taskboard-mail"
"""The consumer group that turns events into email (one inbox, one place in the broker)."""

_TEMPLATES: Final = {
    "welcome.subject.txt": "Welcome to {{ workspace }}",
    "welcome.html": (
        "<p>Hello {{ name }},</p><p>your workspace <b>{{ workspace }}</b> is ready. "
        "Invite your team and add the first tasks.</p>"
    ),
    "assigned.subject.txt": "Assigned to you: {{ title }}",
    "assigned.html": (
        "<p>Hello {{ name }},</p><p>{{ actor }} assigned you <b>{{ title }}</b> "
        "in {{ workspace }}.</p>"
    ),
}

_NOT_ONE_LINE = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")


def one_line(value: str, limit: int = 120) -> str:
    """``value`` on one line (control characters and line separators become a space), clipped."""
    text = _NOT_ONE_LINE.sub(" ", value).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class Recipient:
    id: int
    name: str
    email: str


class Notifier:
    """Builds taskboard's messages and queues them with the caller's transaction."""

    def __init__(
        self,
        email: EmailService,
        *,
        sender: str = "taskboard@example.com",
        public_url: str = "http://localhost:8000",
        tokens: UnsubscribeTokens | None = None,
    ) -> None:
        self.email = email
        self.sender = sender
        self.public_url = public_url.rstrip("/")
        self.tokens = tokens
        self.templates = EmailTemplates(strings=_TEMPLATES)

    @classmethod
    def from_environment(
        cls, email: EmailService, *, signing_key: bytes, environ: Mapping[str, str] = os.environ
    ) -> Notifier:
        """The notifier as ``TASKBOARD_MAIL_FROM`` and ``TASKBOARD_PUBLIC_URL`` configure it."""
        return cls(
            email,
            sender=environ.get(MAIL_FROM_ENV) or "taskboard@example.com",
            public_url=environ.get(PUBLIC_URL_ENV) or "http://localhost:8000",
            tokens=UnsubscribeTokens(signing_key),
        )

    async def welcome(
        self,
        tx: Transaction,
        *,
        workspace_id: int,
        workspace: str,
        owner: Recipient,
        correlation_id: str | None,
    ) -> str:
        """Queue the welcome for a new workspace's owner (one per workspace, however often run)."""
        message = self.templates.message(
            "welcome",
            {"name": owner.name, "workspace": one_line(workspace)},
            sender=self.sender,
            to=[Address(owner.email, one_line(owner.name, 60))],
            headers=self._headers(correlation_id),
            tags=["welcome"],
            idempotency_key=f"taskboard:welcome:{workspace_id}",
        )
        return await self.email.send(message, transaction=tx, workspace_id=workspace_id)

    async def assigned(
        self,
        tx: Transaction,
        *,
        workspace_id: int,
        workspace: str,
        task_id: int,
        version: int,
        title: str,
        assignee: Recipient,
        actor: str,
    ) -> str:
        """Queue the note to a task's new assignee (one per task version and assignee)."""
        message = self.templates.message(
            "assigned",
            {
                "name": assignee.name,
                "actor": one_line(actor, 60),
                "title": one_line(title),
                "workspace": one_line(workspace),
            },
            sender=self.sender,
            to=[Address(assignee.email, one_line(assignee.name, 60))],
            headers=self._headers(current_correlation_id()),
            tags=["assigned"],
            metadata={"task_id": str(task_id)},
            idempotency_key=f"taskboard:assigned:{task_id}:{version}:{assignee.id}",
        )
        if self.tokens is not None:
            message = with_unsubscribe(
                message,
                self.tokens,
                self.public_url + UNSUBSCRIBE_PATH,
                list_id=ASSIGNMENTS_LIST,
            )
        return await self.email.send(message, transaction=tx, workspace_id=workspace_id)

    @staticmethod
    def _headers(correlation_id: str | None) -> dict[str, str]:
        return {CORRELATION_HEADER: one_line(correlation_id, 128)} if correlation_id else {}


_NOTIFIERS: weakref.WeakKeyDictionary[Database, Notifier] = weakref.WeakKeyDictionary()


def register_notifier(database: Database, notifier: Notifier) -> None:
    """Make ``notifier`` the one saga steps on ``database`` use (done by ``register_services``)."""
    _NOTIFIERS[database] = notifier


def notifier_for(database: Database) -> Notifier:
    """The notifier registered for ``database``, else one that only queues (a sender elsewhere,
    e.g. ``corestone saga recover`` finishing a saga, delivers it)."""
    found = _NOTIFIERS.get(database)
    if found is None:
        found = Notifier(EmailService(database))
        _NOTIFIERS[database] = found
    return found


def mail_handlers(notifier: Notifier) -> dict[str, ConsumerHandler]:
    """The :data:`MAIL_GROUP` consumer's handlers: the welcome and the assignment note."""
    mail = _MailOnEvents(notifier)
    return {WorkspaceCreated.event_type: mail.welcome, TaskAssigned.event_type: mail.assigned}


class _MailOnEvents:
    """Each handler reads what the mail needs (names, addresses) in the consumer's
    transaction, scoped to the event's workspace: a task or a workspace of another
    tenant is not found there, so an event is never mailed as another workspace's."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    async def welcome(self, event: DomainEvent, tx: Transaction) -> None:
        created = REGISTRY.payload(event)
        assert isinstance(created, WorkspaceCreated)
        if event.workspace_id != str(created.workspace_id):
            return  # not this workspace's event: nothing to say to anyone
        workspace = await WorkspaceRepository(tx).find(created.workspace_id)
        owner = await UserRepository(tx).find(created.owner_id)
        if workspace is None or owner is None:
            return  # deleted since: nobody to welcome to anything
        await self.notifier.welcome(
            tx,
            workspace_id=workspace.id,
            workspace=workspace.name,
            owner=Recipient(owner.id, owner.name, owner.email),
            correlation_id=event.correlation_id,
        )

    async def assigned(self, event: DomainEvent, tx: Transaction) -> None:
        assigned = REGISTRY.payload(event)
        assert isinstance(assigned, TaskAssigned)
        if assigned.assignee_id is None or event.workspace_id is None:
            return  # unassigned: no one to tell
        workspace_id = int(event.workspace_id)
        task = (
            await TaskRepository(tx, workspace=workspace_id).with_deleted().find(assigned.task_id)
        )
        members = MembershipRepository(tx, workspace=workspace_id)
        if task is None or not await members.is_member(assigned.assignee_id):
            return  # not a task of this workspace, or the assignee has left it since
        workspace = await WorkspaceRepository(tx).get(workspace_id)
        users = UserRepository(tx)
        assignee = await users.get(assigned.assignee_id)
        by = _user_id(event.actor)
        actor = await users.find(by) if by is not None else None
        await self.notifier.assigned(
            tx,
            workspace_id=workspace_id,
            workspace=workspace.name,
            task_id=task.id,
            version=assigned.version,
            title=assigned.title,
            assignee=Recipient(assignee.id, assignee.name, assignee.email),
            actor=actor.name if actor is not None else "Someone",
        )


def _user_id(actor: str | None) -> int | None:
    """The user id an event's actor names (taskboard records user ids), else None."""
    if actor is None or not (actor.isascii() and actor.isdigit()) or len(actor) > 18:
        return None
    return int(actor)
