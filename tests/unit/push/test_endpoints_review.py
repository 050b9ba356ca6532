"""Push endpoints that reach a private address through an IPv6 translation prefix."""

from __future__ import annotations

import pytest

from corestone.errors import InvalidInputError
from corestone.push import EndpointPolicy


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://[64:ff9b::7f00:1]/push",  # NAT64 of 127.0.0.1
        "https://[64:ff9b::a9fe:a9fe]/latest/meta-data",  # NAT64 of 169.254.169.254
        "https://[64:ff9b::a00:1]/push",  # NAT64 of 10.0.0.1
    ],
)
def test_a_nat64_address_of_a_private_one_is_refused(endpoint: str) -> None:
    """On a network with a NAT64 gateway, 64:ff9b::/96 reaches the IPv4 address in its
    last 32 bits; ipaddress calls the prefix global, so loopback and the cloud metadata
    service were allowed through it. The embedded address is judged instead."""
    with pytest.raises(InvalidInputError) as refused:
        EndpointPolicy().check(endpoint)
    assert refused.value.field == "endpoint"


def test_a_nat64_address_of_a_public_one_is_allowed() -> None:
    """The same prefix around a public IPv4 address (8.8.8.8) stays allowed."""
    assert EndpointPolicy().check("https://[64:ff9b::808:808]/push")
