"""The rules a push message and its endpoint must meet, checked before anything is sent."""

from __future__ import annotations

import os

import http_ece
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from corestone.errors import InvalidInputError, PayloadTooLargeError
from corestone.push import MAX_PLAINTEXT_BYTES, EndpointPolicy
from corestone.push._message import (
    MAX_BODY_BYTES,
    check_headers,
    encrypt,
    parse_retry_after,
    plaintext_of,
)
from corestone.push.endpoints import origin_of


def test_the_plaintext_limit_is_what_fits_one_4096_byte_record() -> None:
    """3,993 bytes encrypt to exactly 4,096 and decrypt back; one byte more is refused
    with the payload named, before any encryption."""
    browser = ec.generate_private_key(ec.SECP256R1())
    point = browser.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    secret = os.urandom(16)
    largest = os.urandom(MAX_PLAINTEXT_BYTES)

    body = encrypt(plaintext_of(largest), point, secret)

    assert MAX_PLAINTEXT_BYTES == 3993
    assert len(body) == MAX_BODY_BYTES
    plain = http_ece.decrypt(body, private_key=browser, auth_secret=secret, version="aes128gcm")
    assert plain == largest
    with pytest.raises(PayloadTooLargeError) as refused:
        plaintext_of(largest + b"!")
    assert refused.value.field == "payload"


def test_a_mapping_payload_is_compact_json_and_other_types_are_refused() -> None:
    """A dict goes as JSON; a string or an unserialisable value is an input error."""
    assert plaintext_of({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()
    for bad in ("text", {"when": object()}):
        with pytest.raises(InvalidInputError) as refused:
            plaintext_of(bad)  # type: ignore[arg-type]
        assert refused.value.field == "payload"


@pytest.mark.parametrize(
    ("ttl", "urgency", "topic", "field"),
    [
        (-1, "normal", None, "ttl"),
        (True, "normal", None, "ttl"),
        (1.5, "normal", None, "ttl"),
        (60, "urgent", None, "urgency"),
        (60, "high", "", "topic"),
        (60, "high", "x" * 33, "topic"),
        (60, "high", "has space", "topic"),
        (60, "high", "a/b", "topic"),
    ],
)
def test_bad_header_values_are_named(
    ttl: object, urgency: object, topic: object, field: str
) -> None:
    """TTL is whole seconds >= 0, Urgency one of RFC 8030's four, Topic <= 32 base64url."""
    with pytest.raises(InvalidInputError) as refused:
        check_headers(ttl, urgency, topic)
    assert refused.value.field == field


def test_good_header_values_become_the_headers() -> None:
    """The three headers as RFC 8030 spells them; no Topic unless given."""
    assert check_headers(0, "very-low", None) == {"TTL": "0", "Urgency": "very-low"}
    assert check_headers(86400, "high", "Ab_-9")["Topic"] == "Ab_-9"


def test_retry_after_reads_seconds_and_http_dates() -> None:
    """Seconds as given; a date as the time left (never negative); garbage as None."""
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40.0) == 60.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=1000.0) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://push.example.com/p",  # not https
        "https://10.0.0.8/p",  # private
        "https://100.64.1.1/p",  # shared (carrier-grade NAT)
        "https://[::1]/p",
        "https://[fe80::1]/p",
        "https://[::ffff:127.0.0.1]/p",  # IPv4 inside IPv6
        "https://[2002:7f00:1::]/p",  # 6to4 of 127.0.0.1
        "https://0.0.0.0/p",
        "https://224.0.0.1/p",
        "https://localhost/p",
        "https://api.localhost/p",
        "https://printer.local/p",
        "https://db.internal/p",
        "https://intranet/p",  # no dot
        "https://2130706433/p",  # 127.0.0.1 as one number
        "https://0x7f.1/p",
        "https://user:pw@push.example.com/p",
        "https://push.example.com/p#frag",
        "https://push.example.com/p q",
        "https://push.example.com:99999/p",
        "https://push.example.com/" + "a" * 2048,
        "",
    ],
)
def test_the_policy_refuses_what_could_reach_inside(endpoint: str) -> None:
    """Non-https, non-global addresses, local names and malformed URLs are refused."""
    with pytest.raises(InvalidInputError) as refused:
        EndpointPolicy().check(endpoint)
    assert refused.value.field == "endpoint"


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://fcm.googleapis.com/fcm/send/abc:def",
        "https://updates.push.services.mozilla.com/wpush/v2/gAAAA",
        "https://web.push.apple.com/QGuQyavXutnMH",
        "https://wns2-par02p.notify.windows.com/w/?token=BQYAAA",
        "https://8.8.8.8/p",
        "https://push.example.com:8443/p",
    ],
)
def test_the_policy_admits_public_push_services(endpoint: str) -> None:
    """The real push services' endpoint shapes pass."""
    assert EndpointPolicy().check(endpoint) == endpoint


def test_the_allow_list_admits_exactly_its_origins() -> None:
    """An allowed origin may be http and loopback; the same host on another port may not."""
    policy = EndpointPolicy.allowing("HTTP://127.0.0.1:8123/ignored/path")

    assert policy.check("http://127.0.0.1:8123/p/1") == "http://127.0.0.1:8123/p/1"
    with pytest.raises(InvalidInputError):
        policy.check("http://127.0.0.1:8124/p/1")
    assert origin_of("https://Push.Example.com:443/x") == "https://push.example.com"
    assert origin_of("https://[::1]:8443/x") == "https://[::1]:8443"


async def test_a_name_that_resolves_to_loopback_is_refused_at_send_time() -> None:
    """check_resolved asks the real resolver: ``localhost`` resolves to a loopback address,
    so an endpoint on it is refused; the answer is cached per host."""
    now = [0.0]
    policy = EndpointPolicy(clock=lambda: now[0])

    with pytest.raises(InvalidInputError, match="non-public"):
        await policy.check_resolved("https://localhost/p")
    assert policy._resolved["localhost"] == (60.0, False)
    await EndpointPolicy(resolve=False).check_resolved("https://localhost/p")  # off: passes
    await policy.check_resolved("https://no-such-host.invalid/p")  # unresolvable: passes
