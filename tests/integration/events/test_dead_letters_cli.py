"""``corestone events dead-letters list|replay|drop`` on each database.

The commands run through typer's CliRunner, except the replay that waits for a running
consumer: that one is a real ``corestone`` process, since the point is that a process
without handlers gets a letter replayed by the consumers of another.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from corestone import cli as corestone_cli
from corestone.db import Database, Transaction
from corestone.events import DomainEvent, EventConsumer, MemoryBroker
from corestone.events.inbox import InboxStore

from .conftest import create_tables, note, registry

HOSTILE_REASON = "failed 3 times; last: \x1b[31mRuntimeError('boom')\x1b[0m\n" + "x" * 500


async def _store_letters(url: str, *letters: tuple[str, DomainEvent | None, str]) -> list[int]:
    """Store dead letters as a consumer does: (group, event or junk, reason); their ids."""
    db = Database(url)
    await db.start()
    try:
        await create_tables(db)
        store = InboxStore()
        async with db.transaction() as tx:
            for group, event, reason in letters:
                await store.dead_letter(
                    tx.session,
                    consumer=group,
                    event_id=str(event.id) if event else "junk",
                    type_=event.type if event else None,
                    body=event.to_json() if event else b"\xffjunk",
                    reason=reason,
                    attempts=3,
                )
            return [letter.id for letter in await store.dead_letters(tx.session)]
    finally:
        await db.aclose()


@pytest.fixture
def url(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CORESTONE_DATABASE_URL", database_url)
    return database_url


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(corestone_cli.app, ["events", "dead-letters", *args])
    return result.exit_code, result.output


def test_list_shows_one_printable_line_per_letter_filtered_by_consumer(url: str) -> None:
    """One line each, with id, event id, type, attempts and the reason clipped to one
    line without its terminal escapes; --consumer keeps that group's only."""
    event = note()
    mailer, _ = asyncio.run(
        _store_letters(url, ("mailer", event, HOSTILE_REASON), ("other", None, "invalid_input"))
    )

    code, out = run("list", "--consumer", "mailer")

    assert code == 0, out
    [line, footer] = out.splitlines()
    assert line.startswith(f"{mailer}  mailer  {event.id}  note.added  attempts=3  ")
    assert "RuntimeError('boom')" in line
    assert "\x1b" not in line
    assert line.endswith("…")
    assert len(line) < 300
    assert footer == "1 of 1 dead letter(s) of mailer"
    code, out = run("list", "--limit", "1")
    assert code == 0, out
    assert out.splitlines()[-1] == "1 of 2 dead letter(s)"
    assert run("list", "--consumer", "nobody") == (0, "no dead letters of nobody\n")


def test_list_json_has_every_field_and_the_body(url: str) -> None:
    """--json: one array, the reason whole and the body as stored, for scripts."""
    event = note()
    [letter_id] = asyncio.run(_store_letters(url, ("mailer", event, HOSTILE_REASON)))

    code, out = run("list", "--json")

    assert code == 0, out
    [item] = json.loads(out)
    assert item["id"] == letter_id
    assert (item["consumer"], item["event_id"], item["type"]) == (
        "mailer",
        str(event.id),
        "note.added",
    )
    assert (item["attempts"], item["reason"], item["replay_requested_at"]) == (
        3,
        HOSTILE_REASON,
        None,
    )
    assert json.loads(item["body"])["id"] == str(event.id)


def test_drop_deletes_a_letter_once_and_only_of_the_named_consumer(url: str) -> None:
    """drop ID deletes it (exit 0); again, or with another group's name, exit 2."""
    first, second = asyncio.run(
        _store_letters(url, ("mailer", note(), "r1"), ("mailer", note(), "r2"))
    )

    assert run("drop", str(first)) == (0, f"{first}  dropped\n")
    code, out = run("drop", str(first))
    assert code == 2
    assert f"no dead letter {first}" in out
    assert run("drop", str(second), "--consumer", "other")[0] == 2
    assert run("list")[1].splitlines()[-1] == "1 of 1 dead letter(s)"


