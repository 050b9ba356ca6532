"""What the sender carries between its steps: a claimed row as a provider call, and what
one round of calls through one provider left to do."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from corestone.email.outbox import Claimed
from corestone.email.providers.base import Outgoing

__all__ = ["Attempt", "Item", "all_of"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Item:
    row: Claimed
    outgoing: Outgoing
    note: str | None = None
    """Said on the ``sending`` event (recipients left out because suppressed)."""

    @property
    def id(self) -> str:
        return self.row.id


@dataclass(slots=True)
class Attempt:
    """What one round of calls through one provider left to do."""

    retry: list[Item]
    skipped: list[Item]
    wait: float = 0.0
    called: bool = False


async def all_of(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Await every call to its end, then raise the first failure, if any.

    ``asyncio.gather`` raises at the first failure and leaves the other calls running
    unsupervised: a chunk whose write failed returned while its siblings were still in
    their provider calls, their outcomes recorded after the round had "ended". Cancelling
    them instead (a ``TaskGroup``) would cut provider calls mid-flight, leaving messages
    that may have gone out ``sending``. So every sibling finishes and records first.
    """
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes  # type: ignore[return-value]  # no exception left in it
