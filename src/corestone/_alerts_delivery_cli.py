"""``corestone alerts silence add|list|expire`` and ``corestone alerts history``.

Kept apart from :mod:`corestone.cli`; :func:`add_delivery_commands` puts them on the
``alerts`` group, beside the rule commands. They work on the database of
``CORESTONE_DATABASE_URL`` (its alert tables migrated), as the API does: a silence made
here mutes every process at its next evaluation. Exit status: 0 done, 1 the database
failed or the silence is unknown, 2 bad input or configuration.
"""

from __future__ import annotations

import getpass
import re
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, TypeVar

from corestone._cli_common import help_if_bare, run_on_database, settings_or_exit
from corestone._extras import requires_extra
from corestone.config import Settings
from corestone.errors import InvalidInputError

with requires_extra(__name__, "cli"):
    import typer

__all__ = [
    "add_delivery_commands",
    "alerts_history",
    "parse_duration",
    "silence_add",
    "silence_app",
    "silence_expire",
    "silence_list",
]

T = TypeVar("T")
_EXIT_INPUT = 2
_TABLES = "alert (corestone_alert_*)"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

silence_app = typer.Typer(
    help="Silences: mute alerts matching label matchers until they expire.",
    rich_markup_mode=None,
)


@silence_app.callback(invoke_without_command=True)
def _silence(ctx: typer.Context) -> None:
    help_if_bare(ctx)


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``2h``, ``1d`` as a timedelta; InvalidInputError on ``for``."""
    found = _DURATION.match(text.strip())
    if found is None:
        raise InvalidInputError("for: must look like 90s, 30m, 2h or 1d", field="for")
    return timedelta(seconds=float(found[1]) * _UNITS[found[2]])


def _on_database(settings: Settings, work: Callable[[Any, Any], Awaitable[T]]) -> T:
    """Run ``work(session, store)`` in one transaction; bad input exits 2."""
    from corestone.db.database import Database
    from corestone.observability.alerts.silences import SilenceStore

    store = SilenceStore(max_duration=timedelta(days=settings.alerts_silence_max_days))

    async def main() -> T | InvalidInputError:
        database = Database(settings.database_url)
        await database.start()
        try:
            async with database.transaction() as tx:
                return await work(tx.session, store)
        except InvalidInputError as error:  # bad input, not a failed database: exit 2
            return error
        finally:
            await database.aclose()

    done = run_on_database(main(), tables=_TABLES)
    if isinstance(done, InvalidInputError):
        typer.echo(f"error: {done.message}", err=True)
        raise typer.Exit(_EXIT_INPUT)
    return done


def _line(silence: Any, now: datetime) -> str:
    shown = silence.as_json(now)
    matchers = " ".join(str(m) for m in silence.matchers)
    return (
        f"{shown['id']}  {shown['state']:<8}  until {silence.ends_at:%Y-%m-%d %H:%M:%S}Z  "
        f"{matchers}  by {silence.created_by}"
        + (f"  # {silence.comment}" if silence.comment else "")
    )


@silence_app.command("add")
def silence_add(
    matchers: Annotated[
        list[str], typer.Argument(help="Label matchers: name=value, name!=value, =~ or !~.")
    ],
    duration: Annotated[
        str, typer.Option("--for", help="How long it lasts: 90s, 30m, 2h, 1d.")
    ] = "2h",
    comment: Annotated[str, typer.Option(help="Why (shown beside it).")] = "",
    author: Annotated[
        str | None, typer.Option(help="Who silenced it (default: user@host).")
    ] = None,
) -> None:
    """Mute alerts matching every MATCHER from now, for --for; prints the silence."""
    from corestone.db.models import utc_now

    settings = settings_or_exit(quiet=True)
    try:
        length = parse_duration(duration)
    except InvalidInputError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(_EXIT_INPUT) from None
    now = utc_now()
    who = author or f"{getpass.getuser()}@{socket.gethostname()}"

    async def add(session: Any, store: Any) -> Any:
        return await store.create(
            session,
            matchers=matchers,
            ends_at=now + length,
            created_by=who,
            comment=comment,
            now=now,
        )

    typer.echo(_line(_on_database(settings, add), now))


@silence_app.command("list")
def silence_list(
    expired: Annotated[bool, typer.Option("--expired", help="Include ended silences.")] = False,
) -> None:
    """List silences, newest first (those not yet ended, unless --expired)."""
    from corestone.db.models import utc_now

    settings = settings_or_exit(quiet=True)
    now = utc_now()

    async def read(session: Any, store: Any) -> list[Any]:
        found: list[Any] = await store.all(session, now=now, include_expired=expired)
        return found

    silences = _on_database(settings, read)
    for silence in silences:
        typer.echo(_line(silence, now))
    if not silences:
        typer.echo("no silences")


@silence_app.command("expire")
def silence_expire(
    silence_id: Annotated[str, typer.Argument(metavar="ID", help="The silence's id.")],
) -> None:
    """End a silence now (it stays listed with --expired)."""
    from corestone.db.models import utc_now

    settings = settings_or_exit(quiet=True)
    now = utc_now()

    async def expire(session: Any, store: Any) -> Any:
        return await store.expire(session, silence_id, now=now)

    typer.echo(_line(_on_database(settings, expire), now))


def alerts_history(
    limit: Annotated[int, typer.Option(metavar="N", min=1, max=1000)] = 50,
    rule: Annotated[str | None, typer.Option(help="Only this rule's alerts.")] = None,
) -> None:
    """The newest alert state changes, from every process (newest first)."""
    from corestone.observability.alerts import store

    settings = settings_or_exit(quiet=True)

    async def read(session: Any, _store: Any) -> list[store.HistoryEntry]:
        return await store.history(session, limit=limit, rule=rule)

    entries = _on_database(settings, read)
    for entry in entries:
        labels = ",".join(f"{k}={v!r}" for k, v in sorted(entry.labels.items()))
        typer.echo(
            f"{entry.at:%Y-%m-%d %H:%M:%S}Z  {entry.rule}  {entry.previous} -> {entry.state}  "
            f"value={entry.value:g}  {{{labels}}}"
        )
    if not entries:
        typer.echo("no alert history")


def add_delivery_commands(alerts_app: typer.Typer) -> None:
    """Put ``silence add|list|expire`` and ``history`` on the ``alerts`` group."""
    alerts_app.add_typer(silence_app, name="silence")
    alerts_app.command("history")(alerts_history)
