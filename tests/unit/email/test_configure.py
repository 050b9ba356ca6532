"""Settings to routes: one route per listed provider, the strategy the value spells, webhooks."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from corestone import Infrastructure, Settings
from corestone._email_settings import EMAIL_PROVIDER_NAMES
from corestone.email import EmailService, add_email
from corestone.email.configure import _BUILDERS, routes_from_settings, webhooks_from_settings
from corestone.email.providers import (
    FileProvider,
    MailgunProvider,
    SendGridProvider,
    SesProvider,
    SmtpProvider,
)
from corestone.email.routing import Router
from corestone.email.webhooks import MailgunWebhook, SendGridWebhook
from corestone.errors import ConfigurationError
from corestone.resilience import BreakerRegistry

KEYS = {
    "sendgrid_api_key": "SG.Sekr3t-sendgrid",
    "mailgun_api_key": "key-Sekr3t-mailgun",
    "ses_secret_access_key": "Sekr3t/ses-secret",
}
EVERY_PROVIDER = {
    "smtp_url": "smtp://mailer:Sekr3t-smtp@127.0.0.1:2525",
    "mailgun_domain": "mg.example.com",
    "mailgun_region": "eu",
    "ses_region": "eu-west-1",
    "ses_access_key_id": "AKIAIOSFODNN7EXAMPLE",
    **KEYS,
}


def _settings(**values: object) -> Settings:
    return Settings(env="test", **values)  # type: ignore[arg-type]


def test_every_name_the_setting_accepts_has_a_builder() -> None:
    """The grammar's provider names and the builders are one list."""
    assert sorted(_BUILDERS) == sorted(EMAIL_PROVIDER_NAMES)


def test_nothing_set_routes_to_files_under_the_configured_folder(tmp_path: object) -> None:
    """The default is one file provider writing under CORESTONE_EMAIL_FILE_DIR, failover."""
    routing = routes_from_settings(_settings(email_file_dir=f"{tmp_path}/mail"))

    [route] = routing.routes
    assert isinstance(route.provider, FileProvider)
    assert str(route.provider.folder) == f"{tmp_path}/mail"
    assert (route.weight, route.max_per_second, routing.strategy) == (1, None, "failover")


async def test_each_listed_provider_becomes_a_route_in_order_with_its_limit() -> None:
    """Every provider is built from its settings, in the listed order, limits attached."""
    settings = _settings(
        email_providers="smtp,sendgrid,mailgun,ses,file",
        email_rate_limits="sendgrid=100,ses=14",
        **EVERY_PROVIDER,
    )
    routing = routes_from_settings(settings)
    try:
        kinds = [type(route.provider) for route in routing.routes]
        assert kinds == [SmtpProvider, SendGridProvider, MailgunProvider, SesProvider, FileProvider]
        assert [route.max_per_second for route in routing.routes] == [None, 100, None, 14, None]
        assert routing.strategy == "failover"
        mailgun = routing.routes[2].provider
        assert isinstance(mailgun, MailgunProvider)
        assert mailgun.domain == "mg.example.com"
        assert mailgun._base_url == "https://api.eu.mailgun.net"
        ses = routing.routes[3].provider
        assert isinstance(ses, SesProvider)
        assert ses.region == "eu-west-1"
        for route in routing.routes:
            for secret in [*KEYS.values(), "Sekr3t-smtp"]:
                assert secret not in repr(route.provider)
    finally:
        for route in routing.routes:
            await route.provider.aclose()


