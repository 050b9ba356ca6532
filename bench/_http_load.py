"""Drive one operation against one server with wrk, and read back its figures.

wrk (Debian's ``wrk``; ``.ci/run`` installs it) runs with one thread, a fixed number of
connections and a 30 s request timeout (wrk's default of 2 s would drop the slowest
requests from the latencies). ``bench/_http_load.lua`` builds the requests (auth header,
JSON bodies, ``If-Match`` for PATCH) and prints the summary as JSON. Each measurement is
a warm-up run (not recorded: caches, pools and prepared statements fill) and then the
timed run. The PostgreSQL relay's counters are read once the server has drained the
previous run's requests, before and after the timed run.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench._http_proxy import ProxyCounts

__all__ = ["Load", "Operation", "measure", "wrk_path"]

_SCRIPT = Path(__file__).with_name("_http_load.lua")
_MARK = "WRK_JSON "


@dataclass(frozen=True, slots=True)
class Operation:
    """One kind of request: ``mode`` is the Lua script's (get, post, patch).

    ``ids`` are the task ids a get or patch cycles through in the timed run; ``warm_ids``
    those of the warm-up (the same for a cached read; other tasks for a PATCH, whose
    versions the warm-up would change).
    """

    mode: str
    path: str
    token: str | None = None
    ids: Sequence[int] = ()
    warm_ids: Sequence[int] | None = None
    body: str = ""


@dataclass(frozen=True, slots=True)
class Load:
    """What one timed run measured; ``counts`` is None where no relay was in the path."""

    requests: int
    connections: int
    seconds: float
    failed: int
    p50_ms: float
    p99_ms: float
    counts: ProxyCounts | None

    @property
    def rps(self) -> float:
        """Successful responses per second."""
        return (self.requests - self.failed) / self.seconds

    @property
    def round_trips_per_request(self) -> float | None:
        """Round trips ÷ requests the server handled: the completed ones plus the one each
        connection still had in flight when wrk stopped (the relay counted their work)."""
        if self.counts is None or not self.requests:
            return None
        return self.counts.round_trips / (self.requests + self.connections)


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed: apt-get install -y wrk (.ci/run does)")
    return found


async def measure(
    url: str,
    operation: Operation,
    *,
    connections: int,
    seconds: int,
    warmup_seconds: int,
    counts: Callable[[], ProxyCounts] | None,
) -> Load:
    """A warm-up run (if ``warmup_seconds``), then the timed run of ``operation``."""
    warm_ids = operation.ids if operation.warm_ids is None else operation.warm_ids
    if warmup_seconds:
        await _wrk(url, operation, warm_ids, connections, warmup_seconds)
        await _drained(counts)
    before = counts() if counts is not None else None
    summary = await _wrk(url, operation, operation.ids, connections, seconds)
    await _drained(counts)
    after = counts() if counts is not None else None
    return Load(
        requests=summary["requests"],
        connections=connections,
        seconds=summary["duration_us"] / 1e6,
        failed=summary["non_2xx_3xx"] + summary["socket_errors"] + summary["timeouts"],
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        counts=after - before if after is not None and before is not None else None,
    )


async def _drained(counts: Callable[[], ProxyCounts] | None) -> None:
    """Until the server has finished what wrk left in flight: its database traffic has
    been quiet for 0.1 s (at most 10 s), or a fixed 0.3 s without a relay to watch."""
    if counts is None:
        await asyncio.sleep(0.3)
        return
    seen, quiet = counts(), 0
    for _ in range(200):
        await asyncio.sleep(0.05)
        now = counts()
        quiet = quiet + 1 if now == seen else 0
        if quiet >= 2:
            return
        seen = now


async def _wrk(
    url: str, operation: Operation, ids: Sequence[int], connections: int, seconds: int
) -> dict[str, int]:
    argv = [
        wrk_path(),
        "--threads",
        "1",
        "--connections",
        str(connections),
        "--duration",
        f"{seconds}s",
        "--timeout",
        "30s",
        "--script",
        str(_SCRIPT),
        url,
        "--",
        operation.mode,
        operation.path,
        ",".join(map(str, ids)),
        operation.token or "-",
        operation.body,
    ]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = out.decode(errors="replace")
    for line in text.splitlines():
        if line.startswith(_MARK):
            summary: dict[str, int] = json.loads(line.removeprefix(_MARK))
            return summary
    raise RuntimeError(
        f"wrk gave no summary (exit {process.returncode}):\n{text}\n{err.decode(errors='replace')}"
    )
