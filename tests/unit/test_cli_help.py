"""The `corestone` and `taskboard` command lines: --version, clean help, bare commands."""

from __future__ import annotations

import re
from importlib.metadata import version

import click
import pytest
import typer
from typer.testing import CliRunner

from corestone.cli import app as corestone_app
from taskboard.cli import app as taskboard_app

_APPS = {"corestone": corestone_app, "taskboard": taskboard_app}


def _every_command(name: str) -> list[list[str]]:
    """The argument paths of every group and command of an app, the root included."""
    root = typer.main.get_command(_APPS[name])
    paths: list[list[str]] = []

    def walk(command: click.Command, path: list[str]) -> None:
        paths.append(path)
        if isinstance(command, click.Group):
            for sub_name, sub in command.commands.items():
                walk(sub, [*path, sub_name])

    walk(root, [])
    return paths


def _help(name: str, path: list[str]) -> str:
    result = CliRunner().invoke(_APPS[name], [*path, "--help"], prog_name=name)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("name", sorted(_APPS))
def test_version_prints_the_installed_package_version(name: str) -> None:
    """`<cli> --version` prints its distribution's version (taskboard adds corestone's)."""
    result = CliRunner().invoke(_APPS[name], ["--version"], prog_name=name)

    assert result.exit_code == 0
    expected = f"{name} {version(name)}"
    if name != "corestone":
        expected += f" (corestone {version('corestone')})"
    assert result.output == expected + "\n"


@pytest.mark.parametrize("name", sorted(_APPS))
def test_no_help_shows_a_type_beside_a_flag(name: str) -> None:
    """No help page shows '<bool>' (typer's rich tables put one beside --help and every flag)."""
    for path in _every_command(name):
        shown = _help(name, path)
        assert "<bool>" not in shown, (path, shown)
        assert "╭" not in shown  # the plain click layout


@pytest.mark.parametrize("name", sorted(_APPS))
def test_help_paragraphs_are_wrapped_not_broken_mid_sentence(name: str) -> None:
    """A docstring's own line breaks do not survive: every paragraph line but its last is full.

    `taskboard worker --help` used to print "plus any" / "number of" / "workers on …" as
    three short lines, the docstring's source lines cut again at the terminal width.
    """
    for path in _every_command(name):
        description = _help(name, path).split("\n\n", 1)[1]
        description = re.split(r"\n(?:Options|Arguments|Commands):\n", description)[0]
        for paragraph in description.split("\n\n"):
            lines = paragraph.splitlines()
            for line in lines[:-1]:
                assert len(line) >= 50, (path, paragraph)


def test_bare_taskboard_prints_help_and_exits_0() -> None:
    """`taskboard` with no command is a request for help, not a usage error (exit 2)."""
    for path in (["db"], []):
        result = CliRunner().invoke(taskboard_app, path, prog_name="taskboard")
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"Usage: taskboard {' '.join(path)}".rstrip())
        assert "Commands:" in result.output


def test_bare_corestone_prints_help_and_exits_0() -> None:
    """`corestone` and `corestone saga` alone print their help with exit status 0."""
    for path in (["saga"], []):
        result = CliRunner().invoke(corestone_app, path, prog_name="corestone")
        assert result.exit_code == 0, result.output
        assert "Commands:" in result.output


def test_an_unknown_option_is_still_a_usage_error() -> None:
    """Help on a bare command must not swallow real mistakes: a wrong option exits 2."""
    result = CliRunner().invoke(taskboard_app, ["serve", "--prot", "1"], prog_name="taskboard")

    assert result.exit_code == 2
    assert "No such option" in result.output
