"""The SMTP provider against a real SMTP server (aiosmtpd) started by each test."""

from __future__ import annotations

import email
from email.message import EmailMessage as MimeMessage
from email.policy import SMTPUTF8

import dkim
import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from corestone.email.message import Address, Attachment, EmailMessage
from corestone.email.providers.base import EmailProvider, Outgoing
from corestone.email.providers.smtp import DkimKey, SmtpProvider
from corestone.errors import EmailProviderError, InvalidInputError
from corestone.observability.health import HealthStatus
from tests.integration.email_providers.conftest import (
    DkimPair,
    SmtpServer,
    free_port,
    message,
    outgoing,
)
from tests.integration.email_providers.fakes import SmtpRecorder, start_smtp

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


def parsed(content: bytes) -> MimeMessage:
    mime = email.message_from_bytes(content, policy=SMTPUTF8)
    assert isinstance(mime, MimeMessage)
    return mime


async def test_is_an_email_provider(smtp_server: SmtpServer) -> None:
    """SmtpProvider satisfies the EmailProvider protocol the delivery service relies on."""
    provider = SmtpProvider(smtp_server.url)
    assert isinstance(provider, EmailProvider)
    await provider.aclose()


async def test_message_arrives_whole(smtp_server: SmtpServer) -> None:
    """Headers, both bodies, a file and an inline image arrive as built; Bcc not in headers."""
    provider = SmtpProvider(smtp_server.url)
    sent = await provider.send(
        outgoing(
            "msg-42",
            to=[("Ada Lovelace", "ada@example.org")],
            cc=["carl@example.org"],
            bcc=["hidden@example.org"],
            reply_to=["replies@example.com"],
            html='<p>Hello, <img src="cid:logo"></p>',
            attachments=[
                Attachment("report.pdf", b"%PDF-1.4 data", "application/pdf"),
                Attachment("logo.png", PNG, "image/png", content_id="logo"),
            ],
            headers={"X-Campaign": "spring"},
        )
    )
    await provider.aclose()

    [delivered] = smtp_server.recorder.delivered
    assert delivered.mail_from == "noreply@example.com"
    assert sorted(delivered.rcpt_tos) == [
        "ada@example.org",
        "carl@example.org",
        "hidden@example.org",
    ]
    mime = parsed(delivered.content)
    assert mime["From"] == "Corestone <noreply@example.com>"
    assert mime["To"] == "Ada Lovelace <ada@example.org>"
    assert mime["Cc"] == "carl@example.org"
    assert mime["Reply-To"] == "replies@example.com"
    assert mime["Bcc"] is None
    assert b"hidden@example.org" not in delivered.content
    assert mime["Subject"] == "Hello"
    assert mime["Date"] is not None
    assert mime["Message-ID"] == "<msg-42@example.com>" == sent.provider_message_id
    assert mime["X-Corestone-Id"] == "msg-42"
    assert mime["X-Campaign"] == "spring"
    assert sent.provider == "smtp"
    text = mime.get_body(("plain",))
    html = mime.get_body(("html",))
    assert text is not None
    assert text.get_content().rstrip() == "Hello, Ada."
    assert html is not None
    assert "cid:logo" in html.get_content()
    files = {part.get_filename(): part for part in mime.walk() if part.get_filename()}
    assert files["report.pdf"].get_payload(decode=True) == b"%PDF-1.4 data"
    assert files["logo.png"].get_payload(decode=True) == PNG
    assert files["logo.png"]["Content-ID"] == "<logo>"
    assert files["logo.png"].get_content_disposition() == "inline"


async def test_internationalised_address_goes_over_smtputf8(smtp_server: SmtpServer) -> None:
    """A non-ASCII local part is sent with the SMTPUTF8 option, envelope and header in UTF-8."""
    provider = SmtpProvider(smtp_server.url)
    await provider.send(outgoing(to=["josé@exämple.org"], subject="Grüße"))
    await provider.aclose()

    [delivered] = smtp_server.recorder.delivered
    assert "SMTPUTF8" in delivered.mail_options
    assert delivered.rcpt_tos == ["josé@exämple.org"]
    mime = parsed(delivered.content)
    assert mime["To"] == "josé@exämple.org"
    assert mime["Subject"] == "Grüße"


