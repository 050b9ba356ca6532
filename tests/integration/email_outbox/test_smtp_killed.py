"""A real SMTP server killed in the middle of a batch: what the rows say, and no copy twice."""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from typing import Any

from corestone.db import Database
from corestone.email import EmailSender, ProviderRoute
from corestone.email.providers.smtp import SmtpProvider
from tests.integration.email_providers.conftest import free_port
from tests.integration.email_providers.fakes import SmtpRecorder, start_smtp

from .conftest import Time, breakers, queue, statuses


class DiesAtFourth(SmtpRecorder):
    """Accepts three messages, then hangs in the fourth's DATA until the server is stopped."""

    def __init__(self) -> None:
        super().__init__()
        self.dying = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if len(self.delivered) == 3:
            self.dying.set()
            await asyncio.sleep(3600)  # cancelled by the controller's stop
        return await super().handle_DATA(server, session, envelope)


def ids(*recorders: SmtpRecorder) -> Counter[str]:
    found = (
        re.search(rb"X-Corestone-Id: (\S+)", d.content) for r in recorders for d in r.delivered
    )
    return Counter(m.group(1).decode() for m in found if m)


async def test_smtp_killed_mid_batch_leaves_sent_and_queued_rows_and_no_copy_twice(
    db: Database, time: Time
) -> None:
    """Three messages went out before the kill: ``sent``; the rest ``queued``; after the
    server comes back each of the ten has arrived exactly once, over a fresh connection."""
    port = free_port()
    dying = DiesAtFourth()
    controller = start_smtp(dying, port)
    provider = SmtpProvider(f"smtp://127.0.0.1:{port}", max_batch=10, timeout=5.0)
    sender = EmailSender(
        db, [ProviderRoute(provider)], breakers=breakers(time), now=time.wall,
        tries_per_provider=1, backoff_initial_seconds=10.0, lease_seconds=30.0,
    )  # fmt: skip
    message_ids = await queue(db, time, 10)
    killer = threading.Thread(target=lambda: (dying.dying.wait(30), controller.stop()))
    killer.start()
    try:
        await sender.run_once()
    finally:
        await asyncio.to_thread(killer.join)
    after_kill = await statuses(db)
    assert Counter(after_kill.values()) == {"sent": 3, "queued": 7}
    assert ids(dying) == {i: 1 for i in message_ids if after_kill[i] == "sent"}

    back = SmtpRecorder()
    controller = start_smtp(back, port)
    try:
        time.advance(3600)
        await sender.run_once()
    finally:
        await provider.aclose()
        controller.stop()
    assert set((await statuses(db)).values()) == {"sent"}
    assert ids(dying, back) == dict.fromkeys(message_ids, 1)
