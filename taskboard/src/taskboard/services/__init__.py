"""taskboard's application services: the use cases, independent of HTTP."""

from taskboard.services.repositories import (
    MembershipRepository,
    TaskRepository,
    UserRepository,
    WorkspaceRepository,
)
from taskboard.services.tasks import AuditPage, TaskListing, TaskQuery, TaskService
from taskboard.services.users import UserService
from taskboard.services.workspaces import WorkspaceService

__all__ = [
    "AuditPage",
    "MembershipRepository",
    "TaskListing",
    "TaskQuery",
    "TaskRepository",
    "TaskService",
    "UserRepository",
    "UserService",
    "WorkspaceRepository",
    "WorkspaceService",
]
