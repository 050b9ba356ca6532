"""Structured logging: JSON lines with the request context, and secrets never written."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import pytest
import structlog

from corestone import context
from corestone.config import Settings
from corestone.observability.logging import SecretRedactor, configure_logging, get_logger


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put structlog and the root logger back as they were after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    access = logging.getLogger("uvicorn.access")
    access_disabled = access.disabled
    yield
    structlog.reset_defaults()
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    access.disabled = access_disabled


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_structlog_lines_are_json_with_the_bound_correlation_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A structlog line is one JSON object with event, level, logger, time and context."""
    configure_logging(format="json")

    with context.bind(correlation="req-123", actor=7, workspace="ws-1"):
        get_logger("corestone.test").info("task created", task_id=5)

    [line] = _json_lines(capsys.readouterr().err)
    assert line["event"] == "task created"
    assert line["task_id"] == 5
    assert line["level"] == "info"
    assert line["logger"] == "corestone.test"
    assert line["correlation_id"] == "req-123"
    assert line["actor_id"] == "7"
    assert line["workspace_id"] == "ws-1"
    assert line["timestamp"].endswith("Z")


def test_stdlib_lines_are_json_with_the_bound_correlation_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Lines from the standard library (uvicorn, SQLAlchemy) get the same shape and context."""
    configure_logging(format="json")

    with context.bind(correlation="req-456"):
        logging.getLogger("sqlalchemy.engine").warning("slow query took %d ms", 1500)

    [line] = _json_lines(capsys.readouterr().err)
    assert line["event"] == "slow query took 1500 ms"
    assert line["level"] == "warning"
    assert line["logger"] == "sqlalchemy.engine"
    assert line["correlation_id"] == "req-456"


def test_no_context_keys_outside_a_bind(capsys: pytest.CaptureFixture[str]) -> None:
    """Lines logged outside any request carry no empty context keys."""
    configure_logging(format="json")

    get_logger("t").info("background")

    [line] = _json_lines(capsys.readouterr().err)
    assert "correlation_id" not in line
    assert "actor_id" not in line


def test_structlog_contextvars_are_merged(capsys: pytest.CaptureFixture[str]) -> None:
    """Values bound with structlog.contextvars also appear on the line."""
    configure_logging(format="json")

    with structlog.contextvars.bound_contextvars(job="nightly"):
        get_logger("t").info("run")

    [line] = _json_lines(capsys.readouterr().err)
    assert line["job"] == "nightly"


def test_secret_keys_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """Values under password, token, authorization, api key, cookie keys become ***."""
    configure_logging(format="json")

    get_logger("t").info(
        "login",
        password="hunter2",
        db_password="hunter3",
        token="tok-secret",
        authorization="Bearer abc.def",
        api_key="k-secret",
        headers={"Authorization": "Basic dXNlcjpwYXNz", "Cookie": "sid=s3cr3t", "Accept": "*/*"},
        user="alice",
    )

    err = capsys.readouterr().err
    [line] = _json_lines(err)
    for key in ("password", "db_password", "token", "authorization", "api_key"):
        assert line[key] == "***"
    assert line["headers"] == {"Authorization": "***", "Cookie": "***", "Accept": "*/*"}
    assert line["user"] == "alice"
    for secret in ("hunter", "tok-secret", "abc.def", "k-secret", "dXNlcjpwYXNz", "s3cr3t"):
        assert secret not in err


def test_empty_secret_values_stay_visible(capsys: pytest.CaptureFixture[str]) -> None:
    """A missing secret is shown as missing, which helps debugging and leaks nothing."""
    configure_logging(format="json")

    get_logger("t").info("config", password=None, token="")

    [line] = _json_lines(capsys.readouterr().err)
    assert line["password"] is None
    assert line["token"] == ""


def test_secrets_in_free_text_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """DSN passwords, bearer tokens and password=… inside messages and values are masked."""
    configure_logging(format="json")

    get_logger("t").info(
        "connecting to postgresql://u:secret@h/db",
        detail="sent Authorization: Bearer abc123 with password=xyz",
        urls=["redis://:redispw@cache:6379/0"],
    )

    err = capsys.readouterr().err
    [line] = _json_lines(err)
    assert line["event"] == "connecting to postgresql://u:***@h/db"
    assert line["detail"] == "sent Authorization: Bearer *** with password=***"
    assert line["urls"] == ["redis://:***@cache:6379/0"]
    for secret in ("secret", "abc123", "xyz", "redispw"):
        assert secret not in err


def test_stdlib_path_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """Secrets in stdlib messages, including %-formatted arguments, are masked."""
    configure_logging(format="json")

    logging.getLogger("driver").error(
        "cannot connect to %s using password=%s and Bearer %s",
        "postgresql://u:secret@h/db",
        "xyz",
        "abc",
    )

    err = capsys.readouterr().err
    [line] = _json_lines(err)
    assert line["event"] == (
        "cannot connect to postgresql://u:***@h/db using password=*** and Bearer ***"
    )
    assert "secret" not in err


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_tracebacks_are_redacted(capsys: pytest.CaptureFixture[str], log_format: str) -> None:
    """An exception message carrying a DSN is masked in the logged traceback, in both formats."""
    configure_logging(format=log_format)  # type: ignore[arg-type]

    try:
        raise ConnectionError("cannot reach postgresql://app:tb-secret@db/app")
    except ConnectionError:
        logging.getLogger("driver").exception("stdlib failure")
        get_logger("t").exception("structlog failure")

    err = capsys.readouterr().err
    assert "tb-secret" not in err
    assert err.count("postgresql://app:***@db/app") >= 2
    assert "stdlib failure" in err
    assert "structlog failure" in err


def test_console_format_is_redacted_and_carries_the_context(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The human format shows the correlation id and hides secrets too."""
    configure_logging(format="console")

    with context.bind(correlation="req-console"):
        get_logger("t").info("hello postgresql://u:secret@h/db", token="t0k3n")
        logging.getLogger("std").info("password=xyz")

    err = capsys.readouterr().err
    assert "req-console" in err
    assert "postgresql://u:***@h/db" in err
    for secret in ("secret", "t0k3n", "xyz"):
        assert secret not in err


