"""Probes that prove each configured service answers, for ``corestone doctor``.

A misconfigured URL should be found by one command before a deploy, not by the first
request after it. :func:`check_services` connects to every service the settings name —
the database (and its replicas), Redis, the broker, SMTP — all at once, each bounded by
``service_check_timeout_seconds``, and reports what it found. It never raises for a
service that is down: a failure is a finding, returned as a :class:`ServiceCheck`.

Every probe does the least that proves the service is the one expected: ``SELECT 1``
through :class:`~corestone.db.Database`, a Redis ``PING``, the ``INFO`` line a NATS
server sends on connect (no NATS client needed), an AMQP login for RabbitMQ, and an
SMTP EHLO with STARTTLS and login when the URL asks for them. Nothing is written,
except that a SQLite file (and its folder) is created if missing, as
:meth:`Database.start` does for the service itself.

URLs and reasons in the results have passwords masked, so they are safe to print.

:func:`email_report` describes the email configuration without connecting anywhere:
which providers, in which strategy, where each sends, and the webhook keys that are
missing for them. It never prints a key: a listed provider's credentials are known to be
set (the settings refuse one without them), so only their absence is news.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from corestone._email_settings import REQUIRED_SETTINGS, strategy_of
from corestone._extras import requires_extra
from corestone.config import ENV_PREFIX, Settings
from corestone.observability.logging import REDACTED, SecretRedactor
from corestone.observability.metrics import Metrics
from corestone.urls import redact_url, url_secrets

__all__ = ["ServiceCheck", "check_services", "email_report", "format_report"]

_MAX_REASON_CHARS = 200
_NATS_DEFAULT_PORT = 4222
_redactor = SecretRedactor()

_Probe = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ServiceCheck:
    """What probing one service found; ``url`` and ``reason`` never hold a password."""

    name: str
    url: str
    ok: bool
    latency_ms: float
    reason: str = ""

    @property
    def status(self) -> str:
        """``ok`` or ``FAIL``: upper case so a failure stands out in a column of results."""
        return "ok" if self.ok else "FAIL"


async def check_services(settings: Settings) -> list[ServiceCheck]:
    """Probe every configured service concurrently; one result each, in a fixed order.

    The order (database, replicas, redis, broker, smtp) does not depend on which answers
    first, so reports from two runs can be compared line by line.
    """
    timeout = settings.service_check_timeout_seconds
    targets: list[tuple[str, str, _Probe]] = [
        ("database", settings.database_url, _database_probe(settings.database_url, settings)),
    ]
    for number, url in enumerate(settings.database_replica_urls, start=1):
        targets.append((f"replica-{number}", url, _database_probe(url, settings)))
    if settings.redis_url:
        targets.append(("redis", settings.redis_url, _redis_probe(settings.redis_url, timeout)))
    if settings.broker_url:
        targets.append(("broker", settings.broker_url, _broker_probe(settings.broker_url, timeout)))
    if settings.smtp_url:
        targets.append(("smtp", settings.smtp_url, _smtp_probe(settings.smtp_url, timeout)))
    return list(
        await asyncio.gather(*(_check(name, url, probe, timeout) for name, url, probe in targets))
    )


def format_report(checks: Sequence[ServiceCheck]) -> list[str]:
    """One aligned line per check: status, name, URL, latency, and the reason if it failed."""
    if not checks:
        return []
    name_width = max(len(check.name) for check in checks)
    url_width = max(len(check.url) for check in checks)
    lines = []
    for check in checks:
        line = (
            f"{check.status:<4}  {check.name:<{name_width}}  {check.url:<{url_width}}"
            f"  {check.latency_ms:>7.1f} ms"
        )
        if not check.ok:
            line += f"  {check.reason}"
        lines.append(line)
    return lines


_WEBHOOK_KEYS = {
    "mailgun": "mailgun_webhook_signing_key",
    "sendgrid": "sendgrid_webhook_public_key",
}


def email_report(settings: Settings) -> list[str]:
    """Lines describing the email providers the settings configure; no secret in them.

    First ``email  <strategy>: <providers>``, then one indented line per provider (where
    it sends, its rate limit), then a note per listed provider whose webhook key is
    unset (its bounces and complaints go untracked) and per provider whose credentials
    are set but which ``CORESTONE_EMAIL_PROVIDERS`` does not list.
    """
    choices = settings.email_providers
    strategy = strategy_of(choices)
    listed = ", ".join(
        choice.name if choice.weight is None else f"{choice.name} (weight {choice.weight})"
        for choice in choices
    )
    lines = [f"email     {strategy}: {listed}"]
    width = max(len(choice.name) for choice in choices)
    for choice in choices:
        where = _email_target(settings, choice.name)
        limit = settings.email_rate_limits.get(choice.name)
        if limit is not None:
            where += f", at most {limit:g} messages/s"
        lines.append(f"  {choice.name:<{width}}  {where}")
    names = {choice.name for choice in choices}
    for name, field in _WEBHOOK_KEYS.items():
        if name in names and getattr(settings, field) is None:
            lines.append(
                f"  note: {name}'s delivery events are not tracked: "
                f"{ENV_PREFIX}{field.upper()} is not set"
            )
    for name, fields in REQUIRED_SETTINGS.items():
        if name not in names and fields and getattr(settings, fields[0]) is not None:
            lines.append(
                f"  note: {ENV_PREFIX}{fields[0].upper()} is set, but "
                f"{ENV_PREFIX}EMAIL_PROVIDERS does not list {name}"
            )
    return lines


def _email_target(settings: Settings, name: str) -> str:
    """Where provider ``name`` sends, for a person to recognise; never a credential."""
    if name == "smtp":
        return _redactor.redact_text(redact_url(settings.smtp_url or ""))
    if name == "sendgrid":
        return redact_url(settings.sendgrid_base_url or "https://api.sendgrid.com")
    if name == "mailgun":
        base = settings.mailgun_base_url
        where = redact_url(base) if base else f"region {settings.mailgun_region}"
        return f"domain {settings.mailgun_domain}, {where}"
    if name == "ses":
        where = f"region {settings.ses_region}"
        if settings.ses_endpoint_url:
            where += f", {redact_url(settings.ses_endpoint_url)}"
        if settings.ses_configuration_set:
            where += f", configuration set {settings.ses_configuration_set}"
        return where
    return f".eml files under {settings.email_file_dir}"


async def _check(name: str, url: str, probe: _Probe, limit_seconds: float) -> ServiceCheck:
    started = time.perf_counter()
    reason = ""
    try:
        async with asyncio.timeout(limit_seconds):
            await probe()
    except TimeoutError:
        reason = f"timed out after {limit_seconds:g}s"
    except Exception as error:  # noqa: BLE001 - a failed probe is a finding to report, not a crash
        reason = _first_line(error)
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    return ServiceCheck(
        name=name,
        url=_redactor.redact_text(redact_url(url)),
        ok=not reason,
        latency_ms=latency_ms,
        reason=_shorten(_redact(reason, url)),  # masked first: a cut could split a password
    )


def _database_probe(url: str, settings: Settings) -> _Probe:
    async def probe() -> None:
        # A missing extra is the finding ("needs the 'postgres' extra …"), not a crash.
        with requires_extra(__name__, "postgres", "sqlite"):
            from corestone.db import Database, PoolOptions

        # One connection is all a ping needs; the service's own pool shape is not under test.
        database = Database(
            url,
            pool=PoolOptions(
                size=1, max_overflow=0, timeout_seconds=settings.service_check_timeout_seconds
            ),
            sqlite_busy_timeout_ms=settings.database_sqlite_busy_timeout_ms,
            metrics=Metrics(),
        )
        try:
            await database.start()
            await database.ping()
        finally:
            await database.aclose()

    return probe


def _redis_probe(url: str, timeout: float) -> _Probe:
    async def probe() -> None:
        with requires_extra(__name__, "redis"):
            import redis.asyncio as redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

        # No retries: a doctor reports the first refusal instead of hiding it behind backoff.
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            if not await client.ping():
                raise ConnectionError("PING was not answered with PONG")
        finally:
            await client.aclose()

    return probe


def _broker_probe(url: str, timeout: float) -> _Probe:
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss"):
        return _redis_probe(url, timeout)
    if scheme in ("amqp", "amqps"):
        return _amqp_probe(url, timeout)
    if scheme == "memory":
        return _memory_probe
    return _nats_probe(url)


async def _memory_probe() -> None:
    """The memory broker lives in the process: nothing to reach, it is always there."""


def _amqp_probe(url: str, timeout: float) -> _Probe:
    """Open and close an AMQP connection: the server answers and takes the credentials."""

    async def probe() -> None:
        with requires_extra(__name__, "rabbitmq"):
            import aio_pika

        connection = await aio_pika.connect(url, timeout=timeout)
        await connection.close()

    return probe


def _nats_probe(url: str) -> _Probe:
    """A NATS server greets every connection with ``INFO {json}``; reading it proves one answers.

    ``tls://`` servers send the same greeting in clear before the TLS upgrade (unless
    configured for TLS first, which then shows up here as a failure).
    """

    async def probe() -> None:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(
            parts.hostname or "127.0.0.1", parts.port or _NATS_DEFAULT_PORT
        )
        try:
            line = await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if not line:
            raise ConnectionError("the server closed the connection without sending INFO")
        verb, _, payload = line.decode("utf-8", "replace").strip().partition(" ")
        try:
            info = json.loads(payload) if verb == "INFO" else None
        except ValueError:
            info = None
        if not isinstance(info, dict):
            raise ConnectionError(f"not a NATS server: it sent {line[:40]!r}, not INFO {{...}}")

    return probe


def _smtp_probe(url: str, timeout: float) -> _Probe:
    async def probe() -> None:
        with requires_extra(__name__, "smtp"):
            import aiosmtplib

        parts = urlsplit(url)
        starttls = _flag(parse_qs(parts.query).get("starttls", [""])[-1])
        implicit_tls = parts.scheme == "smtps"
        default_port = 465 if implicit_tls else 587 if starttls else 25
        client = aiosmtplib.SMTP(
            hostname=parts.hostname or "localhost",
            port=parts.port or default_port,
            use_tls=implicit_tls,
            start_tls=False,  # only when the URL asks, so the check matches what sending does
            timeout=timeout,
        )
        await client.connect()
        try:
            await client.ehlo()
            if starttls:
                await client.starttls()
            if parts.username:
                await client.login(unquote(parts.username), unquote(parts.password or ""))
            await client.quit()
        finally:
            client.close()

    return probe


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _first_line(error: BaseException) -> str:
    try:
        text = str(error).strip()
    except Exception:  # noqa: BLE001 - an error that cannot print itself is still a failure
        text = ""
    return text.splitlines()[0] if text else type(error).__name__


def _shorten(line: str) -> str:
    return line if len(line) <= _MAX_REASON_CHARS else line[: _MAX_REASON_CHARS - 1] + "…"


def _redact(text: str, url: str) -> str:
    """``text`` with the URL's password masked wherever it appears, in any spelling.

    Drivers echo the URL or the password back in their errors in ways no pattern can
    foresee, so the password itself is searched for, as every parser could read it
    (SQLAlchemy's, ``urllib``'s, up to the last ``@``), quoted and unquoted, longest
    first. A password that is also an ordinary word masks that word too: a mangled
    reason beats a leaked secret.
    """
    for secret in sorted(url_secrets(url), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return _redactor.redact_text(text)
