"""The `taskboard` command: serve the API, run background workers, upgrade the schema."""

from __future__ import annotations

import asyncio
import functools
import signal
from collections.abc import Coroutine
from typing import Annotated, Any

import typer

from corestone import Infrastructure, Settings, StartupError
from corestone.cli import settings_or_exit
from corestone.errors import ShutdownError
from corestone.web import WorkerProcess, serve_workers
from corestone.web import run as run_loop
from corestone.web import serve as serve_app
from taskboard.app import add_background_work, create_app, prepare, register_services
from taskboard.seed import ensure_demo

__all__ = ["app", "main"]

app = typer.Typer(
    help="taskboard: a multi-workspace task tracker built on corestone.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.", min=0, max=65535)] = 8000,
    seed: Annotated[
        bool, typer.Option(help="Create the demo workspace and print a demo token.")
    ] = True,
    worker: Annotated[
        bool,
        typer.Option(
            help="Run background work (saga recovery) in this process; "
            "--no-worker leaves it to `taskboard worker` processes."
        ),
    ] = True,
    workers: Annotated[
        int,
        typer.Option(
            help="Processes serving the port, each a whole service instance; migrations and "
            "the demo seed run once, before they start.",
            min=1,
            max=64,
        ),
    ] = 1,
) -> None:
    """Run the HTTP API until SIGTERM or Ctrl-C, then drain and stop cleanly."""
    settings = settings_or_exit()
    if workers == 1:
        _run(_serve(settings, host, port, seed, worker))
        return
    _run(_start_once(settings, f"http://{host}:{port}", seed, workers))
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
        float, typer.Option(help="Seconds between saga recovery passes.", min=0.05)
    ] = 10.0,
) -> None:
    """Run the background work without HTTP (saga recovery) until SIGTERM or Ctrl-C.

    For running at scale: N `taskboard serve --no-worker` processes plus any number of
    workers on one PostgreSQL; work is claimed through the database, never done twice.
    """
    settings = settings_or_exit()
    _run(_work(settings, interval))


async def _work(settings: Settings, interval: float) -> None:
    infra = Infrastructure(settings)
    add_background_work(infra, register_services(infra), interval_seconds=interval)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with infra:
            await prepare(infra)
            typer.echo(f"taskboard worker running (database: {infra.db.safe_url})")
            await stop.wait()
            typer.echo("taskboard worker stopping")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


_STOP_ALLOWANCE_SECONDS = 60.0
"""After the drain deadline, how long a worker may take to stop its components."""


async def _serve(settings: Settings, host: str, port: int, seed: bool, worker: bool) -> None:
    infra = Infrastructure(settings)
    asgi = create_app(infra, worker=worker)
    async with infra:
        await _startup_work(infra, f"http://{host}:{port}", seed)
        await serve_app(
            asgi,
            health=infra.health,
            metrics=infra.metrics,
            host=host,
            port=port,
            shutdown_timeout=settings.shutdown_timeout_seconds,
        )


async def _start_once(settings: Settings, url: str, seed: bool, workers: int) -> None:
    """The start-up work of `serve --workers N`, done by the supervisor before any worker."""
    async with Infrastructure(settings) as infra:
        await _startup_work(infra, url, seed)
    typer.echo(f"taskboard starting {workers} workers on {url}")


async def _startup_work(infra: Infrastructure, url: str, seed: bool) -> None:
    await prepare(infra)
    if seed:
        demo = await ensure_demo(infra.db)
        typer.echo(
            f"\ntaskboard on {url}  (database: {infra.db.safe_url})\n"
            f"  demo workspace id: {demo.workspace_id}\n"
            f"  demo token:        {demo.token}\n"
            f'  try: curl -H "Authorization: Bearer {demo.token}" {url}/api/me\n'
        )


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
    app(prog_name="taskboard")


if __name__ == "__main__":
    main()
