"""Wire email into an :class:`~corestone.Infrastructure`: the service, the sender, the check."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from corestone.email.configure import routes_from_settings
from corestone.email.providers.base import EmailProvider
from corestone.email.routing import ProviderRoute, Slot, Strategy
from corestone.email.sender import EmailSender
from corestone.email.service import EmailService
from corestone.observability.health import CheckFunction, CheckResult

if TYPE_CHECKING:
    from corestone.runtime import Infrastructure

__all__ = ["add_email"]


def add_email(
    infra: Infrastructure,
    routes: Sequence[ProviderRoute] | None = None,
    *,
    strategy: Strategy | None = None,
    run_sender: bool = True,
    **options: Any,
) -> EmailService:
    """Wire email into ``infra``: the service (registered), and a sender when there is work.

    Without ``routes`` the providers are the settings' (``CORESTONE_EMAIL_PROVIDERS``, by
    default the file provider under ``var/mail``), built here and closed when ``infra``
    stops; ``strategy`` then defaults to the one the setting spells. Routes passed in
    belong to the caller, who closes their providers. Afterwards ``infra.email`` is the
    service. Call it once per infrastructure, before it starts.

    The sender is added as a component only with ``run_sender`` and at least one route
    (a web process may leave sending to workers). The ``email`` health check is always
    registered, not critical (mail waits in the outbox; the API stays up): it fails
    while no provider is configured and warns when the backlog grows old. So is one
    ``email.<provider>`` check per provider, from its breaker (warns while it is open).
    """
    owned = routes is None
    if routes is None:
        routing = routes_from_settings(infra.settings)
        routes, strategy = routing.routes, strategy or routing.strategy
    sender = EmailSender(
        infra.db,
        routes,
        strategy=strategy or "failover",
        breakers=infra.breakers,
        metrics=infra.metrics,
        **options,
    )
    running = run_sender and bool(routes)
    service = EmailService(
        infra.db, metrics=infra.metrics, on_queued=sender.wake if running else None
    )
    infra.email = service  # refuses a second add_email before anything is registered
    if owned:
        # Added before the sender, so stopped after it: no send finds its provider closed.
        infra.add(_ProviderCloser([route.provider for route in routes]), critical=False)
    infra.services.register_value(EmailService, service)
    infra.services.register_value(EmailSender, sender)
    if running:
        infra.add(sender, check=sender.check, critical=False)
    else:
        infra.health.register("email", sender.check, critical=False)
    for slot in sender.router.slots:
        infra.health.register(
            slot.breaker.name,
            infra.breakers.health_check(slot.breaker.name, _provider_check(slot)),
            component_type="email",
            measurement="circuit",
            critical=False,
        )
    return service


def _provider_check(slot: Slot) -> CheckFunction:
    """One provider's health, read from its breaker: no request of its own.

    Asking SendGrid, Mailgun or SES whether they are up would spend API quota and rate
    limit on every poll, and an SMTP ``NOOP`` would hold a connection open per instance;
    the outcomes of real sends (the breaker ``email.<provider>``) say more. The breaker
    wrapper turns an open or half-open one into ``warn``: mail waits or fails over.
    """

    async def provider() -> CheckResult:
        return CheckResult(observed_value=slot.breaker.state.value, observed_unit="state")

    return provider


class _ProviderCloser:
    """Closes the providers ``add_email`` built from settings when the infrastructure stops."""

    name = "email-providers"

    def __init__(self, providers: Sequence[EmailProvider]) -> None:
        self.providers = tuple(providers)

    async def start(self) -> None:
        """Nothing to open: providers connect on their first send."""

    async def aclose(self) -> None:
        """Close every provider, even when one fails; the first failure is raised after."""
        outcomes = await asyncio.gather(
            *(provider.aclose() for provider in self.providers), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
