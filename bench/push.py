"""Live streams (issue 15): commit-to-client latency, memory per idle stream, fan-out.

``python -m bench push [--quick]``. In one run, on PostgreSQL (a database of its own,
created and dropped) and Redis (a key namespace of its own):

- **processes**: a ``taskboard worker`` (the outbox relay: LISTEN on PostgreSQL, then
  its wakes PUBLISHed on Redis) and two ``taskboard serve --no-worker`` (A and B), each
  with its one feed. This process commits the events (an ``EventBus`` on the same
  database, as a third instance would) and is the load generator: raw asyncio Protocol
  connections (:mod:`bench._push_clients`) that count bytes, on uvloop.
- **memory per idle stream**: 1,000 streams (500 on A, 500 on B; 100 workspaces, 10
  streams each), the servers' RSS before and after, divided by 1,000.
- **latency**: 100 events per second for 20 s (``--quick``: 5 s), round-robin over the
  100 workspaces, to those 1,000 streams; each event reaches its workspace's 10 streams
  on the two servers. One stream per workspace and server is a probe: commit (the
  moment the committing transaction returned, in this process) to the probe's receipt
  of the event, p50 and p99 over every probe receipt.
- **fan-out**: 1,000 streams of one workspace on B; one event at a time (20; ``--quick``:
  5). The fan-out proper is from the first client's receipt to the last's (B's feed
  read the event once and writes it 1,000 times: that spread is the writing); from the
  commit to the last receipt (the relay, the wake and the read before it) is reported
  beside it. Medians.
- **peer**: sse-starlette (:mod:`bench._push_peer_app`): a generator per client fed from
  its own queue in process. The same 1,000 idle streams (memory) and the same fan-out,
  from the POST that publishes to the last client's receipt. It has no auth, database,
  resume or cross-process wake: its numbers are a floor, not a like-for-like contest.

The checks are issue 15's targets: p99 under 100 ms at 100 events/s with 1,000 streams;
under 50 KiB per idle stream; one event to 1,000 streams within 50 ms. The machine (two
cores) also runs PostgreSQL, Redis and often other sessions: the load average is
printed before and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from bench._http_servers import REPO, Server, ServerSpec, launch, spare_port, wait_ready
from bench._push_clients import SseClient, close_all, open_clients
from bench._report import Report
from corestone.db import Database
from corestone.events import DomainEvent, EventBus
from taskboard.events import REGISTRY, TaskCreated

__all__ = ["run"]

SERVER_URL = os.environ.get(
    "CORESTONE_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CORESTONE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = secrets.token_hex(4)
_TASKBOARD = str(Path(sys.executable).with_name("taskboard"))

STREAMS = 1000
WORKSPACES = 100
RATE = 100.0
_FANOUT_BASE = 10_000_000


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _rss(pid: int) -> int:
    """Resident memory of ``pid`` in bytes (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@contextlib.asynccontextmanager
async def _database() -> AsyncIterator[str]:
    """A fresh ``bench_push_<run>`` database (dropped at the end); its URL."""
    name = f"bench_push_{RUN_ID}"
    server = make_url(SERVER_URL)
    admin = await asyncpg.connect(server.set(drivername="postgresql").render_as_string(False))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield server.set(database=name).render_as_string(False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _spec(name: str, argv: list[str], env: dict[str, str], workdir: Path, port: int) -> ServerSpec:
    return ServerSpec(name, tuple(argv), env, workdir, "/health/ready", port)


async def _start(stack: contextlib.AsyncExitStack, spec: ServerSpec, logs: Path) -> Server:
    server = launch(spec, logs)
    stack.push_async_callback(server.stop)
    return server


async def _wait_log(server: Server, text: str) -> None:
    deadline = time.monotonic() + 90.0
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.spec.name} exited:\n{server.log_tail()}")
        if text in (server.log.read_text(errors="replace") if server.log.exists() else ""):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{server.spec.name}: no {text!r} in 90 s:\n{server.log_tail()}")


async def _seed(url: str, workspaces: int) -> tuple[dict[str, str], list[int]]:
    """A user and ``workspaces`` workspaces of theirs, through the API; auth and ids."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        made = await client.post("/api/users", json={"name": "Bench", "email": "b@example.com"})
        made.raise_for_status()
        auth = {"Authorization": f"Bearer {made.json()['token']}"}
        gate = asyncio.Semaphore(8)

        async def one(i: int) -> int:
            async with gate:
                answer = await client.post("/api/workspaces", json={"name": f"w{i}"}, headers=auth)
                answer.raise_for_status()
                return int(answer.json()["id"])

        return auth, list(await asyncio.gather(*(one(i) for i in range(workspaces))))


async def _commit(bus: EventBus, db: Database, task_id: int, workspace: int) -> float:
    """Record one task.created in a transaction of its own; the time its commit returned."""
    event = DomainEvent.create(
        TaskCreated(task_id=task_id, version=1),
        aggregate_type="task",
        aggregate_id=task_id,
        workspace_id=workspace,
    )
    async with db.transaction() as tx:
        await bus.record(event, transaction=tx)
    return time.perf_counter()


def _paths(workspaces: list[int], per_workspace: int) -> list[str]:
    return [f"/api/workspaces/{ws}/events" for ws in workspaces for _ in range(per_workspace)]


async def _latency(
    report: Report, bus: EventBus, db: Database, clients: list[SseClient], workspaces: list[int],
    seconds: float,
) -> None:  # fmt: skip
    """Steady RATE commits for ``seconds``; commit-to-probe latency percentiles."""
    commits: dict[int, float] = {}
    tasks: set[asyncio.Task[None]] = set()

    async def commit(task_id: int) -> None:
        commits[task_id] = await _commit(bus, db, task_id, workspaces[task_id % len(workspaces)])

    count = int(RATE * seconds)
    started = time.perf_counter()
    for task_id in range(1, count + 1):
        delay = started + (task_id - 1) / RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(commit(task_id))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    achieved = count / (time.perf_counter() - started)
    await asyncio.sleep(2.0)  # stragglers
    probes = [c for c in clients if c.probe]
    latencies = sorted(
        max(0.0, at - commits[task_id]) * 1000
        for probe in probes
        for task_id, at in probe.arrivals.items()
        if task_id in commits
    )
    expected = count * 2  # one probe per workspace on each of A and B
    p50 = statistics.median(latencies) if latencies else None
    p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else None
    report.rows += [
        ("latency", f"events committed ({achieved:.0f}/s)", count, "events"),
        ("latency", "probe receipts / expected", f"{len(latencies)}/{expected}", ""),
        ("latency", "commit to client on A or B, p50", p50, "ms"),
        ("latency", "commit to client on A or B, p99", p99, "ms"),
        ("latency", "commit to client on A or B, max", latencies[-1] if latencies else None, "ms"),
    ]
    report.results.update(
        {
            "latency_p50_ms": p50,
            "latency_p99_ms": p99,
            "latency_received_ratio": len(latencies) / expected,
            "latency_rate_per_s": achieved,
        }
    )
    note = "" if len(latencies) == expected else f"{expected - len(latencies)} receipts missing"
    report.check("latency_p99_ms", p99, "<", 100.0, note)


async def _fan_out(
    clients: list[SseClient], trigger: object, rounds: int
) -> tuple[float | None, float | None, int]:
    """Median of (trigger to last receipt, first to last receipt) in ms over ``rounds``."""
    totals: list[float] = []
    spreads: list[float] = []
    short = 0
    for k in range(rounds):
        marker = _FANOUT_BASE + k
        everyone = asyncio.Event()
        remaining = [len(clients)]

        def seen(remaining: list[int] = remaining, everyone: asyncio.Event = everyone) -> None:
            remaining[0] -= 1
            if remaining[0] == 0:
                everyone.set()

        for client in clients:
            client.watch, client.seen_at, client.on_seen = b'"task_id":%d' % marker, None, seen
        at = await trigger(marker)  # type: ignore[operator]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everyone.wait(), 5.0)
        seen = [c.seen_at for c in clients if c.seen_at is not None]
        if len(seen) < len(clients):
            short += 1
        if seen:
            totals.append((max(seen) - at) * 1000)
            spreads.append((max(seen) - min(seen)) * 1000)
        await asyncio.sleep(0.3)
    for client in clients:
        client.watch = client.on_seen = None
    if not totals:
        return None, None, short
    return statistics.median(totals), statistics.median(spreads), short


async def _peer(report: Report, stack: contextlib.AsyncExitStack, logs: Path, rounds: int) -> None:
    port = spare_port()
    argv = [sys.executable, "-m", "bench._push_peer_app", "--port", str(port)]
    spec = ServerSpec("peer-sse-starlette", tuple(argv), {}, REPO, "/ready", port)
    server = await _start(stack, spec, logs)
    await wait_ready([server])
    headers_end = b"\r\n\r\n"
    await close_all(await open_clients(port, ["/events"] * 20, headers={}, started=headers_end))
    before = _rss(server.process.pid)
    clients = await open_clients(port, ["/events"] * STREAMS, headers={}, started=headers_end)
    await asyncio.sleep(2.0)
    per_stream = (_rss(server.process.pid) - before) / STREAMS / 1024
    async with httpx.AsyncClient(base_url=server.url) as http:

        async def publish(marker: int) -> float:
            at = time.perf_counter()
            await http.post("/publish", content=b'{"task_id":%d}' % marker)
            return at

        total, spread, short = await _fan_out(clients, publish, rounds)
    await close_all(clients)
    await server.stop()
    report.rows += [
        ("peer", "sse-starlette: memory per idle stream", per_stream, "KiB"),
        ("peer", "sse-starlette: first to last of 1,000 clients (median)", spread, "ms"),
        ("peer", "sse-starlette: POST to last client (median)", total, "ms"),
    ]
    report.results.update(
        {
            "peer_memory_per_stream_kib": per_stream,
            "peer_fanout_ms": spread,
            "peer_fanout_from_publish_ms": total,
        }
    )
    if short:
        report.notes.append(f"peer fan-out: {short} round(s) did not reach every client")


async def _warm(port: int, paths: list[str], headers: dict[str, str]) -> None:
    """Open and close a few streams first: the code paths and pools of a first stream
    are not what an idle stream costs."""
    clients = await open_clients(port, paths, headers=headers)
    await close_all(clients)


async def _run(quick: bool) -> Report:
    report = Report("push", ("part", "what", "value", "unit"))
    report.notes.append(f"load average before: {_load()}")
    seconds, rounds = (5.0, 5) if quick else (20.0, 20)
    logs = Path(tempfile.mkdtemp(prefix="bench-push-"))
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(_database())
        env = {
            "CORESTONE_DATABASE_URL": url,
            "CORESTONE_REDIS_URL": REDIS_URL,
            "CORESTONE_CACHE_NAMESPACE": f"benchpush{RUN_ID}",
            "CORESTONE_LOG_LEVEL": "warning",
            "CORESTONE_LIVE_MAX_STREAMS": "5000",
            "CORESTONE_LIVE_MAX_STREAMS_PER_USER": "5000",  # one bench user holds them all
        }
        worker = await _start(stack, _spec("worker", [_TASKBOARD, "worker"], env, logs, 0), logs)
        await _wait_log(worker, "taskboard worker running")
        servers = []
        for name in ("a", "b"):
            port = spare_port()
            argv = [_TASKBOARD, "serve", "--no-worker", "--no-seed", "--port", str(port)]
            servers.append(await _start(stack, _spec(name, argv, env, logs, port), logs))
        await wait_ready(servers)
        a, b = servers
        auth, workspaces = await _seed(a.url, WORKSPACES + 1)
        fan_ws, workspaces = workspaces[0], workspaces[1:]
        db = Database(url)
        await db.start()
        stack.push_async_callback(db.aclose)
        bus = EventBus(db, REGISTRY)

        # Memory: 1,000 idle streams, 500 on each server.
        for server in servers:
            await _warm(server.spec.port, _paths(workspaces[:4], 5), auth)
        await asyncio.sleep(1.0)
        before = [_rss(s.process.pid) for s in servers]
        half = _paths(workspaces, STREAMS // 2 // WORKSPACES)
        clients: list[SseClient] = []
        for server in servers:
            clients += await open_clients(
                server.spec.port, half, headers=auth, probe_every=STREAMS // 2 // WORKSPACES
            )
        await asyncio.sleep(2.0)
        grown = sum(_rss(s.process.pid) - b0 for s, b0 in zip(servers, before, strict=True))
        per_stream = grown / len(clients) / 1024
        report.rows.append(("memory", "per idle stream (RSS of A and B)", per_stream, "KiB"))
        report.results["memory_per_stream_kib"] = per_stream
        report.check("memory_per_stream_kib", per_stream, "<", 50.0)

        await _latency(report, bus, db, clients, workspaces, seconds)
        await close_all(clients)

        # Fan-out: 1,000 streams of one workspace, all on B.
        fan = await open_clients(b.spec.port, _paths([fan_ws], STREAMS), headers=auth)

        async def commit(marker: int) -> float:
            return await _commit(bus, db, marker, fan_ws)

        total, spread, short = await _fan_out(fan, commit, rounds)
        await close_all(fan)
        report.rows += [
            ("fan-out", "first to last of 1,000 clients on B (median)", spread, "ms"),
            ("fan-out", "commit to last of 1,000 clients on B (median)", total, "ms"),
        ]
        report.results.update({"fanout_ms": spread, "fanout_from_commit_ms": total})
        note = f"{short} round(s) did not reach every client" if short else ""
        report.check("fanout_ms", spread, "<", 50.0, note)

        await _peer(report, stack, logs, rounds)
    report.notes.append(f"load average after: {_load()}")
    report.notes.append(f"server logs: {logs}")
    return report


def run(quick: bool) -> Report:
    """The suite, on uvloop (the load generator's loop), as ``python -m bench`` calls it."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_run(quick))
