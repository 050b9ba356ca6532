"""The ``corestone`` command: operations on the services a corestone process depends on.

Thin on purpose: each command reads the settings, calls one public coroutine and turns
its result into lines and an exit code, so everything it does can be done from Python.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

from corestone._bulk_cli import read_recipients, watch_bulk
from corestone._cli_common import (
    EXIT_CONFIGURATION,
    EXIT_OK,
    help_if_bare,
    run_on_database,
    settings_or_exit,
)
from corestone._extras import requires_extra
from corestone._version import installed_version

with requires_extra(__name__, "cli"):
    import typer

from corestone._alerts_cli import alerts_app
from corestone._events_cli import events_app
from corestone._push_cli import push_app
from corestone._queries_cli import queries_app
from corestone.config import Settings
from corestone.doctor import check_services, email_report, format_report
from corestone.errors import (
    CorestoneError,
    InvalidInputError,
    NotFoundError,
)

if TYPE_CHECKING:
    from corestone.email.tracking import EmailTracker, MessageSummary
    from corestone.sagas import SagaOutcome, SagaRegistry

T = TypeVar("T")

__all__ = [
    "EXIT_CONFIGURATION",
    "EXIT_OK",
    "EXIT_SERVICE_FAILED",
    "alerts_app",
    "app",
    "doctor",
    "email_app",
    "email_bulk",
    "email_list",
    "email_preview",
    "email_retry",
    "email_show",
    "events_app",
    "help_if_bare",
    "main",
    "package_version",
    "push_app",
    "queries_app",
    "saga_app",
    "saga_recover",
    "saga_retry",
    "settings_or_exit",
    "version_callback",
]

EXIT_SERVICE_FAILED = 1

# Plain click help (rich_markup_mode=None): typer's rich tables print "<bool>" beside
# every flag (--help included) and keep a docstring's line breaks mid-sentence.
app = typer.Typer(add_completion=False, rich_markup_mode=None)
saga_app = typer.Typer(
    help="Durable sagas: recover the ones a stopped process left.", rich_markup_mode=None
)
app.add_typer(saga_app, name="saga")
email_app = typer.Typer(
    help="Email: preview templates; send in bulk; list, show and retry stored messages.",
    rich_markup_mode=None,
)
app.add_typer(email_app, name="email")
app.add_typer(events_app, name="events")
app.add_typer(push_app, name="push")
app.add_typer(queries_app, name="queries")
app.add_typer(alerts_app, name="alerts")


def package_version(distribution: str = "corestone") -> str:
    """An installed distribution's version, from its metadata (pyproject.toml is the source)."""
    return installed_version(distribution)


def version_callback(prog: str) -> Callable[[bool], None]:
    """An eager ``--version`` option's callback: print ``<prog> <version>`` and exit 0.

    A service built on corestone (``prog`` is its distribution's name) also says which
    corestone it runs on: ``taskboard 0.1.0 (corestone 0.1.0)``.
    """

    def show(value: bool) -> None:
        if value:
            line = f"{prog} {package_version(prog)}"
            if prog != "corestone":
                line += f" (corestone {package_version()})"
            typer.echo(line)
            raise typer.Exit(EXIT_OK)

    return show


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=version_callback("corestone"),
            is_eager=True,
        ),
    ] = False,
) -> None:
    """corestone: check and operate the services a corestone process depends on."""
    # A callback keeps `doctor` a subcommand; typer would otherwise promote a lone command.
    help_if_bare(ctx)


@saga_app.callback(invoke_without_command=True)
def _saga(ctx: typer.Context) -> None:
    help_if_bare(ctx)


@app.command()
def doctor() -> None:
    """Check that every configured service answers, before a deploy finds out it does not.

    Probes the database, replicas, Redis, the broker and SMTP concurrently, each within
    CORESTONE_SERVICE_CHECK_TIMEOUT_SECONDS, then describes the email providers (never
    their keys). Exit status: 0 all ok, 1 a service failed, 2 the configuration is
    invalid (a provider listed without its credentials included).
    """
    settings = settings_or_exit(quiet=True)
    try:
        checks = asyncio.run(check_services(settings))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    for line in [*format_report(checks), *email_report(settings)]:
        typer.echo(line)
    raise typer.Exit(EXIT_OK if all(check.ok for check in checks) else EXIT_SERVICE_FAILED)


