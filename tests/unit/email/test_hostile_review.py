"""Hostile input: forged signatures that are not ASCII, line breaks past ``build``."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from types import MappingProxyType

import pytest

from corestone.email import EmailMessage
from corestone.email.providers._common import guard
from corestone.email.providers.base import Outgoing
from corestone.email.unsubscribe import UnsubscribeTokens
from corestone.email.webhooks import MailgunWebhook
from corestone.errors import AuthenticationError, EmailProviderError, InvalidInputError

NOW = 1_800_000_000.0


def test_an_unsubscribe_token_with_a_non_ascii_signature_is_refused() -> None:
    """``payload.é`` is a forged token (422 naming ``token``), not a TypeError (500)."""
    tokens = UnsubscribeTokens(b"s" * 32)
    payload = tokens.issue("ada@example.com", "news").split(".")[0]
    with pytest.raises(InvalidInputError) as caught:
        tokens.verify(payload + ".é")
    assert caught.value.details["rule"] == "signature"


def test_a_mailgun_signature_that_is_not_ascii_is_refused() -> None:
    """A non-ASCII ``signature.signature`` is a refused webhook (401), not a TypeError (500)."""
    hook = MailgunWebhook("key-1", wall_clock=lambda: NOW)
    stamp, token = str(int(NOW)), "tok-1"
    body = json.dumps(
        {"signature": {"timestamp": stamp, "token": token, "signature": "é" * 64},
         "event-data": {"event": "delivered", "id": "ev-1"}}
    ).encode()  # fmt: skip
    with pytest.raises(AuthenticationError):
        hook.event(body)
    good = hmac.new(b"key-1", (stamp + token).encode(), hashlib.sha256).hexdigest()
    body = body.replace(json.dumps("é" * 64).encode(), json.dumps(good).encode())
    assert hook.event(body) is not None  # the refusal did not burn the token


@pytest.mark.parametrize("brk", ["\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"])
def test_every_provider_refuses_any_line_break_in_a_message_made_without_build(brk: str) -> None:
    """The providers' second look refuses what ``build`` refuses, not only CR, LF and NUL
    (the HTTP providers hand fields to a remote MIME builder the email package never sees)."""
    message = EmailMessage.build(sender="app@example.com", to="ada@example.com", subject="Hi",
                                 text="x")  # fmt: skip
    for bad in (
        dataclasses.replace(message, subject=f"Hi{brk}Bcc: eve@example.com"),
        dataclasses.replace(message, tags=(f"a{brk}b",)),
        dataclasses.replace(message, metadata=MappingProxyType({"k": f"a{brk}b"})),
    ):
        with pytest.raises(EmailProviderError) as caught:
            guard("sendgrid", Outgoing("m-1", bad))
        assert caught.value.retryable is False
