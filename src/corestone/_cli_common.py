"""What every corestone command group shares: help for a bare group, settings or exit 2.

A leaf module: the sub-apps (``corestone events``, ``corestone push``) and ``corestone.cli``
all import it, and it imports none of them.
"""

from __future__ import annotations

from corestone._extras import requires_extra
from corestone.config import Settings, load_settings
from corestone.errors import ConfigurationError
from corestone.observability.logging import configure_logging

with requires_extra("corestone.cli", "cli"):  # named as the user runs it
    import typer

__all__ = ["EXIT_CONFIGURATION", "EXIT_OK", "help_if_bare", "settings_or_exit"]

EXIT_OK = 0
EXIT_CONFIGURATION = 2


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
