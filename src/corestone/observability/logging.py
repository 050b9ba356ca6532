"""Structured logging: structlog for our own lines, the standard library routed through it.

One call, :func:`configure_logging`, sets both up so that every line — ours, uvicorn's,
SQLAlchemy's — carries the correlation id, actor and workspace of the work in progress and
has secrets redacted. ``console`` is for people at a terminal, ``json`` for log shippers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import structlog
from structlog.typing import EventDict, Processor, ProcessorReturnValue, WrappedLogger

from corestone import context
from corestone.observability.redaction import REDACTED, SecretRedactor

__all__ = ["REDACTED", "SecretRedactor", "configure_logging", "get_logger", "log_request"]

# The redactor configure_logging installed; None until it runs (then log_request takes
# structlog's ordinary path, whatever the application configured).
_access_redactor: SecretRedactor | None = None
# The handler configure_logging installed and its renderer: while it is the only place a
# line can go, the access line is rendered and written directly (see log_request).
_access_output: tuple[logging.StreamHandler[Any], logging.Formatter, Processor] | None = None


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
    global _access_redactor, _access_output  # one logging configuration per process
    redactor = SecretRedactor(extra_secret_patterns)
    _access_redactor = redactor
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
        structlog.processors.JSONRenderer(serializer=_json_line)
        if format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *(_guarded(processor) for processor in shared),
            # Redact before the record leaves structlog: any other handler on the root
            # logger (a test's capture, a user's) sees the event dict as the message.
            _guarded(redactor),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = _SafeFormatter(
        # structlog's lines were redacted above; the standard library's are redacted here.
        foreign_pre_chain=[*shared, redactor],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_corestone", False):
            root.removeHandler(old)
    handler._corestone = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    _access_output = (handler, formatter, renderer)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # Our middleware logs each request with its correlation id; uvicorn's line would repeat it.
    logging.getLogger("uvicorn.access").disabled = True


def _json_line(event: Any, **options: Any) -> str:
    """One JSON line, by orjson (a third of the standard library's cost per line).

    What orjson refuses (an integer beyond 64 bits, a key that is not a string) takes the
    standard library's path, with structlog's fallback for unknown types, as before.
    Dataclasses go to that fallback too (their repr): the redactor passes an object on
    when its repr is clean, and orjson would write every field, ``repr=False`` ones too.
    """
    try:
        return orjson.dumps(
            event, default=options.get("default"), option=orjson.OPT_PASSTHROUGH_DATACLASS
        ).decode()
    except TypeError:
        return json.dumps(event, **options)


def _guarded(processor: Processor) -> Processor:
    """``processor``, except that its failure replaces the line with a note instead of raising."""

    def run(logger: WrappedLogger, method: str, event_dict: EventDict) -> ProcessorReturnValue:
        try:
            result = processor(logger, method, event_dict)
        except Exception as error:  # noqa: BLE001 - logging must never raise
            return _unloggable(event_dict.get("level", method), error)
        return result

    return run


def _unloggable(level: object, error: BaseException) -> EventDict:
    # Nothing of the original line: it may hold the very secret that failed to redact.
    return {
        "event": "log line dropped: it could not be processed",
        "level": str(level),
        "log_error": type(error).__name__,
    }


class _SafeFormatter(structlog.stdlib.ProcessorFormatter):
    """A ProcessorFormatter that never raises.

    The standard library's StreamHandler re-raises ``RecursionError`` out of the logging
    call; any failure here (a processor, the renderer) becomes a fixed JSON line instead.
    """

    def format(self, record: logging.LogRecord) -> str:
        try:
            return super().format(record)
        except Exception as error:  # noqa: BLE001 - logging must never raise
            line = _unloggable(record.levelname.lower(), error)
            line["logger"] = record.name
            return json.dumps(line)


def log_request(
    name: str,
    *,
    method: str,
    path: str,
    status: int,
    duration_ms: float,
) -> None:
    """The access line of one request, on logger ``name`` at info: structlog's line, for less.

    Every request writes one, so it skips the processor chain, which costs more than a
    cached read: the fields are known, so only the ones a client chose (method, path,
    correlation id) go through the redactor, and the record goes straight to the standard
    library's handlers, where the configured renderer writes it like any other line.
    """
    redactor = _access_redactor
    if redactor is None:  # configure_logging has not run: the ordinary path
        get_logger(name).info(
            "request", method=method, path=path, status=status, duration_ms=duration_ms
        )
        return
    stdlib = logging.getLogger(name)
    if not stdlib.isEnabledFor(logging.INFO):
        return
    event: dict[str, Any] = structlog.contextvars.get_contextvars()
    if event:  # bound by the application: may hold anything, so the whole redactor
        try:
            event = dict(redactor(stdlib, "info", event))
        except Exception as error:  # noqa: BLE001 - logging must never raise
            line = {**_unloggable("info", error), "logger": name}
            stdlib.handle(stdlib.makeRecord(name, logging.INFO, __file__, 0, line, (), None))
            return
    event.update(
        event="request",
        method=redactor.redact_text(method),
        path=redactor.redact_text(path),
        status=status,
        duration_ms=duration_ms,
    )
    correlation = context.correlation_id()
    if correlation is not None:
        event.setdefault("correlation_id", redactor.redact_text(correlation))
    for key, value in (("actor_id", context.actor_id()), ("workspace_id", context.workspace_id())):
        if value is not None:
            event.setdefault(key, redactor.redact_text(value))
    event["level"] = "info"
    event["logger"] = name
    event["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    # What structlog's wrap_for_formatter attaches, so the ProcessorFormatter renders it
    # as a structlog line; no caller lookup (the line is always the middleware's).
    output = _sole_output(stdlib)
    if output is not None:
        handler, renderer = output[0], output[2]
        try:
            text = str(renderer(stdlib, "info", event))
        except Exception as error:  # noqa: BLE001 - logging must never raise
            text = json.dumps({**_unloggable("info", error), "logger": name})
        with contextlib.suppress(Exception):  # a closed or broken stream: as emit() would
            handler.acquire()
            try:
                handler.stream.write(f"{text}{handler.terminator}")
                handler.flush()
            finally:
                handler.release()
        return
    record = stdlib.makeRecord(
        name, logging.INFO, __file__, 0, event, (), None, extra={"_logger": stdlib, "_name": "info"}
    )
    stdlib.handle(record)


def _sole_output(
    stdlib: logging.Logger,
) -> tuple[logging.StreamHandler[Any], logging.Formatter, Processor] | None:
    """corestone's handler and renderer, if a line of ``stdlib`` can reach no other handler.

    Then the access line skips the record, its copy in structlog's formatter and the
    handler chain (a tenth of a cached read's cost) and comes out identical. Any other
    handler on the way (a test's capture, a user's file), a filter, a level on the
    handler or a formatter put on it since, and it takes the ordinary path so that every
    handler sees it as it sees any line.
    """
    output = _access_output
    if output is None:
        return None
    handler = output[0]
    logger: logging.Logger | None = stdlib
    while logger is not None:
        if logger.filters:
            return None
        for found in logger.handlers:
            if found is not handler:
                return None
        if logger.handlers or not logger.propagate:
            break
        logger = logger.parent
    if logger is None or not logger.handlers or handler.filters:
        return None
    if handler.formatter is not output[1]:
        return None
    if handler.level > logging.INFO:
        return None
    return output


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger named ``name`` (usually ``__name__``)."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
