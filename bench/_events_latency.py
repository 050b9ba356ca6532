"""End-to-end latency, commit to a consumer's handler, at a steady rate.

Deployed as ``taskboard serve --no-worker`` beside a ``taskboard worker``: the writers
run in a process of their own (:mod:`bench._events_writer`: one row and one event per
transaction, open-loop at ``rate`` per second, so a slow commit does not slow the
schedule and queueing shows in the figures), and this process runs what the worker runs:
one :class:`~corestone.events.OutboxRelay` (woken by PostgreSQL's NOTIFY at each commit)
and one :class:`~corestone.events.EventConsumer` of its own group (the inbox in the same
database), against the real broker.

The writer reports when each COMMIT returned; the handler takes the time it is called;
both on ``perf_counter`` (``CLOCK_MONOTONIC``: one clock for every process of the
machine). Latency = handler time - commit time. The first ``warm`` events
(connections, statement caches, the group) are left out; an event not handled within
30 s of the last commit counts as infinitely late.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass

from bench._events_setup import checkpoint, registry, reset_events
from corestone.db import Database
from corestone.db.transactions import Transaction
from corestone.events import DomainEvent, EventConsumer, OutboxRelay
from corestone.events.brokers.base import Broker

__all__ = ["GROUP", "LatencyResult", "steady_latency"]

GROUP = "bench-latency"


@dataclass(frozen=True, slots=True)
class LatencyResult:
    sent: int
    handled: int
    rate: float
    """Commits per second actually achieved over the timed events."""
    p50_ms: float | None
    p99_ms: float | None
    """``inf`` when more than 1% of the events were not handled within the bound."""
    max_ms: float | None


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def steady_latency(
    db: Database, broker: Broker, topic: str, *, rate: float, count: int, warm: int = 50
) -> LatencyResult:
    """``warm + count`` one-event transactions at ``rate``/s; latency of the last ``count``."""
    await reset_events(db)  # nothing left from an earlier part reaches this topic
    await checkpoint(db)  # the earlier parts' writes are flushed before, not during, the timing
    events = registry()
    handled: dict[str, float] = {}
    total = warm + count
    everything = asyncio.Event()

    async def on_event(found: DomainEvent, _tx: Transaction) -> None:
        handled.setdefault(str(found.id), time.perf_counter())
        if len(handled) >= total:
            everything.set()

    relay = OutboxRelay(db, broker, topic_for=lambda _type: topic)
    consumer = EventConsumer(
        db, broker, events, group=GROUP, topic=topic, handlers={"bench.task_noted": on_event}
    )
    await broker.ensure_group(topic, GROUP)  # RabbitMQ: the queue must exist before events flow
    await consumer.start()
    await relay.start()
    try:
        writer = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench._events_writer",
            db.engine.url.render_as_string(hide_password=False), str(rate), str(total),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await writer.communicate()
        if writer.returncode != 0:
            raise RuntimeError(f"the writer process failed ({writer.returncode})")
        committed: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everything.wait(), 30)
    finally:
        await relay.aclose()
        await consumer.aclose()
    ids = sorted(committed, key=committed.__getitem__)[warm:]
    latencies = [(handled[i] - committed[i]) * 1000 if i in handled else math.inf for i in ids]
    done = [value for value in latencies if value != math.inf]
    span = committed[ids[-1]] - committed[ids[0]] if len(ids) > 1 else 0.0
    return LatencyResult(
        sent=len(ids),
        handled=len(done),
        rate=(len(ids) - 1) / span if span > 0 else 0.0,
        p50_ms=_percentile(latencies, 0.5),
        p99_ms=_percentile(latencies, 0.99),
        max_ms=max(latencies) if latencies else None,
    )
