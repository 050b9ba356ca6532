"""taskboard workspace creation as a saga: recorded, compensated, recovered; `taskboard worker`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update

from corestone import ConflictError
from corestone.db import Database, upgrade, utc_now
from corestone.sagas import SagaOrchestrator, SagaRecord, SagaStatus
from corestone.sagas.store import SagaStore
from taskboard.app import MIGRATIONS
from taskboard.domain.models import Membership, User, Workspace
from taskboard.services.workspaces import CREATE_WORKSPACE, SAGAS, WorkspaceService
from tests.integration.conftest import Board

SAGA_TABLE: Any = SagaRecord.__table__


async def test_create_workspace_runs_as_a_completed_saga(board: Board) -> None:
    """POST /api/workspaces answers as before and leaves one completed saga of three steps.

    The third step queues the owner's welcome email; the payload carries the request's
    correlation id for it (a recovering worker has another).
    """
    user_id, auth = await board.signup("Ada")
    response = await board.client.post("/api/workspaces", json={"name": "Ops"}, headers=auth)
    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "Ops"
    assert body["role"] == "owner"
    async with board.infra.db.transaction(read_only=True) as tx:
        saga = (await tx.session.execute(select(SAGA_TABLE))).one()
        owner = await tx.session.scalar(
            select(Membership).filter_by(workspace_id=body["id"], user_id=user_id)
        )
    assert (saga.type, saga.status, saga.current_step) == (CREATE_WORKSPACE.name, "completed", 3)
    correlation_id = response.headers["x-request-id"]
    assert saga.payload == {"name": "Ops", "owner_id": user_id, "correlation_id": correlation_id}
    assert saga.results["workspace"] == {"id": body["id"]}
    assert owner is not None
    assert owner.role == "owner"


async def test_a_failed_owner_step_deletes_the_workspace_again(board: Board) -> None:
    """With an owner that cannot be added, the workspace row is compensated away."""
    ghost = User(id=987654, name="Ghost", email="ghost@example.com")  # never stored
    service = WorkspaceService(board.infra.db, SagaOrchestrator(board.infra.db, SAGAS))
    with pytest.raises(ConflictError):
        await service.create(ghost, name="Haunted")
    async with board.infra.db.transaction(read_only=True) as tx:
        workspaces = await tx.session.scalar(select(func.count()).select_from(Workspace))
        saga = (await tx.session.execute(select(SAGA_TABLE))).one()
    assert workspaces == 0
    assert saga.status == "compensated"
    assert saga.error.startswith("step owner: ConflictError")


async def test_recovery_finishes_a_workspace_whose_process_died_between_steps(
    board: Board,
) -> None:
    """A saga stopped after the workspace row gets its owner membership from recovery."""
    user_id, auth = await board.signup("Lin")
    db = board.infra.db
    _, workspace_id = await stuck_workspace_saga(db, user_id)
    (outcome,) = await SagaOrchestrator(db, SAGAS).recover()
    assert outcome.status is SagaStatus.COMPLETED
    me = (await board.client.get("/api/me", headers=auth)).json()
    assert [(w["id"], w["role"]) for w in me["workspaces"]] == [(workspace_id, "owner")]


async def stuck_workspace_saga(db: Database, user_id: int) -> tuple[str, int]:
    """The state a process that died right after the workspace step leaves behind."""
    async with db.transaction() as tx:
        ws = (await tx.session.execute(insert(Workspace).values(name="Half"))).inserted_primary_key
        workspace_id = ws[0] if ws else 0
        state = await SagaStore(30).insert(
            tx.session,
            saga_type=CREATE_WORKSPACE.name,
            payload={"name": "Half", "owner_id": user_id},
            owner="died",
        )
        await tx.session.execute(
            update(SAGA_TABLE)
            .where(SAGA_TABLE.c.id == state.id)
            .values(
                current_step=1,
                results={"workspace": {"id": workspace_id}},
                locked_until=utc_now() - timedelta(seconds=1),
            )
        )
    return state.id, workspace_id


async def test_taskboard_worker_process_recovers_and_stops_on_sigterm(postgres_url: str) -> None:
    """`taskboard worker` finishes a half-created workspace, then exits 0 on SIGTERM.

    On PostgreSQL, the deployment that runs separate workers (DESIGN §6); the in-process
    worker is proven on both databases above and in test_saga.py.
    """
    database_url = postgres_url
    db = Database(database_url)
    await db.start()
    try:
        await upgrade(db, MIGRATIONS)
        async with db.transaction() as tx:
            user = User(name="Kim", email="kim@example.com")
            tx.session.add(user)
        saga_id, workspace_id = await stuck_workspace_saga(db, user.id)
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "taskboard"),
            *("worker", "--interval", "0.1"),
            env={**os.environ, "CORESTONE_DATABASE_URL": database_url, "CORESTONE_ENV": "test"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            status = None
            for _ in range(300):  # bounded: ~30 s for start-up and one pass
                async with db.transaction(read_only=True) as tx:
                    status = await tx.session.scalar(
                        select(SAGA_TABLE.c.status).where(SAGA_TABLE.c.id == saga_id)
                    )
                if status == "completed" or process.returncode is not None:
                    break
                await asyncio.sleep(0.1)
            assert status == "completed"
            process.send_signal(signal.SIGTERM)
            output, _ = await asyncio.wait_for(process.communicate(), 30)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode == 0, output.decode()
        assert "taskboard worker stopping" in output.decode()
        async with db.transaction(read_only=True) as tx:
            assert await tx.session.scalar(
                select(Membership).filter_by(workspace_id=workspace_id, user_id=user.id)
            )
    finally:
        await db.aclose()
