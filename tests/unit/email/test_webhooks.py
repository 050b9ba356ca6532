"""Webhooks: signatures verified with real keys, replays and forgeries refused, events mapped."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from corestone.email.webhooks import MailgunWebhook, MemoryReplayGuard, SendGridWebhook
from corestone.errors import AuthenticationError, InvalidInputError

NOW = 1_800_000_000.0


def _sendgrid_keys() -> tuple[ec.EllipticCurvePrivateKey, str]:
    private = ec.generate_private_key(ec.SECP256R1())
    public_der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(public_der).decode()


def _signed(private: ec.EllipticCurvePrivateKey, body: bytes, stamp: str) -> dict[str, str]:
    signature = private.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        SendGridWebhook.SIGNATURE_HEADER: base64.b64encode(signature).decode(),
        SendGridWebhook.TIMESTAMP_HEADER: stamp,
    }


SENDGRID_EVENTS = [
    {"email": "a@example.com", "timestamp": NOW, "event": "delivered",
     "sg_event_id": "e1", "sg_message_id": "m1.filter", "corestone_id": "41"},
    {"email": "b@example.com", "timestamp": NOW, "event": "bounce", "type": "bounce",
     "reason": "550 no such user", "sg_event_id": "e2", "sg_message_id": "m2",
     "corestone_id": "42"},
    {"email": "c@example.com", "timestamp": NOW, "event": "bounce", "type": "blocked",
     "sg_event_id": "e3", "sg_message_id": "m3"},
    {"email": "d@example.com", "timestamp": NOW, "event": "spamreport", "sg_event_id": "e4"},
    {"email": "e@example.com", "timestamp": NOW, "event": "processed", "sg_event_id": "e5"},
    {"email": "f@example.com", "timestamp": NOW, "event": "click", "sg_event_id": "e6"},
]  # fmt: skip


def test_sendgrid_signed_events_are_accepted_and_mapped() -> None:
    """A correctly signed batch verifies; each event gets our status, id and permanence."""
    private, public = _sendgrid_keys()
    hook = SendGridWebhook(public, wall_clock=lambda: NOW)
    body = json.dumps(SENDGRID_EVENTS).encode()

    events = hook.events(body, _signed(private, body, str(int(NOW))))

    assert [(e.status, e.message_id, e.permanent) for e in events] == [
        ("delivered", "41", False),
        ("bounced", "42", True),  # a hard bounce: suppress the address
        ("bounced", None, False),  # "blocked" is a soft bounce
        ("complained", None, True),
        ("clicked", None, False),
    ]
    assert events[0].provider_message_id == "m1"
    assert events[1].detail == "550 no such user"


def test_sendgrid_accepts_a_pem_key_too() -> None:
    """The verification key may be pasted as PEM."""
    private, _ = _sendgrid_keys()
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    body = b"[]"
    SendGridWebhook(pem, wall_clock=lambda: NOW).verify(body, _signed(private, body, str(int(NOW))))


@pytest.mark.parametrize(
    "attack",
    ["tampered body", "other key", "missing signature", "missing timestamp", "stale",
     "future", "nan timestamp", "garbage signature", "timestamp swapped"],
)  # fmt: skip
def test_sendgrid_forgeries_and_stale_deliveries_are_refused(attack: str) -> None:
    """Every way to forge or replay a delivery is an AuthenticationError; nothing is parsed."""
    private, public = _sendgrid_keys()
    hook = SendGridWebhook(public, wall_clock=lambda: NOW)
    body = json.dumps(SENDGRID_EVENTS).encode()
    stamp = str(int(NOW))
    headers = _signed(private, body, stamp)
    if attack == "tampered body":
        body = body.replace(b"bounce", b"delivered")
    elif attack == "other key":
        headers = _signed(_sendgrid_keys()[0], body, stamp)
    elif attack == "missing signature":
        del headers[SendGridWebhook.SIGNATURE_HEADER]
    elif attack == "missing timestamp":
        del headers[SendGridWebhook.TIMESTAMP_HEADER]
    elif attack in ("stale", "future"):
        stamp = str(int(NOW - 301 if attack == "stale" else NOW + 301))
        headers = _signed(private, body, stamp)
    elif attack == "nan timestamp":
        headers = _signed(private, body, "nan")
    elif attack == "garbage signature":
        headers[SendGridWebhook.SIGNATURE_HEADER] = "not base64!"
    elif attack == "timestamp swapped":
        headers[SendGridWebhook.TIMESTAMP_HEADER] = str(int(NOW) - 1)

    with pytest.raises(AuthenticationError):
        hook.events(body, headers)


def test_sendgrid_replay_of_a_valid_delivery_is_refused() -> None:
    """The same signed delivery twice: the second is a replay."""
    private, public = _sendgrid_keys()
    hook = SendGridWebhook(public, wall_clock=lambda: NOW)
    body = json.dumps(SENDGRID_EVENTS[:1]).encode()
    headers = _signed(private, body, str(int(NOW)))

    assert len(hook.events(body, headers)) == 1
    with pytest.raises(AuthenticationError, match="replay"):
        hook.events(body, headers)


def test_sendgrid_signed_but_malformed_body_is_a_422() -> None:
    """A verified body that is not an array of events names the body."""
    private, public = _sendgrid_keys()
    hook = SendGridWebhook(public, wall_clock=lambda: NOW)
    for body in (b"{not json", b'{"event": "delivered"}'):
        with pytest.raises(InvalidInputError) as caught:
            hook.events(body, _signed(private, body, str(int(NOW))))
        assert caught.value.field == "body"


def _mailgun(key: str, data: dict[str, Any], *, token: str = "tok1", stamp: str | None = None,
             signature: str | None = None) -> bytes:  # fmt: skip
    stamp = stamp or str(int(NOW))
    digest = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps({
        "signature": {"timestamp": stamp, "token": token, "signature": signature or digest},
        "event-data": data,
    }).encode()  # fmt: skip


MAILGUN_BOUNCE = {
    "event": "failed", "severity": "permanent", "recipient": "b@example.com", "timestamp": NOW,
    "id": "ev1", "user-variables": {"corestone-id": "42"},
    "message": {"headers": {"message-id": "20261203.1@mg.example.org"}},
    "delivery-status": {"description": "No such mailbox"},
}  # fmt: skip


def test_mailgun_signed_events_are_mapped() -> None:
    """A permanent failure is a hard bounce, a temporary one deferred; ids come through."""
    hook = MailgunWebhook("key-1", wall_clock=lambda: NOW)

    bounce = hook.event(_mailgun("key-1", MAILGUN_BOUNCE))
    deferred = hook.event(
        _mailgun("key-1", {**MAILGUN_BOUNCE, "severity": "temporary"}, token="t2")
    )
    accepted = hook.event(_mailgun("key-1", {**MAILGUN_BOUNCE, "event": "accepted"}, token="t3"))

    assert bounce is not None
    assert (bounce.status, bounce.permanent, bounce.message_id) == ("bounced", True, "42")
    assert bounce.provider_message_id == "20261203.1@mg.example.org"
    assert bounce.detail == "No such mailbox"
    assert deferred is not None
    assert (deferred.status, deferred.permanent) == ("deferred", False)
    assert accepted is None


@pytest.mark.parametrize(
    "attack", ["wrong key", "replayed token", "stale", "no signature", "bad hex"]
)
def test_mailgun_forgeries_and_replays_are_refused(attack: str) -> None:
    """HMAC checked in constant time, the token used once, the timestamp fresh."""
    hook = MailgunWebhook("key-1", wall_clock=lambda: NOW)
    body = _mailgun("key-1", MAILGUN_BOUNCE)
    if attack == "wrong key":
        body = _mailgun("key-2", MAILGUN_BOUNCE)
    elif attack == "replayed token":
        hook.event(body)
    elif attack == "stale":
        body = _mailgun("key-1", MAILGUN_BOUNCE, stamp=str(int(NOW - 3600)))
    elif attack == "no signature":
        body = json.dumps({"event-data": MAILGUN_BOUNCE}).encode()
    elif attack == "bad hex":
        body = _mailgun("key-1", MAILGUN_BOUNCE, signature="zz")

    with pytest.raises(AuthenticationError):
        hook.event(body)


def test_the_replay_guard_forgets_after_its_window_and_stays_bounded() -> None:
    """Entries expire with the window; the memory holds at most max_entries."""
    now = [0.0]
    guard = MemoryReplayGuard(max_entries=3, clock=lambda: now[0])

    assert guard.first_time("a", 10)
    assert not guard.first_time("a", 10)
    now[0] = 11
    assert guard.first_time("a", 10)
    for key in "bcdef":
        guard.first_time(key, 10)
    assert len(guard._seen) == 3