async def test_base_urls_from_the_settings_reach_the_http_providers() -> None:
    """SendGrid's and Mailgun's base URLs and SES's endpoint override the public ones."""
    settings = _settings(
        email_providers="sendgrid,mailgun,ses",
        sendgrid_base_url="http://127.0.0.1:9001",
        mailgun_base_url="http://127.0.0.1:9002/",
        ses_endpoint_url="http://127.0.0.1:9003",
        **EVERY_PROVIDER,
    )
    routing = routes_from_settings(settings)
    try:
        sendgrid, mailgun, ses = (route.provider for route in routing.routes)
        assert isinstance(sendgrid, SendGridProvider)
        assert isinstance(mailgun, MailgunProvider)
        assert isinstance(ses, SesProvider)
        assert sendgrid._base_url == "http://127.0.0.1:9001"
        assert mailgun._base_url == "http://127.0.0.1:9002"
        assert ses._endpoint == "http://127.0.0.1:9003"
    finally:
        for route in routing.routes:
            await route.provider.aclose()


async def test_weights_in_the_setting_make_a_weighted_router() -> None:
    """smtp:3,sendgrid:1 picks smtp first three times in four; without weights, always first."""
    weighted = routes_from_settings(
        _settings(email_providers="smtp:3,sendgrid:1", **EVERY_PROVIDER)
    )
    failover = routes_from_settings(_settings(email_providers="smtp,sendgrid", **EVERY_PROVIDER))
    try:
        assert weighted.strategy == "weighted"
        assert [route.weight for route in weighted.routes] == [3, 1]
        router = Router(weighted.routes, weighted.strategy, BreakerRegistry())
        firsts = [router.order()[0].name for _ in range(8)]
        assert sorted(firsts) == ["sendgrid"] * 2 + ["smtp"] * 6
        assert [slot.name for slot in router.order()] in (
            ["smtp", "sendgrid"],
            ["sendgrid", "smtp"],
        )

        assert failover.strategy == "failover"
        router = Router(failover.routes, failover.strategy, BreakerRegistry())
        assert {tuple(slot.name for slot in router.order()) for _ in range(8)} == {
            ("smtp", "sendgrid")
        }
    finally:
        for route in (*weighted.routes, *failover.routes):
            await route.provider.aclose()


def test_webhooks_exist_only_for_the_keys_that_are_set() -> None:
    """No key, no verifier; a key, a verifier of that provider's signatures."""
    assert webhooks_from_settings(_settings()).sendgrid is None
    assert webhooks_from_settings(_settings()).mailgun is None

    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    webhooks = webhooks_from_settings(
        _settings(
            sendgrid_webhook_public_key=base64.b64encode(der).decode(),
            mailgun_webhook_signing_key="mg-signing",
        )
    )
    assert isinstance(webhooks.sendgrid, SendGridWebhook)
    assert isinstance(webhooks.mailgun, MailgunWebhook)


def test_a_provider_module_is_imported_only_when_the_settings_list_it() -> None:
    """With only the file provider, neither aiosmtplib nor botocore is loaded."""
    code = (
        "import sys\n"
        "from corestone import Settings\n"
        "from corestone.email.configure import routes_from_settings\n"
        "routes_from_settings(Settings(email_providers='file'))\n"
        "loaded = {'aiosmtplib', 'botocore', 'corestone.email.providers.smtp',"
        " 'corestone.email.providers.ses'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_infra_email_says_how_to_set_it_up_before_add_email() -> None:
    """infra.email before add_email is a ConfigurationError that names add_email."""
    infra = Infrastructure(_settings(database_url="sqlite+aiosqlite:///:memory:"))

    with pytest.raises(ConfigurationError, match=r"add_email\(infra\)"):
        _ = infra.email


async def test_add_email_without_routes_uses_the_settings_and_closes_what_it_built(
    tmp_path: object,
) -> None:
    """add_email(infra) routes to the settings' providers, sets infra.email, refuses a second."""
    infra = Infrastructure(
        _settings(database_url="sqlite+aiosqlite:///:memory:", email_file_dir=f"{tmp_path}/m")
    )

    service = add_email(infra, run_sender=False)

    assert infra.email is service
    assert isinstance(service, EmailService)
    with pytest.raises(ValueError, match="already set up"):
        add_email(infra, [])
    assert "email-providers" in [managed.component.name for managed in infra._managed]
