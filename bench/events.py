"""Domain events (issue 14): the outbox's write overhead, relay throughput, end-to-end latency.

``python -m bench events [--quick]``. In one run, on PostgreSQL (a database of its own,
created and dropped), with Redis Streams, NATS JetStream and RabbitMQ (streams, groups,
exchanges and queues named for the run, deleted afterwards; a broker whose server does
not answer is left out and its checks say "missing"):

- **write overhead** (:mod:`bench._events_write`): a one-row write transaction with one
  event recorded against the same write alone, medians of 2,000 of each, alternating
  (``--quick``: 300); and, as the floor of anything added to that transaction, the same
  write plus a ``SELECT 1``.
- **relay throughput** (:mod:`bench._events_relay`): 20,000 committed events
  (``--quick``: 3,000) drained by one relay with its defaults, commit to broker, per
  broker (and the memory broker, the database's own ceiling); beside each, the broker's
  own client publishing the same bodies in the same batches, acknowledged, no database.
- **end-to-end latency** (:mod:`bench._events_latency`): writers in a process of their
  own at a steady 200 events per second for 15 s (``--quick``: 3 s), the relay and one
  consumer in this one; commit to handler, p50 and p99, per broker.

The checks are issue 14's targets: the outbox adds at most 1.3x to the write; at least
5,000 events/s relayed to at least one broker; p99 under 50 ms at 200 events/s (on Redis
Streams, the check; the other brokers reported). Everything shares a 2-core machine
with PostgreSQL, the brokers and (often) other sessions' test suites: the load average
is printed before and after.
"""

from __future__ import annotations

import math
import os

from bench._events_latency import GROUP, LatencyResult, steady_latency
from bench._events_relay import fill_outbox, peer_publish, relay_drain
from bench._events_setup import (
    BROKER_KINDS,
    close_broker,
    events_database,
    open_broker,
    topic,
)
from bench._events_write import write_overhead
from bench._report import Report
from corestone.db import Database
from corestone.events import MemoryBroker
from corestone.observability.logging import configure_logging

__all__ = ["run"]

_PEERS = {
    "redis": "redis-py pipeline of XADD",
    "nats": "nats-py publish_async + acks",
    "rabbitmq": "aio-pika publish + confirms",
}


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


async def _write(report: Report, db: Database, count: int) -> float:
    result = await write_overhead(db, count)
    report.rows += [
        ("write overhead", "tx: one-row insert (median)", result.write_us, "µs"),
        ("write overhead", "tx: insert + EventBus.record (median)", result.write_event_us, "µs"),
        ("write overhead", "tx: insert + SELECT 1 (median, the floor)", result.write_select_us,
         "µs"),
    ]  # fmt: skip
    report.results.update(
        {
            "write_tx_us": result.write_us,
            "write_event_tx_us": result.write_event_us,
            "write_select1_tx_us": result.write_select_us,
            "write_event_ratio": result.ratio,
            "write_select1_ratio": result.select_ratio,
        }
    )
    report.notes.append(f"write overhead: {result.transactions} transactions of each shape")
    return result.ratio


