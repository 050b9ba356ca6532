"""`corestone doctor` run for real, as a subprocess, against real services and broken ones."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from corestone.config import Settings, load_settings
from corestone.doctor import ServiceCheck, check_services, format_report
from corestone.errors import ConfigurationError
from corestone.testing import require_service
from corestone.testing.services import services_required

SMTP_USER = "mailer"
SMTP_PASSWORD = "smtp-pw-Zq81"
NATS_URL = os.environ.get("CORESTONE_TEST_NATS_URL", "nats://127.0.0.1:4222")


@dataclass
class Run:
    """What one `corestone doctor` process printed and how it exited."""

    returncode: int
    stdout: str
    stderr: str

    def line(self, name: str) -> str:
        """The report line for service ``name`` (fails the test if there is not exactly one)."""
        found = [line for line in self.stdout.splitlines() if line.split()[1:2] == [name]]
        assert len(found) == 1, self.stdout
        return found[0]


def doctor(cwd: Path, *args: str, command: list[str] | None = None, **env: str) -> Run:
    """Run `corestone doctor` with only the given CORESTONE_* variables set."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CORESTONE_")}
    environ.update({f"CORESTONE_{key.upper()}": value for key, value in env.items()})
    argv = command or [sys.executable, "-m", "corestone.cli", "doctor"]
    done = subprocess.run(
        [*argv, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=60
    )
    return Run(done.returncode, done.stdout, done.stderr)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'fresh' / 'doctor.db'}"


class _Sink:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


def _authenticate(
    server: Any, session: Any, envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    # handled=False: aiosmtpd then sends the 535 itself (handled=True would mean we had).
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_port() -> Iterator[int]:
    """A real SMTP server (aiosmtpd) on a free port, accepting AUTH without TLS."""
    port = free_port()
    controller = Controller(
        _Sink(),
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def nats_url() -> str:
    """A reachable NATS server (skipped locally, required under CI=true)."""
    parts = urlsplit(NATS_URL)

    async def probe() -> None:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, parts.port or 4222), 5
        )
        try:
            greeting = await asyncio.wait_for(reader.readline(), 5)
            assert greeting.startswith(b"INFO "), greeting
        finally:
            writer.close()
            await writer.wait_closed()

    require_service("NATS", probe)
    return NATS_URL


def test_fresh_sqlite_file_passes(tmp_path: Path, sqlite_url: str) -> None:
    """With only a new SQLite file, the installed console script reports it ok and exits 0."""
    script = Path(sys.executable).with_name("corestone")
    run = doctor(tmp_path, command=[str(script), "doctor"], database_url=sqlite_url)
    assert run.returncode == 0, run
    assert run.stdout.splitlines() == [
        run.line("database"),
        "email     failover: file",
        "  file  .eml files under var/mail",
    ]
    assert run.line("database").split()[:3] == ["ok", "database", sqlite_url]
    assert run.line("database").endswith(" ms")


def test_a_provider_listed_without_its_key_exits_2_naming_the_variable(
    tmp_path: Path, sqlite_url: str
) -> None:
    """CORESTONE_EMAIL_PROVIDERS=sendgrid without its key is a configuration error (exit 2)."""
    run = doctor(
        tmp_path,
        database_url=sqlite_url,
        email_providers="sendgrid",
        mailgun_api_key="key-Sekr3t-mailgun",
    )
    assert run.returncode == 2, run
    assert "CORESTONE_EMAIL_PROVIDERS lists sendgrid, which needs CORESTONE_SENDGRID_API_KEY" in (
        run.stderr + run.stdout
    )
    assert "Sekr3t" not in run.stderr + run.stdout


def test_postgres_passes(tmp_path: Path, postgres_url: str) -> None:
    """A real PostgreSQL database is reported ok."""
    run = doctor(tmp_path, database_url=postgres_url)
    assert run.returncode == 0, run
    assert run.line("database").startswith("ok ")


def test_redis_passes(tmp_path: Path, sqlite_url: str, redis_url: str) -> None:
    """A real Redis answers PING and is reported ok next to the database."""
    run = doctor(tmp_path, database_url=sqlite_url, redis_url=redis_url)
    assert run.returncode == 0, run
    assert run.line("redis").split()[:3] == ["ok", "redis", redis_url]


def test_nats_broker_passes(tmp_path: Path, sqlite_url: str, nats_url: str) -> None:
    """A real NATS server's INFO greeting makes the broker ok."""
    run = doctor(tmp_path, database_url=sqlite_url, broker_url=nats_url)
    assert run.returncode == 0, run
    assert run.line("broker").split()[:3] == ["ok", "broker", nats_url]


def test_redis_broker_passes(tmp_path: Path, sqlite_url: str, redis_url: str) -> None:
    """A redis:// broker is checked with PING and reported ok."""
    run = doctor(tmp_path, database_url=sqlite_url, broker_url=redis_url)
    assert run.returncode == 0, run
    assert run.line("broker").startswith("ok ")


