"""``corestone push``: make VAPID keys, show the public key browsers subscribe with.

Kept apart from :mod:`corestone.cli` (which adds this group). ``keys`` prints the
private key once, to standard output, as an environment line to store as a secret; it
never goes through logging.
"""

from __future__ import annotations

from typing import Annotated

from corestone._extras import requires_extra
from corestone.errors import ConfigurationError, MissingExtraError

with requires_extra(__name__, "cli"):
    import typer

__all__ = ["push_app", "push_keys", "push_public_key"]

_EXIT_CONFIGURATION = 2

push_app = typer.Typer(
    help="Web Push: make VAPID keys; print the public key browsers subscribe with.",
    rich_markup_mode=None,
)


@push_app.callback(invoke_without_command=True)
def _push(ctx: typer.Context) -> None:
    from corestone._cli_common import help_if_bare

    help_if_bare(ctx)


@push_app.command("keys")
def push_keys(
    subject: Annotated[
        str,
        typer.Option(
            help="The contact push services may use: mailto:you@example.com or an https URL."
        ),
    ] = "mailto:ops@example.com",
) -> None:
    """Make a VAPID key pair and print it as environment lines.

    The private key is printed once, here: store it as a secret
    (CORESTONE_VAPID_PRIVATE_KEY). The last line, a comment, is the public key in the
    form pushManager.subscribe's applicationServerKey takes. Exit status 2 for a bad
    subject or without the 'push' extra.
    """
    try:
        from corestone.push.vapid import VapidKeys

        keys = VapidKeys.generate(subject)
    except (MissingExtraError, ValueError) as error:
        typer.echo(f"corestone push keys: {error}", err=True)
        raise typer.Exit(_EXIT_CONFIGURATION) from None
    typer.echo(f"CORESTONE_VAPID_PRIVATE_KEY={keys.private_key_text()}")
    typer.echo(f"CORESTONE_VAPID_SUBJECT={keys.subject}")
    typer.echo(f"# applicationServerKey (public): {keys.application_server_key}")


@push_app.command("public-key")
def push_public_key() -> None:
    """Print the public key of CORESTONE_VAPID_PRIVATE_KEY (applicationServerKey form).

    Exit status 2 when the key is not configured or the 'push' extra is missing.
    """
    from corestone._cli_common import settings_or_exit

    settings = settings_or_exit(quiet=True)
    try:
        from corestone.push.vapid import VapidKeys

        keys = VapidKeys.from_settings(settings)
    except ConfigurationError as error:
        typer.echo(f"corestone push public-key: {error.message}", err=True)
        raise typer.Exit(_EXIT_CONFIGURATION) from None
    typer.echo(keys.application_server_key)
