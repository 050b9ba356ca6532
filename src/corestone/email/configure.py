"""Settings to providers: the routes and webhooks that ``CORESTONE_EMAIL_*`` describe.

One place turns :class:`~corestone.Settings` into what the delivery service runs with,
so a service and its workers, ``add_email(infra)`` and the doctor agree on which
providers there are. Each provider's module is imported only when the settings list it:
SMTP needs the ``smtp`` extra, SES ``ses``, and a missing one is a
:class:`~corestone.errors.MissingExtraError` naming it, raised here, at start-up.

The settings have already refused a provider listed without its credentials, so this
module only maps them onto the constructors (docs/email-providers.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from corestone._email_settings import strategy_of
from corestone.config import ENV_PREFIX, Settings
from corestone.email.providers.base import EmailProvider
from corestone.email.routing import ProviderRoute, Strategy
from corestone.email.webhooks import MailgunWebhook, SendGridWebhook
from corestone.errors import ConfigurationError

__all__ = ["EmailRouting", "EmailWebhooks", "routes_from_settings", "webhooks_from_settings"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class EmailRouting:
    """The routes to send through, in the configured order, and how to pick among them."""

    routes: tuple[ProviderRoute, ...]
    strategy: Strategy


@dataclass(frozen=True, slots=True)
class EmailWebhooks:
    """The webhook verifiers whose keys are configured; None where a key is not."""

    sendgrid: SendGridWebhook | None
    mailgun: MailgunWebhook | None


def routes_from_settings(settings: Settings) -> EmailRouting:
    """Build one route per provider of ``CORESTONE_EMAIL_PROVIDERS``, with weight and limit.

    With nothing set that is the file provider writing under ``CORESTONE_EMAIL_FILE_DIR``
    (``var/mail``). The providers hold connections (SMTP pool, HTTP clients): whoever
    calls this closes them with ``aclose()`` (``add_email`` does, at shutdown).
    """
    routes = []
    for choice in settings.email_providers:
        provider = _BUILDERS[choice.name](settings)
        routes.append(
            ProviderRoute(
                provider,
                weight=choice.weight or 1,
                max_per_second=settings.email_rate_limits.get(choice.name),
            )
        )
    return EmailRouting(tuple(routes), strategy_of(settings.email_providers))


def webhooks_from_settings(settings: Settings) -> EmailWebhooks:
    """The SendGrid and Mailgun webhook verifiers, for the keys that are configured.

    A provider without its key gets no endpoint at all (never one that takes unsigned
    events): mount ``corestone.web.email_routes.email_webhooks_router`` with these.
    """
    sendgrid_key = settings.sendgrid_webhook_public_key
    mailgun_key = settings.mailgun_webhook_signing_key
    return EmailWebhooks(
        sendgrid=SendGridWebhook(sendgrid_key) if sendgrid_key else None,
        mailgun=MailgunWebhook(mailgun_key.get_secret_value()) if mailgun_key else None,
    )


def _file(settings: Settings) -> EmailProvider:
    from corestone.email.providers.file import FileProvider

    return FileProvider(settings.email_file_dir)


def _smtp(settings: Settings) -> EmailProvider:
    from corestone.email.providers.smtp import SmtpProvider  # the smtp extra

    return SmtpProvider(_required(settings.smtp_url, "smtp_url"))


def _sendgrid(settings: Settings) -> EmailProvider:
    from corestone.email.providers.sendgrid import SendGridProvider

    key = _required(settings.sendgrid_api_key, "sendgrid_api_key").get_secret_value()
    if settings.sendgrid_base_url is None:
        return SendGridProvider(key)
    return SendGridProvider(key, base_url=settings.sendgrid_base_url)


def _mailgun(settings: Settings) -> EmailProvider:
    from corestone.email.providers.mailgun import MailgunProvider

    return MailgunProvider(
        _required(settings.mailgun_api_key, "mailgun_api_key").get_secret_value(),
        _required(settings.mailgun_domain, "mailgun_domain"),
        region=settings.mailgun_region,
        base_url=settings.mailgun_base_url,
    )


def _ses(settings: Settings) -> EmailProvider:
    from corestone.email.providers.ses import SesProvider  # the ses extra

    token = settings.ses_session_token
    secret = settings.ses_secret_access_key
    return SesProvider(
        settings.ses_access_key_id,
        secret.get_secret_value() if secret is not None else None,
        region=_required(settings.ses_region, "ses_region"),
        session_token=token.get_secret_value() if token is not None else None,
        endpoint_url=settings.ses_endpoint_url,
        configuration_set=settings.ses_configuration_set,
    )


def _required(value: T | None, field: str) -> T:
    # Settings refuse a listed provider without its credentials; only a Settings built
    # with model_construct() (no validation) gets here without one.
    if value is None:
        raise ConfigurationError(f"{ENV_PREFIX}{field.upper()} is not set")
    return value


_BUILDERS: dict[str, Callable[[Settings], EmailProvider]] = {
    "file": _file,
    "mailgun": _mailgun,
    "sendgrid": _sendgrid,
    "ses": _ses,
    "smtp": _smtp,
}
