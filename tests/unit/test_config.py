"""Settings: defaults, the CORESTONE_ environment, and the start-up error for bad values."""

from __future__ import annotations

import os
import re

import pytest

from corestone.config import Settings, load_settings, redact_url
from corestone.errors import ConfigurationError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove any CORESTONE_* variable of the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("CORESTONE_"):
            monkeypatch.delenv(name)


KEY = "k" * 32


def _configuration_error(**overrides: object) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(**overrides)
    return caught.value


def test_defaults_need_no_configuration() -> None:
    """With nothing set, settings describe the embedded single-process setup."""
    settings = load_settings()

    assert settings.env == "dev"
    assert settings.database_url == "sqlite+aiosqlite:///./var/corestone.db"
    assert settings.database_replica_urls == []
    assert settings.redis_url is None
    assert settings.broker_url is None
    assert settings.smtp_url is None
    assert settings.log_format is None
    assert settings.log_level == "info"
    assert settings.database_pool_size == 20
    assert settings.database_max_overflow == 0
    assert settings.http_max_body_bytes == 1_048_576


def test_settings_are_immutable() -> None:
    """A built Settings cannot be changed in place."""
    settings = Settings()

    with pytest.raises(ValueError, match="frozen"):
        settings.env = "prod"  # type: ignore[misc]


def test_environment_variables_with_the_prefix_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """CORESTONE_<NAME> sets the field <name>, converted to its type."""
    monkeypatch.setenv("CORESTONE_ENV", "prod")
    monkeypatch.setenv("CORESTONE_SECRET_KEY", KEY)
    monkeypatch.setenv("CORESTONE_DATABASE_URL", "postgresql+asyncpg://app:pw@db:5432/app")
    monkeypatch.setenv("CORESTONE_DATABASE_POOL_SIZE", "25")
    monkeypatch.setenv("CORESTONE_DATABASE_POOL_PING_IDLE_SECONDS", "5")
    monkeypatch.setenv("CORESTONE_REDIS_URL", "redis://cache:6379/0")
    monkeypatch.setenv("CORESTONE_BROKER_URL", "nats://broker:4222")
    monkeypatch.setenv("CORESTONE_SMTP_URL", "smtp://u:p@mail:587?starttls=true")
    monkeypatch.setenv("CORESTONE_LOG_LEVEL", "debug")

    settings = load_settings()

    assert settings.env == "prod"
    assert settings.database_url == "postgresql+asyncpg://app:pw@db:5432/app"
    assert settings.database_pool_size == 25
    assert settings.database_pool_ping_idle_seconds == 5
    assert settings.redis_url == "redis://cache:6379/0"
    assert settings.broker_url == "nats://broker:4222"
    assert settings.smtp_url == "smtp://u:p@mail:587?starttls=true"
    assert settings.log_level == "debug"


