"""What every corestone command group shares: help for a bare group, settings or exit 2,
and a database command's failures as one line each.

A leaf module: the sub-apps (``corestone events``, ``corestone push``) and ``corestone.cli``
all import it, and it imports none of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from corestone._extras import requires_extra
from corestone.config import Settings, load_settings
from corestone.errors import ConfigurationError, CorestoneError, MissingExtraError
from corestone.observability.logging import configure_logging

with requires_extra("corestone.cli", "cli"):  # named as the user runs it
    import typer

__all__ = [
    "EXIT_CONFIGURATION",
    "EXIT_FAILED",
    "EXIT_OK",
    "help_if_bare",
    "run_on_database",
    "settings_or_exit",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIGURATION = 2

_T = TypeVar("_T")


def help_if_bare(ctx: typer.Context) -> None:
    """In a group's callback: with no subcommand, print the help and exit 0.

    Click's ``no_args_is_help`` exits 2, as for a usage error, though nothing was wrong.
    """
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(EXIT_OK)


def settings_or_exit(*, quiet: bool = False) -> Settings:
    """The settings from the environment, with logging configured; else exit 2.

    Every line of a configuration error goes to stderr, so a command line tool built on
    corestone fails the same way as ``corestone`` itself. ``quiet`` keeps components'
    info lines ("database started") out of a command whose report is its output.
    """
    try:
        settings = load_settings()
    except ConfigurationError as error:
        for line in error.message.splitlines():
            typer.echo(f"configuration error: {line}", err=True)
        raise typer.Exit(EXIT_CONFIGURATION) from None
    level = settings.log_level
    if quiet and level not in ("debug", "error"):
        level = "warning"
    configure_logging(format=settings.effective_log_format, level=level)
    return settings


def run_on_database(main: Coroutine[Any, Any, _T], *, tables: str) -> _T:
    """Run a command's ``main``; a corestone or database error is one line and exit 1.

    The likeliest database error from an operator's command is a schema that was never
    migrated ("no such table"): a SQLAlchemy traceback with the statement in it says
    that far worse than its first line and a hint naming the ``tables`` concerned.
    """
    try:
        with requires_extra("corestone.cli", "postgres", "sqlite"):
            from sqlalchemy.exc import SQLAlchemyError
    except MissingExtraError as missing:
        main.close()
        typer.echo(f"error: {missing}", err=True)
        raise typer.Exit(EXIT_CONFIGURATION) from None
    try:
        return asyncio.run(main)
    except CorestoneError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    except SQLAlchemyError as error:
        detail = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        typer.echo(f"error: {detail} (are the {tables} tables migrated?)", err=True)
        raise typer.Exit(EXIT_FAILED) from None
