"""Email settings: the providers' grammar, each provider's credentials, secrets out of sight."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError

from corestone._email_settings import ProviderChoice
from corestone.config import Settings, load_settings
from corestone.errors import ConfigurationError

SECRETS = {
    "CORESTONE_SENDGRID_API_KEY": "SG.sendgrid-Sekr3t-key",
    "CORESTONE_MAILGUN_API_KEY": "key-mailgun-Sekr3t",
    "CORESTONE_MAILGUN_WEBHOOK_SIGNING_KEY": "mg-signing-Sekr3t",
    "CORESTONE_SES_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/ses-Sekr3t",
    "CORESTONE_SES_SESSION_TOKEN": "ses-token-Sekr3t",
}
ALL_PROVIDERS = {
    "CORESTONE_EMAIL_PROVIDERS": "smtp,sendgrid,mailgun,ses,file",
    "CORESTONE_SMTP_URL": "smtp://mailer:smtp-Sekr3t@127.0.0.1:2525",
    "CORESTONE_MAILGUN_DOMAIN": "mg.example.com",
    "CORESTONE_SES_REGION": "eu-west-1",
    "CORESTONE_SES_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    **SECRETS,
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove any CORESTONE_* variable of the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("CORESTONE_"):
            monkeypatch.delenv(name)


def _error(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str:
    for name, value in variables.items():
        monkeypatch.setenv(f"CORESTONE_{name.upper()}", value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    return caught.value.message


def _public_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def test_nothing_set_means_the_file_provider_under_var_mail() -> None:
    """The embedded default needs no configuration: files under var/mail, failover."""
    settings = load_settings()

    assert settings.email_providers == (ProviderChoice("file"),)
    assert settings.email_file_dir == "var/mail"
    assert settings.email_rate_limits == {}
    assert settings.model_dump()["email_providers"] == "file"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("smtp", (ProviderChoice("smtp"),)),
        ("smtp,sendgrid", (ProviderChoice("smtp"), ProviderChoice("sendgrid"))),
        (" SMTP , SendGrid ", (ProviderChoice("smtp"), ProviderChoice("sendgrid"))),
        ("smtp:3,sendgrid:1", (ProviderChoice("smtp", 3), ProviderChoice("sendgrid", 1))),
        ("sendgrid : 1000", (ProviderChoice("sendgrid", 1000),)),
        ("", (ProviderChoice("file"),)),
    ],
)
def test_the_providers_setting_reads_order_and_weights(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: tuple[ProviderChoice, ...]
) -> None:
    """Names in order (failover) or name:weight (weighted), case and blanks forgiven."""
    monkeypatch.setenv("CORESTONE_EMAIL_PROVIDERS", value)
    monkeypatch.setenv("CORESTONE_SMTP_URL", "smtp://127.0.0.1:25")
    monkeypatch.setenv("CORESTONE_SENDGRID_API_KEY", "SG.key")

    settings = load_settings()

    assert settings.email_providers == expected
    # The dump spells the value back in the grammar, and reads back as the same choices.
    monkeypatch.setenv("CORESTONE_EMAIL_PROVIDERS", settings.model_dump()["email_providers"])
    assert load_settings().email_providers == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("postmark", "'postmark' is not a provider; expected one of file, mailgun, sendgrid"),
        ("memory", "'memory' is not a provider"),
        ("file,file", "file is listed twice; name each provider once"),
        ("file, FILE", "file is listed twice"),
        ("file,", "entry 2 is empty"),
        (",file", "entry 1 is empty"),
        ("file:2,smtp", "mixes weighted and unweighted entries"),
        ("file:0", "file's weight '0' is not a whole number from 1 to 1000"),
        ("file:-1", "file's weight '-1' is not a whole number"),
        ("file:1001", "file's weight '1001' is not a whole number"),
        ("file:1.5", "file's weight '1.5'"),
        ("file:", "file's weight ''"),
        ("file:٣", "file's weight '٣'"),  # an Arabic-Indic 3: isdigit() but not ASCII
        ("file\nsmtp", "is not a provider"),
        ("x" * 500, "'" + "x" * 39 + "…' is not a provider"),
    ],
)
def test_a_bad_providers_value_names_the_variable_and_the_rule(
    monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    """Unknown names, duplicates, empty entries, mixed or bad weights each say what is wrong."""
    message = _error(monkeypatch, email_providers=value)

    assert message.startswith("CORESTONE_EMAIL_PROVIDERS=")
    assert problem in message
    assert "e.g. CORESTONE_EMAIL_PROVIDERS=smtp,sendgrid" in message
    assert len(message) < 600  # a hostile value never floods the error


@pytest.mark.parametrize(
    ("providers", "needs"),
    [
        ("smtp", ["CORESTONE_SMTP_URL"]),
        ("sendgrid", ["CORESTONE_SENDGRID_API_KEY"]),
        ("mailgun", ["CORESTONE_MAILGUN_API_KEY and CORESTONE_MAILGUN_DOMAIN"]),
        ("ses", ["CORESTONE_SES_REGION"]),
        ("smtp:1,sendgrid:2", ["CORESTONE_SMTP_URL", "CORESTONE_SENDGRID_API_KEY"]),
    ],
)
def test_a_provider_listed_without_its_credentials_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, providers: str, needs: list[str]
) -> None:
    """Each listed provider's missing settings are named, one line per provider."""
    message = _error(monkeypatch, email_providers=providers)

    lines = message.splitlines()
    assert len(lines) == len(needs)
    for line, need in zip(lines, needs, strict=True):
        assert line.startswith("CORESTONE_EMAIL_PROVIDERS lists ")
        assert line.endswith(f", which needs {need}")


