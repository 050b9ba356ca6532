"""The ``corestone`` command: operations on the services a corestone process depends on.

Thin on purpose: each command reads the settings, calls one public coroutine and turns
its result into lines and an exit code, so everything it does can be done from Python.
"""

from __future__ import annotations

import asyncio

import typer

from corestone.config import Settings, load_settings
from corestone.doctor import check_services, format_report
from corestone.errors import ConfigurationError
from corestone.observability.logging import configure_logging

__all__ = ["app", "main"]

EXIT_OK = 0
EXIT_SERVICE_FAILED = 1
EXIT_CONFIGURATION = 2

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.callback()
def _root() -> None:
    """corestone: check and operate the services a corestone process depends on."""
    # A callback keeps `doctor` a subcommand; typer would otherwise promote a lone command.


@app.command()
def doctor() -> None:
    """Check that every configured service answers, before a deploy finds out it does not.

    Probes the database, replicas, Redis, the broker and SMTP concurrently, each within
    CORESTONE_SERVICE_CHECK_TIMEOUT_SECONDS. Exit status: 0 all ok, 1 a service failed,
    2 the configuration is invalid.
    """
    settings = _settings()
    try:
        checks = asyncio.run(check_services(settings))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    for line in format_report(checks):
        typer.echo(line)
    raise typer.Exit(EXIT_OK if all(check.ok for check in checks) else EXIT_SERVICE_FAILED)


def _settings() -> Settings:
    try:
        settings = load_settings()
    except ConfigurationError as error:
        for line in error.message.splitlines():
            typer.echo(f"configuration error: {line}", err=True)
        raise typer.Exit(EXIT_CONFIGURATION) from None
    # The report is the output; components' info lines ("database started") would repeat it.
    level = settings.log_level if settings.log_level in ("debug", "error") else "warning"
    configure_logging(format=settings.effective_log_format, level=level)
    return settings


def main() -> None:
    """Run the ``corestone`` command line (the console script's entry point)."""
    app(prog_name="corestone")


if __name__ == "__main__":
    main()