AMQP_URL = os.environ.get("CORESTONE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def test_rabbitmq_broker_passes_and_a_wrong_password_fails(tmp_path: Path, sqlite_url: str) -> None:
    """An amqp:// broker is checked by logging in: ok with guest/guest, FAIL with a wrong
    password (masked in the report); a memory:// broker is always ok."""
    if not _port_open(urlsplit(AMQP_URL)):
        if services_required():
            pytest.fail("RabbitMQ is not running (CI=true: services are required)")
        pytest.skip("RabbitMQ is not running")
    run = doctor(tmp_path, database_url=sqlite_url, broker_url=AMQP_URL)
    assert run.returncode == 0, run
    assert run.line("broker").startswith("ok ")

    wrong = AMQP_URL.replace("guest:guest", "guest:n0t-the-password")
    run = doctor(tmp_path, database_url=sqlite_url, broker_url=wrong)
    assert run.returncode != 0
    assert run.line("broker").startswith("FAIL")
    assert "n0t-the-password" not in run.stdout

    run = doctor(tmp_path, database_url=sqlite_url, broker_url="memory://")
    assert run.returncode == 0, run
    assert run.line("broker").startswith("ok ")


def _port_open(parts: Any) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((parts.hostname, parts.port or 5672)) == 0


def test_smtp_with_login_passes(tmp_path: Path, sqlite_url: str, smtp_port: int) -> None:
    """A real SMTP server that accepts the URL's credentials is reported ok."""
    url = f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{smtp_port}"
    run = doctor(tmp_path, database_url=sqlite_url, smtp_url=url)
    assert run.returncode == 0, run
    shown = f"smtp://{SMTP_USER}:***@127.0.0.1:{smtp_port}"
    assert run.line("smtp").split()[:3] == ["ok", "smtp", shown]


def test_smtp_wrong_password_fails(tmp_path: Path, sqlite_url: str, smtp_port: int) -> None:
    """A rejected SMTP login is a FAIL with the server's answer, exit 1."""
    url = f"smtp://{SMTP_USER}:not-the-password@127.0.0.1:{smtp_port}"
    run = doctor(tmp_path, database_url=sqlite_url, smtp_url=url)
    assert run.returncode == 1, run
    assert run.line("smtp").startswith("FAIL ")
    assert "535" in run.line("smtp")
    assert "not-the-password" not in run.stdout + run.stderr


def test_smtp_starttls_unsupported_fails(tmp_path: Path, sqlite_url: str, smtp_port: int) -> None:
    """Asking for STARTTLS from a server that does not offer it is a FAIL."""
    url = f"smtp://127.0.0.1:{smtp_port}?starttls=true"
    run = doctor(tmp_path, database_url=sqlite_url, smtp_url=url)
    assert run.returncode == 1, run
    assert "STARTTLS" in run.line("smtp").split(" ms  ", 1)[1].upper()


def test_closed_redis_port_fails(tmp_path: Path, sqlite_url: str) -> None:
    """A Redis URL on a closed port is a FAIL line and exit 1, while the database stays ok."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    run = doctor(tmp_path, database_url=sqlite_url, redis_url=url)
    assert run.returncode == 1, run
    assert run.line("redis").startswith("FAIL ")
    assert run.line("database").startswith("ok ")
    assert "Traceback" not in run.stderr


def test_missing_postgres_database_fails(tmp_path: Path, postgres_url: str) -> None:
    """A PostgreSQL URL naming a database that does not exist is a FAIL that says so."""
    url = make_url(postgres_url).set(database="cs_doctor_no_such_db")
    run = doctor(tmp_path, database_url=url.render_as_string(hide_password=False))
    assert run.returncode == 1, run
    assert run.line("database").startswith("FAIL ")
    assert "does not exist" in run.line("database")


def test_passwords_are_never_printed(tmp_path: Path, postgres_url: str, smtp_port: int) -> None:
    """Passwords in every URL stay out of the output, on success and on failure alike."""
    secret = "Sekr3t-doctor-pw"
    database = make_url(postgres_url).set(password=secret).render_as_string(hide_password=False)
    run = doctor(
        tmp_path,
        database_url=database,
        redis_url=f"redis://:{secret}@127.0.0.1:{free_port()}/0",
        broker_url=f"nats://user:{secret}@127.0.0.1:{free_port()}",
        smtp_url=f"smtp://{SMTP_USER}:{secret}@127.0.0.1:{smtp_port}",
    )
    assert run.returncode == 1, run
    assert secret not in run.stdout + run.stderr
    for name in ("database", "redis", "broker", "smtp"):
        assert ":***@" in run.line(name)


def test_silent_server_times_out(tmp_path: Path, sqlite_url: str) -> None:
    """A server that accepts but never speaks is a FAIL that says it timed out."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        run = doctor(
            tmp_path,
            database_url=sqlite_url,
            broker_url=f"nats://127.0.0.1:{port}",
            service_check_timeout_seconds="0.5",
        )
    assert run.returncode == 1, run
    assert run.line("broker").startswith("FAIL ")
    assert run.line("broker").endswith("timed out after 0.5s")


