"""Settings: every knob of corestone, read from ``CORESTONE_*`` environment variables.

Build them with :func:`load_settings` at the edge of a program: it turns pydantic's
validation report into a :class:`ConfigurationError` with one line per bad variable,
naming it, saying what is wrong and showing a value that would be right.

Email providers and their credentials are settings too (``EMAIL_PROVIDERS``, the grammar
in :mod:`corestone._email_settings`; ``SMTP_URL``; one secret per provider): a provider
listed without what it needs stops start-up, naming the variables. API keys and signing
keys are ``SecretStr``, masked in every representation; ``.get_secret_value()`` reads one.
So is the VAPID private key of Web Push (the rules in :mod:`corestone._push_settings`).

URLs with credentials (database, replicas, Redis, broker, SMTP) stay plain ``str``
attributes, because the code that connects needs them whole and asks for them by name
(``settings.database_url``); every *representation* masks their passwords:
``repr()``, ``str()``, ``model_dump()``, ``model_dump_json()``, pydantic's validation
errors (inputs hidden) and :class:`ConfigurationError` messages. A dump is therefore not
a way to copy settings: use ``model_copy()``.
"""

from __future__ import annotations

import difflib
import json
import os
import secrets
from functools import cached_property
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from corestone._advisor_settings import AdvisorSettings
from corestone._alert_settings import AlertSettings
from corestone._email_settings import (
    EMAIL_SECRET_FIELDS,
    EMAIL_URL_FIELDS,
    REQUIRED_SETTINGS,
    EmailSettings,
)
from corestone._metrics_settings import MetricsSettings
from corestone._push_settings import PUSH_SECRET_FIELDS, PushSettings
from corestone._query_settings import QuerySettings
from corestone._system_settings import SystemSettings
from corestone.errors import ConfigurationError
from corestone.urls import parse_database_url, redact_url, split_urls

__all__ = ["ENV_PREFIX", "Settings", "load_settings", "redact_url"]

ENV_PREFIX = "CORESTONE_"
_TEST_PREFIX = ENV_PREFIX + "TEST_"
_SECRET_FIELDS = frozenset({"secret_key"}) | EMAIL_SECRET_FIELDS | PUSH_SECRET_FIELDS
_URL_FIELDS = (
    frozenset({"broker_url", "database_replica_urls", "database_url", "redis_url", "smtp_url"})
    | EMAIL_URL_FIELDS
)

_DATABASE_SCHEMES = {"sqlite+aiosqlite", "postgresql+asyncpg"}
_REDIS_SCHEMES = {"redis", "rediss", "unix"}
_BROKER_SCHEMES = {"memory", "redis", "rediss", "nats", "tls", "amqp", "amqps"}
_SMTP_SCHEMES = {"smtp", "smtps"}