@email_app.callback(invoke_without_command=True)
def _email(ctx: typer.Context) -> None:
    help_if_bare(ctx)


@email_app.command("preview")
def email_preview(
    template: Annotated[str, typer.Argument(help="The template's name, e.g. welcome.")],
    data: Annotated[
        Path | None, typer.Option(help="A JSON file with the merge data (an object).")
    ] = None,
    templates: Annotated[Path, typer.Option(help="The folder of templates.")] = Path(
        "templates/email"
    ),
    out: Annotated[
        Path | None,
        typer.Option(help="Save the whole message here (.eml) instead of printing it."),
    ] = None,
) -> None:
    """Render TEMPLATE with the merge data and print its subject, text and HTML.

    With --out, the message is saved as an .eml file (open it in a mail client to see
    what recipients will see). Exit status: 0 rendered, 2 a missing template, bad data
    or a missing extra.
    """
    try:
        from corestone.email.message import EmailMessage
        from corestone.email.templates import EmailTemplates

        values = json.loads(data.read_text()) if data is not None else {}
        if not isinstance(values, dict):
            raise ValueError("the merge data must be a JSON object")
        rendered = EmailTemplates(templates).render(template, values)
    except (CorestoneError, ValueError, OSError) as error:
        typer.echo(f"corestone email preview: {error}", err=True)
        raise typer.Exit(EXIT_CONFIGURATION) from None
    if out is None:
        typer.echo(f"Subject: {rendered.subject}\n\n--- text ---\n{rendered.text}")
        if rendered.html is not None:
            typer.echo(f"\n--- html ---\n{rendered.html}")
        raise typer.Exit(EXIT_OK)
    message = EmailMessage.build(
        sender="preview@example.com", to="recipient@example.com", subject=rendered.subject,
        text=rendered.text, html=rendered.html,
    )  # fmt: skip
    out.write_bytes(message.to_mime().as_bytes())
    typer.echo(f"saved {out}")


@email_app.command("list")
def email_list(
    status: Annotated[
        str | None, typer.Option(help="Only these statuses, comma-separated (queued,failed).")
    ] = None,
    limit: Annotated[int, typer.Option(metavar="N", min=1, max=200)] = 50,
    bulk: Annotated[
        str | None, typer.Option(metavar="ID", help="Only the messages of this bulk send.")
    ] = None,
) -> None:
    """List the newest messages of the outbox in CORESTONE_DATABASE_URL, and counts by status.

    With --bulk, the messages and counts of that bulk send only. Exit status: 0 listed,
    1 the database is unreachable, 2 bad configuration or filter.
    """
    from corestone.email.tracking import parse_statuses  # lazy: keep start-up light

    settings = settings_or_exit(quiet=True)
    try:
        wanted = parse_statuses(status)
    except CorestoneError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(EXIT_CONFIGURATION) from None

    async def read(tracker: EmailTracker) -> tuple[list[MessageSummary], dict[str, int]]:
        items = await tracker.messages(statuses=wanted, limit=limit, bulk_id=bulk)
        return items, await tracker.counts(bulk_id=bulk)

    items, counts = _with_tracker(settings, read)
    for item in items:
        to = ", ".join(item.to)
        typer.echo(f"{item.id}  {item.status:<10}  {item.created_at:%Y-%m-%d %H:%M:%S}  {to}")
    typer.echo("  ".join(f"{name}={count}" for name, count in sorted(counts.items())) or "empty")


