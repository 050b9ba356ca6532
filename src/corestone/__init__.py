"""corestone: the production infrastructure layer for Python services.

The everyday names live here; each capability's package (``corestone.db``,
``corestone.observability``, ``corestone.web``, …) exports its own. Only the errors are
imported eagerly: settings (pydantic-settings), the composition root and the version are
imported on first use, so ``import corestone`` stays cheap (docs/installation.md gives
the figure) and needs no extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from corestone import _lazy
from corestone.errors import (
    AuthenticationError,
    BulkheadFullError,
    CircuitOpenError,
    CommitUnknownError,
    ConfigurationError,
    ConflictError,
    CorestoneError,
    EmailProviderError,
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
    UnknownEventTypeError,
    WorkspaceRequiredError,
)

if TYPE_CHECKING:
    from corestone.config import Settings, load_settings
    from corestone.container import Services
    from corestone.runtime import Component, Infrastructure

    __version__: str

_exported, __dir__ = _lazy.lazy_exports(
    __name__,
    {
        "Component": "corestone.runtime",
        "Infrastructure": "corestone.runtime",
        "Services": "corestone.container",
        "Settings": "corestone.config",
        "load_settings": "corestone.config",
    },
)


def __getattr__(name: str) -> Any:
    if name != "__version__":
        return _exported(name)
    from corestone._version import installed_version  # only when asked

    value = installed_version()  # pyproject.toml's project.version, via the metadata
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
    "EmailProviderError",
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
    "UnknownEventTypeError",
    "WorkspaceRequiredError",
    "__version__",
    "load_settings",
]
