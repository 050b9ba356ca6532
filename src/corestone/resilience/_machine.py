"""The breaker's state machine: pure (no I/O, no sleeping), driven by clock readings.

Every method takes ``now`` from the breaker's injectable clock. One lock guards the
window and the state; it is held only for bookkeeping, never around the call itself, so
threads calling through one breaker run in parallel.

Permits and generations. Every transition starts a new state episode and bumps
``generation``; a permit is the generation it was granted in. An outcome counts in the
window, or as a trial, and a trial permit can be given back, only under a permit of the
current episode. Calls that outlive their episode (a call started in CLOSED that ends,
or is cancelled, after the breaker went half-open) are counted in the totals and change
nothing else, so half-open never admits more than its trials and no stale call decides.

The success inbox. A successful, fast call in CLOSED state cannot raise a failure or
slow-call rate, so it need not be judged at once: the breaker appends it to ``inbox``
(a list; ``append`` is atomic under the GIL) without taking the lock, as long as the
clock is before ``fold_at``. The next :meth:`record` (any failure or slow call, the first
call of a new second, or any call while the minimum number of calls is not yet reached
with failures in the window) folds the inbox into the window under the lock, in order,
before recording its own outcome. So the window sees exactly the calls, in the order
and in the second they happened, and the common call never touches the lock.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass

from corestone.resilience.config import BreakerConfig
from corestone.resilience.events import State, StateChange
from corestone.resilience.window import FAILURE, SLOW, CountWindow, TimeWindow

__all__ = ["REFUSED", "Counters", "Machine"]

REFUSED = -1
"""What :meth:`Machine.acquire` returns when a call may not go ahead (never a generation)."""


@dataclass(slots=True)
class Counters:
    """Calls by outcome since the breaker was made (never reset: Prometheus counters)."""

    successful: int = 0
    failed: int = 0
    slow_successful: int = 0
    slow_failed: int = 0
    ignored: int = 0


class Machine:
    """CLOSED / OPEN / HALF_OPEN plus the manual states, over a sliding window."""

    def __init__(
        self, name: str, config: BreakerConfig, notify: Callable[[StateChange], None]
    ) -> None:
        self.name = name
        self.config = config
        self.lock = threading.Lock()
        self.state = State.CLOSED
        self.counters = Counters()
        # Rejections are counted without the lock: next() on a count is atomic under the
        # GIL. Reading takes one more next() and subtracts the reads (see not_permitted).
        self.count_rejection = itertools.count().__next__
        self._rejection_reads = 0
        self.window: CountWindow | TimeWindow = (
            CountWindow(config.window_size)
            if config.window_type == "count"
            else TimeWindow(config.window_size)
        )
        self.minimum_calls = config.effective_minimum_calls
        self.open_until = 0.0
        self.consecutive_opens = 0
        self.generation = 0
        self.inbox: list[int] = []
        self.fold_at = 0.0
        self._inbox_second = 0.0
        self._notify = notify
        self._half_open_since = 0.0
        self._trials_left = 0
        self._trial_calls = self._trial_failures = self._trial_slow = 0

    # -- permission ---------------------------------------------------------------------

    def acquire(self, now: float) -> int:
        """A permit for one call now, or ``REFUSED``. In HALF_OPEN it takes a trial permit.

        A permit is the generation of the state it was granted in: the outcome of a call
        counts, and its trial permit can be given back, only while that state lasts.
        """
        change = None
        with self.lock:
            state = self.state
            if state is State.OPEN and now >= self.open_until:
                change = self._to(State.HALF_OPEN, now, "wait in open elapsed")
                state = State.HALF_OPEN
            if state is State.HALF_OPEN:
                if self._trials_left > 0:
                    self._trials_left -= 1
                    permit = self.generation
                else:
                    permit = REFUSED
                    if self._half_open_expired(now):
                        change = self._open(now, "trials did not finish in time")
            elif state is State.OPEN or state is State.FORCED_OPEN:
                permit = REFUSED
            else:
                permit = self.generation
            if permit == REFUSED:
                self.count_rejection()
        if change is not None:
            self._notify(change)
        return permit

    def is_trial(self, permit: int) -> bool:
        """Whether ``permit`` is a trial permit of the current HALF_OPEN episode."""
        return permit == self.generation and self.state is State.HALF_OPEN

    def release(self, permit: int) -> None:
        """Give back ``permit`` for a call that was not made (its trial, if still current)."""
        with self.lock:
            if permit == self.generation and self.state is State.HALF_OPEN:
                self._trials_left += 1

    def refuse(self, permit: int) -> None:
        """Give back ``permit`` and count the call as not permitted (a gate said no)."""
        self.count_rejection()
        self.release(permit)

    def record_ignored(self, permit: int) -> None:
        """A permitted call ended with an ignored outcome: count it, give its permit back."""
        with self.lock:
            self.counters.ignored += 1
            if permit == self.generation and self.state is State.HALF_OPEN:
                self._trials_left += 1

    def tick(self, now: float) -> None:
        """Apply the transitions that time alone causes (OPEN -> HALF_OPEN, a stuck trial)."""
        change = None
        with self.lock:
            if self.state is State.OPEN and now >= self.open_until:
                change = self._to(State.HALF_OPEN, now, "wait in open elapsed")
            elif self.state is State.HALF_OPEN and self._half_open_expired(now):
                change = self._open(now, "trials did not finish in time")
        if change is not None:
            self._notify(change)

    def _half_open_expired(self, now: float) -> bool:
        wait = self.config.max_wait_in_half_open_seconds
        return bool(wait) and now - self._half_open_since >= wait

    def not_permitted(self) -> int:
        """Calls rejected so far (exact, though counted without the lock); lock held."""
        value = self.count_rejection() - self._rejection_reads
        self._rejection_reads += 1
        return value

    def retry_after(self, now: float) -> float:
        """Seconds until a rejected caller may try again (0 when it may now)."""
        if self.state is State.OPEN:
            return max(self.open_until - now, 0.0)
        return 0.0

    # -- results ------------------------------------------------------------------------

    def record(self, outcome: int, now: float, permit: int) -> None:
        """Record the outcome of a call made under ``permit`` (``window`` bits: FAILURE, SLOW).

        The call counts in the totals whatever happened meanwhile; it counts in the window
        or as a trial only if the state it was permitted in still holds. So a call started
        before the breaker opened can never be taken for a trial, nor close the breaker.
        """
        change = None
        with self.lock:
            self._fold(now)
            counters = self.counters
            if outcome == 0:
                counters.successful += 1
            elif outcome == FAILURE:
                counters.failed += 1
            elif outcome == SLOW:
                counters.slow_successful += 1
            else:
                counters.slow_failed += 1
            if permit == self.generation:
                state = self.state
                if state is State.CLOSED or state is State.METRICS_ONLY:
                    window = self.window
                    window.record(outcome, now)
                    if (window.failures or window.slow) and window.calls >= self.minimum_calls:
                        change = self._judge_closed(now)
                elif state is State.HALF_OPEN:
                    change = self._judge_trial(outcome, now)
            self._arm(now)
        if change is not None:
            self._notify(change)

    def settle(self, now: float) -> None:
        """Fold the success inbox into the window (for a consistent read); lock held."""
        self._fold(now)
        self._arm(now)

    def _fold(self, now: float) -> None:
        inbox = self.inbox
        count = len(inbox)
        if not count:
            return
        # One C-level operation: successes appended by other threads meanwhile stay.
        del inbox[:count]
        self.counters.successful += count
        if self.state is State.CLOSED or self.state is State.METRICS_ONLY:
            # Every inboxed call ended in the second the inbox was armed in (see _arm).
            self.window.record_successes(count, self._inbox_second)

    def _arm(self, now: float) -> None:
        """Let fast successes skip the lock until the next second, unless they must be judged."""
        window = self.window
        if (window.failures or window.slow) and window.calls < self.minimum_calls:
            self.fold_at = 0.0
        else:
            self._inbox_second = float(int(now))
            self.fold_at = self._inbox_second + 1.0

    def record_unpermitted_failure(self, now: float) -> None:
        """A failure seen outside a permitted call: window in CLOSED, re-open in HALF_OPEN."""
        change = None
        with self.lock:
            self._fold(now)
            self.counters.failed += 1
            if self.state is State.CLOSED or self.state is State.METRICS_ONLY:
                self.window.record(FAILURE, now)
                if self.window.calls >= self.minimum_calls:
                    change = self._judge_closed(now)
            elif self.state is State.HALF_OPEN:
                change = self._open(now, "a connection attempt failed during the trial")
            self._arm(now)
        if change is not None:
            self._notify(change)

    def _judge_closed(self, now: float) -> StateChange | None:
        window = self.window
        if isinstance(window, TimeWindow):
            window.totals(now)
            if window.calls < self.minimum_calls:
                return None
        calls, config = window.calls, self.config
        failure_rate = window.failures * 100.0 / calls
        slow_rate = window.slow * 100.0 / calls
        if self.state is State.METRICS_ONLY:
            return None
        if failure_rate >= config.failure_rate_threshold:
            return self._open(now, f"failure rate {failure_rate:.1f}% over {calls} calls")
        if slow_rate >= config.slow_call_rate_threshold:
            return self._open(now, f"slow call rate {slow_rate:.1f}% over {calls} calls")
        return None

    def _judge_trial(self, outcome: int, now: float) -> StateChange | None:
        self._trial_calls += 1
        self._trial_failures += outcome & FAILURE
        self._trial_slow += outcome >> 1
        calls, config = self._trial_calls, self.config
        if calls < config.permitted_calls_in_half_open:
            return None
        if self._trial_failures * 100.0 / calls >= config.failure_rate_threshold:
            return self._open(now, "trial calls failed")
        if self._trial_slow * 100.0 / calls >= config.slow_call_rate_threshold:
            return self._open(now, "trial calls were slow")
        return self._to(State.CLOSED, now, "trial calls succeeded")

    # -- transitions (lock held) --------------------------------------------------------

    def _open(self, now: float, reason: str) -> StateChange:
        self.consecutive_opens += 1
        self.open_until = now + self.config.wait_in_open(self.consecutive_opens)
        return self._to(State.OPEN, now, reason)

    def _to(self, state: State, now: float, reason: str, *, remote: bool = False) -> StateChange:
        self._fold(now)
        self.fold_at = 0.0  # re-armed by the next record in CLOSED
        before = self.state
        self.state = state
        self.generation += 1
        if state is State.HALF_OPEN:
            self._half_open_since = now
            self._trials_left = self.config.permitted_calls_in_half_open
            self._trial_calls = self._trial_failures = self._trial_slow = 0
        elif state is State.CLOSED or state is State.METRICS_ONLY:
            self.window.reset()
            if state is State.CLOSED:
                self.consecutive_opens = 0
        return StateChange(self.name, before, state, now, reason, remote)

    def transition(
        self,
        state: State,
        now: float,
        reason: str,
        *,
        open_for: float | None = None,
        consecutive_opens: int | None = None,
        remote: bool = False,
    ) -> StateChange | None:
        """Move to ``state`` by hand or on a peer's word; None if already there."""
        with self.lock:
            if state is self.state and (state is not State.OPEN or open_for is None):
                return None
            if state is State.OPEN:
                if consecutive_opens is not None:
                    self.consecutive_opens = consecutive_opens
                else:
                    self.consecutive_opens += 1
                wait = self.config.wait_in_open(self.consecutive_opens)
                self.open_until = now + (wait if open_for is None else open_for)
            change = self._to(state, now, reason, remote=remote)
        self._notify(change)
        return change

    def reset(self, now: float) -> StateChange:
        """Back to CLOSED with an empty window and no open streak."""
        with self.lock:
            change = self._to(State.CLOSED, now, "reset")
            self.consecutive_opens = 0
        self._notify(change)
        return change