@email_app.command("bulk")
def email_bulk(
    template: Annotated[str, typer.Argument(help="The template's name, e.g. newsletter.")],
    recipients: Annotated[
        Path,
        typer.Option(
            help="A .csv (a header row with an email column) or .jsonl file (an object "
            "with email per line); every other column or key is the recipient's merge data."
        ),
    ],
    sender: Annotated[str, typer.Option("--from", help="The sender's address.")],
    templates: Annotated[Path, typer.Option(help="The folder of templates.")] = Path(
        "templates/email"
    ),
    key: Annotated[
        str | None,
        typer.Option(help="An idempotency key: running the command again queues nothing new."),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Show a progress bar until every message is done.")
    ] = False,
    poll: Annotated[float, typer.Option(metavar="SECONDS", min=0.01)] = 0.5,
    timeout: Annotated[
        float | None, typer.Option(metavar="SECONDS", help="Stop waiting after this long.")
    ] = None,
) -> None:
    """Queue TEMPLATE for every recipient in --recipients (in CORESTONE_DATABASE_URL's outbox).

    Every message is rendered and validated before anything is stored; all are stored
    in one transaction, and a running sender (a worker, or the application) delivers
    them in provider-native batches. Prints the bulk's id. With --wait, shows a progress
    bar until none is queued or sending, then the counts by status. Exit status: 0
    queued (and, with --wait, none failed), 1 the database is unreachable, a message
    failed or --timeout passed, 2 bad configuration, file or template.
    """
    settings = settings_or_exit(quiet=True)
    try:
        from corestone.email.bulk import BulkMail
        from corestone.email.templates import EmailTemplates

        people = read_recipients(recipients)
        library = EmailTemplates(templates)
    except (CorestoneError, ValueError, OSError) as error:
        typer.echo(f"corestone email bulk: {error}", err=True)
        raise typer.Exit(EXIT_CONFIGURATION) from None

    async def queue(tracker: EmailTracker) -> str | CorestoneError:
        from corestone.email.service import EmailService

        try:
            return await EmailService(tracker.database).send_bulk(
                library, template, people, mail=BulkMail(sender=sender), idempotency_key=key
            )
        except (InvalidInputError, NotFoundError) as error:  # the file's or template's fault
            return error

    bulk_id = _with_tracker(settings, queue)
    if isinstance(bulk_id, CorestoneError):
        typer.echo(f"corestone email bulk: {bulk_id.message}", err=True)
        raise typer.Exit(EXIT_CONFIGURATION)
    typer.echo(f"bulk {bulk_id}: {len(people)} recipient(s) queued")
    if not wait:
        raise typer.Exit(EXIT_OK)
    progress = _with_tracker(settings, lambda t: watch_bulk(t, bulk_id, poll, timeout))
    typer.echo("  ".join(f"{name}={n}" for name, n in sorted(progress.counts.items())))
    if not progress.done:
        typer.echo(f"error: {progress.pending} message(s) still pending after {timeout}s", err=True)
        raise typer.Exit(EXIT_SERVICE_FAILED)
    failed = sum(progress.counts.get(s, 0) for s in ("failed", "unknown", "bounced"))
    raise typer.Exit(EXIT_SERVICE_FAILED if failed else EXIT_OK)


@email_app.command("show")
def email_show(message_id: Annotated[str, typer.Argument(help="The message's id.")]) -> None:
    """Show one message (recipients, status, provider, last error) and its status history.

    Exit status: 0 shown, 1 the database is unreachable, 2 no such message.
    """
    settings = settings_or_exit(quiet=True)
    found = _with_tracker(settings, lambda tracker: tracker.message(message_id))
    if found is None:
        typer.echo(f"error: no message {message_id}", err=True)
        raise typer.Exit(EXIT_CONFIGURATION)
    for key, value in found.as_json().items():
        if key != "history":
            typer.echo(f"{key}: {value}")
    for entry in found.history or []:
        via = f" via {entry.provider}" if entry.provider else ""
        typer.echo(f"  {entry.at:%Y-%m-%d %H:%M:%S}  {entry.status}{via}  {entry.detail or ''}")


@email_app.command("retry")
def email_retry(
    message_id: Annotated[str, typer.Argument(help="A failed or unknown message.")],
) -> None:
    """Queue a failed or unknown message again (a sender delivers it at its next pass).

    For ``unknown`` check the provider's logs first: the recipient may get a second copy.
    Exit status: 0 queued, 1 the database is unreachable, 2 not a failed or unknown message.
    """
    settings = settings_or_exit(quiet=True)

    async def requeue(tracker: EmailTracker) -> bool:
        from corestone.email.service import EmailService

        return await EmailService(tracker.database).requeue(message_id)

    if not _with_tracker(settings, requeue):
        typer.echo(f"error: {message_id} is not a failed or unknown message", err=True)
        raise typer.Exit(EXIT_CONFIGURATION)
    typer.echo(f"{message_id}  queued")


def _with_tracker(settings: Settings, work: Callable[[EmailTracker], Awaitable[T]]) -> T:
    """Run ``work`` with a tracker on the settings' database; exit 1 if it fails."""

    async def run() -> T:
        from corestone.db import Database  # lazy: keep start-up light
        from corestone.email.tracking import EmailTracker

        db = Database.from_settings(settings)
        await db.start()
        try:
            return await work(EmailTracker(db))
        finally:
            await db.aclose()

    return run_on_database(run(), tables="email")


