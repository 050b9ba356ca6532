"""The log channel: one structured line per notification, always on."""

from __future__ import annotations

from corestone.observability.alerts.channels._base import AlertNotification
from corestone.observability.logging import get_logger

__all__ = ["LogChannel"]

log = get_logger("corestone.alerts")


class LogChannel:
    """Writes each notification as one log line (``warning`` firing, ``info`` resolved)."""

    name = "log"

    async def send(self, notification: AlertNotification) -> int:
        emit = log.warning if notification.status == "firing" else log.info
        emit(
            "alert notification",
            status=notification.status,
            group_key=notification.group_key,
            seq=notification.seq,
            group_labels=dict(notification.group_labels),
            alerts=[
                {"labels": dict(a.labels), "state": a.state.value, "value": a.value}
                for a in notification.alerts
            ],
        )
        return 1
