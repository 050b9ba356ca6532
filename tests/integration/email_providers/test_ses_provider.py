"""The SES provider against a local SES v2 server that verifies every SigV4 signature."""

from __future__ import annotations

import base64
import email
from email.message import EmailMessage as MimeMessage
from email.policy import SMTP
from pathlib import Path

import pytest

from corestone.email.message import Attachment
from corestone.email.providers.base import EmailProvider, Sent
from corestone.email.providers.ses import SesProvider
from corestone.errors import EmailProviderError
from corestone.observability.health import HealthStatus
from tests.integration.email_providers.conftest import (
    AWS_KEY_ID,
    AWS_REGION,
    AWS_SECRET,
    free_port,
    outgoing,
)
from tests.integration.email_providers.fakes import SesFake


def provider_for(fake: SesFake, secret: str = AWS_SECRET, token: str | None = None) -> SesProvider:
    return SesProvider(
        AWS_KEY_ID, secret, region=AWS_REGION, session_token=token, endpoint_url=fake.url
    )


async def test_simple_send_is_signed_and_shaped(ses_fake: SesFake) -> None:
    """SendEmail with Content.Simple: exactly these fields, the corestone-id tag, and a SigV4
    signature the server recomputes from the received request and the secret."""
    provider = provider_for(ses_fake)
    assert isinstance(provider, EmailProvider)
    sent = await provider.send(
        outgoing(
            "m-5",
            sender=("Zoë", "noreply@example.com"),
            to=["ada@example.org"],
            cc=["carl@exämple.org"],
            bcc=["hidden@example.org"],
            reply_to=["replies@example.com"],
            html="<p>Hi</p>",
            headers={"X-Campaign": "spring"},
        )
    )
    await provider.aclose()

    [request] = ses_fake.requests
    assert ses_fake.signatures_checked == 1
    assert (request.method, request.path) == ("POST", "/v2/email/outbound-emails")
    assert request.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AWS_KEY_ID}/")
    assert request.json() == {
        "FromEmailAddress": "=?utf-8?q?Zo=C3=AB?= <noreply@example.com>",
        "Destination": {
            "ToAddresses": ["ada@example.org"],
            "CcAddresses": ["carl@xn--exmple-cua.org"],
            "BccAddresses": ["hidden@example.org"],
        },
        "ReplyToAddresses": ["replies@example.com"],
        "Content": {
            "Simple": {
                "Subject": {"Data": "Hello", "Charset": "UTF-8"},
                "Body": {
                    "Text": {"Data": "Hello, Ada.", "Charset": "UTF-8"},
                    "Html": {"Data": "<p>Hi</p>", "Charset": "UTF-8"},
                },
                "Headers": [
                    {"Name": "X-Campaign", "Value": "spring"},
                    {"Name": "X-Corestone-Id", "Value": "m-5"},
                ],
            }
        },
        "EmailTags": [{"Name": "corestone-id", "Value": "m-5"}],
    }
    assert sent.provider == "ses"
    assert sent.provider_message_id is not None
    assert sent.provider_message_id.startswith("0100-")


async def test_attachments_go_as_raw_mime(ses_fake: SesFake) -> None:
    """With a file the message goes as Content.Raw: the MIME form, ids in its headers, Bcc
    only in the Destination."""
    provider = provider_for(ses_fake)
    await provider.send(
        outgoing(
            "m-6", bcc=["hidden@example.org"],
            attachments=[Attachment("r.csv", b"a,b\n1,2\n", "text/csv")],
        )
    )  # fmt: skip
    await provider.aclose()

    body = ses_fake.requests[0].json()
    assert set(body) == {"FromEmailAddress", "Destination", "Content", "EmailTags"}
    assert body["Destination"]["BccAddresses"] == ["hidden@example.org"]
    mime = email.message_from_bytes(base64.b64decode(body["Content"]["Raw"]["Data"]), policy=SMTP)
    assert isinstance(mime, MimeMessage)
    assert mime["X-Corestone-Id"] == "m-6"
    assert mime["Message-ID"] == "<m-6@example.com>"
    assert mime["Bcc"] is None
    [part] = [p for p in mime.walk() if p.get_filename() == "r.csv"]
    assert part.get_payload(decode=True) == b"a,b\n1,2\n"


