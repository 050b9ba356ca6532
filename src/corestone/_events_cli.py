"""``corestone events dead-letters list|replay|drop``: the consumers' dead letters, by hand.

Kept apart from :mod:`corestone.cli` (which adds this group). This process has no
handlers, so ``replay`` does not handle anything itself: it marks the dead letters for
replay in the database, and every running consumer of their group replays the marked
ones at its next look (``EventConsumer.replay_requested``), once, through the inbox.
``--wait`` then follows the rows: gone means replayed; still there with the mark
cleared means the replay failed, and the row has the new reason.

Exit status, as for the email and saga commands: 0 done, 1 the database is
unreachable (or, with ``--wait``, a replay failed or nobody replayed it in time), 2 bad
configuration, arguments, or no such dead letter.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from corestone._extras import requires_extra

with requires_extra(__name__, "cli"):
    import typer

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from corestone.events.inbox import DeadLetter, InboxStore

__all__ = [
    "dead_letters_app",
    "dead_letters_drop",
    "dead_letters_list",
    "dead_letters_replay",
    "events_app",
]

T = TypeVar("T")

_EXIT_OK = 0
_EXIT_FAILED = 1
_EXIT_USAGE = 2
_REASON_SHOWN = 100

events_app = typer.Typer(help="Domain events: the consumers' dead letters.", rich_markup_mode=None)
dead_letters_app = typer.Typer(
    help="List, replay (through the running consumers) and drop the consumers' dead letters.",
    rich_markup_mode=None,
)
events_app.add_typer(dead_letters_app, name="dead-letters")


@events_app.callback(invoke_without_command=True)
def _events(ctx: typer.Context) -> None:
    from corestone._cli_common import help_if_bare

    help_if_bare(ctx)


@dead_letters_app.callback(invoke_without_command=True)
def _dead_letters(ctx: typer.Context) -> None:
    from corestone._cli_common import help_if_bare

    help_if_bare(ctx)


_ID_MAX = 2**63 - 1
"""The largest dead letter id (a BIGINT): a larger one is no dead letter, not a database error."""


def _group(value: str | None) -> str | None:
    """A consumer group as ``EventConsumer`` allows one: 1 to 100 printable characters.

    Anything else is a usage error (exit 2), where a NUL reached PostgreSQL and came back
    as exit 1, "are the events tables migrated?".
    """
    if value is not None and not (0 < len(value) <= 100 and value.isprintable()):
        raise typer.BadParameter("a consumer group is 1 to 100 printable characters")
    return value


_ConsumerOption = Annotated[
    str | None,
    typer.Option("--consumer", metavar="GROUP", help="The consumer group.", callback=_group),
]


@dead_letters_app.command("list")
def dead_letters_list(
    consumer: _ConsumerOption = None,
    limit: Annotated[int, typer.Option(metavar="N", min=1, max=1000)] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON array, bodies included.")
    ] = False,
) -> None:
    """List the dead letters in CORESTONE_DATABASE_URL, oldest first.

    One line each: id, consumer, event id, type, attempts, when it was stored, and the
    reason (clipped to one line); "[replay requested]" marks one waiting for a
    consumer. Exit status: 0 listed, 1 the database is unreachable, 2 bad configuration.
    """

    async def read(store: InboxStore, session: AsyncSession) -> tuple[list[DeadLetter], int]:
        letters = await store.dead_letters(session, consumer=consumer, limit=limit)
        return letters, await store.count_dead_letters(session, consumer=consumer)

    letters, total = _run(read, read_only=True)
    if as_json:
        typer.echo(json.dumps([_as_json(letter) for letter in letters], indent=2))
        raise typer.Exit(_EXIT_OK)
    for letter in letters:
        typer.echo(_line(letter))
    of = f" of {consumer}" if consumer else ""
    typer.echo(f"{len(letters)} of {total} dead letter(s){of}" if total else f"no dead letters{of}")


@dead_letters_app.command("replay")
def dead_letters_replay(
    letter_id: Annotated[
        int | None,
        typer.Argument(metavar="ID", help="The dead letter to replay.", min=1, max=_ID_MAX),
    ] = None,
    consumer: _ConsumerOption = None,
    every: Annotated[bool, typer.Option("--all", help="Every dead letter of --consumer.")] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the consumers and report each outcome.")
    ] = False,
    timeout: Annotated[float, typer.Option(metavar="SECONDS", min=0.1)] = 30.0,
    poll: Annotated[float, typer.Option(metavar="SECONDS", min=0.05)] = 0.5,
) -> None:
    """Mark dead letter ID (or, with --consumer GROUP --all, every one of GROUP) for replay.

    A running consumer of the letter's group replays it within a few seconds, once,
    through its inbox: handled, it is removed; failed again, it stays with the new
    reason and one attempt more. With --wait, waits up to --timeout for that and
    prints each outcome. Exit status: 0 marked (with --wait: all replayed), 1 the
    database is unreachable, a replay failed, or none was replayed in time (is a
    consumer of the group running?), 2 bad arguments or no such dead letter.
    """
    if (letter_id is None) != every or (every and consumer is None):
        typer.echo("error: give a dead letter's ID, or --consumer GROUP --all", err=True)
        raise typer.Exit(_EXIT_USAGE)
    ids = None if letter_id is None else [letter_id]

    async def mark(store: InboxStore, session: AsyncSession) -> list[int]:
        return await store.request_replay(session, ids=ids, consumer=consumer)

    marked = _run(mark)
    if not marked and letter_id is not None:
        of = f" of {consumer}" if consumer else ""
        typer.echo(f"error: no dead letter {letter_id}{of}", err=True)
        raise typer.Exit(_EXIT_USAGE)
    if not marked:
        typer.echo(f"no dead letters of {consumer}")
        raise typer.Exit(_EXIT_OK)
    typer.echo(f"{len(marked)} dead letter(s) marked for replay by their consumers")
    if not wait:
        raise typer.Exit(_EXIT_OK)
    outcomes = _run(
        lambda store, session: _outcomes(store, session, marked),
        read_only=True,
        until=lambda settled: len(settled) == len(marked),
        every=poll,
        timeout=timeout,
    )
    waiting = (False, f"not replayed within {timeout:g}s (is a consumer of its group running?)")
    for each in marked:
        typer.echo(f"{each}  {outcomes.get(each, waiting)[1]}")
    replayed = all(outcomes.get(each, waiting)[0] for each in marked)
    raise typer.Exit(_EXIT_OK if replayed else _EXIT_FAILED)


@dead_letters_app.command("drop")
def dead_letters_drop(
    letter_id: Annotated[
        int, typer.Argument(metavar="ID", help="The dead letter to delete.", min=1, max=_ID_MAX)
    ],
    consumer: _ConsumerOption = None,
) -> None:
    """Delete dead letter ID for good (with --consumer, only if it is that group's).

    Exit status: 0 dropped, 1 the database is unreachable, 2 no such dead letter.
    """

    async def drop(store: InboxStore, session: AsyncSession) -> DeadLetter | None:
        letter = await store.dead_letter_by_id(session, letter_id)
        if letter is None or (consumer is not None and letter.consumer != consumer):
            return None
        return await store.take_dead_letter(session, letter_id)

    if _run(drop) is None:
        of = f" of {consumer}" if consumer else ""
        typer.echo(f"error: no dead letter {letter_id}{of}", err=True)
        raise typer.Exit(_EXIT_USAGE)
    typer.echo(f"{letter_id}  dropped")


async def _outcomes(
    store: InboxStore, session: AsyncSession, ids: list[int]
) -> dict[int, tuple[bool, str]]:
    """What became of each settled id: (True, "replayed") when its row is gone, (False,
    "failed: reason") when the row is there with its mark cleared. An id still marked
    is not settled yet."""
    found = {letter.id: letter for letter in await store.dead_letters(
        session, ids=ids, limit=len(ids))}  # fmt: skip
    settled: dict[int, tuple[bool, str]] = {}
    for letter_id in ids:
        letter = found.get(letter_id)
        if letter is None:
            settled[letter_id] = (True, "replayed")
        elif letter.replay_requested_at is None:
            settled[letter_id] = (False, f"failed: {_one_line(letter.reason, 300)}")
    return settled


def _run(
    work: Callable[[InboxStore, AsyncSession], Awaitable[T]],
    *,
    read_only: bool = False,
    until: Callable[[T], bool] | None = None,
    every: float = 0.5,
    timeout: float = 0.0,
) -> T:
    """Run ``work`` in a transaction on the settings' database; exit 1 if that fails
    (unreachable, or without the events tables), with the reason in one line.

    With ``until``, ``work`` runs again, each time in a new transaction, every
    ``every`` seconds until ``until(result)`` or ``timeout`` seconds have passed; the
    last result is returned.
    """
    from corestone._cli_common import run_on_database, settings_or_exit

    settings = settings_or_exit(quiet=True)

    async def run() -> T:
        from corestone.db import Database  # lazy: keep start-up light
        from corestone.events.inbox import InboxStore

        db = Database.from_settings(settings)
        await db.start()
        store = InboxStore()
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while True:
                result = await db.run_in_transaction(
                    lambda tx: work(store, tx.session), read_only=read_only
                )
                if until is None or until(result):
                    return result
                if asyncio.get_running_loop().time() >= deadline:
                    return result
                await asyncio.sleep(every)
        finally:
            await db.aclose()

    return run_on_database(run(), tables="events")


def _one_line(text: str, width: int) -> str:
    """``text`` on one line, printable (a hostile reason may carry terminal escapes)."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _line(letter: DeadLetter) -> str:
    mark = "[replay requested] " if letter.replay_requested_at is not None else ""
    return "  ".join(
        [
            str(letter.id),
            _one_line(letter.consumer, 100),
            _one_line(letter.event_id, 64),
            _one_line(letter.type or "-", 64),
            f"attempts={letter.attempts}",
            f"{letter.created_at:%Y-%m-%d %H:%M:%S}",
            mark + _one_line(letter.reason, _REASON_SHOWN),
        ]
    )


def _as_json(letter: DeadLetter) -> dict[str, Any]:
    requested = letter.replay_requested_at
    return {
        "id": letter.id,
        "consumer": letter.consumer,
        "event_id": letter.event_id,
        "type": letter.type,
        "attempts": letter.attempts,
        "reason": letter.reason,
        "created_at": letter.created_at.isoformat(),
        "replay_requested_at": None if requested is None else requested.isoformat(),
        "body": letter.body,
    }
