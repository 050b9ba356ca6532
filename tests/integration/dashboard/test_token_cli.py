"""``taskboard token create``: a user's token, an operator token, and a clear error."""

from __future__ import annotations

import asyncio

import pytest
from typer.testing import CliRunner

from corestone import Infrastructure, Settings
from taskboard import cli
from taskboard.app import prepare
from taskboard.services import UserService


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.app, ["token", *args])
    return result.exit_code, result.stdout, result.stderr


async def _new_user(url: str) -> int:
    async with Infrastructure(Settings(database_url=url)) as infra:
        await prepare(infra)
        user, _ = await UserService(infra.db).create(name="Op", email="op@example.com")
        return user.id


async def _may_operate(url: str, token: str) -> bool:
    async with Infrastructure(Settings(database_url=url)) as infra:
        users = UserService(infra.db)
        return await users.may_operate(await users.authenticate(token), token)


@pytest.fixture
def url(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CORESTONE_DATABASE_URL", database_url)
    return database_url


def test_operator_flag_makes_a_token_that_may_operate(url: str) -> None:
    """--operator prints a token that may read /ops; without it, the user's token may not."""
    user_id = asyncio.run(_new_user(url))
    code, operator, _ = _run("create", "--user", str(user_id), "--operator")
    assert code == 0
    code, plain, _ = _run("create", "--user", str(user_id), "--label", "laptop")
    assert code == 0
    assert asyncio.run(_may_operate(url, operator.strip())) is True
    assert asyncio.run(_may_operate(url, plain.strip())) is False


def test_an_unknown_user_is_an_error_naming_the_id(url: str) -> None:
    """No such user: one line on stderr naming the id, exit 1, nothing on stdout."""
    code, out, err = _run("create", "--user", "424242", "--operator")
    assert (code, out) == (1, "")
    assert "no user with id 424242" in err


def test_a_bad_label_is_a_usage_error(url: str) -> None:
    """A label longer than the column is refused before anything is written."""
    code, _, err = _run("create", "--user", "1", "--label", "x" * 51)
    assert code == 2
    assert "--label" in err
