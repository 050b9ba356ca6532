"""Timers: the time of a block or a call, observed into a histogram in seconds.

One :class:`Timer` is used as a context manager (``with`` or ``async with``) or as a
decorator on a sync or an async function; for a coroutine function it times the awaited
call, not the creation of the coroutine. The time is observed whether the block returns
or raises (cancellation included), so failures are not hidden from the latency.

A timer on a labelled histogram is bound first: ``timer.labels(route="/x")`` returns a
child timer, the same one each time for the same values, to keep and reuse. Entering a
timer is safe from many threads and asyncio tasks at once: each keeps its own start in a
context variable, never on the shared object.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from prometheus_client import Histogram

__all__ = ["Timer"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


class Timer:
    """Times blocks and calls into one histogram (or one labelled child of it).

    Made by :meth:`corestone.observability.Metrics.timer`; ``clock`` is the facade's
    (``time.perf_counter`` unless a test injects a ``ManualClock``).
    """

    __slots__ = ("_children", "_clock", "_histogram", "_labelled", "_starts")

    def __init__(self, histogram: Histogram, clock: Callable[[], float]) -> None:
        self._histogram = histogram
        self._clock = clock
        self._labelled = bool(histogram._labelnames) and not histogram._labelvalues
        self._children: dict[Histogram, Timer] = {}
        self._starts: ContextVar[tuple[float, ...]] = ContextVar(
            f"timer_starts_{histogram._name}", default=()
        )

    def labels(self, *values: object, **labels: object) -> Timer:
        """The child timer for these label values (cardinality guard applies)."""
        child = self._histogram.labels(*values, **labels)
        timer = self._children.get(child)
        if timer is None:
            timer = self._children.setdefault(child, Timer(child, self._clock))
        return timer

    def observe(self, seconds: float) -> None:
        """Record a duration measured elsewhere."""
        self._histogram.observe(seconds)

    def __enter__(self) -> Timer:
        self._start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()

    async def __aenter__(self) -> Timer:
        self._start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()

    @overload
    def __call__(
        self, function: Callable[_P, Coroutine[Any, Any, _R]]
    ) -> Callable[_P, Coroutine[Any, Any, _R]]: ...

    @overload
    def __call__(self, function: Callable[_P, _R]) -> Callable[_P, _R]: ...

    def __call__(self, function: Callable[_P, Any]) -> Callable[_P, Any]:
        """Decorate ``function`` so that every call (every await, if async) is timed."""
        self._refuse_unbound()
        clock = self._clock
        observe = self._histogram.observe
        if inspect.iscoroutinefunction(function):
            coroutine_function: Callable[_P, Awaitable[Any]] = function

            @functools.wraps(function)
            async def timed_await(*args: _P.args, **kwargs: _P.kwargs) -> Any:
                start = clock()
                try:
                    return await coroutine_function(*args, **kwargs)
                finally:
                    observe(clock() - start)

            return timed_await

        @functools.wraps(function)
        def timed_call(*args: _P.args, **kwargs: _P.kwargs) -> Any:
            start = clock()
            try:
                return function(*args, **kwargs)
            finally:
                observe(clock() - start)

        return timed_call

    def _start(self) -> None:
        self._refuse_unbound()
        self._starts.set((*self._starts.get(), self._clock()))

    def _stop(self) -> None:
        starts = self._starts.get()
        self._starts.set(starts[:-1])
        self._histogram.observe(self._clock() - starts[-1])

    def _refuse_unbound(self) -> None:
        if self._labelled:
            raise ValueError(
                f"timer {self._histogram._name!r} has labels: time with .labels(...) first"
            )
