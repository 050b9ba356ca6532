"""``corestone queries report|advise``: what is slow, why, and which index would fix it.

Kept apart from :mod:`corestone.cli` (which adds this group). A command is a process of
its own: it has no query monitor's statistics (those are in the service's process, behind
``GET /api/ops/queries``), so its workload is ``pg_stat_statements`` (when the view
answers) plus any ``--statement`` given, planned generically. The catalog's drop
candidates need no workload at all.

Exit status: 0 done, 1 the database is unreachable (or, with ``--apply``, an index could
not be created), 2 bad configuration or arguments, or the ``queries`` extra missing.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

from corestone._extras import requires_extra

with requires_extra(__name__, "cli"):
    import typer

if TYPE_CHECKING:
    from corestone.config import Settings
    from corestone.db.workload import WorkloadQuery

__all__ = ["queries_advise", "queries_app", "queries_report"]

_EXIT_OK = 0
_EXIT_FAILED = 1
_EXIT_USAGE = 2
_CLIP = 110

queries_app = typer.Typer(
    help="Queries: the slowest, their plans' problems, and indexes proven to help.",
    rich_markup_mode=None,
)


@queries_app.callback(invoke_without_command=True)
def _queries(ctx: typer.Context) -> None:
    from corestone._cli_common import help_if_bare

    help_if_bare(ctx)


_Statements = Annotated[
    list[str] | None,
    typer.Option(
        "--statement",
        metavar="SQL",
        help="A statement to include ($1… for values; repeatable).",
    ),
]
_Json = Annotated[bool, typer.Option("--json", help="One JSON object.")]
_Limit = Annotated[int, typer.Option(metavar="N", min=1, max=500, help="Statements looked at.")]


@queries_app.command("report")
def queries_report(
    statement: _Statements = None, limit: _Limit = 20, as_json: _Json = False
) -> None:
    """Report the top statements, their plans' problems, index suggestions, drop candidates.

    The database is CORESTONE_DATABASE_URL. Exit status: 0 reported, 1 the database is
    unreachable, 2 bad configuration.
    """
    report = _run(statement or [], limit, apply=False)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        raise typer.Exit(_EXIT_OK)
    for line in _report_lines(report):
        typer.echo(line)


@queries_app.command("advise")
def queries_advise(
    statement: _Statements = None,
    limit: _Limit = 20,
    apply: Annotated[
        bool, typer.Option("--apply", help="Create the verified indexes (CONCURRENTLY).")
    ] = False,
    as_json: _Json = False,
) -> None:
    """Suggest indexes (proven with hypopg on PostgreSQL) and indexes to drop.

    Nothing is created unless --apply is given: then each verified suggestion's CREATE
    INDEX CONCURRENTLY runs (PostgreSQL), one at a time. Exit status: 0 done, 1 the
    database is unreachable or an index could not be created, 2 bad configuration.
    """
    report = _run(statement or [], limit, apply=apply)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        for line in _advice_lines(report):
            typer.echo(line)
    failed = any(a["error"] for a in report.get("applied", ()))
    raise typer.Exit(_EXIT_FAILED if failed else _EXIT_OK)


def _run(statements: list[str], limit: int, *, apply: bool) -> dict[str, Any]:
    from corestone._cli_common import EXIT_CONFIGURATION, run_on_database, settings_or_exit
    from corestone.errors import MissingExtraError

    settings = settings_or_exit(quiet=True)
    try:
        with requires_extra("corestone.cli", "queries"):
            import sqlglot  # noqa: F401 - the advisor's parser: fail here, not mid-report
    except MissingExtraError as missing:
        typer.echo(f"error: {missing}", err=True)
        raise typer.Exit(EXIT_CONFIGURATION) from None
    return run_on_database(_main(settings, statements, limit, apply), tables="application")


async def _main(
    settings: Settings, statements: list[str], limit: int, apply: bool
) -> dict[str, Any]:
    with requires_extra("corestone.cli", "postgres", "sqlite"):
        from sqlalchemy.ext.asyncio import create_async_engine

    from corestone.db.advisor import IndexAdvisor
    from corestone.db.report import ReportOptions, build_report
    from corestone.errors import UnavailableError

    engine = create_async_engine(settings.database_url)
    options = ReportOptions.from_settings(settings, limit=limit)
    try:
        given = [_given(n, s) for n, s in enumerate(statements, 1)] if statements else None
        report = await build_report(engine, workload=given, options=options)
        if given is not None:
            report["sources"]["monitor"] = "not running in this process"
            report["sources"]["statements"] = f"{len(given)} given on the command line"
        if apply:  # the report's workload again: given statements, else the view's
            advisor = IndexAdvisor(engine, options.advisor)
            workload = given if given is not None else await _from_view(engine, limit)
            result = await advisor.advise(workload)
            report["applied"] = [
                {"statement": s.statement, "error": error}
                for s, error in await advisor.apply(result)
            ]
        return report
    except OSError as error:  # the driver's refused or unreachable connection
        raise UnavailableError(f"the database is unreachable: {error}") from error
    finally:
        await engine.dispose()


async def _from_view(engine: Any, limit: int) -> list[WorkloadQuery]:
    from corestone.db.workload import read_pg_stat_statements

    async with engine.connect() as conn:
        return await read_pg_stat_statements(conn, limit=limit) or []


def _given(number: int, statement: str) -> WorkloadQuery:
    from corestone.db.workload import WorkloadQuery

    head = statement.lstrip(" (").split(None, 1)
    operation = head[0].lower() if head else "other"
    return WorkloadQuery(
        fingerprint=f"statement:{number}",
        query=statement,
        statement=statement,
        operation=operation if operation in ("select", "update", "delete") else "other",
        calls=1,
        total_ms=0.0,
        mean_ms=0.0,
        source="command line",
    )


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _CLIP else text[: _CLIP - 1] + "…"


def _report_lines(report: dict[str, Any]) -> list[str]:
    sources = " · ".join(f"{k}: {v}" for k, v in report["sources"].items())
    lines = [f"database: {report['dialect']} · {sources}", ""]
    lines.append("top statements (by total time):" if report["top"] else "no statements seen")
    for q in report["top"]:
        lines.append(
            f"  {q['fingerprint']}  {q['total_ms']:>9.1f} ms  {q['calls']:>6} calls"
            f"  {q['mean_ms']:>8.2f} ms mean  {_clip(q['query'])}"
        )
    if report["n_plus_one"]:
        lines += ["", "N+1:"]
        for f in report["n_plus_one"]:
            lines.append(f"  {f.get('location')}  x{f.get('units')}  {_clip(f.get('query', ''))}")
    problems = report["plan_problems"]
    if problems:
        lines += ["", "plan problems:"]
        for fingerprint, found in problems.items():
            for p in found:
                lines.append(f"  {fingerprint}  {p['kind']}: {p['detail']}")
    return [*lines, "", *_advice_lines(report)]


def _advice_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    if not report.get("hypopg") and report["dialect"] == "postgresql":
        lines.append("hypopg is not installed here: suggestions are unverified")
    lines.append("index suggestions:" if report["suggestions"] else "no index suggestions")
    for s in report["suggestions"]:
        if s["verified"]:
            evidence = f"cost {s['cost_before']:.1f} -> {s['cost_after']:.1f} (-{s['gain']:.0%})"
        else:
            evidence = "unverified (" + ", ".join(s["problems"]) + ")"
        lines.append(f"  {evidence}  {s['statement']}")
        lines.append(f"      for {', '.join(s['fingerprints'])}")
    drops = report["drop_candidates"]
    lines.append("drop candidates:" if drops else "no drop candidates")
    for d in drops:
        covered = f" of {d['covered_by']}" if d["covered_by"] else ""
        lines.append(f"  {d['index']} on {d['table']}: {d['reason']}{covered}")
    for a in report.get("applied", ()):
        outcome = "created" if a["error"] is None else f"FAILED: {a['error']}"
        lines.append(f"{outcome}: {a['statement']}")
    for fingerprint, error in report.get("errors", {}).items():
        lines.append(f"not planned: {fingerprint}: {error}")
    return lines
