"""VAPID keys from settings and from `corestone push keys`: forms, rules, secrets hidden."""

from __future__ import annotations

import base64
import json
import os
import time

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from typer.testing import CliRunner

from corestone.cli import app
from corestone.config import Settings, load_settings
from corestone.errors import ConfigurationError
from corestone.push import VapidKeys
from corestone.push.vapid import b64url_decode, parse_private_key

SUBJECT = "mailto:ops@example.com"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove any CORESTONE_* variable of the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("CORESTONE_"):
            monkeypatch.delenv(name)


def _pem(key: ec.EllipticCurvePrivateKey, form: serialization.PrivateFormat) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, form, serialization.NoEncryption()
    ).decode()


def test_raw_and_pem_forms_give_the_same_key_and_browser_key() -> None:
    """base64url of the 32 bytes, PKCS#8 PEM, SEC 1 PEM and PEM with \\n escapes (one
    environment line) are the same key; the public key is the 65-byte uncompressed point."""
    keys = VapidKeys.generate(SUBJECT)
    key = parse_private_key(keys.private_key_text())
    forms = [
        keys.private_key_text(),
        _pem(key, serialization.PrivateFormat.PKCS8),
        _pem(key, serialization.PrivateFormat.TraditionalOpenSSL),
        _pem(key, serialization.PrivateFormat.PKCS8).replace("\n", "\\n"),
    ]

    servers = {VapidKeys.from_private_key(form, SUBJECT).application_server_key for form in forms}

    assert servers == {keys.application_server_key}
    point = b64url_decode(keys.application_server_key)
    assert len(point) == 65
    assert point[0] == 4
    assert "=" not in keys.application_server_key


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("abc", "decodes to 2 bytes"),
        ("not base64 at all!", "neither PEM nor"),
        (base64.urlsafe_b64encode(b"\xff" * 32).decode(), "out of the curve's range"),
        ("-----BEGIN PRIVATE KEY-----\\nAAAA\\n-----END PRIVATE KEY-----", "readable"),
    ],
)
def test_a_bad_private_key_is_named_without_being_quoted(text: str, problem: str) -> None:
    """Each refusal says what is wrong and never echoes the key."""
    with pytest.raises(ValueError, match=problem) as refused:
        parse_private_key(text)
    assert text not in str(refused.value)


def test_a_key_on_another_curve_is_refused() -> None:
    """VAPID is P-256 only; a P-384 PEM is refused by name."""
    other = _pem(ec.generate_private_key(ec.SECP384R1()), serialization.PrivateFormat.PKCS8)

    with pytest.raises(ValueError, match="P-256"):
        parse_private_key(other)


