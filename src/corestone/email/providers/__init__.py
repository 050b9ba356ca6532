"""Email providers: each turns a message into one provider's API call (docs/email.md)."""

from corestone.email.providers.base import EmailProvider, Outgoing, Sent

__all__ = ["EmailProvider", "Outgoing", "Sent"]
