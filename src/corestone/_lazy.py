"""Package exports imported on first use (PEP 562), so a package costs only what is used.

``from corestone.cache import MemoryCache`` should not pay for pydantic-settings,
prometheus_client and the Redis client because the same package also exports the tiered
cache. A package lists where each exported name lives; the names are imported when first
read, then kept in the package like ordinary globals. The same names are imported under
``TYPE_CHECKING`` beside the table so that type checkers and IDEs see them, and a test
checks that the two agree (tests/unit/test_lazy_exports.py).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, where: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, exporting ``where``'s names.

    ``where`` maps each exported name to the module that defines it. An import error
    (a :class:`~corestone.errors.MissingExtraError` for a part whose extra is missing)
    propagates from the first read of the name, not from importing the package.
    """

    def module_getattr(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # the next read is a plain global
        return value

    def module_dir() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return module_getattr, module_dir
