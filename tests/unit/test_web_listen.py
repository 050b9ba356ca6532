"""``listen`` binds ``::`` dual-stack; printed URLs bracket IPv6 literals (RFC 3986)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable

import pytest

from corestone.web import http_url, listen
from corestone.web.workers import _bind


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")


def _reaches(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


@needs_ipv6
@pytest.mark.parametrize("bind", [listen, _bind], ids=["listen", "serve_workers"])
def test_every_interface_on_ipv6_is_dual_stack(bind: Callable[[str, int], socket.socket]) -> None:
    """A socket on ``::`` (one process, or the workers' supervisor) accepts ::1 and
    127.0.0.1 alike: IPV6_V6ONLY is 0, not create_server's default of 1."""
    if not socket.has_dualstack_ipv6():
        pytest.skip("this system has no dual-stack IPv6 sockets")
    with bind("::", 0) as server:
        port = server.getsockname()[1]
        assert server.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        assert _reaches("::1", port)
        assert _reaches("127.0.0.1", port)


@needs_ipv6
def test_a_specific_ipv6_address_is_ipv6_only() -> None:
    """``::1`` is one address: its socket is IPv6 only, so IPv4 gets no answer from it."""
    with listen("::1", 0) as server:
        assert server.family == socket.AF_INET6
        assert server.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        assert _reaches("::1", server.getsockname()[1])


def test_an_ipv4_host_binds_ipv4() -> None:
    """Without a colon the host is IPv4 (or a name resolved as IPv4)."""
    with listen("127.0.0.1", 0) as server:
        assert server.family == socket.AF_INET


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("::1", "http://[::1]:8000"),
        ("::", "http://[::]:8000"),
        ("127.0.0.1", "http://127.0.0.1:8000"),
        ("localhost", "http://localhost:8000"),
    ],
)
def test_http_url_brackets_ipv6_literals(host: str, url: str) -> None:
    """``http://::1:8000`` is no URL a browser or curl takes: the address goes in brackets."""
    assert http_url(host, 8000) == url


def test_every_interface_without_ipv6_in_the_kernel_listens_on_every_ipv4_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a kernel without IPv6 (``ipv6.disable=1``: an AF_INET6 socket is EAFNOSUPPORT),
    ``::`` still means every interface, and the IPv4 ones are all there are: it binds
    0.0.0.0 rather than failing to start. A specific IPv6 address still fails: it
    names an address this system cannot have."""
    real = socket.create_server

    def no_ipv6(address: tuple[str, int], *, family: int = socket.AF_INET, **kw: object) -> object:
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real(address, family=family, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "create_server", no_ipv6)
    with listen("::", 0) as server:
        assert server.family == socket.AF_INET
        assert server.getsockname()[0] == "0.0.0.0"
        assert _reaches("127.0.0.1", server.getsockname()[1])
    with pytest.raises(OSError, match="not supported") as refused:
        listen("::1", 0)
    assert refused.value.errno == errno.EAFNOSUPPORT
