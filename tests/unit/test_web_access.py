"""The bearer-token dependency of corestone.web, without a server."""

from __future__ import annotations

import pytest

from corestone import AuthenticationError
from corestone.web import Grant, bearer_token, token_digest


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        (None, None),
        ("Basic abc", None),
        ("Bearer", None),
    ],
)
async def test_bearer_token_reads_only_a_bearer_header(
    header: str | None, token: str | None
) -> None:
    """The dependency returns the token of a Bearer header and refuses anything else with 401."""
    if token is None:
        with pytest.raises(AuthenticationError):
            await bearer_token(header)
    else:
        assert await bearer_token(header) == token


def test_token_digest_is_the_sha256_hex_of_the_token() -> None:
    """Tokens are cached and stored under their SHA-256 hex digest, never in the clear."""
    assert token_digest("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_a_grant_cannot_hold_none() -> None:
    """None is how a miss reads from the cache, so a Grant refuses it as its value."""
    with pytest.raises(TypeError):
        Grant(None, 1)