async def test_a_wrong_secret_fails_the_signature(ses_fake: SesFake) -> None:
    """Signed with another secret, the request is refused (403) and the error is permanent:
    the fake really checks signatures."""
    provider = provider_for(ses_fake, secret="not-the-secret")
    with pytest.raises(EmailProviderError) as caught:
        await provider.send(outgoing())
    result = await provider.check()
    await provider.aclose()
    assert caught.value.retryable is False
    assert "SignatureDoesNotMatch" in caught.value.reason
    assert "not-the-secret" not in caught.value.reason
    assert result.status is HealthStatus.FAIL


async def test_session_token_is_signed_along(ses_fake: SesFake) -> None:
    """Temporary credentials: X-Amz-Security-Token is sent and covered by the signature."""
    provider = provider_for(ses_fake, token="session-token-1")
    await provider.send(outgoing())
    await provider.aclose()
    [request] = ses_fake.requests
    assert request.headers["x-amz-security-token"] == "session-token-1"
    assert "x-amz-security-token" in request.headers["authorization"]
    assert ses_fake.signatures_checked == 1


async def test_without_keys_the_default_chain_signs(
    ses_fake: SesFake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No keys given: botocore's default chain (here the environment, as on a container
    with its keys injected) supplies them, and the signature verifies."""
    isolate_aws(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    provider = SesProvider(region=AWS_REGION, endpoint_url=ses_fake.url)
    await provider.send(outgoing())
    await provider.aclose()
    [request] = ses_fake.requests
    assert request.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AWS_KEY_ID}/")
    assert ses_fake.signatures_checked == 1


async def test_no_credentials_anywhere_is_a_retryable_error_that_says_how(
    ses_fake: SesFake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With no keys and nothing in the chain, nothing is sent and the error is retryable
    (the mail waits for the configuration), naming the settings to set; health fails."""
    isolate_aws(monkeypatch, tmp_path)
    provider = SesProvider(region=AWS_REGION, endpoint_url=ses_fake.url)
    with pytest.raises(EmailProviderError) as caught:
        await provider.send(outgoing())
    result = await provider.check()
    await provider.aclose()
    assert caught.value.retryable is True
    assert "CORESTONE_SES_ACCESS_KEY_ID" in caught.value.reason
    assert result.status is HealthStatus.FAIL
    assert ses_fake.requests == []


