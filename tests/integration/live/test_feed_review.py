"""The feed's own loops under a hostile review: a slow membership re-check."""

from __future__ import annotations

import asyncio
import contextlib

from corestone.db import Database, upgrade
from corestone.push import EventFeed, LocalWakes
from corestone.push.sse import HEARTBEAT
from taskboard.app import MIGRATIONS
from tests.integration.live.conftest import eventually


async def test_heartbeats_go_on_while_the_membership_recheck_hangs(database_url: str) -> None:
    """The re-check asks ``authorize`` once per open (user, workspace), one after another
    (ten thousand queries with ten thousand streams); it ran inside the heartbeat loop,
    so while it lasted no stream got a ping and proxies closed idle ones. Here the
    re-check hangs on its first call: the stream still gets heartbeats, and a hung
    re-check is not started twice."""
    database = Database(database_url)
    await database.start()
    try:
        await upgrade(database, MIGRATIONS)
        opened = asyncio.Event()
        hang = asyncio.Event()
        rechecks = 0

        async def authorize(user: object, workspace: object) -> None:
            nonlocal rechecks
            if opened.is_set():
                rechecks += 1
                await hang.wait()

        feed = EventFeed(
            database,
            LocalWakes(),
            authorize=authorize,
            heartbeat_seconds=0.02,
            recheck_seconds=0.02,
        )
        await feed.start()
        try:
            response = await feed.open(1, 1)
            opened.set()
            stream = response.stream
            await eventually(lambda: rechecks == 1)
            stream.take()  # what came before the re-check hung
            await eventually(lambda: HEARTBEAT in stream.take(), within=5.0)
            await eventually(lambda: HEARTBEAT in stream.take(), within=5.0)
            assert rechecks == 1
            hang.set()
            stream.end("disconnect")
        finally:
            await feed.aclose()
    finally:
        await database.aclose()


async def test_a_wake_that_lands_with_the_stop_does_not_keep_the_feed_running(
    database_url: str,
) -> None:
    """A wake (the relay's last pass at shutdown) lands in the same turn as the feed's
    stop. Python 3.11's ``asyncio.wait_for`` returns the woken wait's result and drops
    the cancellation then, so the follow loop went round again and the component's stop
    timed out (10 s, seen in a taskboard test's teardown). The feed stops."""
    database = Database(database_url)
    await database.start()
    try:
        await upgrade(database, MIGRATIONS)

        async def authorize(user: object, workspace: object) -> None:
            return None

        feed = EventFeed(database, LocalWakes(), authorize=authorize, poll_seconds=30.0)
        await feed.start()
        follow = feed._tasks[0]
        for _ in range(3):  # let the follow loop reach its wait for a wake
            await asyncio.sleep(0)
        feed._wake.set()
        follow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(follow), 5.0)
        assert follow.cancelled()
        await feed.aclose()
    finally:
        await database.aclose()
