"""The access line (``log_request``): structlog's line without its processor chain."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from corestone import context
from corestone.observability.logging import configure_logging, get_logger, log_request


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    err = capsys.readouterr().err
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_the_access_line_is_the_line_structlog_writes(capsys: pytest.CaptureFixture[str]) -> None:
    """Same keys and values as ``log.info("request", …)`` in the same context, timestamp aside."""
    configure_logging(format="json")
    fields: dict[str, Any] = {
        "method": "GET",
        "path": "/api/workspaces/3/tasks/9",
        "status": 200,
        "duration_ms": 1.25,
    }
    with (
        context.bind(correlation="req-1", actor=7, workspace=3),
        structlog.contextvars.bound_contextvars(tenant_tier="gold"),
    ):
        get_logger("corestone.web").info("request", **fields)
        log_request("corestone.web", **fields)
    ordinary, fast = _lines(capsys)
    assert fast["timestamp"].endswith("Z")
    assert {**fast, "timestamp": None} == {**ordinary, "timestamp": None}
    assert fast["correlation_id"] == "req-1"
    assert fast["tenant_tier"] == "gold"


def test_a_secret_in_the_path_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """The fields a client chose still go through the redactor."""
    configure_logging(format="json")
    log_request(
        "corestone.web", method="GET", path="/x/password=hunter2", status=404, duration_ms=0.5
    )
    [line] = _lines(capsys)
    assert "hunter2" not in json.dumps(line)


def test_the_level_is_honoured(capsys: pytest.CaptureFixture[str]) -> None:
    """At warning, no access line is written."""
    configure_logging(format="json", level="warning")
    log_request("corestone.web", method="GET", path="/", status=200, duration_ms=0.1)
    assert _lines(capsys) == []


def test_a_secret_bound_in_the_context_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """A secret bound into structlog's context vars is redacted on the access line as on any."""
    configure_logging(format="json")
    with structlog.contextvars.bound_contextvars(
        api_key="sk-live-123", note="dsn postgresql://u:hunter2@db/x"
    ):
        get_logger("corestone.web").info("request")
        log_request("corestone.web", method="GET", path="/", status=200, duration_ms=0.1)
    ordinary, fast = _lines(capsys)
    assert "sk-live-123" not in json.dumps(fast)
    assert "hunter2" not in json.dumps(fast)
    assert fast["api_key"] == ordinary["api_key"]
    assert fast["note"] == ordinary["note"]


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_the_access_line_never_raises(capsys: pytest.CaptureFixture[str]) -> None:
    """A context value the redactor cannot handle drops the line instead of raising."""
    configure_logging(format="json")
    with structlog.contextvars.bound_contextvars(thing=_Unprintable()):
        log_request("corestone.web", method="GET", path="/", status=200, duration_ms=0.1)
    [line] = _lines(capsys)
    assert line["log_error"] == "RuntimeError"


class _Collect(logging.Handler):
    """A second handler: its presence sends the access line down the ordinary path."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _alone_on_the_root(monkeypatch: pytest.MonkeyPatch) -> logging.Handler:
    """corestone's handler, left alone on the root logger for the test.

    pytest's own capture handlers sit on the root during a test, and with them there the
    access line never takes the direct write that production takes.
    """
    root = logging.getLogger()
    [handler] = [h for h in root.handlers if getattr(h, "_corestone", False)]
    monkeypatch.setattr(root, "handlers", [handler])
    return handler


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_the_direct_write_matches_the_handler_chain(
    capsys: pytest.CaptureFixture[str], log_format: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written directly (corestone's handler alone) or through the chain, the line is the same."""
    configure_logging(format=log_format)  # type: ignore[arg-type]
    _alone_on_the_root(monkeypatch)
    fields: dict[str, Any] = {"method": "GET", "path": "/x", "status": 200, "duration_ms": 1.5}
    with context.bind(correlation="req-direct", actor=3):
        log_request("corestone.web", **fields)
        direct = capsys.readouterr().err
        extra = _Collect()
        logging.getLogger().addHandler(extra)
        log_request("corestone.web", **fields)
        chained = capsys.readouterr().err
    assert len(extra.records) == 1  # the other handler saw the line
    assert direct.count("\n") == chained.count("\n") == 1

    def without_time(line: str) -> str:
        if log_format == "json":
            parsed = json.loads(line)
            parsed.pop("timestamp")
            return json.dumps(parsed, sort_keys=True)
        return line.split(" ", 1)[1]

    assert without_time(direct) == without_time(chained)
    assert "req-direct" in direct


def test_a_filter_on_the_logger_is_respected(capsys: pytest.CaptureFixture[str]) -> None:
    """A filter on the access logger still drops the line: no direct write around it."""
    configure_logging(format="json")
    web = logging.getLogger("corestone.web")
    web.addFilter(lambda _record: False)
    try:
        log_request("corestone.web", method="GET", path="/x", status=200, duration_ms=1.0)
    finally:
        web.filters.clear()
    assert capsys.readouterr().err == ""


def test_a_formatter_set_on_the_handler_afterwards_is_used(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The direct write renders as configure_logging's formatter would; another one wins.

    An application that puts its own formatter on corestone's handler gets its format for
    the access line too, as for every other line.
    """
    configure_logging(format="json")
    handler = _alone_on_the_root(monkeypatch)
    handler.setFormatter(logging.Formatter("custom %(levelname)s %(name)s"))

    log_request("corestone.web", method="GET", path="/x", status=200, duration_ms=1.0)

    assert capsys.readouterr().err == "custom INFO corestone.web\n"
