"""The doctor's report formatting, with no services involved."""

from __future__ import annotations

import dataclasses

import pytest

from corestone.doctor import ServiceCheck, format_report


def test_report_aligns_columns_and_gives_reasons_only_for_failures() -> None:
    """Every line starts its URL and latency in the same column; only FAIL lines carry a reason."""
    checks = [
        ServiceCheck("database", "sqlite+aiosqlite:///./var/corestone.db", True, 2.0),
        ServiceCheck("redis", "redis://127.0.0.1:1/0", False, 1234.5, "connection refused"),
    ]
    lines = format_report(checks)
    assert lines == [
        "ok    database  sqlite+aiosqlite:///./var/corestone.db      2.0 ms",
        "FAIL  redis     redis://127.0.0.1:1/0                    1234.5 ms  connection refused",
    ]


def test_empty_report_has_no_lines() -> None:
    """No checks make no lines (and no crash computing column widths)."""
    assert format_report([]) == []


def test_service_check_is_frozen() -> None:
    """A result cannot be changed after the fact, so a report always shows what was found."""
    check = ServiceCheck("smtp", "smtp://127.0.0.1:25", True, 1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        check.ok = False  # type: ignore[misc]


def test_an_error_that_cannot_print_itself_is_reported_by_its_type() -> None:
    """A probe failure whose str() raises still gives a reason line: the error's type."""
    from corestone.doctor import _first_line

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert _first_line(Unprintable()) == "Unprintable"


def test_the_email_report_names_providers_and_missing_webhook_keys_but_no_secret() -> None:
    """Strategy, providers in order with where they send and their limits; keys never shown."""
    from corestone.config import Settings
    from corestone.doctor import email_report

    settings = Settings(
        email_providers="smtp:2,sendgrid:1",
        email_rate_limits="sendgrid=50",
        smtp_url="smtp://mailer:Sekr3t-smtp@127.0.0.1:2525?starttls=true",
        sendgrid_api_key="SG.Sekr3t-key",
        mailgun_api_key="key-Sekr3t-mailgun",
    )  # type: ignore[arg-type]

    assert email_report(settings) == [
        "email     weighted: smtp (weight 2), sendgrid (weight 1)",
        "  smtp      smtp://mailer:***@127.0.0.1:2525?starttls=true",
        "  sendgrid  https://api.sendgrid.com, at most 50 messages/s",
        "  note: sendgrid's delivery events are not tracked: "
        "CORESTONE_SENDGRID_WEBHOOK_PUBLIC_KEY is not set",
        "  note: CORESTONE_MAILGUN_API_KEY is set, but CORESTONE_EMAIL_PROVIDERS does not list "
        "mailgun",
    ]


def test_the_email_report_describes_mailgun_ses_and_files() -> None:
    """Mailgun's domain and region, SES's region and configuration set, the file folder."""
    from corestone.config import Settings
    from corestone.doctor import email_report

    settings = Settings(
        email_providers="mailgun,ses,file",
        mailgun_api_key="k",
        mailgun_domain="mg.example.com",
        mailgun_region="eu",
        mailgun_webhook_signing_key="s",
        ses_region="eu-west-1",
        ses_access_key_id="AKIAIOSFODNN7EXAMPLE",
        ses_secret_access_key="Sekr3t",
        ses_configuration_set="events",
        email_file_dir="/srv/mail",
    )  # type: ignore[arg-type]

    assert email_report(settings) == [
        "email     failover: mailgun, ses, file",
        "  mailgun  domain mg.example.com, region eu",
        "  ses      region eu-west-1, configuration set events",
        "  file     .eml files under /srv/mail",
    ]
