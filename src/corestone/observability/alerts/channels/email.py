"""The email channel: a plain-text message through :mod:`corestone.email`'s outbox.

Each notification is stored in the email outbox with the idempotency key
``alert:<group>:<seq>``, so a send retried after a crash stores it once, and the
email sender delivers it with its own retries and provider failover.

Alert text is data: label values and annotations are written into the text body with
their control characters replaced (a label value holding CR LF cannot add a header or
break the subject), and no template engine ever sees them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from corestone.observability.alerts.channels._base import AlertNotification, plain

if TYPE_CHECKING:
    from corestone.email.service import EmailService

__all__ = ["EmailChannel", "email_text"]

_LINE_MAX: Final = 1000
_ALERTS_MAX: Final = 50


def email_text(notification: AlertNotification) -> str:
    """The message body: the group, then each alert's labels, annotations and times."""
    lines = [notification.title(), ""]
    for name, value in sorted(notification.group_labels.items()):
        lines.append(plain(f"{name}: {value}", _LINE_MAX))
    for alert in notification.alerts[:_ALERTS_MAX]:
        head = f"- {alert.rule} ({alert.state.value}, value {alert.value:g})"
        lines += ["", plain(head, _LINE_MAX)]
        since = alert.fired_at or alert.active_since
        lines.append(f"  since: {since.isoformat()}")
        if alert.resolved_at is not None:
            lines.append(f"  resolved: {alert.resolved_at.isoformat()}")
        for name, value in sorted(alert.annotations.items()):
            lines.append(plain(f"  {name}: {value}", _LINE_MAX))
        for name, value in sorted(alert.labels.items()):
            lines.append(plain(f"  label {name}={value}", _LINE_MAX))
    if len(notification.alerts) > _ALERTS_MAX:
        lines += ["", f"… and {len(notification.alerts) - _ALERTS_MAX} more"]
    return "\n".join(lines) + "\n"


class EmailChannel:
    """Queues one message per notification to ``to`` from ``sender``."""

    name = "email"

    def __init__(self, email: EmailService, *, sender: str, to: Sequence[str]) -> None:
        if not to:
            raise ValueError("the email channel needs at least one recipient")
        self.email, self.sender, self.to = email, sender, tuple(to)

    async def send(self, notification: AlertNotification) -> int:
        from corestone.email.message import EmailMessage

        message = EmailMessage.build(
            sender=self.sender,
            to=self.to,
            subject=notification.title(),
            text=email_text(notification),
            tags=("alert",),
            idempotency_key=notification.key,
        )
        await self.email.send(message)
        return 1