async def test_ascii_local_part_with_unicode_domain_uses_idna(smtp_server: SmtpServer) -> None:
    """Without a non-ASCII local part no SMTPUTF8 is needed: the domain goes out as IDNA."""
    provider = SmtpProvider(smtp_server.url)
    await provider.send(outgoing(to=["ada@exämple.org"]))
    await provider.aclose()

    [delivered] = smtp_server.recorder.delivered
    assert "SMTPUTF8" not in delivered.mail_options
    assert delivered.rcpt_tos == ["ada@xn--exmple-cua.org"]


async def test_dkim_signature_verifies(smtp_server: SmtpServer, dkim_pair: DkimPair) -> None:
    """The DKIM-Signature added by the provider verifies with dkimpy against the public key,
    and stops verifying once the body is changed."""
    key = DkimKey(selector="s1", domain="example.com", private_key=dkim_pair.private_pem)
    provider = SmtpProvider(smtp_server.url, dkim_key=key)
    await provider.send(outgoing(html="<p>signed</p>", subject="Signé"))
    await provider.aclose()

    [delivered] = smtp_server.recorder.delivered
    asked: list[bytes] = []

    def dns(name: bytes, timeout: int = 5) -> bytes:
        asked.append(name)
        return dkim_pair.dns_record

    assert delivered.content.startswith(b"DKIM-Signature:")
    assert dkim.verify(delivered.content, dnsfunc=dns)
    assert asked == [b"s1._domainkey.example.com."]
    assert not dkim.verify(delivered.content.replace(b"Hello, Ada.", b"Hello, Eve."), dnsfunc=dns)
    assert "private_key=***" in repr(key)


async def test_batch_goes_over_one_connection(smtp_server: SmtpServer) -> None:
    """Ten messages in a batch, then one more send, open one SMTP connection between them."""
    provider = SmtpProvider(smtp_server.url, max_batch=10)
    batch = [outgoing(f"b-{i}", to=[f"user{i}@example.org"]) for i in range(10)]
    outcomes = await provider.send_batch(batch)
    await provider.send(outgoing("after"))
    await provider.aclose()

    assert [o.provider_message_id for o in outcomes if not isinstance(o, Exception)] == [
        f"<b-{i}@example.com>" for i in range(10)
    ]
    assert provider.connections_opened == 1
    assert smtp_server.recorder.ehlos == 1
    assert len(smtp_server.recorder.delivered) == 11


async def test_one_refusal_in_a_batch_does_not_stop_the_others(smtp_server: SmtpServer) -> None:
    """A refused message gets its own error; the messages after it still go, same connection."""
    smtp_server.recorder.refuse_rcpt["bad@example.org"] = "550 5.1.1 no such user"
    provider = SmtpProvider(smtp_server.url)
    outcomes = await provider.send_batch(
        [outgoing("a", to=["a@example.org"]), outgoing("b", to=["bad@example.org"]),
         outgoing("c", to=["c@example.org"])]
    )  # fmt: skip
    await provider.aclose()

    assert isinstance(outcomes[1], EmailProviderError)
    assert not outcomes[1].retryable
    assert [type(o).__name__ for o in outcomes] == ["Sent", "EmailProviderError", "Sent"]
    assert [d.rcpt_tos for d in smtp_server.recorder.delivered] == [
        ["a@example.org"],
        ["c@example.org"],
    ]
    assert provider.connections_opened == 1


