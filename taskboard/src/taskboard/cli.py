"""The `taskboard` command: serve the API, run background workers, upgrade the schema."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import socket
import sys
from collections.abc import Coroutine
from typing import Annotated, Any

import typer

from corestone import Infrastructure, NotFoundError, Settings, StartupError
from corestone.cli import help_if_bare, settings_or_exit, version_callback
from corestone.errors import ShutdownError
from corestone.observability import get_logger
from corestone.web import WorkerProcess, http_url, listen, serve_workers
from corestone.web import run as run_loop
from corestone.web import serve as serve_app
from taskboard.app import (
    add_background_work,
    add_schema_upgrade,
    create_app,
    prepare,
    register_services,
)
from taskboard.domain.models import TokenRole
from taskboard.seed import Demo, ensure_demo
from taskboard.services import UserService

__all__ = ["app", "main"]

log = get_logger("taskboard.cli")

# Plain click help: typer's rich tables print "<bool>" beside every flag and keep a
# docstring's line breaks mid-sentence (see corestone.cli).
app = typer.Typer(
    help="taskboard: a multi-workspace task tracker built on corestone.", rich_markup_mode=None
)
db_app = typer.Typer(help="Database schema commands.", rich_markup_mode=None)
app.add_typer(db_app, name="db")
token_app = typer.Typer(help="Bearer tokens.", rich_markup_mode=None)
app.add_typer(token_app, name="token")


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=version_callback("taskboard"),
            is_eager=True,
        ),
    ] = False,
) -> None:
    help_if_bare(ctx)


@db_app.callback(invoke_without_command=True)
def _db(ctx: typer.Context) -> None:
    help_if_bare(ctx)


@app.command()
def serve(
    host: Annotated[str, typer.Option(metavar="HOST", help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(metavar="PORT", help="Port to bind.", min=0, max=65535)
    ] = 8000,
    seed: Annotated[
        bool | None,
        typer.Option(
            "--seed/--no-seed",
            help="Create the demo workspace and mint a demo token "
            "[default: seed, but no seed when CORESTONE_ENV=prod].",
            show_default=False,
        ),
    ] = None,
    worker: Annotated[
        bool,
        typer.Option(
            help="Run background work (saga recovery, email, the events' relay and "
            "consumers) in this process; --no-worker leaves it to `taskboard worker` "
            "processes and only records events."
        ),
    ] = True,
    workers: Annotated[
        int,
        typer.Option(
            metavar="N",
            help="Processes serving the port, each a whole service instance; migrations and "
            "the demo seed run once, before they start.",
            min=1,
            max=64,
        ),
    ] = 1,
) -> None:
    """Run the HTTP API until SIGTERM or Ctrl-C, then drain and stop cleanly.

    The port is bound before anything else: on a taken port the command fails without
    running migrations or replacing the demo token of the server already there.
    """
    settings = settings_or_exit()
    seeding = seed if seed is not None else settings.env != "prod"
    if not worker and _memory_broker(settings):
        _warn_memory_broker()
    listener = _listen_or_exit(host, port)
    if workers == 1:
        with listener:
            url = http_url(host, listener.getsockname()[1])
            _run(_serve(settings, listener, url, seeding, worker))
        return
    # serve_workers binds the port itself: this check leaves only the moment between
    # the close and its bind, instead of the whole start-up work, for a port to be taken.
    listener.close()
    _run(_start_once(settings, http_url(host, port), seeding, workers))
    status = serve_workers(
        functools.partial(_serve_worker, worker),
        workers=workers,
        host=host,
        port=port,
        stop_timeout=settings.shutdown_timeout_seconds + _STOP_ALLOWANCE_SECONDS,
    )
    if status != 0:
        raise typer.Exit(status)


@app.command("worker")
def worker_command(
    interval: Annotated[
        float,
        typer.Option(metavar="SECONDS", help="Seconds between saga recovery passes.", min=0.05),
    ] = 10.0,
) -> None:
    """Run the background work without HTTP until SIGTERM or Ctrl-C: saga recovery, the
    email sender, the events' relay and their consumers (the welcome and assignment mail).

    For running at scale: N `taskboard serve --no-worker` processes plus any number of
    workers on one PostgreSQL and a broker (CORESTONE_BROKER_URL); work is claimed through
    the database, never done twice. With the memory broker, run exactly one worker.
    """
    settings = settings_or_exit()
    _run(_work(settings, interval))


async def _work(settings: Settings, interval: float) -> None:
    infra = Infrastructure(settings)
    add_schema_upgrade(infra)  # first: the background work starts on an up-to-date schema
    add_background_work(infra, register_services(infra), interval_seconds=interval)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with infra:
            await prepare(infra)
            broker = infra.events.broker.name
            typer.echo(
                f"taskboard worker running (database: {infra.db.safe_url}, broker: {broker})"
            )
            await stop.wait()
            typer.echo("taskboard worker stopping")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _memory_broker(settings: Settings) -> bool:
    """Whether this process's events broker is the memory one (the default)."""
    url = settings.broker_url
    return not url or url.lower().startswith("memory:")


def _warn_memory_broker() -> None:
    """Say what `serve --no-worker` with the memory broker means, once, at start-up.

    A warning, not a refusal: the outbox in the shared database hands every event over,
    so one `taskboard worker` (whose relay publishes into its own memory broker, where
    its consumers take them) is a working deployment. What breaks is a second worker, or
    a consumer anywhere else: each worker's memory broker holds only what its own relay
    published, so the events would be split between them, and a task's events could be
    handled out of order. docs/scaling.md.
    """
    log.warning(
        "serve --no-worker with the memory broker: this process only records events; "
        "run exactly one `taskboard worker` to publish and consume them (its broker is in "
        "its own memory), or set CORESTONE_BROKER_URL to a real broker for several",
        broker="memory",
    )


