"""BreakerConfig: every option of a circuit breaker, frozen and validated when built.

The options and their defaults follow Resilience4j, so its documentation reads across;
durations are seconds and rates are percentages (0-100). ``from_mapping`` builds one from
plain JSON-like data (settings), naming the field in the error when a value is wrong.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from corestone.errors import InvalidInputError

__all__ = ["BreakerConfig", "WindowType"]

WindowType = Literal["count", "time"]

_MAX_OPENS = 1_000_000
"""The bound on a remote open count when ``wait_backoff`` decides the wait."""

_FINITE = (
    "failure_rate_threshold",
    "slow_call_rate_threshold",
    "slow_call_seconds",
    "max_wait_in_half_open_seconds",
    "wait_in_open_seconds",
    "wait_multiplier",
    "max_wait_in_open_seconds",
)

_MAPPABLE = {
    "window_type": str,
    "window_size": int,
    "minimum_calls": int,
    "failure_rate_threshold": float,
    "slow_call_rate_threshold": float,
    "slow_call_seconds": float,
    "permitted_calls_in_half_open": int,
    "max_wait_in_half_open_seconds": float,
    "wait_in_open_seconds": float,
    "wait_multiplier": float,
    "max_wait_in_open_seconds": float,
    "automatic_transition": bool,
}


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """How one breaker decides; frozen, so a registry can share one instance.

    * ``window_type`` ``"count"``: the rates are over the last ``window_size`` calls;
      ``"time"``: over the calls of the last ``window_size`` seconds (1-second buckets).
    * ``minimum_calls``: no rate is judged before the window holds this many calls.
    * ``failure_rate_threshold`` / ``slow_call_rate_threshold`` (percent): at or above
      either, CLOSED becomes OPEN. A call is slow when it takes ``slow_call_seconds`` or more,
      whether it succeeds or fails.
    * ``wait_in_open_seconds``: how long OPEN rejects calls; each consecutive re-open
      multiplies it by ``wait_multiplier`` up to ``max_wait_in_open_seconds``, or
      ``wait_backoff(consecutive_opens)`` decides when given (it must accept any count
      from 1 up, and return finite seconds).
    * ``automatic_transition``: move OPEN to HALF_OPEN on a timer; otherwise (default) on
      the first call after the wait, which costs nothing while nobody calls.
    * ``permitted_calls_in_half_open``: trial calls allowed in HALF_OPEN; their rates decide
      CLOSED or OPEN again. ``max_wait_in_half_open_seconds`` (0 = unbounded) re-opens a
      half-open breaker whose trials never finish.
    * ``record_exceptions`` count as failures unless in ``ignore_exceptions`` (ignored:
      neither success nor failure); other exceptions count as successes (the dependency
      answered). ``record_failure``, when given, decides instead of both lists.
      ``record_result`` turns a returned value into a failure (e.g. an HTTP 503 response).
    """

    window_type: WindowType = "count"
    window_size: int = 100
    minimum_calls: int = 20
    failure_rate_threshold: float = 50.0
    slow_call_rate_threshold: float = 100.0
    slow_call_seconds: float = 60.0
    permitted_calls_in_half_open: int = 5
    max_wait_in_half_open_seconds: float = 0.0
    wait_in_open_seconds: float = 30.0
    wait_multiplier: float = 1.0
    max_wait_in_open_seconds: float = 300.0
    wait_backoff: Callable[[int], float] | None = None
    automatic_transition: bool = False
    record_exceptions: tuple[type[BaseException], ...] = (Exception,)
    ignore_exceptions: tuple[type[BaseException], ...] = ()
    record_failure: Callable[[BaseException], bool] | None = None
    record_result: Callable[[Any], bool] | None = field(default=None)

    def __post_init__(self) -> None:
        for name in _FINITE:
            _check(math.isfinite(getattr(self, name)), name, "a finite number")
        _check(self.window_type in ("count", "time"), "window_type", "one of count, time")
        _check(1 <= self.window_size <= 100_000, "window_size", "between 1 and 100000")
        _check(self.minimum_calls >= 1, "minimum_calls", "at least 1")
        for name in ("failure_rate_threshold", "slow_call_rate_threshold"):
            _check(0 < getattr(self, name) <= 100, name, "a percentage in (0, 100]")
        _check(self.slow_call_seconds > 0, "slow_call_seconds", "greater than 0")
        _check(self.permitted_calls_in_half_open >= 1, "permitted_calls_in_half_open", ">= 1")
        _check(self.max_wait_in_half_open_seconds >= 0, "max_wait_in_half_open_seconds", ">= 0")
        _check(self.wait_in_open_seconds > 0, "wait_in_open_seconds", "greater than 0")
        _check(self.wait_multiplier >= 1, "wait_multiplier", "at least 1")
        _check(
            self.max_wait_in_open_seconds >= self.wait_in_open_seconds,
            "max_wait_in_open_seconds",
            "at least wait_in_open_seconds",
        )

    @property
    def effective_minimum_calls(self) -> int:
        """``minimum_calls``, capped at the window size for a count window (as Resilience4j)."""
        if self.window_type == "count":
            return min(self.minimum_calls, self.window_size)
        return self.minimum_calls

    @property
    def growing_opens(self) -> int:
        """The open count past which the built-in backoff no longer grows (at least 1).

        A remote peer's open count is clamped to it (fleet mode); with ``wait_backoff`` the
        function may grow for ever, so the bound is a generous constant.
        """
        if self.wait_backoff is not None:
            return _MAX_OPENS
        return 1 + self._capped_exponent()

    def wait_in_open(self, consecutive_opens: int) -> float:
        """Seconds to stay OPEN after the ``consecutive_opens``-th open in a row (from 1).

        The exponent is capped *before* exponentiating, so no count, however long the
        outage, can overflow a float: the wait simply stays at ``max_wait_in_open_seconds``.
        """
        if self.wait_backoff is not None:
            return float(self.wait_backoff(consecutive_opens))
        exponent = min(max(consecutive_opens - 1, 0), self._capped_exponent())
        grown = self.wait_in_open_seconds * self.wait_multiplier**exponent
        return min(grown, self.max_wait_in_open_seconds)

    def _capped_exponent(self) -> int:
        """The smallest exponent at which ``wait * multiplier ** exponent`` reaches the cap."""
        if self.wait_multiplier <= 1.0:
            return 0
        ratio = self.max_wait_in_open_seconds / self.wait_in_open_seconds
        return max(math.ceil(math.log(ratio) / math.log(self.wait_multiplier)), 0)

    def replace(self, **changes: Any) -> BreakerConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def with_mapping(self, values: Mapping[str, Any], *, field_prefix: str = "") -> BreakerConfig:
        """A copy with JSON-like ``values`` applied; errors name ``field_prefix + key``."""
        changes: dict[str, Any] = {}
        for key, value in values.items():
            kind = _MAPPABLE.get(key)
            if kind is None:
                known = ", ".join(sorted(_MAPPABLE))
                raise InvalidInputError(
                    f"{field_prefix}{key}: unknown breaker option (known: {known})",
                    field=f"{field_prefix}{key}",
                    rule="known_option",
                )
            changes[key] = _coerce(value, kind, f"{field_prefix}{key}")
        try:
            return self.replace(**changes)
        except InvalidInputError as error:
            name = f"{field_prefix}{error.field}"
            raise InvalidInputError(
                f"{field_prefix}{error.message}", field=name, rule=error.rule
            ) from None


def _coerce(value: Any, kind: type, name: str) -> Any:
    ok = (
        isinstance(value, bool)
        if kind is bool
        else isinstance(value, str)
        if kind is str
        else isinstance(value, int) and not isinstance(value, bool)
        if kind is int
        else isinstance(value, int | float) and not isinstance(value, bool)
    )
    if not ok:
        raise InvalidInputError(f"{name}: must be a {kind.__name__}", field=name, rule="type")
    return float(value) if kind is float else value


def _check(ok: bool, name: str, rule: str) -> None:
    if not ok:
        raise InvalidInputError(f"{name}: must be {rule}", field=name, rule=rule)
