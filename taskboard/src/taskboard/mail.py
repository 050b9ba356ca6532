"""taskboard's email configuration: which provider sends, which webhooks are served.

With nothing configured, mail goes to ``.eml`` files under ``var/mail`` (corestone's file
provider): a fresh checkout sends its welcome emails without an account anywhere. With
``CORESTONE_SMTP_URL`` set, it goes through that SMTP server instead.

Webhook endpoints are mounted only for the providers whose key is configured
(``TASKBOARD_SENDGRID_WEBHOOK_KEY``: the Event Webhook's verification key;
``TASKBOARD_MAILGUN_SIGNING_KEY``: the webhook signing key); without a key the path is
a 404, never an endpoint that accepts unsigned events.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import FastAPI

from corestone import Infrastructure
from corestone.email import EmailService, add_email
from corestone.email.providers import FileProvider
from corestone.email.providers.base import EmailProvider
from corestone.email.routing import ProviderRoute
from corestone.email.tracking import EmailTracker
from corestone.email.webhooks import MailgunWebhook, SendGridWebhook
from corestone.web.email_routes import email_webhooks_router, unsubscribe_router
from taskboard.services.notifications import UNSUBSCRIBE_PATH, Notifier, register_notifier

__all__ = ["MAIL_DIR_ENV", "MailConfig", "MailWiring", "mount_email_routes", "setup_email"]

MAIL_DIR_ENV = "TASKBOARD_MAIL_DIR"
SENDGRID_KEY_ENV = "TASKBOARD_SENDGRID_WEBHOOK_KEY"
MAILGUN_KEY_ENV = "TASKBOARD_MAILGUN_SIGNING_KEY"
WEBHOOKS_PREFIX = "/webhooks/email"


@dataclass(frozen=True, slots=True)
class MailConfig:
    """Where mail goes and which provider webhooks are served (see the module's docstring)."""

    mail_dir: str = "var/mail"
    sendgrid_webhook_key: str | None = None
    mailgun_signing_key: str | None = None
    providers: tuple[EmailProvider, ...] = ()
    """Providers to use instead (tests, embedding); none: SMTP if configured, else files."""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> MailConfig:
        return cls(
            mail_dir=environ.get(MAIL_DIR_ENV) or "var/mail",
            sendgrid_webhook_key=environ.get(SENDGRID_KEY_ENV) or None,
            mailgun_signing_key=environ.get(MAILGUN_KEY_ENV) or None,
        )


@dataclass(frozen=True, slots=True)
class MailWiring:
    email: EmailService
    tracker: EmailTracker
    notifier: Notifier


def setup_email(infra: Infrastructure, config: MailConfig, *, send: bool) -> MailWiring:
    """Register the email service, the tracker and the notifier; run a sender if ``send``."""
    providers: list[EmailProvider] = list(config.providers)
    if not providers:
        smtp_url = infra.settings.smtp_url
        if smtp_url:
            # Imported here: aiosmtplib and dkimpy load only when SMTP is what is used.
            from corestone.email.providers import SmtpProvider

            providers = [SmtpProvider(smtp_url)]
        else:
            providers = [FileProvider(config.mail_dir)]
    email = add_email(infra, [ProviderRoute(p) for p in providers], run_sender=send)
    tracker = EmailTracker(infra.db)
    infra.services.register_value(EmailTracker, tracker)
    notifier = Notifier.from_environment(email, signing_key=infra.settings.signing_key)
    register_notifier(infra.db, notifier)
    return MailWiring(email, tracker, notifier)


def mount_email_routes(api: FastAPI, wiring: MailWiring, config: MailConfig) -> None:
    """The provider webhooks under ``/webhooks/email`` and the one-click unsubscribe URL."""
    api.include_router(
        email_webhooks_router(
            wiring.tracker,
            sendgrid=SendGridWebhook(config.sendgrid_webhook_key)
            if config.sendgrid_webhook_key
            else None,
            mailgun=MailgunWebhook(config.mailgun_signing_key)
            if config.mailgun_signing_key
            else None,
        ),
        prefix=WEBHOOKS_PREFIX,
    )
    tokens = wiring.notifier.tokens
    if tokens is not None:
        api.include_router(unsubscribe_router(tokens, wiring.email, path=UNSUBSCRIBE_PATH))
