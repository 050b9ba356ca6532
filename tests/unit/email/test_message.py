"""EmailMessage: validation names the field and rule, nothing hostile reaches a header."""

from __future__ import annotations

import json
from email import message_from_bytes
from email.policy import SMTP, SMTPUTF8, default
from typing import Any

import pytest

from corestone.email import message as message_module
from corestone.email.message import Address, Attachment, EmailLimits, EmailMessage
from corestone.errors import InvalidInputError


def _build(**overrides: Any) -> EmailMessage:
    fields: dict[str, Any] = {"sender": "noreply@example.org", "to": ["bob@example.com"],
                              "subject": "Hello", "text": "hi"}  # fmt: skip
    fields.update(overrides)
    return EmailMessage.build(**fields)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"subject": "Hi\r\nBcc: victim@example.com"}, "subject"),
        ({"subject": "Hi\nX-Injected: 1"}, "subject"),
        ({"to": ["bob@example.com\r\nBcc: victim@example.com"]}, "to[0]"),
        ({"to": [("Bob\r\nBcc: victim@example.com", "bob@example.com")]}, "to[0].name"),
        ({"cc": ["ok@example.com", "x@example.com\nBcc: v@example.com"]}, "cc[1]"),
        ({"bcc": ["x\r@example.com"]}, "bcc[0]"),
        ({"reply_to": ["r@example.com\r\n"]}, "reply_to[0]"),
        ({"sender": ("Acme\nBcc: v@example.com", "noreply@example.org")}, "sender.name"),
        ({"headers": {"X-Campaign": "a\r\nBcc: v@example.com"}}, "headers.X-Campaign"),
        ({"headers": {"X-Campaign\r\nBcc": "v"}}, "headers"),
        ({"metadata": {"k": "v\nBcc: x"}}, "metadata.k"),
        ({"attachments": [Attachment("a\r\n.txt", b"x")]}, "attachments[0].filename"),
        ({"idempotency_key": "k\n1"}, "idempotency_key"),
        ({"subject": "nul\x00byte"}, "subject"),
        ({"subject": "Fix\u2028Bcc: v@example.com"}, "subject"),
        ({"subject": "next\x85line"}, "subject"),
        ({"sender": ("Acme\u2029X", "noreply@example.org")}, "sender.name"),
        ({"headers": {"X-Campaign": "a\x0bb"}}, "headers.X-Campaign"),
    ],
)
def test_line_breaks_anywhere_in_a_header_are_refused_naming_the_field(
    overrides: dict[str, Any], field: str
) -> None:
    """Header injection: CR, LF or NUL in any header-bound value is a 422-style error."""
    with pytest.raises(InvalidInputError) as caught:
        _build(**overrides)

    assert caught.value.field == field
    assert caught.value.rule in {"no_line_breaks", "header_name"}


@pytest.mark.parametrize("header", ["Bcc", "from", "Subject", "Content-Type", "DKIM-Signature"])
def test_custom_headers_cannot_replace_the_messages_own(header: str) -> None:
    """A custom header may not set From, Bcc, Subject, Content-Type or a signature."""
    with pytest.raises(InvalidInputError) as caught:
        _build(headers={header: "x"})
    assert caught.value.rule == "reserved_header"


@pytest.mark.parametrize(
    ("address", "rule"),
    [("not-an-address", "email"), ("a@b", "email"), ("a@@b.org", "email"), ("", "email")],
)
def test_invalid_addresses_are_refused_with_the_validators_reason(address: str, rule: str) -> None:
    """email-validator's verdict, with the field that held the address."""
    with pytest.raises(InvalidInputError) as caught:
        _build(to=["ok@example.com", address])
    assert (caught.value.field, caught.value.rule) == ("to[1]", rule)


