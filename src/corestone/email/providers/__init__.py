"""Email providers: each turns a message into one provider's API call (docs/email.md).

Each provider is imported on first use, as each needs its own extra.

``from corestone.email.providers import SmtpProvider`` loads aiosmtplib and dkimpy (the
``smtp`` extra) only when SMTP is what is used; SES needs ``ses`` (botocore), the HTTP
providers ``email`` (httpx). The protocol every provider implements is in
:mod:`corestone.email.providers.base`.
"""

from typing import TYPE_CHECKING

from corestone import _lazy
from corestone.email.providers.base import EmailProvider, Outgoing, Sent

if TYPE_CHECKING:
    from corestone.email.providers.file import FileProvider
    from corestone.email.providers.mailgun import MailgunProvider
    from corestone.email.providers.memory import MemoryProvider
    from corestone.email.providers.sendgrid import SendGridProvider
    from corestone.email.providers.ses import SesProvider
    from corestone.email.providers.smtp import DkimKey, SmtpProvider

__getattr__, __dir__ = _lazy.lazy_exports(
    __name__,
    {
        "DkimKey": "corestone.email.providers.smtp",
        "FileProvider": "corestone.email.providers.file",
        "MailgunProvider": "corestone.email.providers.mailgun",
        "MemoryProvider": "corestone.email.providers.memory",
        "SendGridProvider": "corestone.email.providers.sendgrid",
        "SesProvider": "corestone.email.providers.ses",
        "SmtpProvider": "corestone.email.providers.smtp",
    },
)

__all__ = [
    "DkimKey",
    "EmailProvider",
    "FileProvider",
    "MailgunProvider",
    "MemoryProvider",
    "Outgoing",
    "SendGridProvider",
    "Sent",
    "SesProvider",
    "SmtpProvider",
]
