"""The installed version of a distribution, and what to say when there is none.

``project.version`` in pyproject.toml is the one source; it reaches the code through the
installed metadata. Code run from a source tree that was never installed (``PYTHONPATH=src``,
a vendored copy) has no metadata: the version is then :data:`UNKNOWN_VERSION`, a valid
PEP 440 version that sorts below every release, rather than an error from a mere
``corestone.__version__`` or ``getattr(module, "__version__", None)``.
"""

from __future__ import annotations

from importlib import metadata

__all__ = ["UNKNOWN_VERSION", "installed_version"]

UNKNOWN_VERSION = "0+unknown"


def installed_version(distribution: str = "corestone") -> str:
    """``distribution``'s version from its installed metadata, or :data:`UNKNOWN_VERSION`."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return UNKNOWN_VERSION
