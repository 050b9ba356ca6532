"""Senders as real concurrent workers: two at once on PostgreSQL, and one killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time as clock
from datetime import timedelta
from pathlib import Path

import pytest

from corestone.db import Database, utc_now
from corestone.email import EmailMessage, EmailSender, EmailService, ProviderRoute
from corestone.resilience import BreakerRegistry
from tests.integration.crash import kill_when_ready

from . import sender_crash_app as app
from .conftest import create_tables, history, row, statuses
from .fakes import FakeProvider, deliveries

HERE = Path(__file__).resolve().parent


async def test_two_senders_at_once_on_postgresql_never_send_a_message_twice(
    postgres_url: str,
) -> None:
    """Two senders, each with its own pool, drain 300 messages: each goes out exactly once."""
    first, second = Database(postgres_url), Database(postgres_url)
    await first.start()
    await second.start()
    try:
        await create_tables(first)
        service = EmailService(first)
        async with first.transaction():
            for number in range(300):
                await service.send(
                    EmailMessage.build(
                        sender="app@example.com",
                        to=f"user{number}@example.com",
                        subject="Hello",
                        text="Hi",
                    )
                )
        providers = [FakeProvider("alpha", delay=0.001), FakeProvider("alpha", delay=0.001)]
        senders = [
            EmailSender(db, [ProviderRoute(p)], breakers=BreakerRegistry(), batch=20, concurrency=4)
            for db, p in zip((first, second), providers, strict=True)
        ]

        async def work(sender: EmailSender) -> None:
            for _ in range(200):  # bounded: each pass handles up to a batch
                if (
                    await sender.run_once() == 0
                    and "queued" not in (await statuses(first)).values()
                ):
                    return

        await asyncio.gather(*(work(sender) for sender in senders))
        assert set((await statuses(first)).values()) == {"sent"}
        counts = deliveries(*providers)
        assert len(counts) == 300
        assert set(counts.values()) == {1}
        assert all(provider.delivered for provider in providers)  # both did real work
    finally:
        await first.aclose()
        await second.aclose()


def test_two_sender_processes_on_postgresql_send_each_message_once(
    postgres_url: str, tmp_path: Path
) -> None:
    """Two real processes drain 200 messages from one PostgreSQL: every message exactly once."""

    async def prepare() -> list[str]:
        db = Database(postgres_url)
        await db.start()
        try:
            await create_tables(db)
            service = EmailService(db)
            async with db.transaction():
                return [
                    await service.send(
                        EmailMessage.build(
                            sender="app@example.com", to=f"u{n}@example.com", subject="Hi", text="x"
                        )
                    )
                    for n in range(200)
                ]
        finally:
            await db.aclose()

    ids = asyncio.run(prepare())
    env = {
        **os.environ,
        "EMAIL_CRASH_DIR": str(tmp_path),
        "EMAIL_DRAIN": "1",
        "EMAIL_DELAY": "0.002",
    }
    env.pop("EMAIL_CRASH", None)
    logs = [(tmp_path / f"child{n}.log").open("wb") for n in range(2)]
    children = [
        subprocess.Popen(
            [sys.executable, str(HERE / "sender_crash_app.py"), postgres_url],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for log in logs
    ]
    try:
        for _ in range(300):  # bounded: up to ~30 s for both interpreters to start
            if len(list(tmp_path.glob("ready-*"))) == 2:
                break
            clock.sleep(0.1)
        (tmp_path / "go").write_text("go")
        codes = [child.wait(timeout=120) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
        for log in logs:
            log.close()
    assert codes == [0, 0], [(tmp_path / f"child{n}.log").read_text() for n in range(2)]
    lines = [line.split() for line in app.ledger_for(tmp_path)]
    assert sorted(message_id for message_id, _, _ in lines) == sorted(ids)
    assert len({pid for _, _, pid in lines}) == 2  # both processes sent some


def run_and_kill(url: str, workdir: Path, *, idempotent: bool) -> None:
    """Start a sender in a child process, wait until its provider accepted, then SIGKILL it."""
    env = {
        "EMAIL_CRASH_DIR": str(workdir),
        "EMAIL_CRASH": "1",
        "EMAIL_IDEMPOTENT": "1" if idempotent else "0",
    }
    kill_when_ready(HERE / "sender_crash_app.py", [url], workdir, env)


@pytest.mark.parametrize("idempotent", [False, True], ids=["plain-provider", "idempotent-provider"])
async def test_a_sender_killed_after_the_provider_accepted_sends_no_second_copy(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, idempotent: bool
) -> None:
    """SIGKILL between the provider's acceptance and the write of sent: restart, no second copy.

    Plain provider: the message ends ``unknown`` for an operator. Idempotent provider: it
    is sent again with the same key, which the provider absorbs, and ends ``sent``.
    """
    monkeypatch.setenv("EMAIL_CRASH_DIR", str(tmp_path))
    monkeypatch.setenv("EMAIL_IDEMPOTENT", "1" if idempotent else "0")
    db = Database(database_url)
    await db.start()
    try:
        await create_tables(db)
        message_id = await EmailService(db).send(
            EmailMessage.build(
                sender="app@example.com", to="ada@example.com", subject="Hi", text="x"
            )
        )
        run_and_kill(database_url, tmp_path, idempotent=idempotent)
        stored = await row(db, message_id)
        assert (stored.status, stored.provider) == ("sending", "ledger")
        assert app.ledger() == [f"{message_id} {message_id}"]

        # The restarted sender's clock runs one lease ahead instead of the test waiting.
        restarted = EmailSender(
            db,
            [ProviderRoute(app.LedgerProvider())],
            breakers=BreakerRegistry(),
            now=lambda: utc_now() + timedelta(seconds=app.LEASE_SECONDS + 1),
        )
        await restarted.run_once()
        await restarted.run_once()
        stored = await row(db, message_id)
        assert app.ledger() == [f"{message_id} {message_id}"]  # still one copy
        if idempotent:
            assert (stored.status, stored.provider_message_id) == ("sent", f"ledger-{message_id}")
        else:
            assert stored.status == "unknown"
            assert (await history(db, message_id))[-1][0] == "unknown"
    finally:
        await db.aclose()