def test_an_empty_credential_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """KEY= (exported but empty) is not a key: the provider is still refused for lacking one."""
    message = _error(monkeypatch, email_providers="sendgrid", sendgrid_api_key="  ")

    assert message == (
        "CORESTONE_EMAIL_PROVIDERS lists sendgrid, which needs CORESTONE_SENDGRID_API_KEY"
    )


def test_every_provider_configured_reads_its_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """With each provider's variables set, each reaches its typed setting."""
    for name, value in ALL_PROVIDERS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CORESTONE_MAILGUN_REGION", "eu")
    monkeypatch.setenv("CORESTONE_EMAIL_RATE_LIMITS", "sendgrid=100, ses=0.5")

    settings = load_settings()

    assert [choice.name for choice in settings.email_providers] == [
        "smtp",
        "sendgrid",
        "mailgun",
        "ses",
        "file",
    ]
    assert settings.sendgrid_api_key is not None
    assert settings.sendgrid_api_key.get_secret_value() == SECRETS["CORESTONE_SENDGRID_API_KEY"]
    assert settings.mailgun_region == "eu"
    assert settings.ses_region == "eu-west-1"
    assert settings.email_rate_limits == {"sendgrid": 100.0, "ses": 0.5}


def test_no_representation_of_settings_shows_a_provider_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """repr, str, model_dump and its JSON mask every email credential (and the SMTP password)."""
    for name, value in ALL_PROVIDERS.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()

    shown = [repr(settings), str(settings), str(settings.model_dump()), settings.model_dump_json()]
    for text in shown:
        for secret in [*SECRETS.values(), "smtp-Sekr3t"]:
            assert secret not in text


@pytest.mark.parametrize(
    "variable",
    ["sendgrid_api_key", "mailgun_api_key", "ses_secret_access_key", "mailgun_webhook_signing_key"],
)
def test_a_secret_is_never_echoed_in_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """A secret set where its type is wrong still shows as '***' in the error, never itself."""
    secret = "Sekr3t-" + "x" * 10
    with pytest.raises(ValidationError) as caught:
        Settings(**{variable: ["not", "a", "string", secret]})  # type: ignore[arg-type]
    assert secret not in str(caught.value)

    # And in load_settings' own lines, next to another problem that is shown.
    message = _error(monkeypatch, email_providers="sendgrid,bogus", **{variable: secret})
    assert secret not in message


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("ses_region", "evil.example/", "is not an AWS region such as eu-west-1"),
        ("ses_region", "eu-west-1.attacker.com", "is not an AWS region"),
        ("ses_access_key_id", "AKIA short", "is not an AWS access key id"),
        ("ses_configuration_set", "a/b", "must be 1-64 letters"),
        ("mailgun_domain", "mg.example.com/../v4", "is not a domain name"),
        ("mailgun_domain", "mg example", "is not a domain name"),
        ("mailgun_region", "ap", "must be one of 'us' or 'eu'"),
        ("sendgrid_base_url", "ftp://api.sendgrid.com", "is not an http:// or https:// URL"),
        ("sendgrid_base_url", "https://u:p@api.sendgrid.com", "without user, query or fragment"),
        ("ses_endpoint_url", "https://email.eu-west-1.amazonaws.com:x", "a port must be a number"),
        ("email_file_dir", "", "must be at least 1 characters"),
    ],
)
def test_values_that_go_into_request_urls_are_checked(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, problem: str
) -> None:
    """Regions, domains and base URLs that would change the host or path asked are refused."""
    message = _error(monkeypatch, **{variable: value})

    assert message.startswith(f"CORESTONE_{variable.upper()}=")
    assert problem in message
    assert "p@api" not in message  # the URL's password is masked like every URL's