def test_addresses_are_normalised_and_internationalised_ones_kept() -> None:
    """The domain is lower-cased and kept in Unicode; its IDNA form is used on ASCII wires."""
    message = _build(to=["Bob@EXAMPLE.com", "anna@bücher.example"], sender="noreply@example.org")

    assert [a.email for a in message.to] == ["Bob@example.com", "anna@bücher.example"]
    assert message.to[1].ascii_email == "anna@xn--bcher-kva.example"
    assert not message.needs_smtputf8
    mime = message_from_bytes(message.to_mime().as_bytes(), policy=default)
    assert "anna@xn--bcher-kva.example" in mime["To"]


def test_a_non_ascii_local_part_needs_smtputf8() -> None:
    """Only SMTPUTF8 can carry üser@…; the message says so and writes UTF-8 headers."""
    message = _build(to=["üser@example.com"])

    assert message.needs_smtputf8
    assert "üser@example.com" in message.to_mime().as_string()


def test_limits_on_recipients_subject_and_sizes() -> None:
    """Each limit is its own rule, checked before anything is stored."""
    limits = EmailLimits(max_recipients=2, max_subject_length=10, max_attachment_bytes=5,
                         max_total_bytes=8)  # fmt: skip
    cases = [
        ({"to": ["a@example.com", "b@example.com"], "cc": ["c@example.com"]}, "max_recipients"),
        ({"subject": "x" * 11}, "max_length"),
        ({"attachments": [Attachment("a.bin", b"123456")]}, "max_bytes"),
        ({"attachments": [Attachment("a.bin", b"1234"), Attachment("b.bin", b"1234")]},
         "max_total_bytes"),
        ({"to": []}, "required"),
        ({"text": None, "html": None}, "required"),
    ]  # fmt: skip
    for overrides, rule in cases:
        with pytest.raises(InvalidInputError) as caught:
            _build(limits=limits, **overrides)
        assert caught.value.rule == rule, overrides


def test_attachment_names_cannot_carry_a_path() -> None:
    """A file name is a name: no directories, no traversal."""
    for name in ["../etc/passwd", "a/b.txt", "a\\b.txt", ""]:
        with pytest.raises(InvalidInputError) as caught:
            _build(attachments=[Attachment(name, b"x")])
        assert caught.value.field == "attachments[0].filename"


def test_mime_structure_with_alternative_related_and_files() -> None:
    """mixed[alternative[text, related[html, inline image]], file]; Bcc never in headers."""
    message = _build(
        html='<p>hi <img src="cid:logo"></p>', bcc=["hidden@example.com"],
        attachments=[Attachment("a.txt", b"abc", "text/plain"),
                     Attachment("logo.png", b"\x89PNG", "image/png", "logo")],
        headers={"X-Campaign": "c1"},
    )  # fmt: skip
    mime = message_from_bytes(message.to_mime(message_id="<m1@example.org>").as_bytes(),
                              policy=default)  # fmt: skip

    def shape(part: Any) -> Any:
        if part.is_multipart():
            return [part.get_content_type(), [shape(p) for p in part.iter_parts()]]
        return part.get_content_type()

    assert shape(mime) == [
        "multipart/mixed",
        [["multipart/alternative",
          ["text/plain", ["multipart/related", ["text/html", "image/png"]]]],
         "text/plain"],
    ]  # fmt: skip
    assert mime["Bcc"] is None
    assert mime["Message-ID"] == "<m1@example.org>"
    assert mime["X-Campaign"] == "c1"


def test_a_stored_message_round_trips_and_is_validated_again() -> None:
    """to_dict/from_dict give the same message; a tampered stored one is refused."""
    message = _build(
        html="<b>x</b>", attachments=[Attachment("a.bin", b"\x00\x01")], tags=["welcome"],
        metadata={"workspace": "7"}, idempotency_key="welcome:7",
        reply_to=[("Ann", "a@example.com")],
    )  # fmt: skip
    stored = message.to_dict()

    assert EmailMessage.from_dict(stored) == message
    stored["subject"] = "x\r\nBcc: v@example.com"
    with pytest.raises(InvalidInputError):
        EmailMessage.from_dict(stored)


