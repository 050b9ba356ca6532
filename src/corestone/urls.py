"""Service URLs with credentials: split a list of them, and mask their passwords.

Passwords in URLs are written by people, and people do not percent-encode: SQLAlchemy's
URL parser accepts an unescaped ``/``, ``?``, ``#``, ``,`` or space in a password, while
``urllib.parse`` then finds no password at all and would print the URL unmasked. So:

- a database URL is masked with the parser that reads it, SQLAlchemy's ``make_url(...)
  .render_as_string(hide_password=True)``;
- every URL (database ones again, as a second guard) then has everything between the
  first ``:`` of its user info and the **last** ``@`` masked; a URL written without
  ``scheme://`` from its first ``:`` on. When a query also holds an
  ``@``, more is masked than needed: a mangled URL beats a leaked secret.

A list of URLs (the replicas) is split only on a ``,`` that starts another URL, so a
password holding a ``,`` stays whole.

SQLAlchemy comes with the ``postgres`` and ``sqlite`` extras, so it is imported only when
a database URL is read; without it the generic mask alone applies (and no database can
be opened anyway).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = [
    "DATABASE_DIALECTS",
    "MASK",
    "is_database_url",
    "parse_database_url",
    "redact_url",
    "split_urls",
    "url_secrets",
]

MASK = "***"
DATABASE_DIALECTS = frozenset(
    {"mariadb", "mssql", "mysql", "oracle", "postgres", "postgresql", "sqlite"}
)

_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<rest>.*)\Z", re.DOTALL)
_NEXT_URL = re.compile(r",\s*(?=[A-Za-z][A-Za-z0-9+.\-]*://)")


def is_database_url(url: str) -> bool:
    """Whether ``url``'s scheme names a SQLAlchemy dialect (``postgresql+asyncpg``)."""
    match = _URL.match(url)
    return match is not None and match["scheme"].split("+")[0].lower() in DATABASE_DIALECTS


def parse_database_url(url: str) -> URL | None:
    """SQLAlchemy's reading of ``url``, or None when SQLAlchemy is not installed.

    Raises ValueError for a URL SQLAlchemy refuses (a port that is not a number, …).
    """
    try:
        from sqlalchemy.engine import make_url  # an extra's dependency
        from sqlalchemy.exc import ArgumentError
    except ModuleNotFoundError:
        return None
    try:
        return make_url(url)
    except ArgumentError as exc:
        raise ValueError(str(exc)) from None


def split_urls(value: str) -> list[str]:
    """The URLs of a comma-separated list; a ``,`` inside a password does not split."""
    parts = (part.strip(" \t\r\n,") for part in _NEXT_URL.split(value))
    return [part for part in parts if part]


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe to print and log. Never raises."""
    shown = url
    if is_database_url(url):
        try:
            parsed = parse_database_url(url)
        except ValueError:
            parsed = None  # the generic mask below still applies
        if parsed is not None:
            shown = parsed.render_as_string(hide_password=True)
    shown = _mask_userinfo(shown)
    try:
        urlsplit(shown)
    except ValueError:
        return "<unparseable url>"
    return shown


def url_secrets(url: str) -> set[str]:
    """Every string any parser could take for ``url``'s password, raw and unquoted.

    For masking text that may echo the password back (a driver's error message).
    """
    found: set[str] = set()
    if is_database_url(url):
        try:
            database_url = parse_database_url(url)
        except ValueError:
            database_url = None
        password = None if database_url is None else database_url.password
        if password:
            found.add(str(password))
    span = _password_span(url)
    if span is not None:
        found.add(url[span[0] : span[1]])
    try:
        parsed = urlsplit(url).password
    except ValueError:
        parsed = None
    if parsed:
        found.add(parsed)
    found |= {unquote(secret) for secret in found}
    return {secret for secret in found if secret}


def _password_span(url: str) -> tuple[int, int] | None:
    """Where the password is: after the user info's first ``:``, up to the last ``@``.

    Without ``scheme://`` (``admin:pw@redis:6379``, ``redis:u:pw@host``) nothing says
    where the user info starts: then from the first ``:`` of the whole string.
    """
    match = _URL.match(url)
    start = 0 if match is None else match.start("rest")
    at = url.rfind("@", start)
    if at == -1:
        return None
    colon = url.find(":", start, at)
    if colon == -1:
        return None  # a user name, no password
    return colon + 1, at


def _mask_userinfo(url: str) -> str:
    span = _password_span(url)
    if span is None or url[span[0] : span[1]] == MASK:
        return url
    return url[: span[0]] + MASK + url[span[1] :]
