"""corestone: the production infrastructure layer for Python services.

The everyday names live here; each capability's package (``corestone.db``,
``corestone.observability``, ``corestone.web``, …) exports its own. Only the errors are
imported eagerly: settings (pydantic-settings), the composition root and the version are
imported on first use, so ``import corestone`` stays cheap (docs/installation.md gives
the figure) and needs no extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
    MissingExtraError,
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
    from corestone.config import Settings, load_settings
    from corestone.container import Services
    from corestone.runtime import Component, Infrastructure

    __version__: str

_LAZY = {
    "Component": "corestone.runtime",
    "Infrastructure": "corestone.runtime",
    "Services": "corestone.container",
    "Settings": "corestone.config",
    "load_settings": "corestone.config",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version  # only when asked

        value: Any = version("corestone")  # pyproject.toml is the one source
    else:
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
    "MissingExtraError",
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
    "__version__",
    "load_settings",
]
