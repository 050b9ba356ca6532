"""taskboard's email: a welcome when a workspace is created, a note when a task is assigned.

The welcome is driven by its domain event: the consumer group :data:`MAIL_GROUP`
handles ``workspace.created`` (:func:`mail_handlers`) and queues the message through
corestone's email outbox in the consumer's transaction, the one that also records the
event in its inbox. So the mail is queued once per event however often the broker
delivers it (a second delivery finds the inbox row and does nothing), and never for a
change that rolled back (its event was never recorded). Each message carries the
request's correlation id in ``X-Correlation-Id`` (the event's) and an idempotency key,
so a handler run again outside the inbox (a replayed dead letter after all) still
queues one message.

The assignment note is the email channel of the ``task.assigned`` notification
(``taskboard.services.notify``): :meth:`Notifier.assigned_message` builds it, the
notifications consumer queues it when the assignee's preferences want email. Its
unsubscribe link (:func:`notification_list`) turns that email off for that user and
kind, a preference, rather than suppressing the address for all mail.

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

from corestone.db import Database, Transaction
from corestone.email.message import Address, EmailMessage
from corestone.email.service import EmailService
from corestone.email.templates import EmailTemplates
from corestone.email.unsubscribe import UnsubscribeTokens, with_unsubscribe
from corestone.events import DomainEvent
from corestone.events.consumer import ConsumerHandler
from taskboard.events import REGISTRY, WorkspaceCreated
from taskboard.services.repositories import UserRepository, WorkspaceRepository

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
    "notification_list",
    "notifier_for",
    "one_line",
    "parse_notification_list",
    "register_notifier",
]

CORRELATION_HEADER: Final = "X-Correlation-Id"
ASSIGNMENTS_LIST: Final = "task-assignments"
"""The list of assignment notes' unsubscribe links before they became a preference: such a
link, still in someone's mailbox, now turns off the ``task.assigned`` email of the user
with that address."""
_LIST_PREFIX: Final = "notify:"
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
    "notice.subject.txt": "{{ subject }}",
    "notice.html": "<p>Hello {{ name }},</p><p>{{ text }}.</p>",
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

    def assigned_message(
        self,
        *,
        workspace: str,
        task_id: int,
        title: str,
        assignee: Recipient,
        actor: str,
        correlation_id: str | None,
    ) -> EmailMessage:
        """The note to a task's new assignee, its unsubscribe link turning off this kind.

        No idempotency key: the notifier sets one per (event, user, kind).
        """
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
            headers=self._headers(correlation_id),
            tags=["assigned"],
            metadata={"task_id": str(task_id)},
        )
        if self.tokens is not None:
            message = with_unsubscribe(
                message,
                self.tokens,
                self.public_url + UNSUBSCRIBE_PATH,
                list_id=notification_list("task.assigned", assignee.id),
            )
        return message

    def notice_message(
        self,
        *,
        kind: str,
        subject: str,
        text: str,
        recipient: Recipient,
        task_id: int | None,
        correlation_id: str | None,
    ) -> EmailMessage:
        """A notification of ``kind`` as a short email (for kinds with no template of their own)."""
        message = self.templates.message(
            "notice",
            {"name": recipient.name, "subject": one_line(subject), "text": text},
            sender=self.sender,
            to=[Address(recipient.email, one_line(recipient.name, 60))],
            headers=self._headers(correlation_id),
            tags=["notification"],
            metadata={"kind": kind} | ({} if task_id is None else {"task_id": str(task_id)}),
        )
        if self.tokens is not None:
            message = with_unsubscribe(
                message,
                self.tokens,
                self.public_url + UNSUBSCRIBE_PATH,
                list_id=notification_list(kind, recipient.id),
            )
        return message

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
    """The :data:`MAIL_GROUP` consumer's handlers: the welcome (the assignment note is a
    notification's email, queued by the notifications consumer)."""
    mail = _MailOnEvents(notifier)
    return {WorkspaceCreated.event_type: mail.welcome}


def notification_list(kind: str, user_id: int) -> str:
    """The unsubscribe "list" of one user's email of one notification kind (signed in the link)."""
    return f"{_LIST_PREFIX}{kind}:{user_id}"


def parse_notification_list(list_id: str) -> tuple[str, int] | None:
    """(kind, user id) of a :func:`notification_list` value, else None."""
    if not list_id.startswith(_LIST_PREFIX):
        return None
    kind, _, user = list_id[len(_LIST_PREFIX) :].rpartition(":")
    if not kind or not (user.isascii() and user.isdigit()) or len(user) > 18:
        return None
    return kind, int(user)


class _MailOnEvents:
    """Each handler reads what the mail needs (names, addresses) in the consumer's
    transaction: a workspace of another tenant than the event's is never mailed."""

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
