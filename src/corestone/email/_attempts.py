"""What the sender carries between its steps: a claimed row as a provider call, and what
one round of calls through one provider left to do."""

from __future__ import annotations

from dataclasses import dataclass

from corestone.email.outbox import Claimed
from corestone.email.providers.base import Outgoing

__all__ = ["Attempt", "Item"]


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
