"""One reading of the host and the process with psutil: memory, CPU, disks, file descriptors.

A :class:`PsutilProbe` is called (``probe()``) for a :class:`SystemSample`. Every call is
a handful of ``/proc`` reads and one ``statvfs`` per watched path (0.5-0.7 ms measured
on a busy 2-core machine), and never sleeps: the host's CPU use is the share of non-idle
time between this call and the previous one (the probe's creation for the first), not
``psutil.cpu_percent(interval=…)``, which sleeps, nor its ``interval=None`` form, whose
state is shared with every other caller in the process.

Samples are plain values, so the thresholds (:mod:`corestone.observability.system`) are
tested with samples built by hand.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = ["DiskSample", "PsutilProbe", "SystemSample", "existing_directory"]


@dataclass(frozen=True, slots=True)
class DiskSample:
    """The file system holding ``path``: its free and total bytes."""

    path: str
    free_bytes: int
    total_bytes: int

    @property
    def free_ratio(self) -> float:
        return self.free_bytes / self.total_bytes if self.total_bytes else 0.0


@dataclass(frozen=True, slots=True)
class SystemSample:
    """What the host and this process looked like at one moment.

    ``open_fds`` and ``max_fds`` are None where the platform has no such notion (Windows).
    """

    memory_used_ratio: float
    process_resident_bytes: int
    cpu_used_ratio: float
    process_cpu_seconds: float
    disks: tuple[DiskSample, ...] = ()
    open_fds: int | None = None
    max_fds: int | None = None


def existing_directory(path: str | os.PathLike[str]) -> str:
    """``path`` made absolute, or its nearest existing ancestor (the data may not exist yet)."""
    current = Path(path).expanduser().absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return str(current)


class PsutilProbe:
    """Reads a :class:`SystemSample` of this host and process; safe from several threads."""

    def __init__(self, paths: Iterable[str | os.PathLike[str]] = ()) -> None:
        self.paths = tuple(dict.fromkeys(existing_directory(p) for p in paths))
        self._process = psutil.Process()
        self._lock = threading.Lock()
        self._previous_cpu: tuple[float, float] | None = None  # (busy, total) seconds
        self._last_cpu_ratio = 0.0
        self._cpu_used_ratio()  # the first sample then covers the time since now, not boot

    def __call__(self) -> SystemSample:
        memory = psutil.virtual_memory()
        with self._process.oneshot():  # one read of /proc/self/stat for all three
            process_cpu = self._process.cpu_times()
            resident = self._process.memory_info().rss
            open_fds, max_fds = self._fds()
        return SystemSample(
            memory_used_ratio=_clamp(1.0 - memory.available / memory.total),
            process_resident_bytes=resident,
            cpu_used_ratio=self._cpu_used_ratio(),
            process_cpu_seconds=process_cpu.user + process_cpu.system,
            disks=tuple(self._disk(path) for path in self.paths),
            open_fds=open_fds,
            max_fds=max_fds,
        )

    def _cpu_used_ratio(self) -> float:
        times = psutil.cpu_times()
        total = sum(times)
        busy = total - times.idle - getattr(times, "iowait", 0.0)
        with self._lock:
            previous = self._previous_cpu
            if previous is None or total <= previous[1]:
                # First reading, or no clock tick since the last one: nothing to divide by.
                self._previous_cpu = (busy, total)
                return self._last_cpu_ratio
            self._previous_cpu = (busy, total)
            self._last_cpu_ratio = _clamp((busy - previous[0]) / (total - previous[1]))
            return self._last_cpu_ratio

    def _disk(self, path: str) -> DiskSample:
        # Resolved again: a watched directory removed since start-up is measured on its parent.
        usage = psutil.disk_usage(existing_directory(path))
        return DiskSample(path, usage.free, usage.total)

    def _fds(self) -> tuple[int | None, int | None]:
        if not hasattr(self._process, "num_fds"):  # Windows: handles, not descriptors
            return None, None
        import resource  # POSIX only

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        limit = None if soft == resource.RLIM_INFINITY else soft
        return self._process.num_fds(), limit


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value))
