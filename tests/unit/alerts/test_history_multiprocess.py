"""The history in multiprocess mode samples the merged view of every worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

WORKER = """
import sys
from corestone.observability import Metrics
from corestone.observability.history import MetricsHistory

metrics = Metrics()
assert metrics.multiprocess
metrics.counter("jobs_total", "jobs", ["queue"]).labels(queue="mail").inc(int(sys.argv[1]))
if sys.argv[2] == "sample":
    history = MetricsHistory(metrics, clock=lambda: 1_700_000_000.0)
    history.watch("sum(corestone_jobs_total)")
    history.sample()
    (total,) = history.query("sum(corestone_jobs_total)")
    print("total", total.value, history.series_count)
"""


def _worker(directory: Path, jobs: int, mode: str) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(jobs), mode],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def test_counts_of_every_worker_reach_the_history(tmp_path: Path) -> None:
    """Two workers' counters, sampled by a third, add up to one merged series."""
    _worker(tmp_path, 3, "-")
    out = _worker(tmp_path, 4, "sample")
    assert "total 7.0 1" in out, out
