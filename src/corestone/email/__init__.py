"""Email: typed messages, sandboxed templates, the providers, and the outbox that delivers once.

Everything here needs the ``email`` extra (``pip install 'corestone[email]'``); each
provider may need one more (``smtp``, ``ses``). Names are imported on first use.
See docs/email.md.
"""

from typing import TYPE_CHECKING

from corestone import _lazy

if TYPE_CHECKING:
    from corestone.email.bulk import MAX_BULK_RECIPIENTS, BulkId, BulkMail, UnsubscribeHeaders
    from corestone.email.configure import (
        EmailRouting,
        EmailWebhooks,
        routes_from_settings,
        webhooks_from_settings,
    )
    from corestone.email.message import (
        DEFAULT_LIMITS,
        Address,
        Attachment,
        EmailLimits,
        EmailMessage,
    )
    from corestone.email.outbox import EmailStatus, SuppressionReason
    from corestone.email.providers.base import EmailProvider, Outgoing, Sent
    from corestone.email.routing import ProviderRoute
    from corestone.email.sender import EmailSender
    from corestone.email.service import EmailService
    from corestone.email.templates import EmailTemplates, RenderedEmail, html_to_text
    from corestone.email.tracking import EmailTracker
    from corestone.email.unsubscribe import UnsubscribeTokens, with_unsubscribe
    from corestone.email.webhooks import (
        DeliveryEvent,
        MailgunWebhook,
        MemoryReplayGuard,
        SendGridWebhook,
    )
    from corestone.email.wiring import add_email

__getattr__, __dir__ = _lazy.lazy_exports(
    __name__,
    {
        "DEFAULT_LIMITS": "corestone.email.message",
        "MAX_BULK_RECIPIENTS": "corestone.email.bulk",
        "BulkId": "corestone.email.bulk",
        "BulkMail": "corestone.email.bulk",
        "UnsubscribeHeaders": "corestone.email.bulk",
        "DeliveryEvent": "corestone.email.webhooks",
        "MailgunWebhook": "corestone.email.webhooks",
        "MemoryReplayGuard": "corestone.email.webhooks",
        "SendGridWebhook": "corestone.email.webhooks",
        "Address": "corestone.email.message",
        "Attachment": "corestone.email.message",
        "EmailLimits": "corestone.email.message",
        "EmailMessage": "corestone.email.message",
        "EmailProvider": "corestone.email.providers.base",
        "EmailRouting": "corestone.email.configure",
        "EmailWebhooks": "corestone.email.configure",
        "routes_from_settings": "corestone.email.configure",
        "webhooks_from_settings": "corestone.email.configure",
        "EmailSender": "corestone.email.sender",
        "EmailService": "corestone.email.service",
        "EmailStatus": "corestone.email.outbox",
        "EmailTemplates": "corestone.email.templates",
        "EmailTracker": "corestone.email.tracking",
        "UnsubscribeTokens": "corestone.email.unsubscribe",
        "with_unsubscribe": "corestone.email.unsubscribe",
        "Outgoing": "corestone.email.providers.base",
        "ProviderRoute": "corestone.email.routing",
        "RenderedEmail": "corestone.email.templates",
        "Sent": "corestone.email.providers.base",
        "SuppressionReason": "corestone.email.outbox",
        "add_email": "corestone.email.wiring",
        "html_to_text": "corestone.email.templates",
    },
)

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_BULK_RECIPIENTS",
    "Address",
    "Attachment",
    "BulkId",
    "BulkMail",
    "DeliveryEvent",
    "EmailLimits",
    "EmailMessage",
    "EmailProvider",
    "EmailRouting",
    "EmailSender",
    "EmailService",
    "EmailStatus",
    "EmailTemplates",
    "EmailTracker",
    "EmailWebhooks",
    "MailgunWebhook",
    "MemoryReplayGuard",
    "Outgoing",
    "ProviderRoute",
    "RenderedEmail",
    "SendGridWebhook",
    "Sent",
    "SuppressionReason",
    "UnsubscribeHeaders",
    "UnsubscribeTokens",
    "add_email",
    "html_to_text",
    "routes_from_settings",
    "webhooks_from_settings",
    "with_unsubscribe",
]
