"""CircuitBreaker: stop calling a dependency that is failing or slow, and probe it later.

One breaker guards one dependency. It works on coroutines and plain callables, as a
decorator (``@breaker``), by ``breaker.call(fn, ...)`` / ``await breaker.acall(fn, ...)``,
and as a context manager (``with breaker.guard():`` / ``async with breaker.guard():``).
A rejected call raises :class:`~corestone.errors.CircuitOpenError` with the breaker's
name and ``retry_after`` seconds.

Cost matters because every database statement passes through one: in CLOSED state a call
takes two clock readings and one short lock to record its outcome, and nothing else (no
allocation, no event objects unless someone listens to calls); it also notes the state
episode (generation) it started in, so an outcome that arrives after the breaker moved
on cannot count as a trial (see :mod:`corestone.resilience._machine`). The lock is never
held around the call, so threads are not serialised. A sync ``call`` on an ``async def``
returns a coroutine whose outcome is recorded when it is awaited, not when it is made.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Coroutine
from types import CoroutineType
from typing import Any, NoReturn, ParamSpec, TypeVar, cast, overload

from corestone.clock import Clock, monotonic
from corestone.errors import CircuitOpenError
from corestone.observability.logging import get_logger
from corestone.resilience._machine import REFUSED, Machine
from corestone.resilience.config import BreakerConfig
from corestone.resilience.events import (
    BreakerEvent,
    CallEvent,
    EventKind,
    Listener,
    State,
    StateChange,
)
from corestone.resilience.guard import Guard
from corestone.resilience.window import FAILURE, SLOW, SUCCESS

__all__ = ["CircuitBreaker"]

P = ParamSpec("P")
T = TypeVar("T")

log = get_logger(__name__)

_CLOSED = State.CLOSED
_OPEN = State.OPEN
_FORCED_OPEN = State.FORCED_OPEN
_IGNORED = -1


class CircuitBreaker:
    """A named breaker over one dependency; see :class:`BreakerConfig` for its options.

    Thread-safe and loop-agnostic. ``clock`` (monotonic seconds) is injectable, so tests
    drive time by hand. State changes made here are shared with a fleet when one is
    attached (:mod:`corestone.resilience.fleet`).
    """

    def __init__(
        self, name: str, config: BreakerConfig | None = None, *, clock: Clock = monotonic
    ) -> None:
        self.name = name
        self.config = config if config is not None else BreakerConfig()
        self.clock = clock
        self._machine = Machine(name, self.config, self._on_change)
        self._slow = self.config.slow_call_seconds
        self._record_result = self.config.record_result
        # A call shorter than this is a plain success: neither slow nor a result to judge
        # (-inf when results are judged, so one comparison on the hot path decides both).
        self._fast_below = self._slow if self._record_result is None else float("-inf")
        self._listeners: list[Listener] = []
        self._call_listeners: list[Listener] = []
        # True when every call must take the general path (state not CLOSED, call events).
        self._general = False
        self._timer: asyncio.TimerHandle | threading.Timer | None = None
        self.trial_gate: Callable[[CircuitBreaker], Awaitable[bool]] | None = None
        self.transitions = 0

    # -- state ---------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The current state (OPEN is reported until a call or ``tick`` moves it on)."""
        return self._machine.state

    @property
    def machine(self) -> Machine:
        """The state machine (window, counters); for snapshots and metrics."""
        return self._machine

    def retry_after(self) -> float:
        """Seconds until an OPEN breaker lets a trial call through (0 otherwise)."""
        return self._machine.retry_after(self.clock())

    def tick(self) -> None:
        """Apply the transitions that time alone causes (OPEN -> HALF_OPEN, a stuck trial).

        Called by the automatic-transition timer; callers never need it with lazy
        transitions, since the next call does the same.
        """
        self._machine.tick(self.clock())

    def transition_to(self, state: State, *, reason: str = "by hand") -> None:
        """Move to any state by hand: FORCED_OPEN, DISABLED, METRICS_ONLY, CLOSED, …"""
        self._machine.transition(state, self.clock(), reason)

    def reset(self) -> None:
        """CLOSED, with an empty window and the open streak forgotten."""
        self._machine.reset(self.clock())

    # -- listeners -----------------------------------------------------------------------

    def add_listener(self, listener: Listener, *, calls: bool = False) -> None:
        """Call ``listener(event)`` on each state change, and on each call if ``calls``."""
        (self._call_listeners if calls else self._listeners).append(listener)
        self._general = self._machine.state is not _CLOSED or bool(self._call_listeners)

    def remove_listener(self, listener: Listener) -> None:
        for group in (self._listeners, self._call_listeners):
            if listener in group:
                group.remove(listener)
        self._general = self._machine.state is not _CLOSED or bool(self._call_listeners)

    def _on_change(self, change: StateChange) -> None:
        self.transitions += 1
        self._general = change.after is not _CLOSED or bool(self._call_listeners)
        log.info(
            "circuit breaker state changed",
            breaker=self.name,
            before=change.before.value,
            after=change.after.value,
            reason=change.reason,
            remote=change.remote,
        )
        if change.after is State.OPEN and self.config.automatic_transition:
            self._schedule_tick(self._machine.open_until - change.at)
        self._emit(change, self._listeners)

    def _emit(self, event: BreakerEvent, listeners: list[Listener]) -> None:
        for listener in tuple(listeners):
            try:
                listener(event)
            except Exception:
                log.exception("circuit breaker listener failed", breaker=self.name)

    def _schedule_tick(self, delay: float) -> None:
        previous, self._timer = self._timer, None
        if previous is not None:
            previous.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            timer = threading.Timer(max(delay, 0.0), self.tick)
            timer.daemon = True
            timer.start()
            self._timer = timer
        else:
            self._timer = loop.call_later(max(delay, 0.0), self.tick)

    # -- calls: the hot paths are written out, not shared, to keep one frame per call ------

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn`` through the breaker; a coroutine it returns is guarded when awaited."""
        if self._general:
            return self._call_general(self.permit(), fn, args, kwargs)
        machine, clock = self._machine, self.clock
        start = clock()
        generation = machine.generation
        try:
            result = fn(*args, **kwargs)
        except BaseException as error:
            self._record_error(generation, error, start)
            raise
        if result.__class__ is CoroutineType:
            coroutine = cast("Coroutine[Any, Any, Any]", result)
            return cast("T", self._finish(generation, coroutine, start))
        end = clock()
        if end - start < self._fast_below:
            if end < machine.fold_at:
                machine.inbox.append(SUCCESS)
            else:
                machine.record(SUCCESS, end, generation)
        else:
            self._record_value(generation, result, start, end)
        return result

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` through the breaker."""
        if self._general:
            return await self._acall_general(self.permit(), fn, args, kwargs)
        machine, clock = self._machine, self.clock
        start = clock()
        generation = machine.generation
        try:
            result = await fn(*args, **kwargs)
        except BaseException as error:
            self._record_error(generation, error, start)
            raise
        end = clock()
        if end - start < self._fast_below:
            if end < machine.fold_at:
                machine.inbox.append(SUCCESS)
            else:
                machine.record(SUCCESS, end, generation)
        else:
            self._record_value(generation, result, start, end)
        return result

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...

    @overload
    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate a function or coroutine function so every call goes through the breaker.

        The wrapper is the hot path of :meth:`call` / :meth:`acall` written out again with
        everything it reads bound in its closure: one frame per call, no lookups.
        """
        machine, clock, fast_below = self._machine, self.clock, self._fast_below
        append, record = machine.inbox.append, machine.record
        rejected, record_error, record_value = (
            self._rejected,
            self._record_error,
            self._record_value,
        )
        if inspect.iscoroutinefunction(fn):
            general_async, permit = self._acall_general, self.permit

            @functools.wraps(fn)
            async def guarded_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                if self._general:
                    if machine.state is _OPEN and clock() < machine.open_until:
                        rejected()  # the common rejection, without a frame more
                    return await general_async(permit(), fn, args, kwargs)
                start = clock()
                generation = machine.generation
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as error:
                    record_error(generation, error, start)
                    raise
                end = clock()
                if end - start < fast_below:
                    if end < machine.fold_at:
                        append(SUCCESS)
                    else:
                        record(SUCCESS, end, generation)
                else:
                    record_value(generation, result, start, end)
                return result

            return guarded_async
        general, permit = self._call_general, self.permit

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
            if self._general:
                if machine.state is _OPEN and clock() < machine.open_until:
                    rejected()
                return general(permit(), fn, args, kwargs)
            start = clock()
            generation = machine.generation
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:
                record_error(generation, error, start)
                raise
            if result.__class__ is CoroutineType:
                return self._finish(generation, result, start)
            end = clock()
            if end - start < fast_below:
                if end < machine.fold_at:
                    append(SUCCESS)
                else:
                    record(SUCCESS, end, generation)
            else:
                record_value(generation, result, start, end)
            return result

        return guarded

    def guard(self) -> Guard[CircuitBreaker]:
        """A context manager (sync or async) whose block is one call through the breaker."""
        return Guard(self)

    # -- permits: for adapters that cannot wrap a call (and for Guard) ---------------------

    def permit(self) -> int:
        """Take permission for one call, or raise CircuitOpenError (a trial in HALF_OPEN).

        Returns the permit: pass it to :meth:`record_outcome` or :meth:`record_error` when
        the call ends, or to :meth:`release` if it was not made. A permit belongs to the
        state it was granted in, so a call that outlives that state changes nothing.
        """
        machine = self._machine
        state = machine.state
        if state is _CLOSED:
            return machine.generation
        now = self.clock()
        # OPEN before its time and FORCED_OPEN reject without the lock: it is the one
        # thing an open breaker does all day.
        if state is _FORCED_OPEN or (state is _OPEN and now < machine.open_until):
            machine.count_rejection()
            if self._call_listeners:
                self._emit_rejection()
            raise _circuit_open(self.name, machine.open_until - now if state is _OPEN else 0.0)
        permit = machine.acquire(now)
        if permit == REFUSED:
            self._reject(now)
        return permit

    async def apermit(self) -> int:
        """:meth:`permit`, then in HALF_OPEN the fleet-wide trial gate when one is attached.

        A caller cancelled while it waits at the gate gives its trial permit back, so a
        cancelled caller can never leave the breaker half-open with no trial to run.
        """
        permit = self.permit()
        if self.trial_gate is not None and self._machine.is_trial(permit):
            await self._pass_gate(permit, self.trial_gate)
        return permit

    async def _pass_gate(
        self, permit: int, gate: Callable[[CircuitBreaker], Awaitable[bool]]
    ) -> None:
        try:
            allowed = await gate(self)
        except BaseException:
            self._machine.release(permit)
            raise
        if not allowed:
            self._machine.refuse(permit)
            self._reject(self.clock())

    def record_outcome(self, permit: int, seconds: float, *, failed: bool = False) -> None:
        """Record the call made under ``permit``, which took ``seconds``.

        ``failed`` is the adapter's own verdict; the breaker's exception lists are not
        consulted (the adapter knows its driver's errors better).
        """
        end = self.clock()
        outcome = FAILURE if failed else SUCCESS
        if seconds >= self._slow:
            outcome |= SLOW
        machine = self._machine
        if (
            outcome == SUCCESS
            and end < machine.fold_at
            and not self._general
            and permit == machine.generation
        ):
            machine.inbox.append(SUCCESS)
        else:
            machine.record(outcome, end, permit)
        if self._call_listeners:
            kind = EventKind.FAILURE if failed else EventKind.SUCCESS
            event = CallEvent(self.name, kind, seconds, bool(outcome & SLOW))
            self._emit(event, self._call_listeners)

    def record_error(self, permit: int, error: BaseException, seconds: float) -> None:
        """Record the call made under ``permit`` that raised ``error`` after ``seconds``.

        The breaker's own lists decide (:meth:`classify`): a failure, a success (the
        dependency answered), or ignored, which gives the permit back.
        """
        self._record_error(permit, error, self.clock() - seconds)

    def release(self, permit: int) -> None:
        """Give back ``permit`` for a call that was not made (nothing is counted)."""
        self._machine.release(permit)

    def record_unpermitted_failure(self) -> None:
        """Count a failure seen outside any permitted call (a failed connect attempt)."""
        self._machine.record_unpermitted_failure(self.clock())

    def check_open(self) -> None:
        """Raise CircuitOpenError while OPEN (or FORCED_OPEN), without taking a permit."""
        state = self._machine.state
        if state is State.FORCED_OPEN or (
            state is State.OPEN and self.clock() < self._machine.open_until
        ):
            self._machine.count_rejection()
            self._reject(self.clock())

    # -- the general path: permission, manual states, call events -------------------------

    def _rejected(self) -> NoReturn:
        """Reject a call while OPEN (the caller checked): count it and raise."""
        machine = self._machine
        machine.count_rejection()
        if self._call_listeners:
            self._emit_rejection()
        raise _circuit_open(self.name, max(machine.open_until - self.clock(), 0.0))

    def _emit_rejection(self) -> None:
        event = CallEvent(self.name, EventKind.NOT_PERMITTED, 0.0, False)
        self._emit(event, self._call_listeners)

    def _reject(self, now: float) -> NoReturn:
        if self._call_listeners:
            self._emit_rejection()
        raise _circuit_open(self.name, self._machine.retry_after(now))

    def _call_general(self, permit: int, fn: Callable[..., T], args: Any, kwargs: Any) -> T:
        """After :meth:`permit`: call, and record the outcome under ``permit``."""
        start = self.clock()
        try:
            result = fn(*args, **kwargs)
        except BaseException as error:
            self._record_error(permit, error, start)
            raise
        if result.__class__ is CoroutineType:
            coroutine = cast("Coroutine[Any, Any, Any]", result)
            return cast("T", self._finish(permit, coroutine, start))
        self._record_value(permit, result, start, self.clock())
        return result

    async def _acall_general(
        self, permit: int, fn: Callable[..., Awaitable[T]], args: Any, kwargs: Any
    ) -> T:
        """Pass the trial gate, call, and record the outcome under ``permit``.

        The caller takes the permit before this coroutine exists, so a refusal costs no
        frame (rejecting is what an open breaker does all day).
        """
        gate = self.trial_gate
        if gate is not None and self._machine.is_trial(permit):
            await self._pass_gate(permit, gate)
        start = self.clock()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as error:
            self._record_error(permit, error, start)
            raise
        self._record_value(permit, result, start, self.clock())
        return result

    async def _finish(self, permit: int, coroutine: Coroutine[Any, Any, T], start: float) -> T:
        try:
            result = await coroutine
        except BaseException as error:
            self._record_error(permit, error, start)
            raise
        self._record_value(permit, result, start, self.clock())
        return result

    # -- recording -----------------------------------------------------------------------

    def classify(self, error: BaseException) -> int:
        """FAILURE, SUCCESS (the dependency answered) or ignored (-1) for an error."""
        config = self.config
        if not isinstance(error, Exception) or isinstance(error, config.ignore_exceptions):
            return _IGNORED
        if isinstance(error, CircuitOpenError) and error.name == self.name:
            return _IGNORED
        if config.record_failure is not None:
            return FAILURE if config.record_failure(error) else SUCCESS
        return FAILURE if isinstance(error, config.record_exceptions) else SUCCESS

    def _record_error(self, permit: int, error: BaseException, start: float) -> None:
        end = self.clock()
        outcome = self.classify(error)
        if outcome == _IGNORED:
            self._machine.record_ignored(permit)
            if self._call_listeners:
                self._emit(
                    CallEvent(self.name, EventKind.IGNORED, end - start, False, error),
                    self._call_listeners,
                )
            return
        if end - start >= self._slow:
            outcome |= SLOW
        self._machine.record(outcome, end, permit)
        if self._call_listeners:
            kind = EventKind.FAILURE if outcome & FAILURE else EventKind.SUCCESS
            event = CallEvent(self.name, kind, end - start, bool(outcome & SLOW), error)
            self._emit(event, self._call_listeners)

    def _record_value(self, permit: int, result: object, start: float, end: float) -> None:
        outcome = SUCCESS
        if self._record_result is not None and self._record_result(result):
            outcome = FAILURE
        if end - start >= self._slow:
            outcome |= SLOW
        self._machine.record(outcome, end, permit)
        if self._call_listeners:
            kind = EventKind.FAILURE if outcome & FAILURE else EventKind.SUCCESS
            event = CallEvent(self.name, kind, end - start, bool(outcome & SLOW))
            self._emit(event, self._call_listeners)

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self.state.value}>"


_MESSAGES: dict[str, str] = {}  # one per breaker name: names are few and fixed


def _circuit_open(name: str, retry_after: float) -> CircuitOpenError:
    """``CircuitOpenError(name, retry_after=retry_after)``, built without its __init__ chain.

    Rejecting is the one thing an open breaker does all day, and the three-level Python
    ``__init__`` chain of the error costs several times a bare raise. The result is the
    same object: same class, args, message and attributes (a unit test compares them).
    """
    message = _MESSAGES.get(name)
    if message is None:
        message = _MESSAGES.setdefault(name, f"circuit {name!r} is open")
    error = CircuitOpenError.__new__(CircuitOpenError, message)
    error.message = message
    error.retry_after = retry_after
    error.name = name
    return error
