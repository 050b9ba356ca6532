"""taskboard's tables: users and their API tokens, workspaces, memberships, tasks."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from corestone.db import (
    AuditedMixin,
    Base,
    BigIntId,
    IdMixin,
    SoftDeleteMixin,
    TenantMixin,
    TimestampMixin,
    UTCDateTime,
    VersionMixin,
)
from corestone.email.outbox import EmailOutboxRecord  # noqa: F401 - its tables: revision 0008
from corestone.push.notifications import NotificationRecord  # noqa: F401 - revision 0015
from corestone.push.preferences import PreferenceRecord  # noqa: F401 - revision 0015
from corestone.push.subscriptions import PushSubscriptionRecord  # noqa: F401 - revision 0013

__all__ = ["ApiToken", "Membership", "Role", "Task", "TaskStatus", "TokenRole", "User", "Workspace"]

NAME_MAX = 100
EMAIL_MAX = 254
TITLE_MAX = 200
DESCRIPTION_MAX = 10_000


class Role(enum.StrEnum):
    OWNER = "owner"
    MEMBER = "member"


class TaskStatus(enum.StrEnum):
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    DONE = "done"


class User(IdMixin, TimestampMixin, Base):
    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(NAME_MAX))
    email: Mapped[str] = mapped_column(String(EMAIL_MAX), unique=True)


class TokenRole(enum.StrEnum):
    """What a token may do besides acting as its user: an operator token reads /ops."""

    USER = "user"
    OPERATOR = "operator"


class ApiToken(IdMixin, Base):
    """A bearer token, stored only as its SHA-256 digest."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint("role IN ('user', 'operator')", name="role"),)

    user_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(50), default="api")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    role: Mapped[str] = mapped_column(String(16), default="user", server_default="user")


class Workspace(IdMixin, TimestampMixin, Base):
    __tablename__ = "workspaces"

    name: Mapped[str] = mapped_column(String(NAME_MAX))


class Membership(IdMixin, TenantMixin, Base):
    """A user's role in a workspace: a tenant row, read and written through its repository."""

    __tablename__ = "memberships"
    __table_args__ = (
        CheckConstraint("role IN ('owner', 'member')", name="role"),
        # One membership per user and workspace; its index also serves the tenant scope.
        UniqueConstraint("workspace_id", "user_id"),
    )

    workspace_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("workspaces.id", ondelete="CASCADE")
    )
    user_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))


class Task(IdMixin, TimestampMixin, TenantMixin, VersionMixin, SoftDeleteMixin, AuditedMixin, Base):
    """A task: scoped to its workspace, versioned, soft-deleted and audited by the repository."""

    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint("status IN ('open', 'in_progress', 'done')", name="status"),
        Index("ix_tasks_workspace_id_id", "workspace_id", "id"),
        Index("ix_tasks_workspace_id_created_at_id", "workspace_id", "created_at", "id"),
    )

    workspace_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("workspaces.id", ondelete="CASCADE")
    )
    title: Mapped[str] = mapped_column(String(TITLE_MAX))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.OPEN.value)
    assignee_id: Mapped[int | None] = mapped_column(
        BigIntId, ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
