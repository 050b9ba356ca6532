"""Where alert notifications go: the log, a webhook, email, the in-app feed."""

from corestone.observability.alerts.channels._base import (
    AlertNotification,
    Channel,
    DeliveryError,
    plain,
)
from corestone.observability.alerts.channels.log import LogChannel

__all__ = ["AlertNotification", "Channel", "DeliveryError", "LogChannel", "plain"]
