"""A sender in a process of its own, for the SIGKILL test, and the provider it sends through.

Run as ``python sender_crash_app.py DATABASE_URL``: one sender pass through
:class:`LedgerProvider`. With ``EMAIL_CRASH=1`` the provider, once it has accepted the
message (a line in ``$EMAIL_CRASH_DIR/ledger``), writes ``ready`` and sleeps until the
test kills the process: the provider has it, the outbox does not know.
``EMAIL_IDEMPOTENT=1`` makes the provider dedupe by idempotency key.

With ``EMAIL_DRAIN=1`` it is one of several concurrent workers instead: it writes
``ready-<pid>``, waits for ``go``, then runs passes until one finds nothing to do, each
provider call taking ``EMAIL_DELAY`` seconds so the workers overlap.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from corestone.db import Database
from corestone.email import EmailSender, Outgoing, ProviderRoute, Sent
from corestone.errors import EmailProviderError
from corestone.observability.health import CheckResult

LEASE_SECONDS = 30.0


def _dir() -> Path:
    return Path(os.environ["EMAIL_CRASH_DIR"])


def ledger() -> list[str]:
    """What the provider accepted, across processes: ``message_id key`` per line."""
    return ledger_for(_dir())


def ledger_for(directory: Path) -> list[str]:
    """The ledger kept in ``directory`` (``message_id key [pid]`` per line)."""
    path = directory / "ledger"
    return path.read_text().splitlines() if path.exists() else []


class LedgerProvider:
    """Accepts a message by appending it to the ledger file (once per key if idempotent)."""

    name = "ledger"
    max_batch = 1

    def __init__(self) -> None:
        self.idempotent = os.environ.get("EMAIL_IDEMPOTENT") == "1"

    async def send(self, outgoing: Outgoing) -> Sent:
        await asyncio.sleep(float(os.environ.get("EMAIL_DELAY", "0")))
        line = f"{outgoing.message_id} {outgoing.message.idempotency_key}"
        if not (self.idempotent and line in ledger()):
            with (_dir() / "ledger").open("a") as file:  # one short append: atomic
                file.write(f"{line} {os.getpid()}\n" if _draining() else line + "\n")
        if os.environ.get("EMAIL_CRASH") == "1":
            (_dir() / "ready").write_text("accepted")
            await asyncio.sleep(120)  # the test kills us here
        return Sent(self.name, f"ledger-{outgoing.message_id}")

    async def send_batch(self, batch: Sequence[Outgoing]) -> list[Sent | EmailProviderError]:
        return [await self.send(outgoing) for outgoing in batch]

    async def check(self) -> CheckResult:
        return CheckResult()

    async def aclose(self) -> None:
        return None


def _draining() -> bool:
    return os.environ.get("EMAIL_DRAIN") == "1"


async def _main(url: str) -> None:
    db = Database(url)
    await db.start()
    try:
        sender = EmailSender(
            db, [ProviderRoute(LedgerProvider())], lease_seconds=LEASE_SECONDS, batch=10,
            concurrency=2,
        )  # fmt: skip
        if not _draining():
            await sender.run_once()
            return
        (_dir() / f"ready-{os.getpid()}").write_text("ready")
        for _ in range(600):  # bounded: the test says go within a minute
            if (_dir() / "go").exists():
                break
            await asyncio.sleep(0.1)
        while await sender.run_once():
            pass
    finally:
        await db.aclose()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1]))
