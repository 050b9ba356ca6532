"""Cache keys, tag keys and SCAN patterns, built so tenants can never meet.

Every key is ``corestone:{namespace}:{workspace or "global"}:{key}`` (docs/contracts.md): the
workspace comes first, so one workspace's entries can be dropped as a group and a key
built for one workspace can never name another's entry, whatever the caller's key holds.
The namespace and workspace are validated (no separators, no glob characters); the
caller's key is free-form and never interpreted.

Tag sets live beside the entries at ``corestone:{namespace}:{workspace}#tag:{tag}``, with
``%`` and ``#`` in the tag percent-encoded: a tag key never contains ``#`` after ``#tag:``,
so no tag (``X#gen`` included) can name tag ``X``'s generation counter (``…#tag:X#gen``)
or any other internal key. The ``#`` right after the scope cannot appear in an entry key
(those always continue with ``:``), so a user key can never collide with a tag set. The
same trick stores keys that are too long, binary, or not valid UTF-8 under
``…{workspace}#h:{sha256}``: Redis keys stay bounded and printable, at the price of
pattern invalidation not reaching them (exact deletes and tags still do).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

from corestone.context import workspace_id as current_workspace
from corestone.errors import InvalidInputError

__all__ = [
    "EVERY_WORKSPACE",
    "GLOBAL",
    "MAX_KEY_BYTES",
    "KeyBuilder",
    "escape_glob",
    "escape_pattern",
    "glob_regex",
    "is_index_key",
    "resolve_workspace",
]

GLOBAL: Final = "global"
"""Pass as ``workspace=`` to use the shared scope even inside a workspace's request."""

EVERY_WORKSPACE: Final = "*"
"""Pass as ``workspace=`` to ``invalidate_pattern`` to match in every workspace (admin jobs)."""

MAX_KEY_BYTES: Final = 512
"""User keys longer than this (UTF-8) are stored under their SHA-256 digest."""

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
_PATTERN_LITERAL = re.compile(r"([?\[\]\\])")


def escape_glob(text: str) -> str:
    """``text`` as a Redis glob that matches exactly itself."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


@dataclass(frozen=True, slots=True)
class KeyBuilder:
    """Builds the keys of one namespace (one cache, one kind of data)."""

    namespace: str = "default"
    prefix: str = "corestone"

    def __post_init__(self) -> None:
        _check_name("namespace", self.namespace)
        _check_name("prefix", self.prefix)

    def scope(self, workspace: str | int | None = None) -> str:
        """``corestone:{namespace}:{workspace}``; the workspace defaults to the context's."""
        return f"{self.prefix}:{self.namespace}:{resolve_workspace(workspace)}"

    def entry(self, key: str | bytes, workspace: str | int | None = None) -> str:
        """The Redis (and L1) key of ``key`` in ``workspace``."""
        return self.entry_in(self.scope(workspace), key)

    @staticmethod
    def entry_in(scope: str, key: str | bytes) -> str:
        """Like :meth:`entry` for a scope already resolved (the hot path resolves once)."""
        if type(key) is str and key.isascii() and len(key) <= MAX_KEY_BYTES:
            return f"{scope}:{key}"  # the common case: ASCII is its own UTF-8, length known
        return _slow_entry(scope, key)

    def tag(self, tag: str, workspace: str | int | None = None) -> str:
        """The Redis key of the set that indexes the entries tagged ``tag``."""
        return self.tag_in(self.scope(workspace), tag)

    @staticmethod
    def tag_in(scope: str, tag: object) -> str:
        if not isinstance(tag, str) or not tag:
            raise InvalidInputError("a tag must be a non-empty string", field="tags")
        encoded = _utf8(tag)
        if encoded is None or len(encoded) > MAX_KEY_BYTES:
            return (
                f"{scope}#tag#h:{hashlib.sha256(tag.encode('utf-8', 'surrogatepass')).hexdigest()}"
            )
        if "#" in tag or "%" in tag:  # no user tag may reach an internal "#..." suffix
            tag = tag.replace("%", "%25").replace("#", "%23")
        return f"{scope}#tag:{tag}"

    def pattern(self, user_pattern: str, workspace: str | int | None = None) -> str:
        """A SCAN MATCH glob for ``user_pattern`` inside one workspace.

        Only ``*`` is a wildcard in the caller's part; ``? [ ] \\`` match themselves, so
        a key that contains glob characters is matched literally and nothing outside
        the scope can ever be reached.
        """
        return f"{escape_glob(self.scope(workspace))}:{escape_pattern(user_pattern)}"

    def matcher(self, user_pattern: str, workspace: str | int | None = None) -> re.Pattern[str]:
        """The same pattern as a compiled regex, for dropping matching L1 entries."""
        return glob_regex(self.pattern(user_pattern, workspace))


