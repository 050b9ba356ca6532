"""The Mailgun provider against a local server speaking Mailgun's messages API."""

from __future__ import annotations

import pytest

from corestone.email.message import Attachment
from corestone.email.providers.base import EmailProvider, Sent
from corestone.email.providers.mailgun import MAILGUN_REGIONS, MailgunProvider
from corestone.errors import EmailProviderError
from corestone.observability.health import HealthStatus
from tests.integration.email_providers.conftest import (
    MAILGUN_DOMAIN,
    MAILGUN_KEY,
    free_port,
    outgoing,
)
from tests.integration.email_providers.fakes import MailgunFake


def provider_for(fake: MailgunFake, key: str = MAILGUN_KEY) -> MailgunProvider:
    return MailgunProvider(key, MAILGUN_DOMAIN, base_url=fake.url)


async def test_form_is_exactly_the_documented_shape(mailgun_fake: MailgunFake) -> None:
    """One message becomes one multipart POST /v3/{domain}/messages with exactly these fields
    and files, basic auth api:key; Mailgun's queued id (without <>) is the provider id."""
    provider = provider_for(mailgun_fake)
    assert isinstance(provider, EmailProvider)
    sent = await provider.send(
        outgoing(
            "m-9",
            to=[("Ada", "ada@example.org"), "bob@exämple.org"],
            cc=["carl@example.org"],
            bcc=["hidden@example.org"],
            reply_to=["replies@example.com"],
            html='<p><img src="cid:logo"></p>',
            attachments=[
                Attachment("a.txt", b"file", "text/plain"),
                Attachment("logo-file.png", b"png", "image/png", content_id="logo"),
            ],
            headers={"X-Campaign": "spring"},
            tags=["welcome", "onboarding"],
            metadata={"workspace": "12"},
        )
    )
    await provider.aclose()

    [request] = mailgun_fake.requests
    assert (request.method, request.path) == ("POST", f"/v3/{MAILGUN_DOMAIN}/messages")
    assert request.headers["content-type"].startswith("multipart/form-data")
    fields, files = request.form()
    assert fields == [
        ("from", "Corestone <noreply@example.com>"),
        ("to", "Ada <ada@example.org>"),
        ("to", "bob@xn--exmple-cua.org"),
        ("cc", "carl@example.org"),
        ("bcc", "hidden@example.org"),
        ("subject", "Hello"),
        ("text", "Hello, Ada."),
        ("html", '<p><img src="cid:logo"></p>'),
        ("h:Reply-To", "replies@example.com"),
        ("h:X-Campaign", "spring"),
        ("o:tag", "welcome"),
        ("o:tag", "onboarding"),
        ("v:workspace", "12"),
        ("v:corestone-id", "m-9"),
    ]
    assert files == [
        ("attachment", "a.txt", "text/plain", b"file"),
        ("inline", "logo", "image/png", b"png"),  # Mailgun's Content-ID is the file name
    ]
    assert sent.provider == "mailgun"
    assert sent.provider_message_id is not None
    assert sent.provider_message_id.endswith(f"@{MAILGUN_DOMAIN}")
    assert not sent.provider_message_id.startswith("<")


async def test_without_files_the_form_is_urlencoded(mailgun_fake: MailgunFake) -> None:
    """No attachments: a plain urlencoded form, which Mailgun accepts too."""
    provider = provider_for(mailgun_fake)
    await provider.send(outgoing("a"))
    await provider.aclose()

    [request] = mailgun_fake.requests
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert ("v:corestone-id", "a") in request.form()[0]


async def test_shared_content_goes_as_one_batch_request(mailgun_fake: MailgunFake) -> None:
    """Three messages of one content to one recipient each: one request with three ``to``
    and recipient-variables carrying each corestone id. A message with a cc, one whose text
    holds ``%recipient`` and a second message to an address already in the batch each go
    alone."""
    provider = provider_for(mailgun_fake)
    batch = [outgoing(f"b-{i}", to=[(f"User {i}", f"u{i}@example.org")]) for i in range(3)]
    batch += [
        outgoing("cc", cc=["carl@example.org"]),
        outgoing("pct", text="50%recipient off"),
        outgoing("again", to=[("User 0", "u0@example.org")]),
    ]
    outcomes = await provider.send_batch(batch)
    await provider.aclose()

    assert len(mailgun_fake.requests) == 4
    fields, _ = mailgun_fake.requests[0].form()
    assert fields == [
        ("from", "Corestone <noreply@example.com>"),
        ("to", "User 0 <u0@example.org>"),
        ("to", "User 1 <u1@example.org>"),
        ("to", "User 2 <u2@example.org>"),
        ("subject", "Hello"),
        ("text", "Hello, Ada."),
        ("v:corestone-id", "%recipient.corestone_id%"),
        (
            "recipient-variables",
            '{"u0@example.org":{"corestone_id":"b-0"},"u1@example.org":{"corestone_id":"b-1"},'
            '"u2@example.org":{"corestone_id":"b-2"}}',
        ),
    ]
    alone = [dict(r.form()[0])["v:corestone-id"] for r in mailgun_fake.requests[1:]]
    assert alone == ["cc", "pct", "again"]
    assert all(isinstance(o, Sent) for o in outcomes)
    ids = [o.provider_message_id for o in outcomes if isinstance(o, Sent)]
    assert ids[0] == ids[1] == ids[2]
    assert len(set(ids)) == 4


