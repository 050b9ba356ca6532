"""Secret redaction for log lines: what is masked, and a walk that can never raise.

:class:`SecretRedactor` is a structlog processor. It masks, wherever they appear in an
event (docs/observability.md lists the same):

- the whole value under a key that looks secret (``password``, ``token``, ``secret``,
  ``authorization``, ``cookie``, ``api_key``, ``private_key``, ``credential``…), in
  dicts, in ``(name, value)`` pairs such as ASGI headers (``(b"cookie", b"sid=…")``),
  bytes included;
- in free text: URL passwords (``scheme://user:***@host``), ``Bearer …`` tokens, the
  credentials of an ``Authorization:`` header (its scheme stays readable), the whole value
  of a ``Cookie:`` / ``Set-Cookie:`` header, ``password=…``-style pairs (quoted values in
  full, spaces and semicolons included) and PEM private key blocks.

A value nested deeper than :data:`MAX_DEPTH` is replaced by a marker instead of being
walked: redaction is part of ``log.info``, and logging must never raise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from structlog.types import EventDict, WrappedLogger

__all__ = ["MAX_DEPTH", "REDACTED", "SecretRedactor"]

REDACTED = "***"
MAX_DEPTH = 24
_TOO_DEEP = f"<nested deeper than {MAX_DEPTH} levels>"
_META = frozenset({"_record", "_from_structlog"})

# Key names whose values are secret wherever they appear.
_SECRET_KEY = re.compile(
    r"pass(word|wd)?|secret|token|authorization|api[_-]?key|private[_-]?key|cookie|credential",
    re.IGNORECASE,
)
# The name of a ``name=value`` secret in free text (``db_password``, ``access_token``).
_NAME = r"\b[\w-]*?(?:password|passwd|pwd|secret|token|api[_-]?key|private[_-]?key)"
_AUTH_SCHEMES = (
    r"basic|bearer|digest|negotiate|ntlm|token|apikey|dpop|hoba|mutual|vapid|aws4-hmac-sha256"
)


def _keep_prefix(match: re.Match[str]) -> str:
    keep = match.groupdict().get("keep") or ""
    return keep + REDACTED


# Secrets embedded in free text, applied in this order.
_DEFAULT_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
        re.DOTALL,
    ),
    # user:password@ — up to the last "@" of the authority, as a password may contain "@".
    re.compile(r"(?P<keep>[a-z][a-z0-9+.\-]*://[^:/@\s]*:)[^\s/]+(?=@)", re.IGNORECASE),
    # Cookie: sid=…; theme=… — every cookie of the header, to the end of the line.
    re.compile(r"(?P<keep>\b(?:set-)?cookie[\"']?\s*[:=]\s*)[^\r\n]+", re.IGNORECASE),
    # Authorization: Basic … — the scheme stays readable, the credentials do not.
    re.compile(
        rf"(?P<keep>\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?(?:(?:{_AUTH_SCHEMES})\s+)?)"
        r"[^\s,;\"']+",
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


class SecretRedactor:
    """A structlog processor that hides secrets in keys and in free text.

    Values under secret-looking keys are replaced whole; the free-text forms listed in
    the module docstring are masked inside strings. Extra patterns may be given; a named
    group ``keep`` marks a prefix to leave readable.
    """

    def __init__(self, extra_patterns: Iterable[str | re.Pattern[str]] = ()) -> None:
        compiled = [re.compile(p) if isinstance(p, str) else p for p in extra_patterns]
        self._patterns = (*_DEFAULT_PATTERNS, *compiled)

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        return {key: self._clean(key, value, 0) for key, value in event_dict.items()}

    def redact_text(self, text: str) -> str:
        """``text`` with every embedded secret masked."""
        for pattern in self._patterns:
            text = pattern.sub(_keep_prefix, text)
        return text

    def _clean(self, key: str, value: Any, depth: int) -> Any:
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
        if depth >= MAX_DEPTH:
            return _TOO_DEEP
        if isinstance(value, Mapping):
            return {str(k): self._clean(str(k), v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            if _is_pair(value):  # (name, value): an ASGI header, a form field
                name = _text(value[0])
                return [value[0], self._clean(name, value[1], depth + 1)]
            return [self._clean("", v, depth + 1) for v in value]
        # Renderers fall back to repr() for other objects (an exception, a settings
        # object), and a repr can carry a DSN; hand over the redacted repr when it does.
        shown = repr(value)
        redacted = self.redact_text(shown)
        return value if redacted == shown else redacted


def _is_pair(value: list[Any] | tuple[Any, ...]) -> bool:
    # A 2-tuple whose first item is a name, or a 2-list whose first item is bytes (ASGI
    # servers may hand headers over as lists); a plain 2-list of words is not a pair.
    if len(value) != 2:
        return False
    first = value[0]
    return isinstance(first, bytes) or (isinstance(value, tuple) and isinstance(first, str))


def _text(name: str | bytes) -> str:
    return name.decode("latin-1") if isinstance(name, bytes) else name
