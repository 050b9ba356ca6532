"""taskboard's application services: the use cases, independent of HTTP."""

from taskboard.services.tasks import TaskPage, TaskService
from taskboard.services.users import UserService
from taskboard.services.workspaces import WorkspaceService

__all__ = ["TaskPage", "TaskService", "UserService", "WorkspaceService"]
