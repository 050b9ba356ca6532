"""Grouping and timing: which alerts go out together, and when a group is due.

Alerts with the same values of the ``group_by`` labels (``["alertname"]`` by default)
form one group and one notification, as in Alertmanager. A group is due:

- when it first fires, once it has existed ``group_wait`` in this process (so alerts
  that start together go out together);
- when its set of alerts changes, at most every ``group_interval`` after the last send;
- again every ``repeat_interval`` while it fires unchanged;
- once, when every alert of it has resolved (``send_resolved``), if it was sent firing.

The last send of a group is read from the database (:mod:`.store`), not from memory:
several processes evaluate the same rules, and whichever claims the next ``seq`` sends.
This module is pure: :class:`Group` is one process's view of a group, :func:`plan`
the decision. Decisions are made when an evaluation arrives, so a group goes out at the
first evaluation after it is due (within one evaluation interval).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from corestone.observability.alerts.model import Alert, AlertState, labels_fingerprint

__all__ = [
    "Group",
    "GroupStatus",
    "LastSend",
    "Plan",
    "Timing",
    "finished",
    "group_labels_of",
    "plan",
]


class GroupStatus(StrEnum):
    """What a group's notification says: Alertmanager's ``status``, plus ``silenced``."""

    FIRING = "firing"
    RESOLVED = "resolved"
    SILENCED = "silenced"
    """Every firing alert of the group is silenced: recorded, not sent."""


@dataclass(frozen=True, slots=True)
class Timing:
    """Alertmanager's route timers, and whether resolved groups are sent."""

    group_by: tuple[str, ...] = ("alertname",)
    group_wait: timedelta = timedelta(seconds=10)
    group_interval: timedelta = timedelta(minutes=1)
    repeat_interval: timedelta = timedelta(hours=4)
    send_resolved: bool = True

    def __post_init__(self) -> None:
        if min(self.group_wait, self.group_interval, self.repeat_interval) < timedelta(0):
            raise ValueError("group_wait, group_interval and repeat_interval must be >= 0")


@dataclass(frozen=True, slots=True)
class LastSend:
    """The newest claimed send of a group, as stored."""

    seq: int
    content: str
    status: GroupStatus
    claimed_at: datetime


def group_labels_of(alert: Alert, group_by: Sequence[str]) -> dict[str, str]:
    """The labels that name ``alert``'s group (missing labels are left out, not ``""``)."""
    return {name: alert.labels[name] for name in group_by if name in alert.labels}


def _digest(*parts: Sequence[str]) -> str:
    hashed = hashlib.blake2b(digest_size=8)
    for part in parts:
        hashed.update(",".join(sorted(part)).encode())
        hashed.update(b"|")
    return hashed.hexdigest()


@dataclass(slots=True)
class Group:
    """One process's view of one group: its alerts now, and resolved ones not yet sent."""

    labels: dict[str, str]
    first_seen: datetime
    firing: dict[str, Alert] = field(default_factory=dict)
    silenced: set[str] = field(default_factory=set)
    resolved: dict[str, Alert] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return labels_fingerprint(self.labels)

    def update(self, alert: Alert, *, muted: bool) -> None:
        """Take ``alert``'s new state (pending alerts are no part of a notification)."""
        fingerprint = alert.fingerprint
        self.silenced.discard(fingerprint)
        if alert.state is AlertState.FIRING:
            self.firing[fingerprint] = alert
            self.resolved.pop(fingerprint, None)
            if muted:
                self.silenced.add(fingerprint)
        elif alert.state is AlertState.RESOLVED:
            if self.firing.pop(fingerprint, None) is not None and not muted:
                self.resolved[fingerprint] = alert
        else:
            self.firing.pop(fingerprint, None)

    def status(self) -> GroupStatus | None:
        """What a notification now would say; None when there is nothing to say."""
        if len(self.firing) > len(self.silenced):
            return GroupStatus.FIRING
        if self.firing:
            return GroupStatus.SILENCED
        return GroupStatus.RESOLVED if self.resolved else None

    def alerts(self) -> list[Alert]:
        """The alerts a notification carries: firing (not silenced) ones, then resolved ones."""
        loud = [a for fp, a in sorted(self.firing.items()) if fp not in self.silenced]
        if not loud and self.firing:
            loud = [self.firing[fp] for fp in sorted(self.firing)]
        return loud + [self.resolved[fp] for fp in sorted(self.resolved)]

    def content(self) -> str:
        """A digest of what would be sent: same content, same notification."""
        status = self.status()
        loud = [fp for fp in self.firing if fp not in self.silenced]
        return _digest([str(status)], loud, sorted(self.silenced), list(self.resolved))

    def sent(self) -> None:
        """A send of this group was claimed (here or elsewhere): resolved alerts are told."""
        self.resolved.clear()


@dataclass(frozen=True, slots=True)
class Plan:
    """A send to claim: the group's next ``seq``, with its content and status."""

    seq: int
    content: str
    status: GroupStatus


def plan(group: Group, last: LastSend | None, now: datetime, timing: Timing) -> Plan | None:
    """The send ``group`` is due for at ``now``, given the ``last`` one stored, or None."""
    status = group.status()
    if status is None:
        return None
    content = group.content()
    seq = 1 if last is None else last.seq + 1
    if status is GroupStatus.RESOLVED:
        told = last is not None and last.status is GroupStatus.FIRING
        if not (timing.send_resolved and told) or last is None:
            return None
        due = now - last.claimed_at >= timing.group_interval
    elif last is None or last.status is GroupStatus.RESOLVED:
        due = now - group.first_seen >= timing.group_wait
    elif last.content != content:
        due = now - last.claimed_at >= timing.group_interval
    else:
        due = now - last.claimed_at >= timing.repeat_interval
    return Plan(seq, content, status) if due else None


def finished(group: Group, last: LastSend | None, timing: Timing) -> bool:
    """Whether a group with nothing firing can be forgotten (nothing left to send)."""
    if group.firing:
        return False
    if not group.resolved:
        return True
    told = last is not None and last.status is GroupStatus.FIRING
    return not (timing.send_resolved and told)