def test_level_filters_both_paths(capsys: pytest.CaptureFixture[str]) -> None:
    """Lines below the configured level are dropped for structlog and stdlib alike."""
    configure_logging(format="json", level="warning")

    get_logger("t").info("quiet")
    logging.getLogger("std").info("quiet too")
    get_logger("t").warning("loud")

    assert [line["event"] for line in _json_lines(capsys.readouterr().err)] == ["loud"]


def test_configuring_again_does_not_duplicate_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """Calling configure_logging twice replaces its handler instead of adding a second one."""
    configure_logging(format="json")
    configure_logging(format="json")

    logging.getLogger("std").warning("once")

    assert len(_json_lines(capsys.readouterr().err)) == 1


def test_uvicorn_access_log_is_disabled() -> None:
    """The request middleware logs each request, so uvicorn's access line is turned off."""
    configure_logging(format="json")

    assert logging.getLogger("uvicorn.access").disabled


def test_extra_secret_patterns_are_applied(capsys: pytest.CaptureFixture[str]) -> None:
    """A project-specific pattern masks its own secrets, keeping the named prefix."""
    configure_logging(format="json", extra_secret_patterns=[r"(?P<keep>ssn )\d{3}-\d{2}-\d{4}"])

    get_logger("t").info("customer ssn 123-45-6789")

    [line] = _json_lines(capsys.readouterr().err)
    assert line["event"] == "customer ssn ***"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
        ("postgresql+asyncpg://u:secret@h:5432/db", "postgresql+asyncpg://u:***@h:5432/db"),
        ("redis://:secret@cache:6379", "redis://:***@cache:6379"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        ("Bearer abc.def-ghi", "Bearer ***"),
        ("authorization: bearer abc", "authorization: bearer ***"),
        ("password=xyz&user=bob", "password=***&user=bob"),
        ("passwd: xyz", "passwd: ***"),
        ("api_key=k1 api-key=k2", "api_key=*** api-key=***"),
        ("?access_token=abc&x=1", "?access_token=***&x=1"),
        ("client_secret=abc", "client_secret=***"),
        ('{"password": "hunter2", "user": "bob"}', '{"password": "***", "user": "bob"}'),
        ("http://example.com:8080/path", "http://example.com:8080/path"),
        ("mail bob@example.com at 10:30", "mail bob@example.com at 10:30"),
        ("tokens=5 used", "tokens=5 used"),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    """redact_text masks exactly the secrets in free text and leaves the rest readable."""
    assert SecretRedactor().redact_text(text) == expected


def test_redactor_processor_cleans_nested_values() -> None:
    """As a processor, the redactor walks dicts, lists and tuples."""
    cleaned = SecretRedactor()(
        None,
        "info",
        {
            "event": "e",
            "request": {"headers": {"x-api-key": "k"}, "urls": ("postgresql://u:pw@h/d",)},
        },
    )

    assert cleaned["request"] == {
        "headers": {"x-api-key": "***"},
        "urls": ["postgresql://u:***@h/d"],
    }


def test_objects_rendered_by_repr_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """An exception or settings object logged as a value cannot leak the DSN in its repr."""
    configure_logging(format="json")

    get_logger("t").error(
        "failed",
        error=ConnectionError("cannot reach postgresql://u:s3cret@h/db"),
        settings=Settings(database_url="postgresql+asyncpg://u:s3cret@h/db"),
        attempts=3,
        retried=True,
    )

    err = capsys.readouterr().err
    [line] = _json_lines(err)
    assert "s3cret" not in err
    assert line["error"] == "ConnectionError('cannot reach postgresql://u:***@h/db')"
    assert (line["attempts"], line["retried"]) == (3, True)


def test_read_only_mappings_are_walked() -> None:
    """Mappings that are not dicts (an error's details) are cleaned key by key too."""
    cleaned = SecretRedactor()(None, "info", {"details": MappingProxyType({"token": "t"})})

    assert cleaned["details"] == {"token": "***"}


def test_asgi_header_pairs_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """ASGI (name, value) header pairs have their authorization and cookie values masked."""
    configure_logging(format="json")

    get_logger("t").info(
        "request",
        headers=[
            (b"authorization", b"Basic dXNlcjpwYXNz"),
            (b"cookie", b"sid=s3cr3t; theme=dark"),
            (b"accept", b"*/*"),
        ],
        raw=[[b"x-api-key", b"k-secret"]],
    )

    err = capsys.readouterr().err
    for secret in ("dXNlcjpwYXNz", "s3cr3t", "k-secret"):
        assert secret not in err
    assert "*/*" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sent Authorization: Basic dXNlcjpwYXNz ok", "sent Authorization: Basic *** ok"),
        ("authorization=Digest abc", "authorization=Digest ***"),
        ("Cookie: sid=s3cr3t; theme=dark", "Cookie: ***"),
        ("got Set-Cookie: sid=s3cr3t; HttpOnly\nnext", "got Set-Cookie: ***\nnext"),
        ("private_key=MIIEv-secret rest", "private_key=*** rest"),
        ('password="hunter 2; x" user=bob', 'password="***" user=bob'),
        ("password='a b;c' user=bob", "password='***' user=bob"),
        ('{"password": "two words", "user": "bob"}', '{"password": "***", "user": "bob"}'),
        ('password="never closed; more', 'password="***'),
        (
            "key -----BEGIN RSA PRIVATE KEY-----\nMIIabc\n-----END RSA PRIVATE KEY----- end",
            "key *** end",
        ),
    ],
)
def test_more_free_text_secrets_are_redacted(text: str, expected: str) -> None:
    """Authorization and Cookie headers, private keys and quoted passwords are masked whole."""
    assert SecretRedactor().redact_text(text) == expected


