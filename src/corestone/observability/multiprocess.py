"""Metrics that stay whole when several worker processes serve one port.

prometheus_client's multiprocess mode keeps every counter, gauge and histogram in
memory-mapped files under ``PROMETHEUS_MULTIPROC_DIR``, one set per process, and merges
them at scrape time: whichever worker answers ``/metrics`` counts the requests of all.
The mode is chosen when prometheus_client is imported, from that environment variable,
so a supervisor sets it before it starts its workers (``corestone.web.serve_workers``).

What the files cannot hold are values computed at scrape time: the cache's and the
breakers' collectors, and gauges read through ``set_function`` (the pool's). Each worker
therefore *publishes* them: function gauges are written into its files, and collector
families into a small JSON snapshot beside them (``scrape_<pid>.json``), refreshed every
second by the server and at every scrape the worker answers. The answering worker
exposes its own values live and the others' last snapshots; every such series carries a
``pid`` label, as prometheus_client's per-process gauges do, because a breaker's state or
an L1 size belongs to one process and adding them up would mean nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson
from prometheus_client import values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import mark_process_dead
from prometheus_client.registry import Collector

__all__ = ["MULTIPROC_DIR_ENV", "ScrapeTimeAcrossWorkers", "forget_process", "multiprocess_dir"]

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

_SNAPSHOT_PREFIX = "scrape_"


def multiprocess_dir() -> str | None:
    """The shared directory if this process's metrics live in it, else ``None``.

    Both must hold: the variable names a directory, and prometheus_client was imported
    with it set (its values are then memory-mapped). A variable set after the import
    changes nothing, so it is ignored rather than half-used.
    """
    directory = os.environ.get(MULTIPROC_DIR_ENV)
    if not directory or not Path(directory).is_dir():
        return None
    if getattr(values.ValueClass, "_multiprocess", False) is not True:
        return None
    return directory


def forget_process(pid: int, directory: str) -> None:
    """Drop a finished worker's per-process gauges and snapshot; its counters stay counted."""
    mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    with contextlib.suppress(FileNotFoundError):
        _snapshot_path(directory, pid).unlink()


class ScrapeTimeAcrossWorkers:
    """The scrape-time families of every worker: this one's live, the others' published."""

    def __init__(self, collectors: Iterable[Collector], directory: str, pid: int) -> None:
        self._collectors = list(collectors)
        self._directory = directory
        self._pid = pid

    def publish(self) -> None:
        """Write this worker's current values where the other workers read them."""
        families = [
            {
                "name": family.name,
                "documentation": family.documentation,
                "type": family.type,
                "unit": family.unit,
                "samples": [[s.name, s.labels, repr(float(s.value))] for s in family.samples],
            }
            for family in self._own()
        ]
        path = _snapshot_path(self._directory, self._pid)
        partial = path.with_suffix(".tmp")
        partial.write_bytes(orjson.dumps(families))
        partial.replace(path)  # atomic: a reader sees the old snapshot or the new one

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for family in itertools.chain(self._own(), self._others()):
            into = merged.setdefault(family.name, family)
            if into is not family:
                into.samples.extend(family.samples)
        yield from merged.values()

    def _others(self) -> Iterator[Metric]:
        for path in Path(self._directory).glob(f"{_SNAPSHOT_PREFIX}*.json"):
            if path.stem.removeprefix(_SNAPSHOT_PREFIX) != str(self._pid):
                yield from _read_snapshot(path)

    def _own(self) -> Iterator[Metric]:
        pid = str(self._pid)
        for collector in self._collectors:
            for family in collector.collect():
                labelled = Metric(family.name, family.documentation, family.type, family.unit)
                for sample in family.samples:
                    labelled.add_sample(sample.name, {**sample.labels, "pid": pid}, sample.value)
                yield labelled


def _snapshot_path(directory: str, pid: int) -> Path:
    return Path(directory) / f"{_SNAPSHOT_PREFIX}{pid}.json"


def _read_snapshot(path: Path) -> list[Metric]:
    try:
        raw = orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return []  # the worker has just exited, or is between two snapshots
    families = []
    for entry in raw:
        family = Metric(entry["name"], entry["documentation"], entry["type"], entry["unit"])
        for name, labels, value in entry["samples"]:
            family.add_sample(name, labels, float(value))  # a string: JSON has no NaN or inf
        families.append(family)
    return families