class Settings(
    BaseSettings,
    EmailSettings,
    PushSettings,
    QuerySettings,
    AdvisorSettings,
    AlertSettings,
    MetricsSettings,
    SystemSettings,
):
    """The configuration of one corestone process. Immutable once built."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        frozen=True,
        validate_default=True,
        hide_input_in_errors=True,  # an input may be a URL with its password
    )

    env: Literal["dev", "test", "prod"] = Field("dev", examples=["prod"])
    log_format: Literal["console", "json"] | None = Field(
        None, description="console in dev, json otherwise", examples=["json"]
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", examples=["info"])

    database_url: str = Field(
        "sqlite+aiosqlite:///./var/corestone.db",
        examples=["postgresql+asyncpg://postgres@127.0.0.1:5432/app"],
    )
    database_replica_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        examples=["postgresql+asyncpg://ro@replica1/app,postgresql+asyncpg://ro@replica2/app"],
    )
    database_pool_size: int = Field(20, ge=1, le=1000, examples=[20])
    database_max_overflow: int = Field(
        0, ge=0, le=1000, description="0: a checkout beyond the pool waits", examples=[0]
    )
    database_pool_timeout_seconds: float = Field(10.0, gt=0, le=600, examples=[5])
    database_pool_recycle_seconds: float = Field(1800.0, gt=0, examples=[1800])
    database_pool_ping_idle_seconds: float = Field(
        30.0, ge=0, description="ping a pooled connection idle this long before use", examples=[30]
    )
    database_sqlite_busy_timeout_ms: int = Field(5000, ge=0, le=600_000, examples=[5000])

    redis_url: str | None = Field(None, examples=["redis://127.0.0.1:6379/0"])
    redis_protocol: Literal[2, 3] | None = Field(
        None,
        description="RESP version for Redis (default: redis-py's, 3 from redis-py 8)",
        examples=[3],
    )
    cache_namespace: str = Field(
        "default", pattern=r"^[A-Za-z0-9_.\-]{1,64}$", examples=["taskboard"]
    )
    cache_l1_max_entries: int = Field(10_000, ge=1, le=100_000_000, examples=[50000])
    cache_l1_max_bytes: int | None = Field(
        64 * 1024 * 1024, ge=1024, description="approximate L1 memory bound", examples=[67108864]
    )
    cache_ttl_seconds: float = Field(300.0, gt=0, le=31_536_000, examples=[60])
    cache_max_stale_seconds: float = Field(
        3600.0,
        ge=0,
        le=31_536_000,
        description="fail-safe: serve values this long past expiry",
        examples=[600],
    )
    broker_url: str | None = Field(
        None,
        description="the events broker: memory://, redis://, nats:// or amqp://",
        examples=["nats://127.0.0.1:4222"],
    )
    smtp_url: str | None = Field(None, examples=["smtp://user:secret@127.0.0.1:587?starttls=true"])

    secret_key: SecretStr | None = Field(
        None,
        min_length=32,
        description="signs pagination cursors; required in prod, random per process otherwise",
        examples=["$(python -c 'import secrets; print(secrets.token_urlsafe(32))')"],
    )

    breakers: Annotated[dict[str, dict[str, Any]], NoDecode] = Field(
        default_factory=dict,
        description="circuit breaker options: 'default' for all, or per breaker name (JSON)",
        examples=['{"default": {"wait_in_open_seconds": 10}, "database": {"minimum_calls": 50}}'],
    )
    breaker_fleet: bool = Field(
        False, description="share breaker state changes through Redis", examples=["true"]
    )
    breaker_fleet_prefix: str = Field(
        "corestone:breakers", min_length=1, examples=["myservice:breakers"]
    )

    http_max_body_bytes: int = Field(1_048_576, ge=1024, le=1_073_741_824, examples=[1048576])
    http_body_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="total time an app may wait for a request's body bytes (else 408)",
        examples=[30],
    )
    shutdown_timeout_seconds: float = Field(30.0, gt=0, le=3600, examples=[30])
    live_max_streams: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="live (SSE) streams one process serves at once; the next gets 503",
        examples=[5000],
    )
    live_max_streams_per_user: int = Field(
        32,
        ge=1,
        le=1_000_000,
        description="live streams one user may hold open in one process; the next gets 503",
        examples=[32],
    )
    live_heartbeat_seconds: float = Field(
        10.0, gt=0, le=15, description="how often a live stream gets a heartbeat", examples=[10]
    )
    component_stop_timeout_seconds: float = Field(10.0, gt=0, le=600, examples=[10])
    health_check_timeout_seconds: float = Field(2.0, gt=0, le=60, examples=[2])
    health_cache_seconds: float = Field(1.0, ge=0, le=60, examples=[1])
    service_check_timeout_seconds: float = Field(3.0, gt=0, le=60, examples=[3])

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str) -> str:
        return _require_database_url(value, _DATABASE_SCHEMES)

    @field_validator("database_replica_urls", mode="before")
    @classmethod
    def _split_replicas(cls, value: Any) -> Any:
        return split_urls(value) if isinstance(value, str) else value

    @field_validator("database_replica_urls")
    @classmethod
    def _replica_schemes(cls, value: list[str]) -> list[str]:
        for url in value:
            _require_database_url(url, {"postgresql+asyncpg"})
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        return None if not value else _require_scheme(value, _REDIS_SCHEMES)

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str | None) -> str | None:
        return None if not value else _require_scheme(value, _BROKER_SCHEMES)

    @field_validator("smtp_url")
    @classmethod
    def _smtp_scheme(cls, value: str | None) -> str | None:
        return None if not value else _require_scheme(value, _SMTP_SCHEMES)

    @field_validator("breakers", mode="before")
    @classmethod
    def _breakers_json(cls, value: Any) -> Any:
        # Decoded here, not by pydantic-settings, so bad JSON is a line of the usual
        # configuration error instead of a SettingsError naming no variable.
        # The shape is checked here too: pydantic's own errors for a decoded value would
        # echo a Python dict and name a key as a list item, not what the operator typed.
        if not isinstance(value, str):
            return value
        try:
            decoded = json.loads(value) if value.strip() else {}
        except ValueError as error:
            raise ValueError(f"is not valid JSON ({error})") from None
        if not isinstance(decoded, dict):
            raise ValueError(f"must be a JSON object, not {_json_kind(decoded)}")
        for name, options in decoded.items():
            if not isinstance(options, dict):
                raise ValueError(
                    f"breaker {name!r} must map to a JSON object of options, "
                    f"not {_json_kind(options)}"
                )
        return decoded

    @field_validator("breakers")
    @classmethod
    def _breaker_options(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from corestone.errors import InvalidInputError
        from corestone.resilience.registry import BreakerRegistry

        try:
            BreakerRegistry.from_mapping(value)
        except InvalidInputError as error:
            raise ValueError(error.message) from None
        return value

    @model_validator(mode="after")
    def _fleet_needs_redis(self) -> Settings:
        if self.breaker_fleet and not self.redis_url:
            raise ValueError("CORESTONE_BREAKER_FLEET=true needs CORESTONE_REDIS_URL")
        return self

    @model_validator(mode="after")
    def _secret_key_in_prod(self) -> Settings:
        if self.env == "prod" and self.secret_key is None:
            raise ValueError("CORESTONE_SECRET_KEY is required when CORESTONE_ENV=prod")
        return self

    @model_validator(mode="after")
    def _email_providers_have_credentials(self) -> Settings:
        problems = []
        listed = [choice.name for choice in self.email_providers]
        for name in listed:
            missing = [f for f in REQUIRED_SETTINGS[name] if getattr(self, f) is None]
            if missing:
                needs = " and ".join(f"{ENV_PREFIX}{field.upper()}" for field in missing)
                problems.append(f"{ENV_PREFIX}EMAIL_PROVIDERS lists {name}, which needs {needs}")
        keys = (self.ses_access_key_id is None, self.ses_secret_access_key is None)
        if keys[0] != keys[1]:
            problems.append(
                f"{ENV_PREFIX}SES_ACCESS_KEY_ID and {ENV_PREFIX}SES_SECRET_ACCESS_KEY go "
                "together: set both, or neither to use botocore's default credential chain"
            )
        for name in self.email_rate_limits:
            if name not in listed:
                problems.append(
                    f"{ENV_PREFIX}EMAIL_RATE_LIMITS limits {name}, which "
                    f"{ENV_PREFIX}EMAIL_PROVIDERS does not list"
                )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @field_serializer(*sorted(_URL_FIELDS))
    def _masked(self, value: str | list[str] | None) -> str | list[str] | None:
        return _mask(value)

    def __repr_args__(self) -> Any:
        # repr(), str() and rich/devtools pretty-printing all go through here.
        for name, value in super().__repr_args__():
            yield name, _mask(value) if name in _URL_FIELDS else value

    @cached_property
    def signing_key(self) -> bytes:
        """The key that signs opaque tokens such as cursors.

        Without ``secret_key`` (allowed outside prod) a random key is made per process:
        cursors then stop working across restarts and across processes.
        """
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        return secrets.token_bytes(32)

    @property
    def effective_log_format(self) -> Literal["console", "json"]:
        """The log format to use: explicit, else console in dev and JSON elsewhere."""
        if self.log_format is not None:
            return self.log_format
        return "console" if self.env == "dev" else "json"


_MAX_SHOWN_CHARS = 200
_ENCODE_HINT = "percent-encode '/', '?', '#', '@' and ',' in the password"


def _mask(value: str | list[str] | None) -> str | list[str] | None:
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, list):
        return [redact_url(item) for item in value]
    return value


_DATABASE_EXAMPLES = {
    "postgresql+asyncpg": "postgresql+asyncpg://user:password@host:5432/name",
    "sqlite+aiosqlite": "sqlite+aiosqlite:///./var/app.db",
}


def _require_database_url(url: str, allowed: set[str]) -> str:
    """Check ``url`` with SQLAlchemy's parser, the one that will read it; never echo it."""
    scheme, separator, _ = url.partition("://")
    if not separator:  # "has scheme 'none'" would leave a newcomer guessing
        expected = " or ".join(_DATABASE_EXAMPLES[s] for s in sorted(allowed))
        raise ValueError(f"is not a database URL; expected {expected}")
    _check_scheme(scheme, allowed)
    try:
        parse_database_url(url)  # reads the port as a number too (when SQLAlchemy is installed)
    except ValueError:
        raise ValueError(f"is not a valid URL (a port must be a number; {_ENCODE_HINT})") from None
    return url


