"""The VAPID subject rule (RFC 8292 §2.1), apart: the settings and the keys both check it,
and neither may import the other's module for it."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["check_vapid_subject"]

# A mail address as a contact: something@a.domain, no spaces, no second '@', no query.
_MAILTO = re.compile(
    r"mailto:[^@\s?#/]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")


def check_vapid_subject(subject: str) -> str:
    """``subject`` if it is ``mailto:user@example.com`` or ``https://example.com[/…]``.

    Raise ValueError saying what was expected otherwise. A push service reads it as the
    way to reach whoever sends; Apple's refuses a VAPID token without one.
    """
    if _MAILTO.fullmatch(subject):
        return subject
    if subject.startswith("https://"):
        try:
            parts = urlsplit(subject)
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            raise ValueError("is not a valid https:// URL (a port must be a number)") from None
        if parts.hostname and _HOST.fullmatch(parts.hostname) and "@" not in parts.netloc:
            return subject
        raise ValueError("must be an https:// URL of a public host name, without user info")
    raise ValueError("must be mailto:you@example.com or an https:// URL (RFC 8292 §2.1)")
