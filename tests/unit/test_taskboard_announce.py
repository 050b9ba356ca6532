"""Where `taskboard serve` says it is up, and where the demo token may go (decision 0028)."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

import taskboard.cli as cli
from corestone import Settings
from taskboard.seed import Demo

_TOKEN = "tb_the-demo-token"
_DEMO = Demo(user_id=1, workspace_id=7, token=_TOKEN, created=True)
_URL = "http://127.0.0.1:8000"


def _announce(
    capsys: pytest.CaptureFixture[str], settings: Settings, demo: Demo | None = _DEMO
) -> tuple[str, list[dict[str, object]]]:
    with capture_logs() as events:
        cli._announce(settings, _URL, "sqlite+aiosqlite:///./var/x.db", demo)
    return capsys.readouterr().out, events


def _prod(**more: object) -> Settings:
    return Settings(env="prod", secret_key="k" * 40, **more)


def test_prod_json_without_a_terminal_keeps_the_token_out_of_stdout_and_logs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In prod on a pipe: one structured event, a warning, no token anywhere."""
    monkeypatch.setattr(cli, "_on_terminal", lambda: False)

    out, events = _announce(capsys, _prod())

    assert out == ""
    assert _TOKEN not in repr(events)
    serving = [e for e in events if e["event"] == "taskboard serving"]
    assert serving == [
        {
            "event": "taskboard serving",
            "log_level": "info",
            "url": _URL,
            "database": "sqlite+aiosqlite:///./var/x.db",
            "demo_workspace_id": 7,
        }
    ]
    assert any(e["log_level"] == "warning" for e in events)


def test_prod_on_a_terminal_prints_the_token_for_the_person_there(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A person who started a prod process by hand with --seed sees the token, not the log."""
    monkeypatch.setattr(cli, "_on_terminal", lambda: True)

    out, events = _announce(capsys, _prod())

    assert f"demo token:        {_TOKEN}" in out
    assert _TOKEN not in repr(events)


def test_prod_without_a_seed_prints_nothing_and_warns_of_nothing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No seed in prod: only the structured line, demo_workspace_id null."""
    monkeypatch.setattr(cli, "_on_terminal", lambda: True)

    out, events = _announce(capsys, _prod(), demo=None)

    assert out == ""
    assert [e["event"] for e in events] == ["taskboard serving"]
    assert events[0]["demo_workspace_id"] is None


@pytest.mark.parametrize("env", ["dev", "test"])
def test_outside_prod_the_banner_carries_the_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, env: str
) -> None:
    """dev and test data: the banner with the token is printed even on a pipe."""
    monkeypatch.setattr(cli, "_on_terminal", lambda: False)

    out, _ = _announce(capsys, Settings(env=env))  # type: ignore[arg-type]

    assert f"demo token:        {_TOKEN}" in out
    assert f"taskboard on {_URL}" in out


def test_console_logs_get_the_banner_and_no_structured_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Console logs are for a person: the plain banner, no duplicate log event."""
    out, events = _announce(capsys, Settings(env="dev"))

    assert out.startswith(f"\ntaskboard on {_URL}")
    assert events == []