def test_replay_arguments_and_missing_letters_are_usage_errors(url: str) -> None:
    """Neither an ID nor --consumer --all, both, or an ID that is not there: exit 2;
    --all of a group without dead letters: nothing to do, exit 0."""
    [letter_id] = asyncio.run(_store_letters(url, ("mailer", note(), "r")))

    assert run("replay")[0] == 2
    assert run("replay", str(letter_id), "--all", "--consumer", "mailer")[0] == 2
    assert run("replay", "--all")[0] == 2
    assert run("replay", "999999")[0] == 2
    assert run("replay", str(letter_id), "--consumer", "other")[0] == 2
    assert run("replay", "--consumer", "other", "--all") == (0, "no dead letters of other\n")
    assert "[replay requested]" not in run("list")[1]  # none of that marked anything


def test_replay_marks_and_wait_says_so_when_no_consumer_replays_it(url: str) -> None:
    """Without --wait, replay marks the letter (list shows it) and exits 0; with --wait
    and no consumer of the group running, it gives up after --timeout with exit 1."""
    [letter_id] = asyncio.run(_store_letters(url, ("mailer", note(), "r")))

    code, out = run("replay", str(letter_id))
    assert code == 0, out
    assert "1 dead letter(s) marked" in out
    assert "[replay requested]" in run("list")[1]
    code, out = run("replay", str(letter_id), "--wait", "--timeout", "0.3", "--poll", "0.1")
    assert code == 1
    assert f"{letter_id}  not replayed within 0.3s" in out


def test_an_unmigrated_database_is_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database without the events tables: a one-line error, not a traceback."""
    monkeypatch.setenv("CORESTONE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    code, out = run("list")
    assert code == 1
    assert "corestone_events_dead_letters" in out
    assert "Traceback" not in out


async def test_replay_wait_reports_what_the_running_consumers_of_another_process_did(
    database_url: str,
) -> None:
    """A consumer runs here; a separate ``corestone`` process marks both of its group's
    letters and waits: one is applied (once) and removed, one fails again and stays with
    the new reason. The command prints both outcomes and exits 1 for the failure."""
    fine, broken = note(n=1), note(n=2)
    fine_id, broken_id = await _store_letters(
        database_url, ("mailer", fine, "r1"), ("mailer", broken, "r2")
    )
    db = Database(database_url)
    await db.start()
    async with db.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE effects (event_id VARCHAR(36) NOT NULL)"))

    async def handler(event: DomainEvent, tx: Transaction) -> None:
        await tx.session.execute(
            text("INSERT INTO effects (event_id) VALUES (:e)"), {"e": str(event.id)}
        )
        if event.id == broken.id:
            raise RuntimeError("still broken")

    consumer = EventConsumer(db, MemoryBroker(), registry(), group="mailer", wait_seconds=0.1,
                             replay_poll_seconds=0.1, handlers={"note.added": handler})  # fmt: skip
    await consumer.start()
    try:
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("corestone")),
            *("events", "dead-letters", "replay", "--consumer", "mailer", "--all", "--wait"),
            *("--timeout", "60", "--poll", "0.1"),
            env={**os.environ, "CORESTONE_DATABASE_URL": database_url},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 90)
    finally:
        await consumer.aclose()
    try:
        out = output.decode()
        assert process.returncode == 1, out
        assert f"{fine_id}  replayed" in out
        assert f"{broken_id}  failed: replay failed: RuntimeError('still broken')" in out
        async with db.transaction(read_only=True) as tx:
            effects = [
                r.event_id for r in await tx.session.execute(text("SELECT event_id FROM effects"))
            ]
        assert effects == [str(fine.id)]
        [left] = await consumer.dead_letters()
        assert (left.id, left.attempts, left.replay_requested_at) == (broken_id, 4, None)
    finally:
        await db.aclose()
