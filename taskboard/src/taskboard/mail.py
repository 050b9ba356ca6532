"""taskboard's email: providers and webhook keys from corestone's settings, nothing else.

Which providers send is ``CORESTONE_EMAIL_PROVIDERS`` with their credentials
(docs/email-providers.md); with nothing set, mail goes to ``.eml`` files under
``CORESTONE_EMAIL_FILE_DIR`` (``var/mail``, corestone's file provider), so a fresh checkout
sends its welcome emails without an account anywhere.

Webhook endpoints are mounted only for the providers whose key is configured
(``CORESTONE_SENDGRID_WEBHOOK_PUBLIC_KEY``: the Event Webhook's verification key;
``CORESTONE_MAILGUN_WEBHOOK_SIGNING_KEY``: the webhook signing key); without a key the
path is a 404, never an endpoint that accepts unsigned events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import FastAPI

from corestone import Infrastructure
from corestone.email import EmailService, add_email
from corestone.email.configure import EmailWebhooks, webhooks_from_settings
from corestone.email.routing import ProviderRoute
from corestone.email.tracking import EmailTracker
from corestone.web.email_routes import (
    UnsubscribeHandler,
    email_webhooks_router,
    unsubscribe_router,
)
from taskboard.services.notifications import UNSUBSCRIBE_PATH, Notifier, register_notifier

__all__ = ["WEBHOOKS_PREFIX", "MailWiring", "mount_email_routes", "setup_email"]

WEBHOOKS_PREFIX = "/webhooks/email"


@dataclass(frozen=True, slots=True)
class MailWiring:
    """What taskboard's email runs on: the service, the tracker, the notifier, the webhooks."""

    email: EmailService
    tracker: EmailTracker
    notifier: Notifier
    webhooks: EmailWebhooks


def setup_email(
    infra: Infrastructure, *, send: bool, routes: Sequence[ProviderRoute] | None = None
) -> MailWiring:
    """Register the email service, the tracker and the notifier; run a sender if ``send``.

    ``routes`` replaces the settings' providers (tests pass a memory provider); the
    caller then closes them.
    """
    email = add_email(infra, routes, run_sender=send)
    tracker = EmailTracker(infra.db)
    infra.services.register_value(EmailTracker, tracker)
    notifier = Notifier.from_environment(email, signing_key=infra.settings.signing_key)
    register_notifier(infra.db, notifier)
    return MailWiring(email, tracker, notifier, webhooks_from_settings(infra.settings))


def mount_email_routes(
    api: FastAPI, wiring: MailWiring, *, on_unsubscribe: UnsubscribeHandler | None = None
) -> None:
    """The provider webhooks under ``/webhooks/email`` and the one-click unsubscribe URL
    (``on_unsubscribe`` first: a notification's link turns a preference off)."""
    api.include_router(
        email_webhooks_router(
            wiring.tracker, sendgrid=wiring.webhooks.sendgrid, mailgun=wiring.webhooks.mailgun
        ),
        prefix=WEBHOOKS_PREFIX,
    )
    tokens = wiring.notifier.tokens
    if tokens is not None:
        api.include_router(
            unsubscribe_router(tokens, wiring.email, path=UNSUBSCRIBE_PATH, handler=on_unsubscribe)
        )