def test_variables_without_the_prefix_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bare DATABASE_URL (another program's variable) does not configure corestone."""
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://other@elsewhere/db")

    assert load_settings().database_url == "sqlite+aiosqlite:///./var/corestone.db"


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keyword overrides given to load_settings beat environment variables."""
    monkeypatch.setenv("CORESTONE_ENV", "prod")

    assert load_settings(env="test").env == "test"


def test_replica_urls_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    """CORESTONE_DATABASE_REPLICA_URLS splits on commas, trimming blanks and empty parts."""
    monkeypatch.setenv(
        "CORESTONE_DATABASE_REPLICA_URLS",
        " postgresql+asyncpg://ro@r1/app , postgresql+asyncpg://ro@r2/app,,",
    )

    assert load_settings().database_replica_urls == [
        "postgresql+asyncpg://ro@r1/app",
        "postgresql+asyncpg://ro@r2/app",
    ]


def test_empty_replica_variable_means_no_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty replica variable gives an empty list, not one empty URL."""
    monkeypatch.setenv("CORESTONE_DATABASE_REPLICA_URLS", "")

    assert load_settings().database_replica_urls == []


def test_empty_optional_urls_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty CORESTONE_REDIS_URL is the same as not setting it."""
    monkeypatch.setenv("CORESTONE_REDIS_URL", "")

    assert load_settings().redis_url is None


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("CORESTONE_DATABASE_POOL_SIZE", "lots", "must be a whole number"),
        ("CORESTONE_DATABASE_POOL_SIZE", "0", "must be at least 1"),
        ("CORESTONE_DATABASE_POOL_TIMEOUT_SECONDS", "soon", "must be a number"),
        ("CORESTONE_DATABASE_POOL_TIMEOUT_SECONDS", "0", "must be greater than 0"),
        ("CORESTONE_DATABASE_POOL_PING_IDLE_SECONDS", "-1", "must be at least 0"),
        ("CORESTONE_HTTP_MAX_BODY_BYTES", "2000000000", "must be at most 1073741824"),
        ("CORESTONE_ENV", "staging", "must be one of 'dev', 'test' or 'prod'"),
        ("CORESTONE_LOG_FORMAT", "xml", "must be one of 'console' or 'json'"),
        ("CORESTONE_DATABASE_URL", "mysql://db/app", "has scheme 'mysql'"),
        ("CORESTONE_DATABASE_URL", "db.example.com/app", "is not a database URL"),
        ("CORESTONE_DATABASE_URL", "postgresql+asyncpg://db:port/app", "is not a valid URL"),
        ("CORESTONE_REDIS_URL", "http://cache:6379", "expected redis:// or rediss:// or unix://"),
        ("CORESTONE_BROKER_URL", "kafka://broker", "has scheme 'kafka'"),
        ("CORESTONE_SMTP_URL", "mail.example.com:25", "expected smtp:// or smtps://"),
        ("CORESTONE_DATABASE_REPLICA_URLS", "sqlite+aiosqlite:///r.db", "postgresql+asyncpg://"),
    ],
)
def test_a_bad_value_names_the_variable_the_problem_and_an_example(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, problem: str
) -> None:
    """The error is one line naming CORESTONE_<NAME>, what is wrong, and an example value."""
    monkeypatch.setenv(variable, value)

    message = _configuration_error().message

    assert len(message.splitlines()) == 1
    assert message.startswith(f"{variable}=")
    assert problem in message
    assert f"(e.g. {variable}=" in message


def test_every_bad_variable_gets_exactly_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several bad variables give one line each, and good ones are not mentioned."""
    monkeypatch.setenv("CORESTONE_ENV", "staging")
    monkeypatch.setenv("CORESTONE_DATABASE_POOL_SIZE", "lots")
    monkeypatch.setenv("CORESTONE_REDIS_URL", "http://cache")
    monkeypatch.setenv("CORESTONE_LOG_LEVEL", "debug")

    lines = _configuration_error().message.splitlines()

    named = sorted(re.findall(r"^CORESTONE_[A-Z_]+", "\n".join(lines), re.MULTILINE))
    assert named == ["CORESTONE_DATABASE_POOL_SIZE", "CORESTONE_ENV", "CORESTONE_REDIS_URL"]
    assert all("e.g." in line for line in lines)


def test_several_errors_in_one_variable_stay_on_one_line() -> None:
    """Two bad items of the replica list are reported on the variable's single line."""
    lines = _configuration_error(database_replica_urls=[1, 2]).message.splitlines()

    assert len(lines) == 1
    assert lines[0].startswith("CORESTONE_DATABASE_REPLICA_URLS")
    assert "item 0" in lines[0]
    assert "item 1" in lines[0]


def test_the_error_is_a_configuration_error_not_a_validation_error() -> None:
    """load_settings raises ConfigurationError without pydantic's report chained to it."""
    error = _configuration_error(database_pool_size="lots")

    assert error.code == "configuration"
    assert error.__cause__ is None
    assert error.__suppress_context__


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CORESTONE_DATABASE_URL", "mysql://app:hunter2@db/app"),
        ("CORESTONE_DATABASE_URL", "postgresql+asyncpg://app:hunter2@db:port/app"),
        ("CORESTONE_REDIS_URL", "http://:hunter2@cache:6379"),
        ("CORESTONE_SMTP_URL", "ftp://user:hunter2@mail"),
        (
            "CORESTONE_DATABASE_REPLICA_URLS",
            "postgresql+asyncpg://ro:hunter1@r1/app,mysql://ro:hunter2@r2/app",
        ),
    ],
)
def test_passwords_in_bad_urls_are_redacted(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A bad URL is echoed with its password (every one, for lists) replaced by ***."""
    monkeypatch.setenv(variable, value)

    message = _configuration_error().message

    assert "hunter" not in message
    assert ":***@" in message
    assert message.startswith(variable)


def test_passwords_in_a_bad_replica_list_given_as_a_list_are_redacted() -> None:
    """A replica list passed in code is redacted item by item in the message."""
    message = _configuration_error(
        database_replica_urls=["postgresql+asyncpg://ro:hunter1@r1/app", "mysql://ro:hunter2@r2"]
    ).message

    assert "hunter" not in message
    assert message.count(":***@") == 2


@pytest.mark.parametrize(
    ("env", "log_format", "expected"),
    [
        ("dev", None, "console"),
        ("test", None, "json"),
        ("prod", None, "json"),
        ("dev", "json", "json"),
        ("prod", "console", "console"),
    ],
)
def test_effective_log_format(env: str, log_format: str | None, expected: str) -> None:
    """An explicit log format wins; otherwise dev logs for people and the rest as JSON."""
    settings = Settings(env=env, log_format=log_format, secret_key=KEY)  # type: ignore[arg-type]

    assert settings.effective_log_format == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:secret@h:5432/db?ssl=true", "postgresql://u:***@h:5432/db?ssl=true"),
        ("redis://:secret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:secret@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
        ("postgresql://u:secret@h:port/db", "postgresql://u:***@h:port/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite+aiosqlite:///./var/x.db", "sqlite+aiosqlite:///./var/x.db"),
        ("not a url", "not a url"),
        ("http://[::1", "<unparseable url>"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    """redact_url masks only the password and never raises, whatever the URL looks like."""
    assert redact_url(url) == expected


def test_unknown_corestone_variable_is_an_error_with_a_suggestion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A misspelled CORESTONE_ variable is refused, naming the setting it probably meant."""
    monkeypatch.setenv("CORESTONE_DATABSE_URL", "sqlite+aiosqlite:///x.db")
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert raised.value.message == (
        "CORESTONE_DATABSE_URL: no such setting; did you mean CORESTONE_DATABASE_URL?"
    )


def test_test_tooling_variables_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """CORESTONE_TEST_* variables belong to the pytest plugin and are not reported."""
    monkeypatch.setenv("CORESTONE_TEST_POSTGRES_URL", "postgresql+asyncpg://x@y/z")
    assert load_settings().env == "dev"


def test_prod_requires_a_secret_key() -> None:
    """Production refuses to start without a signing key, in one line naming the variable."""
    with pytest.raises(ConfigurationError) as raised:
        load_settings(env="prod")
    assert raised.value.message == "CORESTONE_SECRET_KEY is required when CORESTONE_ENV=prod"


def test_short_secret_key_is_refused_without_echoing_it() -> None:
    """A too-short key is refused, and the message never shows the key itself."""
    with pytest.raises(ConfigurationError) as raised:
        load_settings(secret_key="hunter2-hunter2")
    assert "hunter2" not in raised.value.message
    assert raised.value.message.startswith(
        "CORESTONE_SECRET_KEY='***': must be at least 32 characters"
    )


def test_signing_key_is_stable_per_settings_object() -> None:
    """Without a configured key one random key is used consistently by one Settings object."""
    settings = Settings()
    assert settings.signing_key == settings.signing_key
    assert len(settings.signing_key) == 32
    assert Settings(secret_key=KEY).signing_key == KEY.encode()  # type: ignore[arg-type]


def test_a_password_with_a_slash_is_read_and_masked_by_sqlalchemy_rules() -> None:
    """app:2024/Spring9@host is a password, not port 2024, and every representation masks it."""
    settings = Settings(database_url="postgresql+asyncpg://app:2024/Spring9@db.internal/app")

    assert settings.database_url.endswith(":2024/Spring9@db.internal/app")  # the real URL
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert "Spring9" not in shown
        assert "postgresql+asyncpg://app:***@db.internal/app" in shown


def test_a_replica_password_with_a_comma_is_not_split() -> None:
    """A ',' inside a replica password neither splits the list nor escapes the mask."""
    settings = load_settings(
        database_replica_urls="postgresql+asyncpg://ro:a,b@r1/app,postgresql+asyncpg://ro:c,d@r2/app"
    )

    assert settings.database_replica_urls == [
        "postgresql+asyncpg://ro:a,b@r1/app",
        "postgresql+asyncpg://ro:c,d@r2/app",
    ]
    assert settings.model_dump()["database_replica_urls"] == [
        "postgresql+asyncpg://ro:***@r1/app",
        "postgresql+asyncpg://ro:***@r2/app",
    ]


def test_a_redis_password_the_client_would_misread_is_refused_without_echoing_it() -> None:
    """A raw '/' in a Redis password is a configuration error that never shows the password."""
    with pytest.raises(ConfigurationError) as raised:
        load_settings(redis_url="redis://:se/cret9@cache:6379/0")

    assert "cret9" not in raised.value.message
    assert "percent-encode" in raised.value.message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("admin:s3cret@redis:6379", "admin:***@redis:6379"),
        ("app:s3cret@db/x", "app:***@db/x"),
        ("redis:u:s3cret@cache", "redis:***@cache"),
        ("smtp:/u:s3cret@mail", "smtp:***@mail"),
        ("mail bob@example.com at 10:30", "mail bob@example.com at 10:30"),
    ],
)
def test_a_url_without_its_scheme_or_slashes_is_masked(url: str, expected: str) -> None:
    """A URL missing 'scheme://' still has everything from its first ':' to its last '@' masked."""
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    "overrides",
    [
        {"redis_url": "admin:s3cret@redis:6379"},
        {"database_url": "app:s3cret@db/x"},
        {"database_replica_urls": "app:s3cret@r1/x"},
        {"smtp_url": "u:s3cret@mail:587"},
        {"broker_url": "nats:u:s3cret@n:4222"},
    ],
)
def test_a_url_missing_its_scheme_is_refused_without_echoing_the_password(
    overrides: dict[str, str],
) -> None:
    """A URL written without 'scheme://' is a configuration error that hides its password."""
    message = _configuration_error(**overrides).message

    assert "s3cret" not in message


@pytest.mark.parametrize(
    "overrides",
    [{"redis_url": "redis:u:s3cret@cache"}, {"smtp_url": "smtp:/u:s3cret@mail"}],
)
def test_a_url_missing_its_slashes_is_refused_not_shown(overrides: dict[str, str]) -> None:
    """'redis:u:pw@host' (no '//') is refused, not accepted and printed whole by repr()."""
    message = _configuration_error(**overrides).message

    assert "s3cret" not in message
    assert "scheme://" in message


def test_malformed_breaker_json_is_a_configuration_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CORESTONE_BREAKERS that is not JSON gives the one-line error, not a SettingsError."""
    monkeypatch.setenv("CORESTONE_BREAKERS", "{bad")

    message = _configuration_error().message

    assert message.startswith("CORESTONE_BREAKERS=")
    assert "JSON" in message
