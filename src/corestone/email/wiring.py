"""Wire email into an :class:`~corestone.Infrastructure`: the service, the sender, the check."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from corestone.email.routing import ProviderRoute
from corestone.email.sender import EmailSender
from corestone.email.service import EmailService

if TYPE_CHECKING:
    from corestone.runtime import Infrastructure

__all__ = ["add_email"]


def add_email(
    infra: Infrastructure,
    routes: Sequence[ProviderRoute],
    *,
    run_sender: bool = True,
    **options: Any,
) -> EmailService:
    """Wire email into ``infra``: the service (registered), and a sender when there is work.

    The sender is added as a component only with ``run_sender`` and at least one route
    (a web process may leave sending to workers). The ``email`` health check is always
    registered, not critical (mail waits in the outbox; the API stays up): it fails
    while no provider is configured and warns when the backlog grows old.
    """
    sender = EmailSender(
        infra.db, routes, breakers=infra.breakers, metrics=infra.metrics, **options
    )
    running = run_sender and bool(routes)
    service = EmailService(
        infra.db, metrics=infra.metrics, on_queued=sender.wake if running else None
    )
    infra.services.register_value(EmailService, service)
    infra.services.register_value(EmailSender, sender)
    if running:
        infra.add(sender, check=sender.check, critical=False)
    else:
        infra.health.register("email", sender.check, critical=False)
    return service