def _require_scheme(url: str, allowed: set[str]) -> str:
    """Check a Redis, broker or SMTP URL as their clients read it (``urllib.parse``)."""
    if "://" not in url:  # "redis:u:pw@host" would be read as a path, and no mask is sure
        expected = " or ".join(sorted(f"{s}://" for s in allowed))
        raise ValueError(f"is not a URL of the form scheme://…; expected {expected}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ValueError(f"is not a valid URL (a port must be a number; {_ENCODE_HINT})") from None
    _check_scheme(parts.scheme, allowed)
    # These clients split the authority at the first "/", "?" or "#": an "@" after it
    # means a password they would misread (and a URL no mask could be sure about).
    if "@" in url.partition("://")[2] and "@" not in parts.netloc:
        raise ValueError(f"has an '@' outside user:password@host ({_ENCODE_HINT})")
    return url


def _json_kind(value: object) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def _check_scheme(scheme: str, allowed: set[str]) -> None:
    if scheme not in allowed:
        expected = " or ".join(sorted(f"{s}://" for s in allowed))
        raise ValueError(f"has scheme {scheme or 'none'!r}; expected {expected}")


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (``overrides`` win), or raise ConfigurationError.

    The error's message has one line per invalid variable, e.g.::

        CORESTONE_DATABASE_POOL_SIZE='lots': must be a whole number (e.g. 20)

    A ``CORESTONE_*`` variable that names no setting is an error too (a typo would
    otherwise be silently ignored); ``CORESTONE_TEST_*`` is left to test tooling.
    """
    problems = _unknown_variables()
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems.append(_describe(exc))
    if problems:
        raise ConfigurationError("\n".join(problems)) from None
    return settings


def _unknown_variables() -> list[str]:
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    lines = []
    for variable in sorted(os.environ):
        upper = variable.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known or upper.startswith(_TEST_PREFIX):
            continue
        close = difflib.get_close_matches(upper, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        lines.append(f"{variable}: no such setting{hint}")
    return lines


def _describe(exc: ValidationError) -> str:
    # One line per variable, even when pydantic reports several errors for it (list items).
    problems: dict[str, list[str]] = {}
    whole: list[str] = []
    for error in exc.errors(include_url=False):
        if not error["loc"]:  # a rule across settings; its message names the variables
            whole.append(str(error.get("ctx", {}).get("error", error["msg"])))
            continue
        field = str(error["loc"][0])
        secret = field in _SECRET_FIELDS
        shown = "'***'" if secret else _cut(repr(_redact_value(error.get("input"), field)))
        if len(error["loc"]) > 1:
            problems.setdefault(field, []).append(
                f"item {error['loc'][1]} = {shown}: {_problem(error)}"
            )
        else:
            problems.setdefault(field, []).append(f"{shown}: {_problem(error)}")
    lines = []
    for field, found in problems.items():
        info = Settings.model_fields.get(field)
        example = info.examples[0] if info is not None and info.examples else None
        hint = f" (e.g. {ENV_PREFIX}{field.upper()}={example})" if example is not None else ""
        separator = "=" if not found[0].startswith("item ") else ": "
        lines.append(f"{ENV_PREFIX}{field.upper()}{separator}{'; '.join(found)}{hint}")
    return "\n".join(lines + whole)


def _cut(shown: str) -> str:
    # Masked before cut, so a cut never leaves part of a password; a hostile value of
    # any length still gives one readable line.
    return shown if len(shown) <= _MAX_SHOWN_CHARS else shown[: _MAX_SHOWN_CHARS - 1] + "…"


def _redact_value(value: object, field: str) -> object:
    # A comma-separated list of URLs (the replicas) has one password per URL; any other
    # value is shown as typed (empty entries included), a URL in it masked all the same.
    if isinstance(value, str) and field in _URL_FIELDS:
        return ",".join(redact_url(part) for part in split_urls(value)) if value else value
    if isinstance(value, str):
        return redact_url(value) if value else value
    if isinstance(value, list | tuple):
        return [_redact_value(item, field) for item in value]
    return value


def _problem(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    readable = {
        "int_parsing": "must be a whole number",
        "float_parsing": "must be a number",
        "bool_parsing": "must be true or false",
        "literal_error": f"must be one of {ctx.get('expected', '')}",
        "greater_than": f"must be greater than {ctx.get('gt')}",
        "greater_than_equal": f"must be at least {ctx.get('ge')}",
        "less_than": f"must be less than {ctx.get('lt')}",
        "less_than_equal": f"must be at most {ctx.get('le')}",
        "string_too_short": f"must be at least {ctx.get('min_length')} characters",
        "too_short": f"must be at least {ctx.get('min_length')} characters",
    }
    return readable.get(kind, str(error["msg"]).lower())
