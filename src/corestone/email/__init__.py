"""Email: typed, validated messages, sandboxed templates, and the providers that send them.

Everything here needs the ``email`` extra (``pip install 'corestone[email]'``); each
provider may need one more (``smtp``, ``ses``). Names are imported on first use.
See docs/email.md.
"""

from typing import TYPE_CHECKING

from corestone import _lazy

if TYPE_CHECKING:
    from corestone.email.message import (
        DEFAULT_LIMITS,
        Address,
        Attachment,
        EmailLimits,
        EmailMessage,
    )
    from corestone.email.providers.base import EmailProvider, Outgoing, Sent
    from corestone.email.templates import EmailTemplates, RenderedEmail, html_to_text

__getattr__, __dir__ = _lazy.lazy_exports(
    __name__,
    {
        "DEFAULT_LIMITS": "corestone.email.message",
        "Address": "corestone.email.message",
        "Attachment": "corestone.email.message",
        "EmailLimits": "corestone.email.message",
        "EmailMessage": "corestone.email.message",
        "EmailProvider": "corestone.email.providers.base",
        "EmailTemplates": "corestone.email.templates",
        "Outgoing": "corestone.email.providers.base",
        "RenderedEmail": "corestone.email.templates",
        "Sent": "corestone.email.providers.base",
        "html_to_text": "corestone.email.templates",
    },
)

__all__ = [
    "DEFAULT_LIMITS",
    "Address",
    "Attachment",
    "EmailLimits",
    "EmailMessage",
    "EmailProvider",
    "EmailTemplates",
    "Outgoing",
    "RenderedEmail",
    "Sent",
    "html_to_text",
]
