"""``corestone queries report|advise``: output, JSON, --apply, and exit codes."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from typer.testing import CliRunner

from corestone import cli as corestone_cli
from tests.integration.queries.conftest import seed

BY_A = "SELECT * FROM child WHERE a = $1"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(corestone_cli.app, ["queries", *args])
    return result.exit_code, result.output


@pytest.fixture
def pg_url(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A seeded PostgreSQL database with hypopg, as CORESTONE_DATABASE_URL."""

    async def prepare() -> None:
        engine = create_async_engine(postgres_url)
        await seed(engine)
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS hypopg")
        await engine.dispose()

    asyncio.run(prepare())
    monkeypatch.setenv("CORESTONE_DATABASE_URL", postgres_url)
    return postgres_url


async def _index_names(url: str) -> list[str]:
    engine: AsyncEngine = create_async_engine(url)
    async with engine.connect() as conn:
        found = await conn.exec_driver_sql(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'child' ORDER BY 1"
        )
        names = [r[0] for r in found]
    await engine.dispose()
    return names


def test_report_names_the_problem_and_the_proven_index(pg_url: str) -> None:
    """The text report shows the seq scan and the suggestion with its cost before/after."""
    code, output = run("report", "--statement", BY_A)
    assert code == 0, output
    assert "seq_scan" in output
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_child_a ON child (a)" in output
    assert "cost " in output
    assert "pg_stat_statements: " in output  # "ok", or why it does not answer


def test_report_json_is_one_object_with_every_section(pg_url: str) -> None:
    """--json prints one object with top, n_plus_one, plans, suggestions, drops, sources."""
    code, output = run("report", "--json", "--statement", BY_A)
    assert code == 0, output
    report = json.loads(output)
    for key in ("top", "n_plus_one", "plans", "suggestions", "drop_candidates", "sources"):
        assert key in report
    [suggestion] = report["suggestions"]
    assert suggestion["verified"] is True
    assert suggestion["cost_after"] < suggestion["cost_before"]


def test_advise_creates_nothing_without_apply_and_the_index_with_it(pg_url: str) -> None:
    """advise only prints; advise --apply creates the index; then nothing is suggested."""
    code, output = run("advise", "--statement", BY_A)
    assert code == 0, output
    assert asyncio.run(_index_names(pg_url)) == ["child_pkey"]
    code, output = run("advise", "--apply", "--statement", BY_A)
    assert code == 0, output
    assert "created: CREATE INDEX CONCURRENTLY" in output
    assert asyncio.run(_index_names(pg_url)) == ["child_pkey", "ix_child_a"]
    code, output = run("advise", "--statement", BY_A)
    assert "no index suggestions" in output


def test_an_unreachable_database_is_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """No traceback: one error line naming the database, exit status 1."""
    monkeypatch.setenv("CORESTONE_DATABASE_URL", "postgresql+asyncpg://x@127.0.0.1:1/none")
    code, output = run("advise")
    assert code == 1
    assert "error: the database is unreachable" in output
    assert "Traceback" not in output


def test_bad_configuration_and_arguments_are_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad URL and an out-of-range --limit exit 2."""
    monkeypatch.setenv("CORESTONE_DATABASE_URL", "nonsense")
    assert run("report")[0] == 2
    monkeypatch.setenv("CORESTONE_DATABASE_URL", "sqlite+aiosqlite:///./x.db")
    assert run("report", "--limit", "0")[0] == 2


def test_sqlite_reports_unverified_suggestions(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite the report works without hypopg: the scan is named, the index unverified."""
    url = f"sqlite+aiosqlite:///{tmp_path}/q.db"

    async def prepare() -> None:
        engine = create_async_engine(url)
        await seed(engine)
        await engine.dispose()

    asyncio.run(prepare())
    monkeypatch.setenv("CORESTONE_DATABASE_URL", url)
    code, output = run("report", "--statement", "SELECT * FROM child WHERE a = 5")
    assert code == 0, output
    assert "seq_scan" in output
    assert "unverified (seq_scan)  CREATE INDEX ix_child_a ON child (a)" in output


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM child WHERE a = $1; DROP TABLE child",
        "SELECT * FROM child WHERE a = 1; DROP TABLE child",
        "DELETE FROM child WHERE a = $1",
    ],
)
def test_a_given_statement_is_planned_never_run(pg_url: str, statement: str) -> None:
    """Two statements in one are refused by the driver; a DELETE is only planned."""
    code, output = run("advise", "--statement", statement)
    assert code == 0, output

    async def rows() -> int:
        engine = create_async_engine(pg_url)
        async with engine.connect() as conn:
            found = await conn.exec_driver_sql("SELECT count(*) FROM child")
            count = int(found.scalar_one())
        await engine.dispose()
        return count

    assert asyncio.run(rows()) == 20_000
    if ";" in statement:
        assert "not planned: statement:1:" in output
