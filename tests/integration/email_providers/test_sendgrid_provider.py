"""The SendGrid provider against a local server speaking SendGrid's v3 Mail Send API."""

from __future__ import annotations

import base64

import pytest

from corestone.email.message import Attachment
from corestone.email.providers.base import EmailProvider, Sent
from corestone.email.providers.sendgrid import SendGridProvider
from corestone.errors import EmailProviderError
from corestone.observability.health import HealthStatus
from tests.integration.email_providers.conftest import SENDGRID_KEY, free_port, outgoing
from tests.integration.email_providers.fakes import SendGridFake


def provider_for(fake: SendGridFake, key: str = SENDGRID_KEY) -> SendGridProvider:
    return SendGridProvider(key, base_url=fake.url)


async def test_request_is_exactly_the_documented_shape(sendgrid_fake: SendGridFake) -> None:
    """One message becomes one POST /v3/mail/send with exactly these fields; 202's
    X-Message-Id is the provider message id."""
    provider = provider_for(sendgrid_fake)
    assert isinstance(provider, EmailProvider)
    sent = await provider.send(
        outgoing(
            "m-7",
            to=[("Ada", "ada@example.org")],
            cc=["carl@exämple.org"],
            bcc=["hidden@example.org"],
            reply_to=["replies@example.com"],
            html='<p>Hi <img src="cid:logo"></p>',
            attachments=[
                Attachment("a.txt", b"file", "text/plain"),
                Attachment("logo.png", b"png", "image/png", content_id="logo"),
            ],
            headers={"X-Campaign": "spring"},
            tags=["welcome", "onboarding"],
            metadata={"workspace": "12"},
        )
    )
    await provider.aclose()

    [request] = sendgrid_fake.requests
    assert (request.method, request.path) == ("POST", "/v3/mail/send")
    assert request.headers["authorization"] == f"Bearer {SENDGRID_KEY}"
    assert request.json() == {
        "personalizations": [
            {
                "to": [{"email": "ada@example.org", "name": "Ada"}],
                "cc": [{"email": "carl@xn--exmple-cua.org"}],
                "bcc": [{"email": "hidden@example.org"}],
                "custom_args": {"workspace": "12", "corestone_id": "m-7"},
                "headers": {"X-Corestone-Id": "m-7"},
            }
        ],
        "from": {"email": "noreply@example.com", "name": "Corestone"},
        "reply_to": {"email": "replies@example.com"},
        "subject": "Hello",
        "content": [
            {"type": "text/plain", "value": "Hello, Ada."},
            {"type": "text/html", "value": '<p>Hi <img src="cid:logo"></p>'},
        ],
        "attachments": [
            {"content": base64.b64encode(b"file").decode(), "type": "text/plain",
             "filename": "a.txt", "disposition": "attachment"},
            {"content": base64.b64encode(b"png").decode(), "type": "image/png",
             "filename": "logo.png", "disposition": "inline", "content_id": "logo"},
        ],
        "headers": {"X-Campaign": "spring"},
        "categories": ["welcome", "onboarding"],
    }  # fmt: skip
    assert sent.provider == "sendgrid"
    assert sent.provider_message_id == sendgrid_fake.message_ids[0]


async def test_messages_of_one_content_share_one_request(sendgrid_fake: SendGridFake) -> None:
    """Four messages that differ only in recipient, subject and metadata go as one request
    of four personalizations, each with its own subject and corestone id; one from another
    sender goes alone."""
    provider = provider_for(sendgrid_fake)
    batch = [outgoing(f"b-{i}", to=[f"u{i}@example.org"], metadata={"n": str(i)}) for i in range(3)]
    batch.insert(1, outgoing("other", to=["o@example.org"], subject="Different"))
    batch.append(outgoing("alone", sender="elsewhere@example.com"))
    outcomes = await provider.send_batch(batch)
    await provider.aclose()

    assert len(sendgrid_fake.requests) == 2
    shared, alone = (r.json() for r in sendgrid_fake.requests)
    assert "subject" not in shared
    assert [p["subject"] for p in shared["personalizations"]] == [
        "Hello",
        "Different",
        "Hello",
        "Hello",
    ]
    assert [p["custom_args"]["corestone_id"] for p in shared["personalizations"]] == [
        "b-0", "other", "b-1", "b-2"
    ]  # fmt: skip
    assert shared["content"] == [{"type": "text/plain", "value": "Hello, Ada."}]
    assert all("substitutions" not in p for p in shared["personalizations"])
    assert alone["from"] == {"email": "elsewhere@example.com"}
    assert all(isinstance(o, Sent) for o in outcomes)
    ids = [o.provider_message_id for o in outcomes if isinstance(o, Sent)]
    assert ids[0] == ids[1] == ids[2] == ids[3] != ids[4]


