"""``corestone alerts export|check``: the alert rules as a Prometheus rule file.

Kept apart from :mod:`corestone.cli` (which adds this group). ``export`` writes the rules
this process would evaluate (the defaults with the thresholds of ``CORESTONE_ALERTS_*``,
then ``CORESTONE_ALERTS_RULES_FILE``'s) in the format Prometheus loads;
``check`` validates a rule file against the subset the engine evaluates.

Exit status: 0 done, 1 the file is invalid or unreadable, 2 bad configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from corestone._extras import requires_extra

with requires_extra(__name__, "cli"):
    import typer

__all__ = ["alerts_app", "alerts_check", "alerts_export"]

_EXIT_OK = 0
_EXIT_INVALID = 1

alerts_app = typer.Typer(
    help="Alert rules: export them for Prometheus, check a rule file.", rich_markup_mode=None
)


@alerts_app.callback(invoke_without_command=True)
def _alerts(ctx: typer.Context) -> None:
    from corestone._cli_common import help_if_bare

    help_if_bare(ctx)


@alerts_app.command("export")
def alerts_export(
    output: Annotated[
        Path | None, typer.Option("-o", "--output", metavar="FILE", help="Write here, not stdout.")
    ] = None,
) -> None:
    """Write the default and configured rules as a Prometheus rule file.

    Exit status: 0 written, 1 the configured rule file is invalid, 2 bad configuration.
    """
    from corestone._cli_common import settings_or_exit
    from corestone.observability.alerts.rules_file import RuleFileError, dump_rules
    from corestone.observability.alerts.wiring import configured_rules

    settings = settings_or_exit(quiet=True)
    try:
        rules = configured_rules(settings)
    except RuleFileError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(_EXIT_INVALID) from None
    text = dump_rules(rules, interval_seconds=settings.alerts_interval_seconds)
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    typer.echo(f"{len(rules)} rules written to {output}", err=True)


@alerts_app.command("check")
def alerts_check(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A Prometheus rule file.")],
) -> None:
    """Validate a rule file: its YAML, durations, expressions and annotation templates.

    Exit status: 0 valid, 1 invalid (the message names the group, rule and field).
    """
    from corestone.observability.alerts.rules_file import RuleFileError, load_rules_file

    try:
        rules = load_rules_file(file)
    except RuleFileError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(_EXIT_INVALID) from None
    typer.echo(f"{file}: {len(rules)} rules, valid")