_STOP_ALLOWANCE_SECONDS = 60.0
"""After the drain deadline, how long a worker may take to stop its components."""


def _listen_or_exit(host: str, port: int) -> socket.socket:
    try:
        return listen(host, port)
    except OSError as error:
        reason = (os.strerror(error.errno) if error.errno else str(error)).lower()
        where = http_url(host, port).removeprefix("http://")  # [::1]:8000, as in a URL
        typer.echo(f"error: cannot listen on {where}: {reason}", err=True)
        raise typer.Exit(1) from None


async def _serve(
    settings: Settings, listener: socket.socket, url: str, seed: bool, worker: bool
) -> None:
    infra = Infrastructure(settings)
    asgi = create_app(infra, worker=worker)
    async with infra:
        await _startup_work(infra, url, seed)
        await serve_app(
            asgi,
            health=infra.health,
            metrics=infra.metrics,
            sockets=[listener],
            shutdown_timeout=settings.shutdown_timeout_seconds,
        )


async def _start_once(settings: Settings, url: str, seed: bool, workers: int) -> None:
    """The start-up work of `serve --workers N`, done by the supervisor before any worker."""
    async with Infrastructure(settings) as infra:
        await _startup_work(infra, url, seed)
    typer.echo(f"taskboard starting {workers} workers on {url}")


async def _startup_work(infra: Infrastructure, url: str, seed: bool) -> None:
    await prepare(infra)
    demo = await ensure_demo(infra.db) if seed else None
    _announce(infra.settings, url, infra.db.safe_url, demo)


def _announce(settings: Settings, url: str, database: str, demo: Demo | None) -> None:
    """Say where the service is, in the log's own format; the demo token never in a log.

    docs/decisions/0028: console logs get the plain banner; JSON logs get one structured
    line. The token is a credential: it goes to stdout as text outside prod, and in prod
    only when stdout is a terminal, never into a log a collector keeps.
    """
    workspace = None if demo is None else demo.workspace_id
    if settings.effective_log_format == "json":
        log.info("taskboard serving", url=url, database=database, demo_workspace_id=workspace)
    show_token = demo is not None and (settings.env != "prod" or _on_terminal())
    if settings.effective_log_format == "console" or show_token:
        lines = [f"\ntaskboard on {url}  (database: {database})"]
        if demo is not None and show_token:
            lines += [
                f"  demo workspace id: {demo.workspace_id}",
                f"  demo token:        {demo.token}",
                f'  try: curl -H "Authorization: Bearer {demo.token}" {url}/api/me',
            ]
        typer.echo("\n".join(lines) + "\n")
    if demo is not None and not show_token:
        log.warning(
            "demo token not shown: in prod a token is printed only to a terminal",
            hint="run `taskboard serve --seed` from a terminal, or create a user with "
            "POST /api/users",
        )


def _on_terminal() -> bool:
    return sys.stdout.isatty()


def _serve_worker(background: bool, worker: WorkerProcess) -> None:
    """One worker process of `serve --workers N` (runs in the spawned process).

    Background work (saga recovery) runs in worker 0 only: once per service is enough,
    and the recovery claims work through the database anyway.
    """
    try:
        settings = settings_or_exit()
        _run(_serve_as_worker(settings, background and worker.index == 0, worker))
    except typer.Exit as done:
        raise SystemExit(done.exit_code) from None


async def _serve_as_worker(settings: Settings, background: bool, worker: WorkerProcess) -> None:
    infra = Infrastructure(settings)
    asgi = create_app(infra, worker=background)
    async with infra:
        await serve_app(
            asgi,
            health=infra.health,
            metrics=infra.metrics,
            shutdown_timeout=settings.shutdown_timeout_seconds,
            worker=worker,
        )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration to CORESTONE_DATABASE_URL."""
    settings = settings_or_exit()

    async def run() -> None:
        async with Infrastructure(settings) as infra:
            await prepare(infra)

    _run(run())
    typer.echo("schema up to date")


@token_app.callback(invoke_without_command=True)
def _token(ctx: typer.Context) -> None:
    help_if_bare(ctx)


@token_app.command("create")
def token_create(
    user: Annotated[int, typer.Option("--user", metavar="ID", help="The user's id.", min=1)],
    operator: Annotated[
        bool,
        typer.Option(
            "--operator", help="May read the dashboard (/ops) without owning a workspace."
        ),
    ] = False,
    label: Annotated[
        str, typer.Option(metavar="LABEL", help="A name for the token (max 50 characters).")
    ] = "cli",
) -> None:
    """Print a new bearer token for an existing user (shown once: only its digest is kept)."""
    if not label or len(label) > 50:
        typer.echo("error: --label must be 1 to 50 characters", err=True)
        raise typer.Exit(2)
    settings = settings_or_exit()
    role = TokenRole.OPERATOR if operator else TokenRole.USER
    minted: list[str] = []

    async def run() -> None:
        async with Infrastructure(settings) as infra:
            await prepare(infra)
            minted.append(await UserService(infra.db).create_token(user, role=role, label=label))

    try:
        _run(run())
    except NotFoundError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(minted[0])


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    try:
        run_loop(coroutine)
    except StartupError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(1) from None
    except ShutdownError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        raise typer.Exit(130) from None


def main() -> None:
    """Run the ``taskboard`` command line (the console script's entry point)."""
    app(prog_name="taskboard")


if __name__ == "__main__":
    main()