def isolate_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """botocore's chain sees no keys of this machine's: no variables, files or metadata."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


async def test_shared_content_goes_through_send_bulk_email(ses_fake: SesFake) -> None:
    """Three messages of one content: one SendBulkEmail whose inline template is only
    placeholders, one entry each with its data, tag and header; per-entry statuses map to
    outcomes."""
    ses_fake.entry_status["u1@example.org"] = "ACCOUNT_THROTTLED"
    ses_fake.entry_status["u2@example.org"] = "MESSAGE_REJECTED"
    provider = provider_for(ses_fake)
    outcomes = await provider.send_batch(
        [outgoing(f"b-{i}", to=[f"u{i}@example.org"], html="<b>x</b>") for i in range(3)]
    )
    await provider.aclose()

    [request] = ses_fake.requests
    assert request.path == "/v2/email/outbound-bulk-emails"
    body = request.json()
    assert body["DefaultContent"] == {
        "Template": {
            "TemplateContent": {"Subject": "{{subject}}", "Text": "{{text}}", "Html": "{{html}}"},
            "TemplateData": "{}",
        }
    }
    data = '{"subject":"Hello","text":"Hello, Ada.","html":"<b>x</b>"}'
    assert body["BulkEmailEntries"] == [
        {
            "Destination": {"ToAddresses": [f"u{i}@example.org"]},
            "ReplacementTags": [{"Name": "corestone-id", "Value": f"b-{i}"}],
            "ReplacementEmailContent": {"ReplacementTemplate": {"ReplacementTemplateData": data}},
            "ReplacementHeaders": [{"Name": "X-Corestone-Id", "Value": f"b-{i}"}],
        }
        for i in range(3)
    ]
    first, throttled, rejected = outcomes
    assert isinstance(first, Sent)
    assert isinstance(throttled, EmailProviderError)
    assert throttled.retryable is True
    assert isinstance(rejected, EmailProviderError)
    assert rejected.retryable is False
    assert rejected.reason.startswith("MESSAGE_REJECTED")


async def test_braces_are_values_and_files_go_one_by_one(ses_fake: SesFake) -> None:
    """Text with ``{{`` travels as a template value, so SES renders it as written;
    messages with files go through SendEmail, one request each."""
    provider = provider_for(ses_fake)
    braces = "{{not a placeholder}}"
    outcomes = await provider.send_batch(
        [outgoing("p-1", text=braces), outgoing("p-2", to=["b@example.org"], text=braces),
         outgoing("f-1", attachments=[Attachment("a.txt", b"x")])]
    )  # fmt: skip
    await provider.aclose()
    assert [r.path for r in ses_fake.requests] == [
        "/v2/email/outbound-bulk-emails", "/v2/email/outbound-emails"
    ]  # fmt: skip
    assert [d.text for d in ses_fake.delivered] == [braces, braces]
    assert all(isinstance(o, Sent) for o in outcomes)


@pytest.mark.parametrize(
    ("status", "error_type", "retryable"),
    [
        (400, "MessageRejected", False),
        (400, "MailFromDomainNotVerifiedException", False),
        (400, "AccountSuspendedException", False),
        (400, "SendingPausedException", False),
        (400, "BadRequestException", False),
        (404, "NotFoundException", False),
        (429, "TooManyRequestsException", True),
        (400, "LimitExceededException", True),
        (500, "InternalFailure", True),
        (503, "ServiceUnavailable", True),
    ],
)
async def test_errors_map_to_retryable_or_permanent(
    ses_fake: SesFake, status: int, error_type: str, retryable: bool
) -> None:
    """SES v2's documented errors of SendEmail, by x-amzn-ErrorType and status."""
    ses_fake.fail_next(
        status, {"message": "refused by the fake"},
        {"x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/"},
    )  # fmt: skip
    provider = provider_for(ses_fake)
    with pytest.raises(EmailProviderError) as caught:
        await provider.send(outgoing())
    await provider.aclose()
    assert caught.value.retryable is retryable
    assert error_type.removesuffix("Exception") in caught.value.reason
    assert "refused by the fake" in caught.value.reason


async def test_smtputf8_message_is_refused_before_any_request(ses_fake: SesFake) -> None:
    """SES takes no non-ASCII local part: permanent, and nothing is sent."""
    provider = provider_for(ses_fake)
    with pytest.raises(EmailProviderError) as caught:
        await provider.send(outgoing(to=["josé@example.org"]))
    await provider.aclose()
    assert caught.value.retryable is False
    assert ses_fake.requests == []


async def test_check_calls_get_account(ses_fake: SesFake) -> None:
    """check() is a signed GetAccount; it passes when sending is enabled."""
    provider = provider_for(ses_fake)
    result = await provider.check()
    await provider.aclose()
    assert result.status is HealthStatus.PASS
    assert [(r.method, r.path) for r in ses_fake.requests] == [("GET", "/v2/email/account")]
    assert ses_fake.signatures_checked == 1


async def test_unreachable_endpoint_is_retryable() -> None:
    """Nothing listening: a retryable error."""
    provider = SesProvider(
        AWS_KEY_ID, AWS_SECRET, region=AWS_REGION, endpoint_url=f"http://127.0.0.1:{free_port()}"
    )
    with pytest.raises(EmailProviderError) as caught:
        await provider.send(outgoing())
    await provider.aclose()
    assert caught.value.retryable is True
    assert AWS_SECRET not in repr(provider)


async def test_one_bad_message_does_not_sink_its_bulk_group(ses_fake: SesFake) -> None:
    """A message with an id SES tags cannot hold is refused alone; the others of the same
    content still go out together through SendBulkEmail."""
    provider = provider_for(ses_fake)
    outcomes = await provider.send_batch(
        [outgoing("ok-1", to=["a@example.org"]), outgoing("bad id", to=["b@example.org"]),
         outgoing("ok-2", to=["c@example.org"])]
    )  # fmt: skip
    await provider.aclose()
    assert [type(o).__name__ for o in outcomes] == ["Sent", "EmailProviderError", "Sent"]
    [request] = ses_fake.requests
    assert len(request.json()["BulkEmailEntries"]) == 2
