"""Structured logging: structlog for our own lines, the standard library routed through it.

One call, :func:`configure_logging`, sets both up so that every line — ours, uvicorn's,
SQLAlchemy's — carries the correlation id, actor and workspace of the work in progress and
has secrets redacted. ``console`` is for people at a terminal, ``json`` for log shippers.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from corestone import context

__all__ = ["SecretRedactor", "configure_logging", "get_logger"]

REDACTED = "***"

# Key names whose values are secret wherever they appear.
_SECRET_KEY = re.compile(
    r"pass(word|wd)?|secret|token|authorization|api[_-]?key|cookie|credential", re.IGNORECASE
)
# Secrets embedded in free text.
_DEFAULT_PATTERNS = (
    # user:password@ — up to the last "@" of the authority, as a password may contain "@".
    re.compile(r"(?P<keep>[a-z][a-z0-9+.\-]*://[^:/@\s]*:)[^\s/]+(?=@)", re.IGNORECASE),
    re.compile(r"(?P<keep>\bBearer\s+)[^\s,;\"']+", re.IGNORECASE),
    # password=x, access_token: x, and the JSON form "password": "x".
    re.compile(
        r"(?P<keep>\b\w*?(?:password|passwd|secret|token|api[_-]?key)[\"']?\s*[=:]\s*[\"']?)"
        r"[^\s,;&\"']+",
        re.IGNORECASE,
    ),
)


class SecretRedactor:
    """A structlog processor that hides secrets in keys and in free text.

    Values under secret-looking keys are replaced whole; passwords in URLs, bearer tokens
    and ``key=value`` secrets inside strings are masked. Extra patterns may be given; a
    named group ``keep`` marks a prefix to leave readable.
    """

    def __init__(self, extra_patterns: Iterable[str | re.Pattern[str]] = ()) -> None:
        compiled = [re.compile(p) if isinstance(p, str) else p for p in extra_patterns]
        self._patterns = (*_DEFAULT_PATTERNS, *compiled)

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        return {key: self._clean(key, value) for key, value in event_dict.items()}

    def redact_text(self, text: str) -> str:
        """``text`` with every embedded secret masked."""
        for pattern in self._patterns:
            text = pattern.sub(_keep_prefix, text)
        return text

    def _clean(self, key: str, value: Any) -> Any:
        if key not in ("event", "level", "timestamp", "logger") and _SECRET_KEY.search(key):
            return REDACTED if value not in (None, "") else value
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, Mapping):
            return {str(k): self._clean(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean("", v) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        # Renderers fall back to repr() for other objects (an exception, a settings
        # object), and a repr can carry a DSN; hand over the redacted repr when it does.
        shown = repr(value)
        redacted = self.redact_text(shown)
        return value if redacted == shown else redacted


def _keep_prefix(match: re.Match[str]) -> str:
    keep = match.groupdict().get("keep") or ""
    return keep + REDACTED


def _add_context(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    for key, value in (
        ("correlation_id", context.correlation_id()),
        ("actor_id", context.actor_id()),
        ("workspace_id", context.workspace_id()),
    ):
        if value is not None:
            event_dict.setdefault(key, value)
    return event_dict


def configure_logging(
    *,
    format: Literal["console", "json"] = "console",  # noqa: A002 - the natural name
    level: str = "info",
    extra_secret_patterns: Iterable[str | re.Pattern[str]] = (),
) -> None:
    """Configure structlog and the standard library's root logger. Safe to call again."""
    redactor = SecretRedactor(extra_secret_patterns)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_context,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        # Tracebacks become text here, before the redactor, in both formats: the console
        # renderer's own (rich) tracebacks would print exception messages and local
        # variables unredacted.
        structlog.processors.format_exc_info,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            redactor,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_corestone", False):
            root.removeHandler(old)
    handler._corestone = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # Our middleware logs each request with its correlation id; uvicorn's line would repeat it.
    logging.getLogger("uvicorn.access").disabled = True


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger named ``name`` (usually ``__name__``)."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