def escape_pattern(user_pattern: object) -> str:
    """Escape every glob character of ``user_pattern`` except ``*``."""
    if not isinstance(user_pattern, str) or not user_pattern:
        raise InvalidInputError("a pattern must be a non-empty string", field="pattern")
    if len(user_pattern.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidInputError(f"a pattern must be at most {MAX_KEY_BYTES} bytes", field="pattern")
    return _PATTERN_LITERAL.sub(r"\\\1", user_pattern)


def glob_regex(glob: str) -> re.Pattern[str]:
    """Compile a Redis glob as built by :meth:`KeyBuilder.pattern` (``*`` and escapes only).

    Use with ``fullmatch``. ``*`` as a plain ``.*`` backtracks exponentially: ``*a*a…*b``
    against a long key of ``a`` runs for hours, freezing the event loop of every instance
    the pattern is announced to. Here each literal between two stars is found at its
    leftmost place after the previous one and never reconsidered (an atomic group): with
    ``*`` the only wildcard that choice is always right, and matching is linear.
    """
    segments: list[str] = [""]
    index = 0
    while index < len(glob):
        char = glob[index]
        if char == "\\" and index + 1 < len(glob):
            segments[-1] += glob[index + 1]
            index += 2
            continue
        if char == "*":
            segments.append("")
        else:
            segments[-1] += char
        index += 1
    if len(segments) == 1:
        return re.compile(re.escape(segments[0]), re.DOTALL)
    first, *middle, last = segments
    parts = [re.escape(first)]
    parts.extend(f"(?>.*?{re.escape(segment)})" for segment in middle if segment)
    parts.append(f".*{re.escape(last)}")
    return re.compile("".join(parts), re.DOTALL)


def is_index_key(key: str) -> bool:
    """Whether ``key`` is cache bookkeeping (a tag set, a tag generation, a lock).

    Entry keys continue the scope with ``:`` (or ``#h:`` for digests); every other key
    of a scope has another ``#…`` marker right after the workspace. Pattern
    invalidation never deletes these: tags must keep reaching their entries.
    """
    parts = key.split(":", 3)
    if len(parts) < 3:
        return False
    segment = parts[2]
    marker = segment.find("#")
    return marker >= 0 and segment[marker:] != "#h"


def resolve_workspace(workspace: str | int | None) -> str:
    """The scope name: the given workspace, else the context's, else ``global``."""
    if workspace is None:
        workspace = current_workspace()
        if workspace is None:
            return GLOBAL
    name = str(workspace)
    _check_name("workspace", name)
    return name


def _check_name(field: str, value: object) -> None:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidInputError(
            f"{field} must be 1-64 characters of letters, digits, '_', '.' or '-'",
            field=field,
        )


def _utf8(text: str) -> bytes | None:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return None


def _slow_entry(scope: str, key: str | bytes) -> str:
    if isinstance(key, bytes | bytearray | memoryview):
        # Type-prefixed digests: b"x" * 600 and "x" * 600 are two keys, not one.
        return f"{scope}#h:{hashlib.sha256(b'b:' + bytes(key)).hexdigest()}"
    if not isinstance(key, str):
        raise InvalidInputError("a cache key must be str or bytes", field="key")
    encoded = _utf8(key)
    if encoded is None or len(encoded) > MAX_KEY_BYTES:
        raw = key.encode("utf-8", "surrogatepass")
        return f"{scope}#h:{hashlib.sha256(b's:' + raw).hexdigest()}"
    return f"{scope}:{key}"