def test_settings_read_the_key_hide_it_and_require_a_subject(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The key is a SecretStr (never in repr or a configuration error); a key without a
    subject stops start-up naming both variables; a bad subject is named."""
    secret = VapidKeys.generate(SUBJECT).private_key_text()
    monkeypatch.setenv("CORESTONE_VAPID_PRIVATE_KEY", secret)
    with pytest.raises(ConfigurationError) as no_subject:
        load_settings()
    assert "CORESTONE_VAPID_SUBJECT" in no_subject.value.message
    assert secret not in no_subject.value.message

    monkeypatch.setenv("CORESTONE_VAPID_SUBJECT", "https://example.com/contact")
    settings = load_settings()
    assert secret not in repr(settings)
    assert secret not in settings.model_dump_json()
    keys = VapidKeys.from_settings(settings)
    assert keys.private_key_text() == secret
    assert secret not in repr(keys)
    assert settings.vapid_public_key == keys.application_server_key
    assert Settings(vapid_private_key=None).vapid_public_key is None

    monkeypatch.setenv("CORESTONE_VAPID_PRIVATE_KEY", secret[:-3])
    with pytest.raises(ConfigurationError) as bad_key:
        load_settings()
    assert "CORESTONE_VAPID_PRIVATE_KEY='***'" in bad_key.value.message
    assert secret[:-3] not in bad_key.value.message


@pytest.mark.parametrize(
    "subject",
    ["ops@example.com", "mailto:ops", "mailto:a@b@example.com", "http://example.com",
     "https://user@example.com", "https://localhost", "mailto: ops@example.com"],
)  # fmt: skip
def test_a_subject_that_is_no_contact_is_refused(subject: str) -> None:
    """Only mailto:user@domain or an https URL of a public host is a contact (RFC 8292)."""
    with pytest.raises(ValueError, match="vapid_subject"):
        Settings(vapid_subject=subject)


def test_unset_means_no_web_push_and_from_settings_says_what_to_set() -> None:
    """Empty variables are unset; VapidKeys.from_settings then names both variables."""
    settings = Settings(vapid_private_key="", vapid_subject=" ")

    with pytest.raises(ConfigurationError, match="CORESTONE_VAPID_PRIVATE_KEY"):
        VapidKeys.from_settings(settings)


def _verify(header: str, audience: str) -> dict[str, object]:
    """RFC 8292 by hand: ``vapid t=<jwt>,k=<key>``, ES256 over the JWT with k."""
    scheme, _, params = header.partition(" ")
    values = dict(part.strip().split("=", 1) for part in params.split(","))
    signing_input, _, signature = values["t"].rpartition(".")
    head, claims = (json.loads(b64url_decode(p)) for p in signing_input.split("."))
    raw = b64url_decode(signature)
    public = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), b64url_decode(values["k"])
    )
    der = encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:]))
    public.verify(der, signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    assert (scheme, head["alg"], claims["aud"]) == ("vapid", "ES256", audience)
    return dict(claims)


def test_the_authorization_header_is_an_es256_jwt_for_the_audience() -> None:
    """The token verifies against the k it carries, which is the application server key."""
    keys = VapidKeys.generate("https://example.com/contact")
    expires = int(time.time()) + 3600

    header = keys.authorization("https://push.example.net", expires)

    claims = _verify(header, "https://push.example.net")
    assert claims == {"aud": "https://push.example.net", "exp": expires, "sub": keys.subject}
    assert header.endswith(f"k={keys.application_server_key}")


def test_push_keys_prints_env_lines_that_load_back() -> None:
    """`corestone push keys` prints the two variables and the public key as a comment; the
    lines, read back as settings, give that same public key."""
    result = CliRunner().invoke(app, ["push", "keys", "--subject", SUBJECT], prog_name="corestone")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.partition("=")[0] for line in lines[:2]] == [
        "CORESTONE_VAPID_PRIVATE_KEY",
        "CORESTONE_VAPID_SUBJECT",
    ]
    values = dict(line.split("=", 1) for line in lines[:2])
    settings = Settings(
        vapid_private_key=values["CORESTONE_VAPID_PRIVATE_KEY"],
        vapid_subject=values["CORESTONE_VAPID_SUBJECT"],
    )
    public = VapidKeys.from_settings(settings).application_server_key
    assert lines[2] == f"# applicationServerKey (public): {public}"
    assert len(lines) == 3


def test_push_keys_refuses_a_bad_subject_with_exit_2() -> None:
    """A subject that is no contact is a usage error: exit 2, no key printed."""
    result = CliRunner().invoke(app, ["push", "keys", "--subject", "nobody"], prog_name="corestone")

    assert result.exit_code == 2
    assert "CORESTONE_VAPID_PRIVATE_KEY" not in result.stdout


def test_push_public_key_prints_the_configured_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """`corestone push public-key` prints the applicationServerKey of the configured key,
    and exits 2 naming the variables when none is configured."""
    keys = VapidKeys.generate(SUBJECT)
    missing = CliRunner().invoke(app, ["push", "public-key"], prog_name="corestone")
    monkeypatch.setenv("CORESTONE_VAPID_PRIVATE_KEY", keys.private_key_text())
    monkeypatch.setenv("CORESTONE_VAPID_SUBJECT", SUBJECT)

    shown = CliRunner().invoke(app, ["push", "public-key"], prog_name="corestone")

    assert missing.exit_code == 2
    assert "CORESTONE_VAPID_PRIVATE_KEY" in missing.output
    assert shown.exit_code == 0
    assert shown.stdout == keys.application_server_key + "\n"