async def test_a_failed_group_fails_only_its_messages(sendgrid_fake: SendGridFake) -> None:
    """Two requests, the first refused: its messages carry the error, the others are sent."""
    sendgrid_fake.fail_next(400, {"errors": [{"field": "from.email", "message": "bad sender"}]})
    provider = provider_for(sendgrid_fake)
    outcomes = await provider.send_batch(
        [outgoing("a"), outgoing("b", sender="other@example.com"),
         outgoing("c", to=["c@example.org"])]
    )  # fmt: skip
    await provider.aclose()
    assert [type(o).__name__ for o in outcomes] == [
        "EmailProviderError",
        "Sent",
        "EmailProviderError",
    ]


async def test_a_batch_of_one_request_raises_its_failure(sendgrid_fake: SendGridFake) -> None:
    """When the batch was one request, its failure is the whole call's and is raised."""
    sendgrid_fake.fail_next(503, {"errors": [{"message": "down"}]})
    provider = provider_for(sendgrid_fake)
    with pytest.raises(EmailProviderError) as caught:
        await provider.send_batch([outgoing("a"), outgoing("b", to=["b@example.org"])])
    await provider.aclose()
    assert caught.value.retryable is True


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(400, False), (401, False), (403, False), (413, False), (429, True), (500, True), (503, True)],
)
async def test_status_codes_map_to_retryable_or_permanent(
    sendgrid_fake: SendGridFake, status: int, retryable: bool
) -> None:
    """SendGrid's documented error codes: 429 and 5xx retryable, 400/401/403/413 permanent;
    the reason carries SendGrid's words and never the API key."""
    sendgrid_fake.fail_next(
        status, {"errors": [{"field": "content", "message": f"refused {status}"}]},
        {"Retry-After": "7"},
    )  # fmt: skip
    provider = provider_for(sendgrid_fake)
    with pytest.raises(EmailProviderError) as caught:
        await provider.send(outgoing())
    await provider.aclose()

    assert caught.value.retryable is retryable
    assert caught.value.retry_after == (7.0 if retryable else None)
    assert f"HTTP {status}" in caught.value.reason
    assert f"content: refused {status}" in caught.value.reason
    assert SENDGRID_KEY not in caught.value.reason


async def test_wrong_key_is_permanent(sendgrid_fake: SendGridFake) -> None:
    """The fake checks the bearer key as SendGrid does: a wrong one is a permanent 401."""
    provider = provider_for(sendgrid_fake, key="SG.wrong")
    with pytest.raises(EmailProviderError) as caught:
        await provider.send(outgoing())
    await provider.aclose()
    assert caught.value.retryable is False
    assert "401" in caught.value.reason


async def test_unreachable_api_is_retryable() -> None:
    """Nothing listening: a retryable error, and check() fails."""
    provider = SendGridProvider(SENDGRID_KEY, base_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(EmailProviderError) as caught:
        await provider.send(outgoing())
    result = await provider.check()
    await provider.aclose()
    assert caught.value.retryable is True
    assert result.status is HealthStatus.FAIL


async def test_check_needs_the_mail_send_scope(sendgrid_fake: SendGridFake) -> None:
    """check() passes for a key with mail.send and fails for one without it."""
    provider = provider_for(sendgrid_fake)
    assert (await provider.check()).status is HealthStatus.PASS
    sendgrid_fake.scopes = ("stats.read",)
    result = await provider.check()
    await provider.aclose()
    assert result.status is HealthStatus.FAIL
    assert result.output == "API key lacks the mail.send scope"
    assert SENDGRID_KEY not in repr(provider)