@pytest.mark.parametrize(
    ("reply", "retryable"), [("451 4.3.0 mailbox busy", True), ("550 5.1.1 no such user", False)]
)
async def test_refused_recipient_sends_to_no_one(
    smtp_server: SmtpServer, reply: str, retryable: bool
) -> None:
    """One refused recipient out of two: nothing is delivered (a retry would duplicate the
    accepted one), 4xx is retryable, 5xx permanent, and the reason names the recipient."""
    smtp_server.recorder.refuse_rcpt["bad@example.org"] = reply
    provider = SmtpProvider(smtp_server.url)
    with pytest.raises(EmailProviderError) as caught:
        await provider.send(outgoing(to=["good@example.org", "bad@example.org"]))
    await provider.send(outgoing("next"))  # the connection is still in a clean state
    await provider.aclose()

    assert caught.value.retryable is retryable
    assert "bad@example.org" in caught.value.reason
    assert reply[:3] in caught.value.reason
    assert "good@example.org" not in caught.value.reason
    assert [d.content.count(b"X-Corestone-Id: next") for d in smtp_server.recorder.delivered] == [1]
    assert provider.connections_opened == 1


async def test_mixed_refusals_are_permanent(smtp_server: SmtpServer) -> None:
    """A 4xx and a 5xx refusal together: retrying cannot help the 5xx one, so permanent."""
    smtp_server.recorder.refuse_rcpt.update(
        {"busy@example.org": "452 4.2.2 full", "gone@example.org": "550 5.1.1 gone"}
    )
    provider = SmtpProvider(smtp_server.url)
    with pytest.raises(EmailProviderError) as caught:
        await provider.send(outgoing(to=["busy@example.org", "gone@example.org"]))
    await provider.aclose()
    assert caught.value.retryable is False
    assert smtp_server.recorder.delivered == []


@pytest.mark.parametrize(
    ("reply", "retryable"), [("452 4.3.1 no space", True), ("554 5.6.0 content refused", False)]
)
async def test_data_refusal_maps_by_code(
    smtp_server: SmtpServer, reply: str, retryable: bool
) -> None:
    """The server's answer to DATA: 4xx retryable, 5xx permanent, its code in the reason."""
    smtp_server.recorder.data_reply = reply
    provider = SmtpProvider(smtp_server.url)
    with pytest.raises(EmailProviderError) as caught:
        await provider.send(outgoing())
    await provider.aclose()
    assert caught.value.retryable is retryable
    assert reply[:3] in caught.value.reason


async def test_server_down_is_retryable_and_check_fails() -> None:
    """Nothing listening: send raises a retryable error and check() fails, both saying why."""
    provider = SmtpProvider(f"smtp://127.0.0.1:{free_port()}", timeout=5)
    with pytest.raises(EmailProviderError) as caught:
        await provider.send(outgoing())
    outcomes = await provider.send_batch([outgoing("x"), outgoing("y")])
    result = await provider.check()
    await provider.aclose()

    assert caught.value.retryable is True
    assert all(isinstance(o, EmailProviderError) and o.retryable for o in outcomes)
    assert result.status is HealthStatus.FAIL
    assert result.output


async def test_check_passes_against_a_live_server(smtp_server: SmtpServer) -> None:
    """check() connects, says NOOP and QUIT, and passes."""
    provider = SmtpProvider(smtp_server.url)
    result = await provider.check()
    await provider.aclose()
    assert result.status is HealthStatus.PASS
    assert result.output == f"127.0.0.1:{smtp_server.port}"


async def test_connection_closed_by_the_server_is_replaced(smtp_server: SmtpServer) -> None:
    """The server restarts between sends: the pooled connection is dead, a fresh one takes over
    and the message is delivered once."""
    provider = SmtpProvider(smtp_server.url)
    await provider.send(outgoing("before"))
    smtp_server.stop()
    recorder = SmtpRecorder()
    controller = start_smtp(recorder, smtp_server.port)
    try:
        await provider.send(outgoing("after"))
    finally:
        await provider.aclose()
        controller.stop()

    assert provider.connections_opened == 2
    assert [d.content.count(b"X-Corestone-Id: after") for d in recorder.delivered] == [1]


USER, PASSWORD = "mailer", "s3cret-Zq81"


