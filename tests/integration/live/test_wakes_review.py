"""Redis wakes under a hostile review: a connection cut without a reset (a partition)."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

from corestone.push import RedisWakes
from tests.integration.fault_proxy import FaultProxy
from tests.integration.live.conftest import eventually


async def test_a_silent_redis_counts_as_down_and_comes_back(redis_url: str) -> None:
    """Redis goes silent behind a proxy (nothing forwarded, nothing closed). The
    subscriber waited on the dead connection for ever, and health kept saying the
    wakes were up; now a PING unanswered for ``ping_seconds`` ends it: the wakes report
    down (readiness warns, the feeds poll), and once Redis answers again they are back."""
    upstream = urlsplit(redis_url)
    proxy = FaultProxy(upstream.port or 6379, upstream.hostname or "127.0.0.1")
    port = await proxy.start()
    url = redis_url.replace(upstream.netloc, f"127.0.0.1:{port}")
    wakes = RedisWakes(url, channel=f"test:{uuid.uuid4().hex}", ping_seconds=0.2)
    await wakes.start()
    try:
        await eventually(lambda: wakes.connected)
        proxy.dark = True
        await eventually(lambda: not wakes.connected)
        proxy.dark = False
        await eventually(lambda: wakes.connected)
    finally:
        await wakes.aclose()
        await proxy.aclose()
