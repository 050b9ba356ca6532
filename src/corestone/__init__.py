"""corestone: the production infrastructure layer for Python services.

The everyday names live here; each capability's package (``corestone.db``,
``corestone.observability``, ``corestone.web``, …) exports its own.
"""

from corestone.config import Settings, load_settings
from corestone.container import Services
from corestone.errors import (
    AuthenticationError,
    CircuitOpenError,
    ConfigurationError,
    ConflictError,
    CorestoneError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ShutdownError,
    StaleVersionError,
    StartupError,
    UnavailableError,
)
from corestone.runtime import Component, Infrastructure

__all__ = [
    "AuthenticationError",
    "CircuitOpenError",
    "Component",
    "ConfigurationError",
    "ConflictError",
    "CorestoneError",
    "Infrastructure",
    "InvalidInputError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Services",
    "Settings",
    "ShutdownError",
    "StaleVersionError",
    "StartupError",
    "UnavailableError",
    "load_settings",
]
