"""What a channel is given and how it says it failed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from corestone.observability.alerts.model import Alert, AlertState

__all__ = ["AlertNotification", "Channel", "DeliveryError", "plain"]


@dataclass(frozen=True, slots=True)
class AlertNotification:
    """One notification of one group: what every channel renders in its own way.

    ``key`` (the group key and the send's ``seq``) is the same in every process, so a
    channel that stores (email's outbox, the in-app feed) uses it as an idempotency key.
    """

    group_key: str
    seq: int
    status: str
    """``firing`` or ``resolved`` (Alertmanager's values)."""
    group_labels: Mapping[str, str]
    alerts: Sequence[Alert]
    at: datetime
    receiver: str = "corestone"

    @property
    def key(self) -> str:
        return f"alert:{self.group_key}:{self.seq}"

    @property
    def common_labels(self) -> dict[str, str]:
        return _common([alert.labels for alert in self.alerts])

    @property
    def common_annotations(self) -> dict[str, str]:
        return _common([alert.annotations for alert in self.alerts])

    @property
    def firing(self) -> list[Alert]:
        return [alert for alert in self.alerts if alert.state is AlertState.FIRING]

    def title(self) -> str:
        """``[FIRING:2] HighErrorRatio``: one line, control characters removed."""
        name = self.group_labels.get("alertname") or ",".join(
            f"{k}={v}" for k, v in sorted(self.group_labels.items())
        )
        count = len(self.firing) if self.status == "firing" else len(self.alerts)
        return plain(f"[{self.status.upper()}:{count}] {name or 'alerts'}", 200)


def _common(mappings: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not mappings:
        return {}
    first, *rest = mappings
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in rest)}


def plain(text: str, limit: int) -> str:
    """``text`` on one line: every control character a space, cut to ``limit`` characters.

    Alert text comes from label values, which come from whatever was measured: it is
    rendered as data, never as a template, and never breaks a header or a log line.
    """
    cleaned = "".join(" " if not ch.isprintable() else ch for ch in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


class DeliveryError(Exception):
    """A channel gave up after ``attempts`` tries; ``str()`` is the last error."""

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class Channel(Protocol):
    """Delivers a notification one way; returns the number of attempts it took.

    Raises on failure (:class:`DeliveryError` to say how many attempts were made).
    """

    name: str

    async def send(self, notification: AlertNotification) -> int: ...