def test_a_sendgrid_webhook_key_must_be_an_ec_public_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The verification key is checked by the webhook's own parser: base64 DER of an EC key."""
    assert Settings(sendgrid_webhook_public_key=_public_key()).sendgrid_webhook_public_key

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    rsa_der = rsa_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for bad in ["not base64!", base64.b64encode(rsa_der).decode()]:
        message = _error(monkeypatch, sendgrid_webhook_public_key=bad)
        assert message.startswith("CORESTONE_SENDGRID_WEBHOOK_PUBLIC_KEY='***': ")
        assert "not a SendGrid verification key" in message


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("sendgrid", "entry 'sendgrid' has no '='"),
        ("file=0", "file's limit '0' is not a positive number"),
        ("file=-3", "file's limit '-3'"),
        ("file=inf", "file's limit 'inf'"),
        ("file=nan", "file's limit 'nan'"),
        ("file=lots", "file's limit 'lots'"),
        ("file=1,file=2", "file is listed twice"),
        ("postmark=5", "'postmark' is not a provider"),
        ("file=1,", "entry 2 is empty"),
    ],
)
def test_a_bad_rate_limit_names_the_variable_and_the_rule(
    monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    """A limit is name=positive messages per second, once per known provider."""
    message = _error(monkeypatch, email_rate_limits=value)

    assert message.startswith("CORESTONE_EMAIL_RATE_LIMITS=")
    assert problem in message


def test_a_rate_limit_for_a_provider_not_listed_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Limiting a provider that does not send is a typo or a leftover: start-up says so."""
    message = _error(monkeypatch, email_rate_limits="sendgrid=10")

    assert message == (
        "CORESTONE_EMAIL_RATE_LIMITS limits sendgrid, which CORESTONE_EMAIL_PROVIDERS does not list"
    )


def test_keyword_arguments_follow_the_same_rules() -> None:
    """Settings(...) in code reads lists and dicts as the environment's strings are read."""
    settings = Settings(
        email_providers=["file:2"],  # type: ignore[arg-type]
        email_rate_limits={"file": 5},
    )
    assert settings.email_providers == (ProviderChoice("file", 2),)
    assert settings.email_rate_limits == {"file": 5.0}
    with pytest.raises(ValidationError, match="not a provider"):
        Settings(email_rate_limits={"nope": 1})


@pytest.mark.parametrize(
    "keys",
    [{"ses_access_key_id": "AKIAIOSFODNN7EXAMPLE"}, {"ses_secret_access_key": "Sekr3t-only"}],
)
def test_ses_keys_come_as_a_pair_or_not_at_all(keys: dict[str, str]) -> None:
    """One SES key without the other is a mistake, refused naming both variables; with
    neither, botocore's default chain finds the credentials (a role, the environment)."""
    with pytest.raises(ValidationError) as caught:
        Settings(email_providers="ses", ses_region="eu-west-1", **keys)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "CORESTONE_SES_ACCESS_KEY_ID and CORESTONE_SES_SECRET_ACCESS_KEY go together" in message
    assert "Sekr3t-only" not in message
    chain = Settings(email_providers="ses", ses_region="eu-west-1")  # type: ignore[arg-type]
    assert chain.ses_access_key_id is None