async def _relay(report: Report, db: Database, count: int) -> dict[str, float]:
    rates: dict[str, float] = {}
    bodies = await fill_outbox(db, count)
    memory = await relay_drain(db, MemoryBroker(), "bench", count)
    report.rows.append(("relay", "OutboxRelay → memory broker", memory.per_second, "events/s"))
    report.results["relay_memory_events_per_s"] = memory.per_second
    for kind in BROKER_KINDS:
        broker = await open_broker(kind)
        if broker is None:
            report.notes.append(f"{kind}: the server did not answer, left out")
            continue
        relayed, peered = topic(f"relay-{kind}"), topic(f"peer-{kind}")
        try:
            for name in (relayed, peered):  # RabbitMQ keeps only what a bound queue takes
                await broker.ensure_group(name, "bench")
            await fill_outbox(db, count)
            result = await relay_drain(db, broker, relayed, count)
            peer_seconds = await peer_publish(kind, broker, peered, bodies)
        finally:
            await close_broker(broker, [relayed, peered], ["bench"])
        peer = count / peer_seconds
        rates[kind] = result.per_second
        report.rows += [
            ("relay", f"OutboxRelay → {kind}", result.per_second, "events/s"),
            ("relay", f"peer: {_PEERS[kind]} (no database)", peer, "events/s"),
        ]
        report.results[f"relay_{kind}_events_per_s"] = result.per_second
        report.results[f"peer_{kind}_events_per_s"] = peer
        report.results[f"relay_{kind}_vs_peer"] = result.per_second / peer
        wrong = (result.held or 0) != count or result.pending or result.published != count
        if wrong:
            report.notes.append(
                f"relay → {kind}: published {result.published}, broker holds {result.held}, "
                f"{result.pending} left pending (of {count})"
            )
        report.results[f"relay_{kind}_lost_or_extra"] = float(
            abs((result.held or 0) - count) + result.pending
        )
    report.notes.append(
        f"relay: {count} events per broker, one relay, batches of 500, in {memory.passes} "
        "passes each"
    )
    return rates


async def _latency(report: Report, db: Database, count: int) -> dict[str, LatencyResult]:
    found: dict[str, LatencyResult] = {}
    for kind in BROKER_KINDS:
        broker = await open_broker(kind)
        if broker is None:
            continue
        name = topic(f"latency-{kind}")
        try:
            result = await steady_latency(db, broker, name, rate=200, count=count)
        finally:
            await close_broker(broker, [name], [GROUP])
        found[kind] = result
        report.rows += [
            ("latency", f"{kind}: commit → handler p50", result.p50_ms, "ms"),
            ("latency", f"{kind}: commit → handler p99", result.p99_ms, "ms"),
            ("latency", f"{kind}: commit → handler max", result.max_ms, "ms"),
            ("latency", f"{kind}: commits per second achieved", result.rate, "events/s"),
        ]
        for key, value in (("p50", result.p50_ms), ("p99", result.p99_ms),
                           ("max", result.max_ms)):  # fmt: skip
            report.results[f"latency_{kind}_{key}_ms"] = (
                None if value is None or math.isinf(value) else value
            )
        report.results[f"latency_{kind}_rate_per_s"] = result.rate
        report.results[f"latency_{kind}_unhandled"] = float(result.sent - result.handled)
    report.notes.append(
        f"latency: {count} timed events per broker at 200/s (after 50 to warm up), "
        "writers in their own process"
    )
    return found


async def run(quick: bool) -> Report:
    writes, relayed, timed = (300, 3_000, 600) if quick else (2_000, 20_000, 3_000)
    configure_logging(format="json", level="warning")  # the table and JSON alone on stdout
    report = Report("events", ("part", "case", "value", "unit"))
    report.notes.append(f"load average before the run: {_load()}")
    async with events_database() as db:
        ratio = await _write(report, db, writes)
        rates = await _relay(report, db, relayed)
        latency = await _latency(report, db, timed)
    report.notes.append(f"load average after the run: {_load()}")

    report.check("outbox_write_tx_vs_plain_write_tx", ratio, "<=", 1.3)
    best = max(rates, key=rates.__getitem__) if rates else None
    report.check(
        "relay_events_per_s_best_broker",
        rates[best] if best else None,
        ">=",
        5000,
        f"best: {best}" if best else "no broker answered",
    )
    redis = latency.get("redis")
    p99 = None if redis is None or redis.p99_ms is None else redis.p99_ms
    report.check(
        "latency_p99_ms_redis_at_200_per_s",
        None if p99 is None or math.isinf(p99) else p99,
        "<",
        50,
        "missing: more than 1% not handled within 30 s" if p99 is not None and math.isinf(p99)
        else "",
    )  # fmt: skip
    lost = sum(
        value
        for key, value in report.results.items()
        if key.endswith("_lost_or_extra") and value is not None
    )
    report.check(
        "relay_every_event_once", lost, "==", 0, "broker count minus events, plus rows pending"
    )
    return report