def _authenticate(
    server: object, session: object, envelope: object, mechanism: str, data: object
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


@pytest.mark.parametrize(("password", "ok"), [(PASSWORD, True), ("wrong", False)])
async def test_auth_from_the_url(password: str, ok: bool) -> None:
    """AUTH with the URL's user and password: accepted sends; a refused login is permanent."""
    recorder = SmtpRecorder()
    port = free_port()
    controller = start_smtp(recorder, port, authenticator=_authenticate, auth_require_tls=False)
    provider = SmtpProvider(f"smtp://{USER}:{password}@127.0.0.1:{port}")
    try:
        if ok:
            await provider.send(outgoing())
        else:
            with pytest.raises(EmailProviderError) as caught:
                await provider.send(outgoing())
            assert caught.value.retryable is False
            assert "535" in caught.value.reason
            assert password not in caught.value.reason
    finally:
        await provider.aclose()
        controller.stop()
    assert len(recorder.delivered) == (1 if ok else 0)


async def test_starttls_asked_but_not_offered_is_permanent(smtp_server: SmtpServer) -> None:
    """``?starttls=true`` against a server without STARTTLS: a configuration error, not a
    hiccup to retry, and nothing is sent in the clear."""
    provider = SmtpProvider(f"{smtp_server.url}?starttls=true")
    with pytest.raises(EmailProviderError) as caught:
        await provider.send(outgoing())
    await provider.aclose()
    assert caught.value.retryable is False
    assert "STARTTLS" in caught.value.reason.upper()
    assert smtp_server.recorder.delivered == []


def test_url_is_read_like_the_doctor_reads_it() -> None:
    """Scheme, port defaults and the starttls flag follow corestone doctor's reading."""
    assert SmtpProvider("smtps://h")._port == 465
    assert SmtpProvider("smtp://h?starttls=true")._port == 587
    assert SmtpProvider("smtp://h")._port == 25
    assert "pw" not in repr(SmtpProvider("smtp://u:pw@h"))
    with pytest.raises(ValueError, match="smtp://"):
        SmtpProvider("http://h")


async def test_header_injection_never_reaches_the_wire(smtp_server: SmtpServer) -> None:
    """A line break in any header field is refused when the message is built; one smuggled
    in by building the dataclass directly is refused by the provider, permanently, and the
    server receives nothing."""
    with pytest.raises(InvalidInputError):
        message(subject="Hi\r\nBcc: victim@example.org")
    with pytest.raises(InvalidInputError):
        message(headers={"X-Ok": "1\nBcc: victim@example.org"})
    good = message()
    forged = [
        EmailMessage(sender=good.sender, to=good.to, subject="Hi\r\nBcc: victim@example.org",
                     text="x"),
        EmailMessage(sender=good.sender, to=good.to, subject="Hi", text="x",
                     headers={"X-Evil": "1\r\nBcc: victim@example.org"}),
        EmailMessage(sender=Address("noreply@example.com", "Eve\r\nBcc: victim@example.org"),
                     to=good.to, subject="Hi", text="x"),
    ]  # fmt: skip
    provider = SmtpProvider(smtp_server.url)
    outcomes = await provider.send_batch([Outgoing(f"f-{i}", m) for i, m in enumerate(forged)])
    with pytest.raises(EmailProviderError):
        await provider.send(Outgoing("bad\r\nid", good))
    await provider.aclose()

    assert all(isinstance(o, EmailProviderError) and not o.retryable for o in outcomes)
    assert smtp_server.recorder.delivered == []


async def test_unusable_dkim_key_is_permanent(smtp_server: SmtpServer) -> None:
    """A DKIM key that is not a private key fails every message permanently (a retry cannot
    fix configuration), names DKIM, and nothing unsigned goes out instead."""
    key = DkimKey(selector="s1", domain="example.com", private_key=b"not a key")
    provider = SmtpProvider(smtp_server.url, dkim_key=key)
    outcomes = await provider.send_batch([outgoing("a"), outgoing("b")])
    await provider.aclose()
    assert all(isinstance(o, EmailProviderError) and not o.retryable for o in outcomes)
    assert all("DKIM" in o.reason for o in outcomes if isinstance(o, EmailProviderError))
    assert smtp_server.recorder.delivered == []
