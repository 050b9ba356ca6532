"""corestone: the production infrastructure layer for Python services.

The everyday names live here; each capability's package (``corestone.db``,
``corestone.observability``, ``corestone.web``, …) exports its own. The composition root
is imported on first use, so command-line tools that only need settings and errors do
not pay for the web stack's import time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from corestone.config import Settings, load_settings
from corestone.errors import (
    AuthenticationError,
    BulkheadFullError,
    CircuitOpenError,
    CommitUnknownError,
    ConfigurationError,
    ConflictError,
    CorestoneError,
    InvalidInputError,
    LoadTimeoutError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    PreconditionRequiredError,
    SagaFailedError,
    SagaLeaseLostError,
    ShutdownError,
    StaleVersionError,
    StartupError,
    UnavailableError,
    WorkspaceRequiredError,
)

if TYPE_CHECKING:
    from corestone.container import Services
    from corestone.runtime import Component, Infrastructure

_LAZY = {
    "Component": "corestone.runtime",
    "Infrastructure": "corestone.runtime",
    "Services": "corestone.container",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'corestone' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AuthenticationError",
    "BulkheadFullError",
    "CircuitOpenError",
    "CommitUnknownError",
    "Component",
    "ConfigurationError",
    "ConflictError",
    "CorestoneError",
    "Infrastructure",
    "InvalidInputError",
    "LoadTimeoutError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PreconditionRequiredError",
    "SagaFailedError",
    "SagaLeaseLostError",
    "Services",
    "Settings",
    "ShutdownError",
    "StaleVersionError",
    "StartupError",
    "UnavailableError",
    "WorkspaceRequiredError",
    "load_settings",
]
