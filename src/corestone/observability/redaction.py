"""Secret redaction for log lines: what is masked, and a walk that can never raise.

:class:`SecretRedactor` is a structlog processor. It masks, wherever they appear in an
event (docs/observability.md lists the same):

- the whole value under a key that looks secret (``password``, ``token``, ``secret``,
  ``authorization``, ``cookie``, ``api_key``, ``private_key``, ``credential``…), in
  dicts, in ``(name, value)`` pairs such as ASGI headers (``(b"cookie", b"sid=…")``),
  bytes included;
- in free text: URL passwords (``scheme://user:***@host``, read as urllib and as
  SQLAlchemy would), ``Bearer …`` tokens, the credentials of an ``Authorization:`` header
  (a known scheme stays readable; after an unknown word, both words go), the whole value
  of a ``Cookie:`` / ``Set-Cookie:`` header, ``password=…``-style pairs (quoted values in
  full, spaces and semicolons included; ``secret_key``, ``passphrase``, ``credentials``
  too) and PEM or PGP private key blocks.

Containers of every kind are walked (mappings, sequences, sets, ``dict.items()``
views). A value nested deeper than :data:`MAX_DEPTH`, or past the :data:`MAX_ITEMS`
items one line may hold, is replaced by a marker instead of being walked: redaction is
part of ``log.info``, and logging must never raise, nor hang on a value that refers to
itself.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping, MappingView, Sequence, Set
from typing import Any

from structlog.types import EventDict, WrappedLogger

__all__ = ["MAX_DEPTH", "MAX_ITEMS", "REDACTED", "SecretRedactor"]

REDACTED = "***"
MAX_DEPTH = 24
MAX_ITEMS = 10_000
_TOO_DEEP = f"<nested deeper than {MAX_DEPTH} levels>"
_TOO_MANY = f"<more than {MAX_ITEMS} items>"
_META = frozenset({"_record", "_from_structlog"})

# Key names whose values are secret wherever they appear.
_SECRET_KEY = re.compile(
    r"pass(word|wd)?|pwd|secret|token|authorization|api[_-]?key|private[_-]?key|cookie|credential",
    re.IGNORECASE,
)
# Every pattern below is linear in the text: it starts only where its run of characters
# starts (a lookbehind, not ``\b``, which also matches after each "-"), and nothing it
# scans can run on into the next candidate. A log line may be a 60 kB hostile path.
#
# The name of a ``name=value`` secret in free text (``db_password``, ``access_token``).
_NAME = (
    r"(?<![\w-])[\w-]*?(?:password|passwd|passphrase|pwd|secret(?:[_-]?(?:access[_-]?)?key)?|token"
    r"|api[_-]?key|private[_-]?key|credentials?)"
)
_SCHEME = r"(?<![a-z0-9+.\-])[a-z][a-z0-9+.\-]*"
_AUTH_SCHEMES = (
    r"basic|bearer|digest|negotiate|ntlm|token|apikey|dpop|hoba|mutual|vapid|aws4-hmac-sha256"
)


def _keep_prefix(match: re.Match[str]) -> str:
    groups = match.groupdict()
    return (groups.get("keep") or "") + (groups.get("scheme") or "") + REDACTED


# Secrets embedded in free text, applied in this order.
_DEFAULT_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?"
        r"(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
        re.DOTALL,
    ),
    # user:password@ — up to the last "@" of the authority, as a password may contain "@".
    re.compile(rf"(?P<keep>{_SCHEME}://[^:/@\s]*:)[^\s/]+(?=@)", re.IGNORECASE),
    # SQLAlchemy reads a password up to the first "@", "/", "?" and "#" included: mask
    # that too (a port and path before an "@" in a query are then masked as well).
    re.compile(
        rf"(?P<keep>{_SCHEME}://[^:/@\s]*:)(?!\*\*\*@)(?:(?!://)[^@\s])++(?=@)", re.IGNORECASE
    ),
    # Cookie: sid=…; theme=… — every cookie of the header, to the end of the line.
    re.compile(r"(?P<keep>\b(?:set-)?cookie[\"']?\s*[:=]\s*)[^\r\n]+", re.IGNORECASE),
    # Authorization: Basic … — a known scheme stays readable, the credentials do not. An
    # unknown word may be a scheme (SharedKey acct:sig) or the credentials: mask it, and
    # the token after it unless that is a name=value of its own.
    re.compile(
        rf"(?P<keep>\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)"
        rf"(?:(?P<scheme>(?:{_AUTH_SCHEMES})\s+)[^\s,;\"']+"
        r"|[^\s,;\"']+(?:[ \t]+(?![A-Za-z_][\w-]*=[^=\s])[^\s,;\"']+)?)",
        re.IGNORECASE,
    ),
    re.compile(r"(?P<keep>\bBearer\s+)[^\s,;\"']+", re.IGNORECASE),
    # password="a b; c" and 'x': a quoted value is masked whole, up to its closing quote.
    re.compile(
        rf"(?P<keep>{_NAME}[\"']?\s*[=:]\s*(?P<quote>[\"']))(?:\\.|[^\\\r\n])*?(?=(?P=quote)|$)",
        re.IGNORECASE | re.MULTILINE,
    ),
    # password=x, access_token: x, private_key=x.
    re.compile(rf"(?P<keep>{_NAME}[\"']?\s*[=:]\s*)(?![\"']\*\*\*)[^\s,;&\"']+", re.IGNORECASE),
)

# Every default pattern needs whitespace, ":" or "=" in what it matches (a PEM header's
# space, "://", "Bearer ", "name=" or "name:"). A text with none of them, such as a
# request id or most paths, is checked by this one pass instead of eight: a correlation id
# is new on every request, so the memo below never spares its scans, and they were half
# the cost of the access line. tests/unit/test_redaction_prefilter.py holds the claim.
_MAY_HOLD_A_SECRET = re.compile(r"[\s:=]")

_MEMO_MAX_LENGTH = 256


class SecretRedactor:
    """A structlog processor that hides secrets in keys and in free text.

    Values under secret-looking keys are replaced whole; the free-text forms listed in
    the module docstring are masked inside strings. Extra patterns may be given; a named
    group ``keep`` marks a prefix to leave readable.
    """

    def __init__(self, extra_patterns: Iterable[str | re.Pattern[str]] = ()) -> None:
        self._extra = tuple(re.compile(p) if isinstance(p, str) else p for p in extra_patterns)
        # Short texts recur (a method, a route's paths, ids): each costs every pattern's
        # scan once, then a lookup. Long ones are scanned every time, so a flood of
        # unique texts cannot hold more than the cache's entries x _MEMO_MAX_LENGTH.
        self._memo = functools.lru_cache(maxsize=4096)(self._scan)

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        budget = _Budget(MAX_ITEMS)
        return {key: self._clean(key, value, 0, budget) for key, value in event_dict.items()}

    def redact_text(self, text: str) -> str:
        """``text`` with every embedded secret masked."""
        if len(text) <= _MEMO_MAX_LENGTH:
            return self._memo(text)
        return self._scan(text)

    def _scan(self, text: str) -> str:
        if _MAY_HOLD_A_SECRET.search(text) is not None:
            for pattern in _DEFAULT_PATTERNS:
                text = pattern.sub(_keep_prefix, text)
        for pattern in self._extra:
            text = pattern.sub(_keep_prefix, text)
        return text

    def _clean(self, key: str, value: Any, depth: int, budget: _Budget) -> Any:
        if key in _META:  # ProcessorFormatter's own bookkeeping (the LogRecord)
            return value
        if key not in ("event", "level", "timestamp", "logger") and _SECRET_KEY.search(key):
            return REDACTED if value not in (None, "", b"") else value
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, bytes | bytearray):
            text = bytes(value).decode("latin-1")
            redacted = self.redact_text(text)
            return value if redacted == text else redacted
        if isinstance(value, Mapping | MappingView | Set | Sequence):
            # Every container walked counts, so a value that refers to itself (twice
            # over: 2**depth paths) or a huge one costs at most MAX_ITEMS steps.
            budget.left -= 1
            if depth >= MAX_DEPTH:
                return _TOO_DEEP
            if budget.left < 0:
                return _TOO_MANY
        if isinstance(value, Mapping):
            cleaned: dict[str, Any] = {}
            for name, item in value.items():
                if budget.left <= 0:
                    cleaned["..."] = _TOO_MANY
                    break
                budget.left -= 1
                cleaned[str(name)] = self._clean(str(name), item, depth + 1, budget)
            return cleaned
        if isinstance(value, list | tuple) and _is_pair(value):
            # (name, value): an ASGI header, a form field, a JSON-decoded header pair.
            return [value[0], self._clean(_text(value[0]), value[1], depth + 1, budget)]
        if isinstance(value, MappingView | Set | Sequence):  # items(), sets, deques…
            items: Iterable[Any] = value  # type: ignore[assignment] # views iterate too
            return [self._clean("", v, depth + 1, budget) for v in _head(items, budget)]
        # Renderers fall back to repr() for other objects (an exception, a settings
        # object), and a repr can carry a DSN; hand over the redacted repr when it does.
        shown = repr(value)
        redacted = self.redact_text(shown)
        return value if redacted == shown else redacted


class _Budget:
    """How many more items one log line's walk may visit."""

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


def _head(items: Iterable[Any], budget: _Budget) -> Iterator[Any]:
    for item in items:
        if budget.left <= 0:
            yield _TOO_MANY
            return
        budget.left -= 1
        yield item


def _is_pair(value: list[Any] | tuple[Any, ...]) -> bool:
    # A 2-tuple whose first item is a name, a 2-list whose first item is bytes (ASGI
    # servers may hand headers over as lists), or a 2-list led by a secret name (JSON
    # decoded headers); a plain 2-list of words is not a pair.
    if len(value) != 2:
        return False
    first = value[0]
    if isinstance(first, bytes) or (isinstance(value, tuple) and isinstance(first, str)):
        return True
    return isinstance(first, str) and _SECRET_KEY.search(first) is not None


def _text(name: str | bytes) -> str:
    return name.decode("latin-1") if isinstance(name, bytes) else name