def test_non_nats_server_fails(tmp_path: Path, sqlite_url: str, smtp_port: int) -> None:
    """A nats:// URL that reaches some other server (here SMTP) is a FAIL, not ok."""
    run = doctor(tmp_path, database_url=sqlite_url, broker_url=f"nats://127.0.0.1:{smtp_port}")
    assert run.returncode == 1, run
    assert "not a NATS server" in run.line("broker")


def test_invalid_setting_exits_2(tmp_path: Path) -> None:
    """An invalid setting is one line naming the variable on stderr, exit 2, no traceback."""
    run = doctor(tmp_path, database_pool_size="lots")
    assert run.returncode == 2, run
    assert run.stdout == ""
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("configuration error: CORESTONE_DATABASE_POOL_SIZE")
    assert "Traceback" not in run.stderr


def test_no_arguments_shows_help(tmp_path: Path) -> None:
    """`corestone` alone lists its commands instead of doing anything."""
    run = doctor(tmp_path, command=[sys.executable, "-m", "corestone.cli"])
    assert "doctor" in run.stdout + run.stderr
    assert "Traceback" not in run.stderr


async def test_api_checks_every_service_in_order(
    tmp_path: Path, postgres_url: str, redis_url: str, smtp_port: int
) -> None:
    """check_services returns one ok result per configured service, in a fixed order."""
    settings = load_settings(
        database_url=postgres_url,
        database_replica_urls=[postgres_url],
        redis_url=redis_url,
        broker_url=redis_url,
        smtp_url=f"smtp://127.0.0.1:{smtp_port}",
    )
    checks = await check_services(settings)
    assert [check.name for check in checks] == [
        "database",
        "replica-1",
        "redis",
        "broker",
        "smtp",
    ]
    assert all(check.ok and check.reason == "" for check in checks), checks


async def test_api_reports_failure_without_raising(tmp_path: Path, sqlite_url: str) -> None:
    """A refused connection comes back as a failed ServiceCheck with a reason, not an exception."""
    url = f"redis://:pw-in-url@127.0.0.1:{free_port()}/0"
    checks = await check_services(load_settings(database_url=sqlite_url, redis_url=url))
    redis_check = checks[1]
    assert isinstance(redis_check, ServiceCheck)
    assert (redis_check.name, redis_check.ok, redis_check.status) == ("redis", False, "FAIL")
    assert redis_check.url == url.replace("pw-in-url", "***")
    assert redis_check.reason
    assert "pw-in-url" not in redis_check.reason


HOSTILE_PASSWORDS = (
    "se/cret9",
    "2024/Spring9",
    "p?ss#w0rd",
    "a,b",
    "p@ss",
    "%2F",
    "pässwörd-秘密-✓",
    "my secret pass",
    "semi;colon'quote\"",
)


def _hostile_settings(password: str, port: int) -> dict[str, str]:
    host = f"127.0.0.1:{port}"
    return {
        "database_url": f"postgresql+asyncpg://app:{password}@{host}/db",
        "database_replica_urls": (
            f"postgresql+asyncpg://ro:{password}@{host}/db,"
            f"postgresql+asyncpg://ro2:{password}@{host}/db"
        ),
        "redis_url": f"redis://:{password}@{host}/0",
        "broker_url": f"nats://user:{password}@{host}",
        "smtp_url": f"smtp://user:{password}@{host}",
        "service_check_timeout_seconds": "2",
    }


@pytest.mark.parametrize("password", HOSTILE_PASSWORDS)
@pytest.mark.parametrize("spelling", ["raw", "percent-encoded"])
async def test_hostile_passwords_never_show_in_settings_errors_or_doctor(
    password: str, spelling: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No representation of Settings, configuration error or doctor line shows a password."""
    for name in list(os.environ):
        if name.startswith("CORESTONE_") and not name.startswith("CORESTONE_TEST_"):
            monkeypatch.delenv(name)
    written = password if spelling == "raw" else quote(password, safe="")
    forbidden = {password, written}
    values = _hostile_settings(written, free_port())
    shown: list[str] = []

    for name, value in values.items():  # each alone, and all at once from the environment
        try:
            alone = Settings(**{name: value})  # type: ignore[arg-type]
        except ValidationError as error:
            shown += [str(error), repr(error)]
        else:
            shown += _representations(alone)
        monkeypatch.setenv(f"CORESTONE_{name.upper()}", value)
    try:
        settings = load_settings()
    except ConfigurationError as error:
        shown += [str(error), repr(error), error.message]
    else:
        shown += _representations(settings)
        checks = await check_services(settings)
        assert not any(check.ok for check in checks)
        shown += format_report(checks) + [repr(check) for check in checks]

    databases = {k: values[k] for k in ("database_url", "database_replica_urls")}
    with contextlib.suppress(ValidationError):  # SQLAlchemy accepts most raw passwords
        checks = await check_services(Settings(**databases))  # type: ignore[arg-type]
        assert not any(check.ok for check in checks)
        shown += format_report(checks)

    leaks = [text for text in shown for secret in forbidden if secret in text]
    assert leaks == []


def _representations(settings: Settings) -> list[str]:
    return [
        repr(settings),
        str(settings),
        repr(settings.model_dump()),
        settings.model_dump_json(),
        repr(settings.model_dump(mode="json")),
    ]
