"""Several worker processes serving one port, supervised by the process that bound it.

The supervisor binds the port once and hands the listening socket to N spawned workers;
the kernel gives each new connection to whichever worker accepts it first. Each worker
is a whole service instance (its own Infrastructure, pools, L1 cache and breakers) that
calls ``serve`` with its ``WorkerProcess``. Work that must happen once — migrations, a
demo seed — is the caller's to do before ``serve_workers``, so N workers never race it.

Why not uvicorn's own ``--workers`` supervisor: it builds a plain uvicorn server in each
worker from an import string, so the worker could not start its infrastructure before
binding, nor fail readiness on SIGTERM; and the shared metrics directory needs a life
cycle around the workers (created fresh, a dead worker's gauges dropped, removed at exit).

Signals: the first SIGTERM or SIGINT is passed on to every worker as SIGTERM (each then
drains as ``serve`` describes); a later SIGINT is passed on as SIGINT, which makes the
workers stop at once. A worker that exits on its own after it was serving is replaced; one
that fails before it serves stops them all (a broken configuration would fail again).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event
from types import FrameType

from corestone.observability.logging import get_logger
from corestone.observability.multiprocess import MULTIPROC_DIR_ENV, forget_process
from corestone.web.server import WorkerProcess, listen

__all__ = ["serve_workers"]

log = get_logger("corestone.web")

_POLL_SECONDS = 0.2
multiprocessing.allow_connection_pickling()  # lets a listening socket go to a spawned worker


def serve_workers(
    main: Callable[[WorkerProcess], None],
    *,
    workers: int,
    host: str = "127.0.0.1",
    port: int = 8000,
    stop_timeout: float = 90.0,
) -> int:
    """Serve ``host:port`` with ``workers`` processes, each running ``main``, until a signal.

    ``main`` runs in a fresh (spawned) process, so it must be importable: a module-level
    function, or a ``functools.partial`` of one. It serves with
    ``run(serve(app, …, worker=worker))``. Returns the exit status: 0 when every worker
    stopped cleanly; 1 when one failed to start, did not stop within ``stop_timeout``
    seconds of the signal (it is then killed), or exited with an error.
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    try:
        listener = _bind(host, port)
    except OSError as error:
        log.error("cannot listen", host=host, port=port, error=str(error))
        return 1
    with listener, _metrics_directory() as directory:
        supervisor = _Supervisor(main, listener, directory, stop_timeout)
        with supervisor.signals_captured():
            return supervisor.run(workers)


@dataclass
class _Slot:
    index: int
    process: SpawnProcess
    ready: Event
    serving: bool = False
    reaped: bool = False


class _Supervisor:
    def __init__(
        self,
        main: Callable[[WorkerProcess], None],
        listener: socket.socket,
        directory: str,
        stop_timeout: float,
    ) -> None:
        self._main = main
        self._listener = listener
        self._directory = directory
        self._stop_timeout = stop_timeout
        self._context = multiprocessing.get_context("spawn")
        self._signals: list[int] = []
        self._slots: list[_Slot] = []
        self._stop_deadline: float | None = None
        self._failed = False

    @contextmanager
    def signals_captured(self) -> Iterator[None]:
        def record(sig: int, _frame: FrameType | None) -> None:
            self._signals.append(sig)

        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, record) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def run(self, workers: int) -> int:
        self._slots = [self._start(index) for index in range(workers)]
        while True:
            self._handle_signals()
            for position, slot in enumerate(self._slots):
                self._watch(position, slot)
            live = [slot for slot in self._slots if not slot.reaped]
            if not live:
                break
            if self._stop_deadline is not None and time.monotonic() > self._stop_deadline:
                self._kill(live)
                break
            wait([slot.process.sentinel for slot in live], timeout=_POLL_SECONDS)
        log.info("all workers stopped", failed=self._failed)
        return 1 if self._failed else 0

    def _start(self, index: int) -> _Slot:
        ready = self._context.Event()
        process = self._context.Process(
            target=_worker_entry,
            args=(self._main, index, self._listener, ready),
            name=f"corestone-worker-{index}",
        )
        process.start()
        log.info("worker starting", worker=index, pid=process.pid)
        return _Slot(index, process, ready)

    def _handle_signals(self) -> None:
        while self._signals:
            sig = self._signals.pop(0)
            if self._stop_deadline is None:
                log.info(
                    "shutdown requested; stopping every worker", signal=signal.Signals(sig).name
                )
                self._stop(signal.SIGTERM)
            elif sig == signal.SIGINT:
                log.warning("second interrupt; workers stop without draining")
                self._send(signal.SIGINT)

    def _stop(self, sig: signal.Signals) -> None:
        self._stop_deadline = time.monotonic() + self._stop_timeout
        self._send(sig)

    def _send(self, sig: signal.Signals) -> None:
        for slot in self._slots:
            if slot.process.exitcode is None and slot.process.pid is not None:
                os.kill(slot.process.pid, sig)

    def _watch(self, position: int, slot: _Slot) -> None:
        if not slot.serving and slot.ready.is_set():
            slot.serving = True
            log.info("worker serving", worker=slot.index, pid=slot.process.pid)
        code = slot.process.exitcode
        if code is None or slot.reaped:
            return
        slot.reaped = True
        assert slot.process.pid is not None
        forget_process(slot.process.pid, self._directory)
        if self._stop_deadline is not None:
            if code != 0 and not (code == -signal.SIGTERM and not slot.serving):
                log.error("worker stopped with an error", worker=slot.index, exit_code=code)
                self._failed = True
            return
        if not slot.serving:
            log.error("worker failed to start; stopping", worker=slot.index, exit_code=code)
            self._failed = True
            self._stop(signal.SIGTERM)
            return
        log.warning("worker exited; starting a new one", worker=slot.index, exit_code=code)
        self._slots[position] = self._start(slot.index)

    def _kill(self, live: list[_Slot]) -> None:
        self._failed = True
        for slot in live:
            log.error("worker did not stop in time; killing it", worker=slot.index)
            slot.process.kill()
            slot.process.join()
            assert slot.process.pid is not None
            forget_process(slot.process.pid, self._directory)


def _worker_entry(
    main: Callable[[WorkerProcess], None], index: int, listener: socket.socket, ready: Event
) -> None:
    main(WorkerProcess(index=index, sockets=(listener,), started=ready.set))


def _bind(host: str, port: int) -> socket.socket:
    return listen(host, port)  # the same socket one process gets: ``::`` is dual-stack


@contextmanager
def _metrics_directory() -> Iterator[str]:
    """A fresh directory for the workers' metrics, in the environment they inherit."""
    directory = tempfile.mkdtemp(prefix="corestone-metrics-")
    previous = os.environ.get(MULTIPROC_DIR_ENV)
    os.environ[MULTIPROC_DIR_ENV] = directory
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_DIR_ENV, None)
        else:
            os.environ[MULTIPROC_DIR_ENV] = previous
        shutil.rmtree(directory, ignore_errors=True)
