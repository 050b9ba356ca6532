"""taskboard's application services: the use cases, independent of HTTP."""

from taskboard.services.tasks import AuditPage, TaskListing, TaskRepository, TaskService
from taskboard.services.users import UserService
from taskboard.services.workspaces import WorkspaceService

__all__ = [
    "AuditPage",
    "TaskListing",
    "TaskRepository",
    "TaskService",
    "UserService",
    "WorkspaceService",
]
