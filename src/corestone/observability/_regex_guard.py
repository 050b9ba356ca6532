"""Refuse regular expressions that Python's backtracking engine can take minutes to run.

Silences and PromQL matchers take ``=~`` regexes from operators (any workspace owner, over
the API) and match them, on the event loop, against label values. Prometheus runs them
with RE2, in linear time; :mod:`re` backtracks, so ``(.*)*y``, ``(a|a)*y`` or ten
``.*`` in a row take seconds on a 30-character label and block every request meanwhile.

:func:`unsafe_regex` reads the parsed pattern and refuses the shapes that backtrack
without bound: a repeat inside a repeat, a repeated alternation, a back-reference, and
more than :data:`MAX_REPEATS` repeats in all (each one multiplies the work by the
label's length). What is left (``.*error.*``, ``api|web``, ``5..``, ``[a-z]+-\\d+``)
covers what silences and alert rules are written with.
"""

from __future__ import annotations

from re import _constants, _parser  # type: ignore[attr-defined]
from typing import Any, Final

__all__ = ["MAX_REPEATS", "unsafe_regex"]

MAX_REPEATS: Final = 3
"""Repeats (``*``, ``+``, ``?``, ``{m,n}``) one pattern may hold: ``a?`` fifty times
before fifty ``a`` backtracks as badly as a nested repeat."""

_REPEATS: Final = frozenset(
    getattr(_constants, name)
    for name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")
    if hasattr(_constants, name)
)
_BACKREFS: Final = frozenset(
    getattr(_constants, name)
    for name in ("GROUPREF", "GROUPREF_EXISTS", "GROUPREF_IGNORE")
    if hasattr(_constants, name)
)

_ATOMIC: Final = getattr(_constants, "ATOMIC_GROUP", None)


def unsafe_regex(pattern: str) -> str | None:
    """Why ``pattern`` may backtrack without bound, or None if it is safe to run.

    ``pattern`` must compile (check with :func:`re.compile` first).
    """
    repeats = 0
    # (items, inside a repeat) pairs still to read: iterative, so no nesting depth
    # the 256-character limit allows can overflow the stack.
    pending: list[tuple[Any, bool]] = [(_parser.parse(pattern), False)]
    while pending:
        items, repeated = pending.pop()
        for op, arg in items:
            if op in _BACKREFS:
                return "back-references are not supported"
            if op in _REPEATS:
                if repeated:
                    return "a repeat inside a repeat (like (a+)+) can run for minutes"
                repeats += 1
                if repeats > MAX_REPEATS:
                    return f"at most {MAX_REPEATS} repeats (*, +, ?, {{m,n}}) in one regex"
                pending.append((arg[2], True))
            elif op is _constants.BRANCH:
                if repeated:
                    return "a repeated alternation (like (a|b)*) can run for minutes"
                pending.extend((branch, repeated) for branch in arg[1])
            elif op is _constants.SUBPATTERN:
                pending.append((arg[-1], repeated))
            elif op is _ATOMIC:  # (?>...): it backtracks inside while it matches
                pending.append((arg, repeated))
            elif op in (_constants.ASSERT, _constants.ASSERT_NOT):
                pending.append((arg[1], repeated))
    return None
