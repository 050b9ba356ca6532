"""The file provider (the embedded default), the memory provider, and the shared helpers."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email.message import EmailMessage as MimeMessage
from email.policy import SMTP
from pathlib import Path

import pytest

from corestone.email.providers._common import parse_retry_after
from corestone.email.providers.base import EmailProvider, Outgoing, Sent
from corestone.email.providers.file import FileProvider
from corestone.email.providers.memory import MemoryProvider
from corestone.errors import EmailProviderError
from corestone.observability.health import HealthStatus
from tests.integration.email_providers.conftest import message, outgoing


async def test_file_provider_writes_one_eml_per_message(tmp_path: Path) -> None:
    """Each message is <id>.eml holding its MIME form; no temporary file is left behind, and a
    second attempt at one id replaces the file instead of adding a copy."""
    folder = tmp_path / "var" / "mail"
    provider = FileProvider(folder)
    assert isinstance(provider, EmailProvider)
    sent = await provider.send(outgoing("m-1", subject="First"))
    await provider.send(outgoing("m-1", subject="Second try"))
    outcomes = await provider.send_batch([outgoing("m-2"), outgoing("m-3")])
    await provider.aclose()

    assert sent == Sent("file", "m-1.eml")
    assert sorted(p.name for p in folder.iterdir()) == ["m-1.eml", "m-2.eml", "m-3.eml"]
    mime = email.message_from_bytes((folder / "m-1.eml").read_bytes(), policy=SMTP)
    assert isinstance(mime, MimeMessage)
    assert mime["Subject"] == "Second try"
    assert mime["X-Corestone-Id"] == "m-1"
    assert mime["Date"] is not None
    assert outcomes == [Sent("file", "m-2.eml"), Sent("file", "m-3.eml")]


async def test_file_provider_cannot_write_is_retryable_and_unhealthy(tmp_path: Path) -> None:
    """A folder that cannot be made (a file stands in its path): send is retryable, check fails."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    provider = FileProvider(blocker / "mail")
    with pytest.raises(EmailProviderError) as caught:
        await provider.send(outgoing())
    result = await provider.check()
    assert caught.value.retryable is True
    assert result.status is HealthStatus.FAIL
    assert (await FileProvider(tmp_path / "ok").check()).status is HealthStatus.PASS


async def test_file_names_cannot_leave_the_folder(tmp_path: Path) -> None:
    """corestone's id names the file, so an id with a path in it is refused, permanently."""
    provider = FileProvider(tmp_path / "mail")
    with pytest.raises(EmailProviderError) as caught:
        await provider.send(outgoing("../../etc/passwd"))
    assert caught.value.retryable is False
    assert not (tmp_path / "mail").exists() or list((tmp_path / "mail").iterdir()) == []


def test_to_mime_has_a_date_header() -> None:
    """RFC 5322 requires Date (and DKIM signs it): to_mime sets it (it used to be missing)."""
    mime = message().to_mime()
    assert mime["Date"] is not None
    assert email.utils.parsedate_to_datetime(str(mime["Date"])).tzinfo is not None


async def test_memory_provider_keeps_and_fails_as_told() -> None:
    """The memory provider keeps what it is sent and fails the next N sends as told,
    retryable or permanent, then accepts again."""
    provider = MemoryProvider()
    assert isinstance(provider, EmailProvider)
    provider.fail_next(2, retryable=True, retry_after=5)
    provider.fail_next(1, retryable=False, reason="address rejected")
    outcomes = await provider.send_batch([outgoing("a"), outgoing("b"), outgoing("c")])
    sent = await provider.send(outgoing("d"))

    assert [type(o).__name__ for o in outcomes] == ["EmailProviderError"] * 3
    first, _, third = outcomes
    assert isinstance(first, EmailProviderError)
    assert (first.retryable, first.retry_after) == (True, 5)
    assert isinstance(third, EmailProviderError)
    assert (third.retryable, third.reason) == (False, "address rejected")
    assert sent == Sent("memory", "memory-1")
    assert provider.messages == ["d"]
    assert provider.attempts == 4
    assert (await provider.check()).status is HealthStatus.PASS
    provider.healthy = False
    assert (await provider.check()).status is HealthStatus.FAIL
    provider.clear()
    assert (provider.sent, provider.attempts) == ([], 0)


def test_memory_provider_is_exported_from_corestone_testing() -> None:
    """Users' tests import it from corestone.testing (loaded lazily, like QueryCounter)."""
    import corestone.testing

    assert corestone.testing.MemoryProvider is MemoryProvider
    assert "MemoryProvider" in corestone.testing.__all__


def test_retry_after_reads_seconds_and_http_dates() -> None:
    """Retry-After as seconds or as an HTTP date (relative to now); nonsense is ignored."""
    now = datetime(2026, 12, 3, 7, 0, 0, tzinfo=UTC)
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("Thu, 03 Dec 2026 07:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Thu, 03 Dec 2026 06:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("-4") == 0.0
    for nonsense in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(nonsense) is None


async def test_header_injection_is_refused_by_every_http_provider_too() -> None:
    """A message built around the validation, with a line break in a header value, is refused
    by SendGrid, Mailgun and SES before any request (no server is needed to prove it)."""
    from corestone.email.message import EmailMessage
    from corestone.email.providers.mailgun import MailgunProvider
    from corestone.email.providers.sendgrid import SendGridProvider
    from corestone.email.providers.ses import SesProvider

    good = message()
    forged = EmailMessage(
        sender=good.sender, to=good.to, subject="Hi", text="x",
        headers={"X-Evil": "1\r\nBcc: victim@example.org"},
    )  # fmt: skip
    unreachable = "http://127.0.0.1:9"  # nothing is ever sent: the refusal comes first
    providers = [
        SendGridProvider("k", base_url=unreachable),
        MailgunProvider("k", "d.example", base_url=unreachable),
        SesProvider("id", "secret", region="eu-west-1", endpoint_url=unreachable),
    ]
    for provider in providers:
        with pytest.raises(EmailProviderError) as caught:
            await provider.send(Outgoing("x-1", forged))
        await provider.aclose()
        assert caught.value.retryable is False, provider
        assert "line break" in caught.value.reason