@saga_app.command("recover")
def saga_recover(
    app_ref: Annotated[
        str,
        typer.Option(
            "--app",
            metavar="MODULE:ATTR",
            help="The application's SagaRegistry as module:attribute "
            "(or a callable returning one), e.g. taskboard.services.workspaces:SAGAS.",
        ),
    ],
    limit: Annotated[
        int, typer.Option(metavar="N", help="Most sagas to recover in this run.", min=1)
    ] = 100,
    app_dir: Annotated[
        Path, typer.Option(metavar="DIR", help="Directory put first on the import path for --app.")
    ] = Path("."),
) -> None:
    """Resume or compensate sagas stuck past their lease in CORESTONE_DATABASE_URL.

    Safe while workers run: a saga is claimed by one process only. Prints one line per
    saga. Exit status: 0 all ended completed or compensated, 1 one failed (needs an
    operator) or the database is unreachable, 2 bad configuration or --app.
    """
    settings = settings_or_exit(quiet=True)
    registry = _saga_registry(app_ref, app_dir)
    try:
        outcomes = asyncio.run(_recover(settings, registry, limit))
    except CorestoneError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(EXIT_SERVICE_FAILED) from None
    for outcome in outcomes:
        typer.echo(f"{outcome.id}  {outcome.type}  {outcome.status.value}")
    typer.echo(f"recovered {len(outcomes)} saga(s)")
    failed = any(outcome.status.value == "failed" for outcome in outcomes)
    raise typer.Exit(EXIT_SERVICE_FAILED if failed else EXIT_OK)


@saga_app.command("retry")
def saga_retry(
    saga_id: Annotated[str, typer.Argument(help="The id of a saga in status failed.")],
    app_ref: Annotated[
        str,
        typer.Option(
            "--app",
            metavar="MODULE:ATTR",
            help="The application's SagaRegistry as module:attribute.",
        ),
    ],
    app_dir: Annotated[
        Path, typer.Option(metavar="DIR", help="Directory put first on the import path for --app.")
    ] = Path("."),
) -> None:
    """Compensate a failed saga again, from the compensation that failed (after a fix).

    A saga failed because its definition lost a step it recorded is compensated by key
    once a definition with that step is deployed. Exit status: 0 compensated, 1 failed
    again (or the database is unreachable), 2 bad configuration, --app, or no failed
    saga with that id.
    """
    settings = settings_or_exit(quiet=True)
    registry = _saga_registry(app_ref, app_dir)

    async def retry() -> SagaOutcome:
        from corestone.db import Database  # lazy: keep start-up light
        from corestone.sagas import SagaOrchestrator

        db = Database.from_settings(settings)
        await db.start()
        try:
            return await SagaOrchestrator(db, registry).retry_compensation(saga_id)
        finally:
            await db.aclose()

    try:
        outcome = asyncio.run(retry())
    except NotFoundError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(EXIT_CONFIGURATION) from None
    except CorestoneError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(EXIT_SERVICE_FAILED) from None
    typer.echo(f"{outcome.id}  {outcome.type}  {outcome.status.value}")
    raise typer.Exit(EXIT_OK if outcome.status.value == "compensated" else EXIT_SERVICE_FAILED)


async def _recover(settings: Settings, registry: SagaRegistry, limit: int) -> list[SagaOutcome]:
    from corestone.db import Database  # lazy: keep start-up light
    from corestone.sagas import SagaOrchestrator

    db = Database.from_settings(settings)
    await db.start()
    try:
        return await SagaOrchestrator(db, registry).recover(limit=limit)
    finally:
        await db.aclose()


def _saga_registry(app_ref: str, app_dir: Path) -> SagaRegistry:
    sys.path.insert(0, str(app_dir.resolve()))
    try:
        # lazy: keeps start-up light; without a database extra it is the MissingExtraError
        # (a configuration error) reported below in one line.
        from corestone.sagas import load_registry

        return load_registry(app_ref)
    except CorestoneError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(EXIT_CONFIGURATION) from None


def main() -> None:
    """Run the ``corestone`` command line (the console script's entry point)."""
    app(prog_name="corestone")


if __name__ == "__main__":
    main()
