"""verify_signature refuses, never raises on, a hostile signature header."""

from __future__ import annotations

import pytest

from corestone.observability.alerts.channels.webhook import sign, verify_signature

SECRET = b"a-webhook-secret-of-32-bytes-xxx"
BODY = b'{"version":"4"}'


def test_a_good_signature_verifies() -> None:
    """The header sign() makes for a body verifies at the same time."""
    assert verify_signature(SECRET, sign(SECRET, BODY, 1_000), BODY, now=1_000)


@pytest.mark.parametrize(
    "header",
    [
        "t=\u00b2,v1=00",  # a digit to str.isdigit(), not to int()
        f"t={'9' * 5000},v1=00",  # beyond int()'s 4300-digit limit
        "t=\u0661\u0662\u0663,v1=00",  # Arabic-Indic digits int() would read
        "t=,v1=00",
        "v1=00",
        "garbage",
    ],
)
def test_a_hostile_header_is_refused_not_raised(header: str) -> None:
    """A receiver checking a forged or broken header gets False, never an exception."""
    assert verify_signature(SECRET, header, BODY, now=1_000) is False
