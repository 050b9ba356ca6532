"""``corestone alerts silence add|list|expire`` and ``alerts history``, on each database."""

from __future__ import annotations

import asyncio
import re

import pytest
from typer.testing import CliRunner

from corestone import cli as corestone_cli
from corestone.observability.alerts import store
from corestone.observability.alerts.model import AlertState, Transition
from tests.integration.alerts.delivery_support import START, alert, alert_database


@pytest.fixture
def url(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """CORESTONE_DATABASE_URL set to a database with the alert tables (and two changes)."""

    async def prepare() -> None:
        async with alert_database(database_url) as db, db.transaction() as tx:
            changes = [
                Transition(alert(state=AlertState.FIRING), AlertState.PENDING),
                Transition(alert("DiskFull", state=AlertState.PENDING), AlertState.INACTIVE),
            ]
            await store.record_transitions(tx.session, changes, START)

    asyncio.run(prepare())
    monkeypatch.setenv("CORESTONE_DATABASE_URL", database_url)
    return database_url


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(corestone_cli.app, ["alerts", *args])
    return result.exit_code, result.output


def test_add_list_and_expire_a_silence(url: str) -> None:
    """A silence added here is listed, expired, and then listed only with --expired."""
    code, out = run(
        "silence",
        "add",
        "alertname=~High.*",
        "severity!=info",
        "--for",
        "30m",
        "--comment",
        "deploy",
        "--author",
        "ada",
    )
    assert code == 0, out
    silence_id = re.match(r"^([0-9a-f-]{36})  active", out)
    assert silence_id is not None, out
    assert "alertname=~High.* severity!=info  by ada  # deploy" in out
    code, out = run("silence", "list")
    assert (code, out.count("\n")) == (0, 1)
    code, out = run("silence", "expire", silence_id[1])
    assert code == 0
    assert "expired" in out
    assert run("silence", "list") == (0, "no silences\n")
    code, out = run("silence", "list", "--expired")
    assert silence_id[1] in out


@pytest.mark.parametrize(
    "args",
    [
        ("silence", "add", "alertname=~(oops"),
        ("silence", "add", "alertname=~.*"),
        ("silence", "add", "alertname=X", "--for", "forever"),
        ("silence", "add", "alertname=X", "--for", "400d"),
    ],
)
def test_bad_input_exits_2_naming_the_problem(url: str, args: tuple[str, ...]) -> None:
    """A bad regex, a silence of everything, a bad or too long duration: exit 2, one line."""
    code, out = run(*args)
    assert code == 2
    assert out.startswith("error: ")
    assert run("silence", "list", "--expired") == (0, "no silences\n")


def test_expiring_an_unknown_silence_exits_1(url: str) -> None:
    """An id that names no silence: exit 1."""
    code, out = run("silence", "expire", "00000000-0000-0000-0000-000000000000")
    assert code == 1
    assert "no such silence" in out


def test_history_lists_the_newest_changes_first(url: str) -> None:
    """The history shows every stored change, newest first, and filters by rule."""
    code, out = run("history")
    assert code == 0
    assert [line.split("  ")[1:3] for line in out.splitlines()] == [
        ["DiskFull", "inactive -> pending"],
        ["HighErrorRatio", "pending -> firing"],
    ]
    code, out = run("history", "--rule", "DiskFull")
    assert out.count("\n") == 1
