"""Which push endpoints corestone will post to: https, public hosts only (no SSRF).

A push subscription's endpoint comes from a browser, that is from a user: without a
check, anyone could register ``http://127.0.0.1:6379/`` or a cloud metadata address and
have the server post to it. :class:`EndpointPolicy` refuses, at registration:

- anything but ``https://host[:port]/path`` (no user info, no fragment, at most 2,048
  characters);
- IP literals that are not global (loopback, private, link-local, shared, reserved,
  multicast, unspecified; IPv4 inside IPv6 is unwrapped first);
- host names that are not public DNS names: ``localhost`` and ``*.localhost``,
  ``.local``, ``.internal``, ``.home.arpa``, names without a dot, and names whose last
  label is not alphabetic (``2130706433`` or ``0x7f.1``, which resolvers read as IPs);

and, before each send, a host whose DNS answer holds any non-global address (a public
name pointed at 10.0.0.1). The answer is cached per host for ``resolve_cache_seconds``.
What remains is the window between that look-up and the HTTP client's own (DNS
rebinding within a TTL); it needs a resolver that pins addresses, which httpx has not.

``allow_origins`` lists exact origins (``http://127.0.0.1:8443``) exempt from all of it:
a push service on a private network, or the local one a test starts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from corestone.errors import InvalidInputError

__all__ = ["MAX_ENDPOINT_CHARS", "EndpointPolicy", "origin_of"]

MAX_ENDPOINT_CHARS: Final = 2048
_LOCAL_SUFFIXES: Final = (".localhost", ".local", ".internal", ".home.arpa", ".localdomain")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def _refuse(message: str) -> InvalidInputError:
    return InvalidInputError(f"endpoint {message}", field="endpoint", rule="public_https")


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lower-cased, the port only when not the default.

    This is a VAPID token's ``aud`` and the key of the push service's breaker.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    suffix = "" if port is None or port == _DEFAULT_PORTS.get(scheme) else f":{port}"
    return f"{scheme}://{host}{suffix}"


_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
"""RFC 6052's well-known NAT64 prefix: a NAT64 gateway reaches the IPv4 address it embeds."""


def _global(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is None and address in _NAT64:
            mapped = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if mapped is not None:
            return _global(mapped)
    return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class EndpointPolicy:
    """The endpoint rules of the module doc; ``allow_origins`` are exempt from them."""

    allow_origins: frozenset[str] = frozenset()
    resolve: bool = True
    resolve_cache_seconds: float = 60.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    _resolved: dict[str, tuple[float, bool]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @classmethod
    def allowing(cls, *origins: str, resolve: bool = True) -> EndpointPolicy:
        """A policy exempting these origins (``http://127.0.0.1:8443``), normalised."""
        return cls(allow_origins=frozenset(origin_of(o) for o in origins), resolve=resolve)

    def allowed(self, endpoint: str) -> bool:
        """Whether ``endpoint``'s origin is exempt."""
        try:
            return origin_of(endpoint) in self.allow_origins
        except ValueError:
            return False

    def check(self, endpoint: object) -> str:
        """``endpoint`` if the static rules admit it; InvalidInputError (field ``endpoint``)."""
        if not isinstance(endpoint, str) or not endpoint:
            raise _refuse("is required")
        if len(endpoint) > MAX_ENDPOINT_CHARS:
            raise _refuse(f"is longer than {MAX_ENDPOINT_CHARS} characters")
        if any(ord(c) < 0x21 or ord(c) == 0x7F for c in endpoint) or not endpoint.isascii():
            raise _refuse("holds spaces, control or non-ASCII characters")
        try:
            parts = urlsplit(endpoint)
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            raise _refuse("is not a valid URL") from None
        if not parts.hostname or "@" in parts.netloc or parts.fragment:
            raise _refuse("must be scheme://host[:port]/path, without user info or fragment")
        if self.allowed(endpoint):
            return endpoint
        if parts.scheme != "https":
            raise _refuse("must be an https:// URL")
        _check_host(parts.hostname)
        return endpoint

    async def check_resolved(self, endpoint: str) -> None:
        """Refuse an endpoint whose host resolves to a non-global address (cached per host).

        A host that does not resolve passes: the HTTP request fails on its own, and a
        transient DNS failure must not be mistaken for an unsafe endpoint.
        """
        if not self.resolve or self.allowed(endpoint):
            return
        host = (urlsplit(endpoint).hostname or "").lower()
        try:
            ipaddress.ip_address(host)
            return  # a literal: check() judged it
        except ValueError:
            pass
        now = self.clock()
        cached = self._resolved.get(host)
        if cached is None or cached[0] <= now:
            safe = await _resolves_to_global(host)
            if safe is None:
                return
            if len(self._resolved) > 4096:  # bounded: a flood of names cannot grow it
                self._resolved.clear()
            cached = (now + self.resolve_cache_seconds, safe)
            self._resolved[host] = cached
        if not cached[1]:
            raise _refuse(f"host {host!r} resolves to a non-public address")


def _check_host(host: str) -> None:
    host = host.lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if not _global(address):
            raise _refuse("points to a non-public address")
        return
    if host == "localhost" or host.endswith(_LOCAL_SUFFIXES):
        raise _refuse("points to a local host name")
    labels = host.split(".")
    if len(labels) < 2 or not labels[-1].isalpha():
        raise _refuse("must name a public DNS host (a dot and an alphabetic top-level label)")


async def _resolves_to_global(host: str) -> bool | None:
    """True if every address ``host`` resolves to is global; None if it does not resolve."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return None
    return _all_global(str(info[4][0]) for info in infos)


def _all_global(addresses: Iterable[str]) -> bool:
    found = False
    for text in addresses:
        found = True
        try:
            address = ipaddress.ip_address(text.partition("%")[0])
        except ValueError:
            return False
        if not _global(address):
            return False
    return found
