"""A saga in a real process killed with SIGKILL mid-step; recovery, in process and by the CLI.

The saga (tests/integration/saga_crash_app.py) reserves a row (database step), charges
an external ledger (a file, idempotent by key), then ships (database step).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from corestone import cli as corestone_cli
from corestone.db import Database, utc_now
from corestone.sagas import SagaOrchestrator, SagaOutcome, SagaRecord, SagaStatus
from corestone.sagas.store import SagaStore
from tests.integration import saga_crash_app as app
from tests.integration.crash import kill_when_ready

ROOT = Path(__file__).resolve().parents[2]
SAGAS: Any = SagaRecord.__table__


@pytest.fixture
async def db(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Database]:
    monkeypatch.setenv("SAGA_CRASH_DIR", str(tmp_path))
    database = Database(database_url)
    await database.start()
    await app.create_schema(database)
    yield database
    await database.aclose()


async def items(db: Database) -> list[tuple[str, str]]:
    async with db.transaction(read_only=True) as tx:
        rows = await tx.session.execute(select(app.ITEMS).order_by(app.ITEMS.c.step))
        return [(row.step, row.key) for row in rows]


async def only_saga(db: Database) -> Any:
    async with db.transaction(read_only=True) as tx:
        return (await tx.session.execute(select(SAGAS))).one()


def run_and_kill(url: str, crash_at: str, workdir: Path) -> None:
    """Start the saga in a child process, wait until it signals, then SIGKILL it."""
    env = {"SAGA_CRASH_DIR": str(workdir), "SAGA_CRASH_AT": crash_at}
    script = ROOT / "tests/integration/saga_crash_app.py"
    reached = kill_when_ready(script, [url], workdir, env, unset=("SAGA_CRASH_FAIL",))
    assert reached == crash_at


async def recover_until_done(db: Database) -> SagaOutcome:
    """Recover as another process would once the dead process's lease has expired.

    The recoverer's wall clock runs one lease ahead instead of the test waiting for it.
    """
    recoverer = SagaOrchestrator(
        db,
        app.registry,
        lease_seconds=app.LEASE_SECONDS,
        wall_clock=lambda: utc_now() + timedelta(seconds=app.LEASE_SECONDS),
    )
    outcomes = await recoverer.recover()
    assert len(outcomes) == 1, "the saga was not claimable once its lease had run out"
    return outcomes[0]


@pytest.mark.parametrize(
    ("crash_at", "done_before"),
    [("reserve", 0), ("ship", 2)],
    ids=["inside-db-step", "between-steps"],
)
async def test_killed_mid_saga_recovery_completes_each_step_exactly_once(
    db: Database, database_url: str, tmp_path: Path, crash_at: str, done_before: int
) -> None:
    """Killed inside a transaction or between steps: recovery resumes, repeating nothing done."""
    run_and_kill(database_url, crash_at, tmp_path)
    saga = await only_saga(db)
    sid = saga.id
    assert (saga.status, saga.current_step) == ("running", done_before)
    if crash_at == "reserve":  # its transaction died with the process
        assert await items(db) == []
        assert app.calls() == ["reserve"]
    else:
        assert await items(db) == [("reserve", f"{sid}:reserve")]
        assert app.calls() == ["reserve", "charge", "ship"]

    outcome = await recover_until_done(db)
    assert outcome.status is SagaStatus.COMPLETED
    assert await items(db) == [("reserve", f"{sid}:reserve"), ("ship", f"{sid}:ship")]
    assert app.ledger() == [f"charge {sid}:charge 42"]
    expected = ["reserve", "reserve", "charge", "ship"]
    if crash_at == "ship":
        expected = ["reserve", "charge", "ship", "ship"]
    assert app.calls() == expected
    saga = await only_saga(db)
    assert (saga.status, saga.current_step, saga.attempts) == ("completed", 3, 2)


async def test_killed_after_an_external_effect_recovery_compensates_without_duplicates(
    db: Database, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after charging but before recording it; the last step then fails: all undone."""
    run_and_kill(database_url, "charge", tmp_path)
    saga = await only_saga(db)
    assert (saga.status, saga.current_step) == ("running", 1)
    sid = saga.id
    assert await items(db) == [("reserve", f"{sid}:reserve")]
    assert app.ledger() == [f"charge {sid}:charge 42"]

    monkeypatch.setenv("SAGA_CRASH_FAIL", "ship")
    outcome = await recover_until_done(db)
    assert outcome.status is SagaStatus.COMPENSATED
    assert outcome.error == "step ship: ValueError: out of stock"
    assert await items(db) == []
    # The charge re-ran under the same idempotency key (no second charge), then was refunded.
    assert app.ledger() == [f"charge {sid}:charge 42", f"refund {sid}:charge:compensate"]
    assert app.calls() == ["reserve", "charge", "charge", "ship", "refund", "unreserve"]


