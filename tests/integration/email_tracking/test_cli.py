"""``corestone email list|show|retry`` against a real outbox, on each database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from corestone import cli as corestone_cli
from corestone.db import Database
from corestone.email import EmailService
from tests.integration.email_outbox.conftest import OUTBOX, message

from .conftest import ALL_TABLES


async def _prepare(url: str) -> tuple[str, str]:
    """One queued message and one failed one; their ids."""
    db = Database(url)
    await db.start()
    try:
        async with db.engine.begin() as conn:
            for table in ALL_TABLES:
                await conn.run_sync(table.create, checkfirst=True)
        service = EmailService(db)
        queued = await service.send(message("ada@example.com"))
        failed = await service.send(message("bo@example.com"))
        async with db.transaction() as tx:
            await tx.session.execute(
                update(OUTBOX)
                .where(OUTBOX.c.id == failed)
                .values(status="failed", last_error="550 mailbox unavailable")
            )
        return queued, failed
    finally:
        await db.aclose()


@pytest.fixture
def outbox(database_url: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    monkeypatch.setenv("CORESTONE_DATABASE_URL", database_url)
    return asyncio.run(_prepare(database_url))


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(corestone_cli.app, ["email", *args])
    return result.exit_code, result.output


def test_list_filters_by_status_and_counts_every_status(outbox: tuple[str, str]) -> None:
    """``list --status failed`` shows only the failed message; the counts cover all."""
    queued, failed = outbox
    code, out = run("list", "--status", "failed")
    assert code == 0, out
    assert failed in out
    assert queued not in out
    assert "failed=1" in out
    assert "queued=1" in out


def test_list_refuses_an_unknown_status(outbox: tuple[str, str]) -> None:
    """A status that does not exist is a usage error (exit 2) naming the allowed ones."""
    code, out = run("list", "--status", "lost")
    assert code == 2
    assert "queued" in out


def test_show_prints_the_message_and_its_history(outbox: tuple[str, str]) -> None:
    """``show`` prints recipients, status, the last error and each history row."""
    _, failed = outbox
    code, out = run("show", failed)
    assert code == 0, out
    assert "status: failed" in out
    assert "bo@example.com" in out
    assert "550 mailbox unavailable" in out
    assert "queued" in out  # the history's first row
    assert run("show", "no-such-id")[0] == 2


def test_retry_queues_a_failed_message_and_refuses_a_queued_one(outbox: tuple[str, str]) -> None:
    """A failed message is queued again (exit 0); one that is not failed is exit 2."""
    queued, failed = outbox
    code, out = run("retry", failed)
    assert code == 0, out
    assert f"{failed}  queued" in out
    assert "status: queued" in run("show", failed)[1]
    assert run("retry", queued)[0] == 2


def test_list_on_an_unmigrated_database_is_one_line_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator pointing `corestone email list` at a database that was never migrated
    gets the driver's first line and a hint, exit 1: it was a SQLAlchemy traceback with
    the whole statement in it."""
    monkeypatch.setenv("CORESTONE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/empty.db")
    code, output = run("list")
    assert code == 1
    assert "no such table: corestone_email_outbox" in output
    assert "are the email tables migrated?" in output
    assert "Traceback" not in output
    assert "SELECT" not in output
