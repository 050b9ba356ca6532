"""Import time: what ``import corestone`` and each capability cost a process, beside peers.

``python -m bench imports [--quick]``. Every figure is a fresh interpreter timing one
import statement with ``perf_counter_ns`` around it (interpreter start-up excluded), the
median of N runs. *Warm* means bytecode is compiled (the suite compiles what it imports
first, as ``pip install`` does); *cold* reads no bytecode at all (an empty
``-X pycache_prefix``), the first start after an install that did not compile. Issue 20's
target: ``import corestone`` under 150 ms warm on this machine.
"""

from __future__ import annotations

import compileall
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from bench._report import Report

_PROBE = "import time\nt = time.perf_counter_ns()\n{statement}\nprint(time.perf_counter_ns() - t)\n"

# (what, statement, peer statement or None): a peer does the same job in another library.
_CASES: tuple[tuple[str, str, str | None], ...] = (
    ("import corestone", "import corestone", None),
    ("settings", "from corestone import Settings", "import pydantic_settings"),
    ("in-memory cache", "from corestone.cache import MemoryCache", "import cachetools"),
    ("circuit breaker", "from corestone.resilience import CircuitBreaker", "import pybreaker"),
    (
        "tiered cache + Redis",
        "from corestone.cache import RedisCache, TieredCache",
        "import cashews",
    ),
    ("repositories", "from corestone.db import Repository", "import advanced_alchemy.repository"),
    ("web", "import corestone.web", "import fastapi"),
)


def _compile_everything() -> None:
    """Bytecode for the environment and the checkout, so that "warm" means warm."""
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    roots |= {str(Path(__file__).resolve().parents[1] / "src")}
    for root in sorted(roots):
        compileall.compile_dir(root, quiet=2, workers=0)


def _time_ms(statement: str, runs: int, *, cold: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    samples = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as empty:
            flags = ["-X", f"pycache_prefix={empty}", "-B"] if cold else []
            out = subprocess.run(  # our own interpreter and probe
                [sys.executable, *flags, "-c", _PROBE.format(statement=statement)],
                capture_output=True, text=True, env=env, check=True,
            ).stdout  # fmt: skip
        samples.append(int(out.split()[-1]) / 1e6)
    return statistics.median(samples)


def run(quick: bool) -> Report:
    runs = 5 if quick else 15
    _compile_everything()
    report = Report(
        "imports",
        ("import", "corestone warm ms", "corestone cold ms", "peer", "peer warm ms"),
    )
    for what, statement, peer in _CASES:
        warm = _time_ms(statement, runs, cold=False)
        cold = _time_ms(statement, max(3, runs // 3), cold=True)
        peer_warm = None if peer is None else _time_ms(peer, runs, cold=False)
        report.rows.append((statement, warm, cold, peer or "", peer_warm))
        key = what.replace(" ", "_").replace("+", "and")
        report.results[f"{key}_warm_ms"] = warm
        report.results[f"{key}_cold_ms"] = cold
        if peer_warm is not None:
            report.results[f"{key}_peer_warm_ms"] = peer_warm
    report.check("import_corestone_warm_ms", report.results["import_corestone_warm_ms"], "<", 150)
    report.notes.append(
        f"median of {runs} fresh interpreters per figure (cold: of {max(3, runs // 3)})"
    )
    return report