async def test_cli_recovers_a_stuck_saga(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`corestone saga recover --app module:attr` resumes a stuck saga in the settings' DB."""
    monkeypatch.setenv("SAGA_CRASH_DIR", str(tmp_path))
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    db = Database(database_url)
    await db.start()
    try:
        await app.create_schema(db)
        async with db.transaction() as tx:
            state = await SagaStore(30).insert(
                tx.session, saga_type=app.SAGA.name, payload={"amount": 7}, owner="dead"
            )
            await tx.session.execute(
                update(SAGAS)
                .where(SAGAS.c.id == state.id)
                .values(locked_until=utc_now() - timedelta(seconds=1))
            )
    finally:
        await db.aclose()
    command = Path(sys.executable).parent / "corestone"
    env = {
        **os.environ,
        "CORESTONE_DATABASE_URL": database_url,
        "CORESTONE_ENV": "test",
        "SAGA_CRASH_DIR": str(tmp_path),
    }
    code, out, err = await cli(command, "tests.integration.saga_crash_app:registry", env)
    assert code == 0, err
    assert f"{state.id}  tests.order  completed" in out
    assert "recovered 1 saga(s)" in out
    assert app.ledger() == [f"charge {state.id}:charge 7"]


def test_cli_refuses_an_app_that_is_not_a_saga_registry() -> None:
    """A wrong --app is a clear configuration error (exit 2), before any database work."""
    runner = CliRunner()
    for ref, message in (
        ("tests.integration.nowhere:registry", "cannot load"),
        ("tests.integration.saga_crash_app:SAGA", "not a SagaRegistry"),
        ("no-colon", "module:attribute"),
    ):
        result = runner.invoke(corestone_cli.app, ["saga", "recover", "--app", ref])
        assert result.exit_code == 2, result.output
        assert message in result.output


async def cli(command: Path, app_ref: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(command),
        *("saga", "recover", "--app", app_ref),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def test_cli_retries_a_failed_compensation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`corestone saga retry ID` compensates a failed saga again once the cause is fixed."""
    monkeypatch.setenv("SAGA_CRASH_DIR", str(tmp_path))
    monkeypatch.setenv("SAGA_CRASH_FAIL", "ship")
    monkeypatch.setenv("SAGA_CRASH_FAIL_REFUND", "1")
    url = f"sqlite+aiosqlite:///{tmp_path / 'retry.db'}"

    async def fail_one() -> SagaOutcome:
        db = Database(url)
        await db.start()
        try:
            await app.create_schema(db)
            orchestrator = SagaOrchestrator(db, app.registry)
            return await orchestrator.run(app.SAGA, {"amount": 5})
        finally:
            await db.aclose()

    failed = asyncio.run(fail_one())
    assert failed.status is SagaStatus.FAILED
    monkeypatch.delenv("SAGA_CRASH_FAIL_REFUND")
    runner = CliRunner()
    args = ["saga", "retry", failed.id, "--app", "tests.integration.saga_crash_app:registry"]
    env = {"CORESTONE_DATABASE_URL": url, "CORESTONE_ENV": "test"}
    result = runner.invoke(corestone_cli.app, args, env=env)
    assert result.exit_code == 0, result.output
    assert f"{failed.id}  tests.order  compensated" in result.output
    assert app.calls() == ["reserve", "charge", "ship", "refund", "refund", "unreserve"]
    assert app.ledger() == [f"charge {failed.id}:charge 5", f"refund {failed.id}:charge:compensate"]
    again = runner.invoke(corestone_cli.app, args, env=env)
    assert again.exit_code == 2
    assert "no failed saga" in again.output
