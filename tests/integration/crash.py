"""Kill a real child process at a chosen point: the harness of the crash tests.

The child writes a file named ``ready`` in its work folder at the point to crash at, then
waits; the test SIGKILLs it there, so no ``finally`` or ``atexit`` of the child runs, as
when a machine loses power or the OOM killer strikes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["kill_when_ready"]


def kill_when_ready(
    script: Path,
    args: list[str],
    workdir: Path,
    env: Mapping[str, str],
    *,
    unset: tuple[str, ...] = (),
    seconds: float = 30,
) -> str:
    """Run ``script`` with ``args`` until it writes ``workdir/ready``, then SIGKILL it.

    The child's environment is this process's, plus ``env``, minus ``unset``.

    Returns what the child wrote in ``ready`` (e.g. the point it reached). Waits at most
    ``seconds`` (interpreter start, a claim, a step); the child's output is in
    ``workdir/child.log`` and shown when it never got ready.
    """
    log = workdir / "child.log"
    ready = workdir / "ready"
    with log.open("wb") as output:
        child = subprocess.Popen(
            [sys.executable, str(script), *args],
            env={k: v for k, v in {**os.environ, **env}.items() if k not in unset},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            for _ in range(int(seconds * 10)):  # bounded
                if ready.exists() or child.poll() is not None:
                    break
                time.sleep(0.1)
            assert ready.exists(), log.read_text()
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL, log.read_text()
    return ready.read_text()