def _refuse_validation(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make email-validator record each call and refuse it: a trusted read makes none."""
    calls: list[str] = []

    def refuse(address: str, **_: Any) -> None:
        calls.append(address)
        raise message_module.email_validator.EmailNotValidError("validated again")

    monkeypatch.setattr(message_module.email_validator, "validate_email", refuse)
    return calls


def test_a_stored_message_with_its_check_is_read_back_without_validating_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """to_stored/from_dict give the same message and never call email-validator again."""
    message = _build(
        sender=("Ann", "ann@exämple.org"), cc=["c@example.com"], html="<b>x</b>",
        attachments=[Attachment("a.bin", b"\x00\x01", "image/png", "logo")],
        headers={"X-Campaign": "c1"}, tags=["welcome"], metadata={"workspace": "7"},
        idempotency_key="welcome:7",
    )  # fmt: skip
    stored = json.loads(json.dumps(message.to_stored()))  # as the JSON column gives it back
    calls = _refuse_validation(monkeypatch)

    assert EmailMessage.from_dict(stored) == message
    assert calls == []
    with pytest.raises(InvalidInputError):  # the same data without its check: validated
        EmailMessage.from_dict({k: v for k, v in stored.items() if k != "check"})
    assert calls == ["bob@example.com"]  # the first address build() validates


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("subject", "x\r\nBcc: v@example.com"),
        ("to", [["not an address", ""]]),
        ("headers", {"Bcc": "v@example.com"}),
        ("text", None),  # and no html: a message without a body
        ("check", "b2:00000000000000000000000000000000"),
    ],
)
def test_a_stored_message_changed_after_it_was_stored_is_validated_in_full(
    field: str, value: object
) -> None:
    """A change the check does not match (or a forged check) means full validation: refused."""
    stored = _build().to_stored()
    if field == "check":
        stored["subject"] = "x\r\nBcc: v@example.com"
    stored[field] = value
    with pytest.raises(InvalidInputError):
        EmailMessage.from_dict(stored)


def test_a_check_over_data_that_is_not_json_is_no_match() -> None:
    """Data that could never have come from the outbox (bytes inside) is validated, not trusted."""
    stored = _build().to_stored()
    stored["metadata"] = {"k": b"raw"}
    with pytest.raises(InvalidInputError):
        EmailMessage.from_dict(stored)


def test_display_names_with_quotes_and_commas_stay_one_address() -> None:
    """A name like 'Doe, "J"' is quoted, so the To header still lists one recipient."""
    message = _build(to=[Address.parse(('Doe, "J"', "j@example.com"), field_name="to")])
    mime = message_from_bytes(message.to_mime().as_bytes(), policy=default)

    assert [a.addr_spec for a in mime["To"].addresses] == ["j@example.com"]


@pytest.mark.parametrize("local", ["ann", "änn"])  # ASCII (SMTP policy) and SMTPUTF8
def test_the_header_class_cache_writes_the_same_bytes_as_the_standard_registry(
    monkeypatch: pytest.MonkeyPatch, local: str
) -> None:
    """to_mime through the cached registry gives byte for byte the standard library's output."""
    message = _build(
        sender=("Zoë Ünïcode, \"Ops\"", f"{local}@bücher.example"),
        to=[("Bob", "bob@example.com"), "carol@example.org"],
        cc=["dave@example.net"], reply_to=[("Desk", "desk@example.com")],
        subject="A subject long enough to be folded over more than one line " * 3 + "— ünï",
        headers={"X-Campaign": "spring", "List-Unsubscribe": "<https://example.com/u/1>"},
    )  # fmt: skip
    monkeypatch.setattr(message_module, "formatdate", lambda **_: "Thu, 03 Dec 2026 08:00:00 GMT")
    cached = message.to_mime(message_id="<m1@example.org>").as_bytes()
    monkeypatch.setattr(message_module, "_SMTP_POLICY", SMTP)
    monkeypatch.setattr(message_module, "_SMTPUTF8_POLICY", SMTPUTF8)
    standard = message.to_mime(message_id="<m1@example.org>").as_bytes()

    assert cached == standard
    assert b"Subject: A subject long enough" in cached
