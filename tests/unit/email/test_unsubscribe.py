"""Signed one-click unsubscribe tokens and the RFC 8058 headers."""

from __future__ import annotations

import pytest

from corestone.email import EmailMessage
from corestone.email.unsubscribe import ONE_CLICK, UnsubscribeTokens, with_unsubscribe
from corestone.errors import InvalidInputError

SECRET = b"s" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_round_trips_address_and_list() -> None:
    """A token verifies to the address (lower-cased) and list it was issued for."""
    tokens = UnsubscribeTokens(SECRET)
    found = tokens.verify(tokens.issue("Ada@Example.com", "news"))
    assert (found.address, found.list_id) == ("ada@example.com", "news")


@pytest.mark.parametrize(
    "forge",
    [
        lambda t: "x" + t,
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
        lambda t: t.split(".")[0],
        lambda t: "",
        lambda t: UnsubscribeTokens(b"other-secret-123456").issue("ada@example.com", "news"),
    ],
    ids=["payload edited", "signature edited", "no signature", "empty", "other key"],
)
def test_a_forged_token_is_refused(forge: object) -> None:
    """Any change to a token, or a token signed with another key, does not verify."""
    tokens = UnsubscribeTokens(SECRET)
    token = tokens.issue("ada@example.com", "news")
    with pytest.raises(InvalidInputError) as caught:
        tokens.verify(forge(token))  # type: ignore[operator]
    assert caught.value.details["field"] == "token"


def test_a_token_for_one_address_cannot_be_edited_into_another() -> None:
    """Swapping the payload for another address's keeps the old signature: refused."""
    tokens = UnsubscribeTokens(SECRET)
    ada = tokens.issue("ada@example.com", "news")
    bo = tokens.issue("bo@example.com", "news")
    with pytest.raises(InvalidInputError):
        tokens.verify(bo.split(".")[0] + "." + ada.split(".")[1])


def test_an_expired_token_is_refused() -> None:
    """After its time to live a token is refused as expired, not as forged."""
    clock = Clock()
    tokens = UnsubscribeTokens(SECRET, ttl_seconds=60, wall_clock=clock)
    token = tokens.issue("ada@example.com", "news")
    clock.now += 61
    with pytest.raises(InvalidInputError) as caught:
        tokens.verify(token)
    assert caught.value.details["rule"] == "expired"


def test_bulk_mail_gets_both_one_click_headers() -> None:
    """The message gains List-Unsubscribe (a signed https URL) and List-Unsubscribe-Post."""
    tokens = UnsubscribeTokens(SECRET)
    message = EmailMessage.build(
        sender="app@example.com", to="ada@example.com", subject="News", text="hi"
    )
    marked = with_unsubscribe(message, tokens, "https://app.example.com/u", list_id="news")
    header = marked.headers["List-Unsubscribe"]
    assert header.startswith("<https://app.example.com/u?token=")
    assert header.endswith(">")
    assert marked.headers["List-Unsubscribe-Post"] == ONE_CLICK
    token = header[len("<https://app.example.com/u?token=") : -1]
    assert tokens.verify(token).address == "ada@example.com"
    mime = marked.to_mime()
    assert mime["List-Unsubscribe-Post"] == ONE_CLICK


def test_a_message_to_several_recipients_is_refused() -> None:
    """One token names one address: a message to two cannot carry a link for both."""
    message = EmailMessage.build(
        sender="app@example.com", to=["a@example.com", "b@example.com"], subject="x", text="y"
    )
    with pytest.raises(InvalidInputError):
        with_unsubscribe(message, UnsubscribeTokens(SECRET), "https://a.example.com/u", list_id="n")


def test_an_endpoint_with_a_line_break_is_refused() -> None:
    """The endpoint goes into a header: CR/LF (or angle brackets) in it is a programming error."""
    message = EmailMessage.build(
        sender="app@example.com", to="a@example.com", subject="x", text="y"
    )
    with pytest.raises(ValueError, match="unsubscribe endpoint"):
        with_unsubscribe(
            message, UnsubscribeTokens(SECRET), "https://a.example.com/\r\nBcc: x", list_id="n"
        )


def test_a_short_secret_is_refused() -> None:
    """A secret under 16 bytes would make tokens guessable: refused at construction."""
    with pytest.raises(ValueError, match="at least 16 bytes"):
        UnsubscribeTokens(b"short")