async def test_a_batch_of_one_request_raises_its_failure(mailgun_fake: MailgunFake) -> None:
    """When the batch was one request, its failure is the whole call's and is raised; when it
    was several, each request's failure lands on its own messages."""
    provider = provider_for(mailgun_fake)
    mailgun_fake.fail_next(503, {"message": "down"})
    with pytest.raises(EmailProviderError):
        await provider.send_batch([outgoing("a", to=["a@example.org"]), outgoing("b")])
    mailgun_fake.fail_next(400, {"message": "bad"})
    outcomes = await provider.send_batch([outgoing("c", cc=["x@example.org"]), outgoing("d")])
    await provider.aclose()
    assert [type(o).__name__ for o in outcomes] == ["EmailProviderError", "Sent"]


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(400, False), (401, False), (402, False), (404, False), (413, False), (429, True),
     (500, True), (502, True)],
)  # fmt: skip
async def test_status_codes_map_to_retryable_or_permanent(
    mailgun_fake: MailgunFake, status: int, retryable: bool
) -> None:
    """Mailgun's documented error codes: 429 and 5xx retryable (Retry-After honoured), the
    other 4xx permanent; the reason carries Mailgun's message, never the key."""
    mailgun_fake.fail_next(status, {"message": f"refused {status}"}, {"Retry-After": "3"})
    provider = provider_for(mailgun_fake)
    with pytest.raises(EmailProviderError) as caught:
        await provider.send(outgoing())
    await provider.aclose()

    assert caught.value.retryable is retryable
    assert caught.value.retry_after == (3.0 if retryable else None)
    assert caught.value.reason == f"HTTP {status}: refused {status}"
    assert MAILGUN_KEY not in caught.value.reason


async def test_wrong_key_is_permanent(mailgun_fake: MailgunFake) -> None:
    """The fake checks basic auth as Mailgun does: a wrong key is a permanent 401."""
    provider = provider_for(mailgun_fake, key="key-wrong")
    with pytest.raises(EmailProviderError) as caught:
        await provider.send(outgoing())
    await provider.aclose()
    assert caught.value.retryable is False
    assert caught.value.reason.startswith("HTTP 401")


async def test_check_finds_the_domain(mailgun_fake: MailgunFake) -> None:
    """check() passes for the configured domain and fails for one the region does not know."""
    provider = provider_for(mailgun_fake)
    assert (await provider.check()).status is HealthStatus.PASS
    await provider.aclose()
    other = MailgunProvider(MAILGUN_KEY, "unknown.example.com", base_url=mailgun_fake.url)
    result = await other.check()
    await other.aclose()
    assert result.status is HealthStatus.FAIL
    assert "404" in (result.output or "")


async def test_unreachable_api_is_retryable() -> None:
    """Nothing listening: a retryable error."""
    provider = MailgunProvider(
        MAILGUN_KEY, MAILGUN_DOMAIN, base_url=f"http://127.0.0.1:{free_port()}"
    )
    with pytest.raises(EmailProviderError) as caught:
        await provider.send(outgoing())
    await provider.aclose()
    assert caught.value.retryable is True


def test_region_picks_the_base_url() -> None:
    """EU domains live at api.eu.mailgun.net, US ones at api.mailgun.net."""
    assert MailgunProvider("k", "d.example", region="eu")._base_url == MAILGUN_REGIONS["eu"]
    assert MailgunProvider("k", "d.example")._base_url == "https://api.mailgun.net"
    assert "secret-k" not in repr(MailgunProvider("secret-k", "d.example"))
    with pytest.raises(ValueError, match="region"):
        MailgunProvider("k", "d.example", region="ap")  # type: ignore[arg-type]


async def test_one_bad_message_does_not_sink_its_batch(mailgun_fake: MailgunFake) -> None:
    """A message with an unusable id is refused alone; the others of the same content still
    go out together as one batch request."""
    provider = provider_for(mailgun_fake)
    outcomes = await provider.send_batch(
        [outgoing("ok-1", to=["a@example.org"]), outgoing("bad id", to=["b@example.org"]),
         outgoing("ok-2", to=["c@example.org"])]
    )  # fmt: skip
    await provider.aclose()
    assert [type(o).__name__ for o in outcomes] == ["Sent", "EmailProviderError", "Sent"]
    [request] = mailgun_fake.requests
    assert [v for k, v in request.form()[0] if k == "to"] == ["a@example.org", "c@example.org"]