def test_private_key_values_are_redacted_by_key() -> None:
    """A value under a private_key key is masked like any other secret key."""
    cleaned = SecretRedactor()(None, "info", {"event": "e", "private_key": "pem", "sk": 1})

    assert cleaned == {"event": "e", "private_key": "***", "sk": 1}


def test_a_deeply_nested_value_never_makes_logging_raise(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A value nested 500 levels deep is logged, cut off, and log.info does not raise."""
    configure_logging(format="json")
    deep: Any = "password=hunter2"
    for _ in range(500):
        deep = [{"a": deep}]

    get_logger("t").info("deep", value=deep)

    err = capsys.readouterr().err
    [line] = _json_lines(err)
    assert line["event"] == "deep"
    assert "nested deeper than" in err
    assert "hunter2" not in err


class _Unprintable:
    def __repr__(self) -> str:
        raise ValueError("no repr for you")


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_a_failing_processor_never_makes_logging_raise(
    capsys: pytest.CaptureFixture[str], log_format: str
) -> None:
    """A value whose repr raises gives a note line instead of an exception from log.info."""
    configure_logging(format=log_format)  # type: ignore[arg-type]

    get_logger("t").info("odd", value=_Unprintable(), password="hunter2")
    logging.getLogger("std").warning("odd %s", "x", extra={"value": _Unprintable()})

    err = capsys.readouterr().err
    assert "log line dropped" in err
    assert "hunter2" not in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: SharedKey acct:c2lnbmF0dXJl=", "Authorization: ***"),
        ("authorization: AWS AKIAEXAMPLE:c2lnbmF0dXJl", "authorization: ***"),
        ("Authorization: OAuth ya29.s3cr3t", "Authorization: ***"),
        ("authorization=abc123 user=bob", "authorization=*** user=bob"),
        ("SECRET_KEY=s3cr3t user=bob", "SECRET_KEY=*** user=bob"),
        ("aws_secret_access_key=s3cr3t", "aws_secret_access_key=***"),
        ("passphrase=s3cr3t credentials=s3cr3t", "passphrase=*** credentials=***"),
        (
            "refused postgresql+asyncpg://app:se/cr3t9@db/x",
            "refused postgresql+asyncpg://app:***@db/x",
        ),
        ("refused postgresql://app:2024/Spring9@db/x", "refused postgresql://app:***@db/x"),
        (
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\nabc\n-----END PGP PRIVATE KEY BLOCK----- end",
            "*** end",
        ),
    ],
)
def test_free_text_secrets_in_other_spellings_are_redacted(text: str, expected: str) -> None:
    """Unknown auth schemes, names that do not end in the secret word, '/' in URL passwords."""
    assert SecretRedactor().redact_text(text) == expected


def test_secrets_in_views_sets_and_json_pairs_are_redacted() -> None:
    """Header items views, sets of pairs and JSON-decoded [name, value] lists are masked."""
    basic = "Basic dXNlcjpwYXNz"
    cleaned = SecretRedactor()(
        None,
        "info",
        {
            "items": {"authorization": basic, "accept": "*/*"}.items(),
            "pairs": {(b"authorization", basic.encode())},
            "decoded": [["authorization", basic], ["accept", "*/*"]],
            "pwd": "hunter2",
            "db_pwd": "hunter2",
        },
    )

    assert "dXNlcjpwYXNz" not in str(cleaned)
    assert "hunter2" not in str(cleaned)
    assert "*/*" in str(cleaned["items"])
    assert cleaned["decoded"] == [["authorization", "***"], ["accept", "*/*"]]


def test_a_cyclic_value_is_logged_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    """A value that refers to itself twice over is cut short, not walked 2**24 times."""
    configure_logging(format="json")
    cyclic: dict[str, Any] = {"password": "hunter2"}
    cyclic["left"] = cyclic
    cyclic["right"] = cyclic
    walked = 0

    class Counting(SecretRedactor):
        def _clean(self, *args: Any) -> Any:
            nonlocal walked
            walked += 1
            if walked > 1_000_000:
                raise AssertionError("the walk does not end")
            return super()._clean(*args)

    Counting()(None, "info", {"value": cyclic})
    get_logger("t").info("cyclic", value=cyclic)

    err = capsys.readouterr().err
    [line] = _json_lines(err)
    assert line["event"] == "cyclic"
    assert "hunter2" not in err


@pytest.mark.timeout(20)  # a guard: each text took hours to redact (quadratic), now linear
@pytest.mark.parametrize(
    "text",
    [
        "a-" * 100_000,  # a hyphenated run: every position was a name start
        "a" * 200_000,  # one long word: every position was a scheme start
        "x://a:" * 30_000,  # many user infos in one run, none with an "@"
        'password="' + "a" * 200_000,
    ],
    ids=["hyphens", "word", "userinfos", "unclosed-quote"],
)
def test_redacting_a_long_hostile_text_takes_linear_time(text: str) -> None:
    """A 200 kB line (a request path) is redacted in one pass, never blocking the loop for hours."""
    redacted = SecretRedactor().redact_text(text)

    assert len(redacted) <= len(text) + 3


def test_values_orjson_refuses_are_still_logged(capsys: pytest.CaptureFixture[str]) -> None:
    """An integer beyond 64 bits or a non-string key takes the standard library's path."""
    configure_logging(format="json")

    get_logger("corestone.test").info("big", value=2**70, mapping={1: "one"}, other=object())

    [line] = _json_lines(capsys.readouterr().err)
    assert line["value"] == 2**70
    assert line["mapping"] == {"1": "one"}
    assert line["other"].startswith("<object object")


def test_repeated_short_texts_are_redacted_every_time(capsys: pytest.CaptureFixture[str]) -> None:
    """The redactor's memo of short texts returns the masked text, never the original."""
    configure_logging(format="json")

    for _ in range(3):
        get_logger("corestone.test").info("call", note="password=hunter2")
    long_text = "x" * 300 + " password=hunter2"
    get_logger("corestone.test").info("call", note=long_text)

    lines = _json_lines(capsys.readouterr().err)
    assert len(lines) == 4
    assert all("hunter2" not in line["note"] for line in lines)


@dataclasses.dataclass
class _Credentials:
    user: str
    password: str = dataclasses.field(repr=False)


def test_a_dataclass_is_logged_by_its_repr_not_its_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A field hidden from repr stays hidden: the redactor hands objects over as their repr.

    orjson would serialize a dataclass field by field, including ``repr=False`` ones,
    which the redactor (having seen only the repr) never checked.
    """
    configure_logging(format="json")

    get_logger("corestone.test").info("login", account=_Credentials("u", "hunter2"))

    err = capsys.readouterr().err
    [line] = _json_lines(err)
    assert "hunter2" not in err
    assert line["account"] == "_Credentials(user='u')"
