"""The operations dashboard's data: named panels, each loaded on its own, one JSON answer.

A :class:`Dashboard` is a list of :class:`Panel` s. :meth:`Dashboard.snapshot` loads every
panel at once and answers ``{"generated_at": …, "panels": {name: …}}``, where each panel
is either ``{"ok": true, "data": …, "age_seconds": …}`` or ``{"ok": false, "error": …}``:
a source that raises, or does not answer within the panel's ``timeout``, costs that panel
only, never the whole answer (an operator looks at the dashboard precisely when parts of
the service are failing).

Cost is bounded the same way for every panel, whoever polls:

- a panel's answer is reused for ``ttl`` seconds (the query report is expensive; health
  checks are cached by the health registry already; counters are cheap);
- one load per panel at a time, shared by every caller that asks meanwhile;
- a load that outlives ``timeout`` is not cancelled: it runs on, the caller gets the
  panel's previous answer (marked ``stale``) or an error, and the next poll finds the
  result. Cancelling it would make a report that takes longer than the timeout never
  finish at all.

Loads run as tasks owned by the dashboard: :meth:`Dashboard.aclose` cancels them (the
composition root calls it on shutdown when the dashboard is added as a component).
Everything a panel shows is of this process (breakers and L1 are per process by design);
the history and the database-backed panels cover what the process can see.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from corestone.observability.logging import get_logger

__all__ = ["Dashboard", "Panel", "PanelSource"]

PanelSource = Callable[[], Awaitable[Any]]
"""What a panel shows: an async function returning JSON-ready data."""

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Panel:
    """One named part of the dashboard: where its data comes from and how long it keeps."""

    name: str
    source: PanelSource
    ttl: float = 0.0
    """Seconds an answer is reused before the next caller loads again."""
    timeout: float = 2.0
    """Seconds a caller waits for a load before answering without it."""
    on_start: Callable[[], None] | None = None
    """Called when the dashboard starts (with the infrastructure): a panel over the metric
    history registers its expressions then, so the history holds the last hour by the
    time someone looks, not only what came after the first look."""


@dataclass(slots=True)
class _Loaded:
    at: float
    data: Any


class _PanelState:
    """A panel's last answer and its load in progress (if any)."""

    __slots__ = ("error", "loaded", "task")

    def __init__(self) -> None:
        self.loaded: _Loaded | None = None
        self.error: str | None = None
        self.task: asyncio.Task[Any] | None = None


class Dashboard:
    """Loads panels concurrently, each bounded in time and cost (see the module doc).

    ``clock`` is a monotonic clock in seconds (ages and ``ttl``); ``now`` the wall clock
    the answer's ``generated_at`` is read from.
    """

    name = "dashboard"

    def __init__(
        self,
        panels: Sequence[Panel],
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        names = [panel.name for panel in panels]
        if len(set(names)) != len(names):
            raise ValueError(f"panel names must be unique: {names}")
        self._panels = {panel.name: panel for panel in panels}
        self._states = {panel.name: _PanelState() for panel in panels}
        self._clock = clock
        self._now = now
        self._closed = False

    @property
    def panels(self) -> list[str]:
        """The panels' names, in the order they were given."""
        return list(self._panels)

    async def snapshot(self) -> dict[str, Any]:
        """Every panel's answer, as one JSON-ready object (the module doc says its shape)."""
        if self._closed:
            raise RuntimeError("the dashboard is closed")
        names = list(self._panels)
        answers = await asyncio.gather(*(self._answer(name) for name in names))
        return {
            "generated_at": self._now().isoformat(),
            "panels": dict(zip(names, answers, strict=True)),
        }

    async def start(self) -> None:
        """Run the panels' ``on_start`` hooks; answer snapshots (again, after :meth:`aclose`).

        Panels load on demand. A hook that raises stops the start: it is a wiring error.
        """
        for panel in self._panels.values():
            if panel.on_start is not None:
                panel.on_start()
        self._closed = False

    async def aclose(self) -> None:
        """Cancel the loads in progress; the dashboard answers no more snapshots."""
        self._closed = True
        tasks = [s.task for s in self._states.values() if s.task is not None and not s.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _answer(self, name: str) -> Mapping[str, Any]:
        panel, state = self._panels[name], self._states[name]
        if state.loaded is not None and self._clock() - state.loaded.at < panel.ttl:
            return self._ok(state.loaded, stale=False)
        if state.task is None or state.task.done():
            state.task = asyncio.create_task(self._load(panel, state), name=f"panel:{name}")
        # wait() neither cancels the shared load when this caller's time is up nor when
        # this caller is cancelled: the load belongs to the dashboard.
        await asyncio.wait({state.task}, timeout=panel.timeout)
        if state.task.done():
            if state.error is None and state.loaded is not None:
                return self._ok(state.loaded, stale=False)
            return {"ok": False, "error": state.error or "no data"}
        if state.loaded is not None:
            return self._ok(state.loaded, stale=True)
        return {"ok": False, "error": f"still loading after {panel.timeout:g} s"}

    async def _load(self, panel: Panel, state: _PanelState) -> None:
        try:
            data = await panel.source()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - a failing source costs its panel only
            state.error = _describe(error)
            log.warning("dashboard panel failed", panel=panel.name, error=state.error)
            return
        state.loaded = _Loaded(self._clock(), data)
        state.error = None

    def _ok(self, loaded: _Loaded, *, stale: bool) -> dict[str, Any]:
        answer = {
            "ok": True,
            "data": loaded.data,
            "age_seconds": round(max(0.0, self._clock() - loaded.at), 3),
        }
        if stale:
            answer["stale"] = True
        return answer


def _describe(error: BaseException) -> str:
    """A short, single-line description: the type and the first line of the message."""
    message = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
