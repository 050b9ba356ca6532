"""Durable sagas on SQLite and PostgreSQL: steps, compensation, retries, leases, recovery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, String, Table, delete, func, insert, select, update

from corestone import SagaFailedError, SagaLeaseLostError
from corestone.db import (
    Database,
    Saga,
    SagaOrchestrator,
    SagaRecord,
    SagaRecoveryWorker,
    SagaRegistry,
    SagaState,
    SagaStatus,
    SagaStep,
    StepContext,
    utc_now,
)
from corestone.db.saga_store import SagaStore
from corestone.errors import InvalidInputError, NotFoundError, UnavailableError
from corestone.observability.metrics import Metrics
from corestone.resilience import Retry

ROWS = Table("saga_test_rows", MetaData(), Column("key", String(100), primary_key=True))
FAST = Retry(attempts=3, initial_wait_seconds=0.001, max_wait_seconds=0.01, deadline_seconds=5.0)
SAGAS: Any = SagaRecord.__table__


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.start()
    async with database.engine.begin() as conn:
        await conn.run_sync(SAGAS.create)
        await conn.run_sync(ROWS.create)
    yield database
    await database.aclose()


class Trail:
    """Records every action and compensation call, with the context it got."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.contexts: list[StepContext] = []

    def action(self, key: str, *, fail: BaseException | None = None, row: bool = False) -> Any:
        async def run(ctx: StepContext) -> dict[str, Any]:
            self.calls.append(("do", key))
            self.contexts.append(ctx)
            if row:
                await ctx.session.execute(insert(ROWS).values(key=ctx.idempotency_key))
            if fail is not None:
                raise fail
            return {"step": key, "seen": sorted(ctx.results)}

        return run

    def undo(self, key: str, *, fail: BaseException | None = None, row: bool = False) -> Any:
        async def run(ctx: StepContext) -> None:
            self.calls.append(("undo", key))
            self.contexts.append(ctx)
            if fail is not None:
                raise fail
            if row:
                await ctx.session.execute(delete(ROWS).where(ROWS.c.key == ctx.idempotency_key))

        return run


async def row_keys(db: Database) -> list[str]:
    async with db.transaction(read_only=True) as tx:
        return list(await tx.session.scalars(select(ROWS.c.key).order_by(ROWS.c.key)))


def orchestrator(db: Database, *sagas: Saga, **options: Any) -> SagaOrchestrator:
    return SagaOrchestrator(db, SagaRegistry(sagas), **options)


async def make_stuck(
    db: Database, saga: Saga, *, attempts: int = 1, payload: dict[str, Any] | None = None
) -> SagaState:
    """A saga row as a process that died right after starting it would leave it."""
    async with db.transaction() as tx:
        state = await SagaStore(30).insert(
            tx.session, saga_type=saga.name, payload=payload or {}, owner="dead-process"
        )
        await tx.session.execute(
            update(SAGAS)
            .where(SAGAS.c.id == state.id)
            .values(locked_until=utc_now() - timedelta(seconds=5), attempts=attempts)
        )
    return state


async def test_happy_path_runs_steps_in_order_and_records_completion(db: Database) -> None:
    """Every step runs once, in order, sees earlier results and its idempotency key."""
    trail = Trail()
    saga = Saga(
        "t.happy",
        [
            SagaStep("a", trail.action("a", row=True), transactional=True),
            SagaStep("b", trail.action("b")),
            SagaStep("c", trail.action("c")),
        ],
    )
    metrics = Metrics()
    outcome = await orchestrator(db, saga, metrics=metrics).run(saga, {"n": 1})
    assert outcome.raise_for_status() is outcome
    assert outcome.status is SagaStatus.COMPLETED
    assert trail.calls == [("do", "a"), ("do", "b"), ("do", "c")]
    assert outcome.results["c"] == {"step": "c", "seen": ["a", "b"]}
    keys = [ctx.idempotency_key for ctx in trail.contexts]
    assert keys == [f"{outcome.id}:a", f"{outcome.id}:b", f"{outcome.id}:c"]
    assert all(ctx.payload == {"n": 1} for ctx in trail.contexts)
    assert await row_keys(db) == [f"{outcome.id}:a"]
    stored = await orchestrator(db, saga).get(outcome.id)
    assert stored is not None
    assert (stored.status, stored.current_step, stored.attempts) == (SagaStatus.COMPLETED, 3, 1)
    assert stored.locked_until is None
    assert stored.error is None
    text = metrics.render().decode()
    assert 'corestone_saga_started_total{type="t.happy"} 1.0' in text
    assert 'corestone_saga_finished_total{status="completed",type="t.happy"} 1.0' in text


async def test_failed_step_compensates_completed_steps_in_reverse(db: Database) -> None:
    """A step that fails for good undoes the completed steps, last first, and re-raises."""
    trail = Trail()
    saga = Saga(
        "t.compensate",
        [
            SagaStep("a", trail.action("a", row=True), trail.undo("a", row=True), True),
            SagaStep("b", trail.action("b"), trail.undo("b")),
            SagaStep("c", trail.action("c", fail=ValueError("no stock")), trail.undo("c")),
        ],
    )
    outcome = await orchestrator(db, saga).run(saga, {})
    assert outcome.status is SagaStatus.COMPENSATED
    assert trail.calls == [("do", "a"), ("do", "b"), ("do", "c"), ("undo", "b"), ("undo", "a")]
    assert outcome.error == "step c: ValueError: no stock"
    assert await row_keys(db) == []
    undo_b = trail.contexts[3]
    assert undo_b.result == {"step": "b", "seen": ["a"]}
    assert undo_b.idempotency_key == f"{outcome.id}:b"
    with pytest.raises(ValueError, match="no stock"):
        outcome.raise_for_status()
    stored = await orchestrator(db, saga).get(outcome.id)
    assert stored is not None
    assert (stored.status, stored.current_step) == ("compensated", 0)


async def test_compensation_failure_marks_the_saga_failed_with_both_errors(db: Database) -> None:
    """A compensation that fails stops the rollback and leaves a failed row for an operator."""
    trail = Trail()
    saga = Saga(
        "t.failed",
        [
            SagaStep("a", trail.action("a"), trail.undo("a")),
            SagaStep("b", trail.action("b"), trail.undo("b", fail=RuntimeError("refund refused"))),
            SagaStep("c", trail.action("c", fail=ValueError("no stock"))),
        ],
    )
    outcome = await orchestrator(db, saga).run(saga, {})
    assert outcome.status is SagaStatus.FAILED
    assert trail.calls == [("do", "a"), ("do", "b"), ("do", "c"), ("undo", "b")]
    assert outcome.error is not None
    assert "compensation of b: RuntimeError: refund refused" in outcome.error
    assert "step c: ValueError: no stock" in outcome.error
    with pytest.raises(SagaFailedError) as raised:
        outcome.raise_for_status()
    assert raised.value.saga_id == outcome.id
    stored = await orchestrator(db, saga).get(outcome.id)
    assert stored is not None
    assert (stored.status, stored.current_step) == ("failed", 2)


async def test_transient_errors_are_retried_with_backoff(db: Database) -> None:
    """A step failing transiently twice succeeds on its third attempt; others fail at once."""
    attempts: list[int] = []

    async def flaky(ctx: StepContext) -> int:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise UnavailableError("payment gateway busy")
        return ctx.attempt

    metrics = Metrics()
    saga = Saga("t.retry", [SagaStep("pay", flaky, retry=FAST)])
    outcome = await orchestrator(db, saga, metrics=metrics).run(saga, {})
    assert outcome.status is SagaStatus.COMPLETED
    assert attempts == [1, 2, 3]
    assert outcome.results == {"pay": 3}
    assert 'corestone_saga_step_retries_total{step="pay",type="t.retry"} 2.0' in (
        metrics.render().decode()
    )

    permanent: list[int] = []

    async def broken(ctx: StepContext) -> None:
        permanent.append(ctx.attempt)
        raise KeyError("bad input")

    saga2 = Saga("t.noretry", [SagaStep("pay", broken, retry=FAST)])
    assert (await orchestrator(db, saga2).run(saga2, {})).status is SagaStatus.COMPENSATED
    assert permanent == [1]


async def test_retries_are_bounded_then_compensate(db: Database) -> None:
    """A step that keeps timing out is given up after max_attempts and compensated."""
    trail = Trail()
    tries: list[int] = []

    async def slow(ctx: StepContext) -> None:
        tries.append(ctx.attempt)
        await asyncio.sleep(1)

    saga = Saga(
        "t.timeout",
        [
            SagaStep("a", trail.action("a"), trail.undo("a")),
            SagaStep("slow", slow, retry=FAST, timeout_seconds=0.02),
        ],
    )
    outcome = await orchestrator(db, saga).run(saga, {})
    assert outcome.status is SagaStatus.COMPENSATED
    assert tries == [1, 2, 3]
    assert trail.calls == [("do", "a"), ("undo", "a")]
    assert outcome.error == "step slow: TimeoutError"


async def test_compensate_on_failure_undoes_the_failed_step_too(db: Database) -> None:
    """A step that may have taken effect before failing gets its own compensation (result None)."""
    trail = Trail()
    saga = Saga(
        "t.own",
        [
            SagaStep("a", trail.action("a"), trail.undo("a")),
            SagaStep(
                "b",
                trail.action("b", fail=ValueError("timeout after send")),
                trail.undo("b"),
                compensate_on_failure=True,
            ),
        ],
    )
    outcome = await orchestrator(db, saga).run(saga, {})
    assert trail.calls == [("do", "a"), ("do", "b"), ("undo", "b"), ("undo", "a")]
    assert trail.contexts[2].result is None
    assert outcome.status is SagaStatus.COMPENSATED


async def test_a_run_that_lost_its_lease_stops_without_writing(db: Database) -> None:
    """When another owner took the saga over, the old run records nothing and stops."""

    async def stolen(ctx: StepContext) -> None:
        async with ctx.database.transaction() as tx:
            await tx.session.execute(
                update(SAGAS).where(SAGAS.c.id == ctx.saga_id).values(owner="thief")
            )

    trail = Trail()
    saga = Saga("t.lease", [SagaStep("a", stolen), SagaStep("b", trail.action("b"))])
    with pytest.raises(SagaLeaseLostError):
        await orchestrator(db, saga).run(saga, {})
    assert trail.calls == []
    async with db.transaction(read_only=True) as tx:
        row = (await tx.session.execute(select(SAGAS))).one()
    assert (row.owner, row.current_step, row.status) == ("thief", 0, "running")


async def test_recovery_resumes_a_stuck_saga_and_respects_live_leases(db: Database) -> None:
    """Only sagas whose lease expired are claimed; a claimed one runs from where it stopped."""
    trail = Trail()
    saga = Saga("t.recover", [SagaStep("a", trail.action("a")), SagaStep("b", trail.action("b"))])
    orch = orchestrator(db, saga, metrics=(metrics := Metrics()))
    stuck = await make_stuck(db, saga, payload={"x": 1})
    async with db.transaction() as tx:  # a live one, mid-flight in another process
        await SagaStore(30).insert(tx.session, saga_type=saga.name, payload={}, owner="alive")

    outcomes = await orch.recover()
    assert [(o.id, o.status) for o in outcomes] == [(stuck.id, SagaStatus.COMPLETED)]
    assert trail.calls == [("do", "a"), ("do", "b")]
    assert trail.contexts[0].payload == {"x": 1}
    stored = await orch.get(stuck.id)
    assert stored is not None
    assert stored.attempts == 2
    assert stored.owner == orch.owner
    assert await orch.recover() == []
    assert 'corestone_saga_recovered_total{type="t.recover"} 1.0' in metrics.render().decode()


async def test_recovery_gives_up_forward_after_max_attempts(db: Database) -> None:
    """A saga that keeps killing its process is compensated instead of retried forever."""
    trail = Trail()
    saga = Saga("t.poison", [SagaStep("a", trail.action("a"), trail.undo("a"))])
    stuck = await make_stuck(db, saga, attempts=3)
    async with db.transaction() as tx:
        await tx.session.execute(
            update(SAGAS).where(SAGAS.c.id == stuck.id).values(current_step=1, results={"a": 1})
        )
    (outcome,) = await orchestrator(db, saga, max_attempts=3).recover()
    assert outcome.status is SagaStatus.COMPENSATED
    assert trail.calls == [("undo", "a")]
    assert outcome.error == "gave up after 3 interrupted executions"


async def test_two_concurrent_recoverers_never_run_a_saga_twice(database_url: str) -> None:
    """Two processes' recoverers racing over the same stuck sagas split them, no overlap."""
    runs: list[tuple[str, str]] = []

    def step(key: str) -> Any:
        async def run(ctx: StepContext) -> None:
            runs.append((ctx.saga_id, key))
            await asyncio.sleep(0.01)

        return run

    saga = Saga("t.race", [SagaStep("a", step("a")), SagaStep("b", step("b"))])
    first, second = Database(database_url), Database(database_url)
    await first.start()
    await second.start()
    try:
        async with first.engine.begin() as conn:
            await conn.run_sync(SAGAS.create)
        stuck = {(await make_stuck(first, saga)).id for _ in range(8)}
        one, two = orchestrator(first, saga), orchestrator(second, saga)
        done: list[str] = []
        for _ in range(5):  # bounded: each round may claim part of what is left
            batches = await asyncio.gather(one.recover(limit=3), two.recover(limit=3))
            done += [o.id for batch in batches for o in batch]
            if len(done) >= len(stuck):
                break
        assert sorted(done) == sorted(stuck)
        assert sorted(runs) == sorted((sid, key) for sid in stuck for key in ("a", "b"))
        async with first.transaction(read_only=True) as tx:
            statuses = await tx.session.scalars(
                select(func.count()).where(SAGAS.c.status == "completed")
            )
            assert statuses.one() == len(stuck)
    finally:
        await first.aclose()
        await second.aclose()


async def test_recovery_worker_recovers_in_the_background(db: Database) -> None:
    """The worker component finds a stuck saga on its own and stops cleanly."""
    trail = Trail()
    saga = Saga("t.worker", [SagaStep("a", trail.action("a"))])
    stuck = await make_stuck(db, saga)
    orch = orchestrator(db, saga)
    worker = SagaRecoveryWorker(orch, interval_seconds=0.05)
    await worker.start()
    try:
        for _ in range(200):
            state = await orch.get(stuck.id)
            if state is not None and state.status is SagaStatus.COMPLETED:
                break
            await asyncio.sleep(0.02)
        assert state is not None
        assert state.status is SagaStatus.COMPLETED
        assert worker.running
    finally:
        await worker.aclose()
    assert not worker.running
    assert trail.calls == [("do", "a")]


async def test_bad_use_is_refused_before_anything_is_written(db: Database) -> None:
    """A payload that is not JSON, an unknown saga, or a call inside a transaction."""
    saga = Saga("t.refuse", [SagaStep("a", Trail().action("a"))])
    orch = orchestrator(db, saga)
    with pytest.raises(InvalidInputError) as raised:
        await orch.run(saga, {"when": object()})
    assert raised.value.details["field"] == "payload"
    with pytest.raises(ValueError, match="not registered"):
        await orch.run("t.unknown", {})
    with pytest.raises(RuntimeError, match="outside a transaction"):
        async with db.transaction():
            await orch.run(saga, {})
    async with db.transaction(read_only=True) as tx:
        assert (await tx.session.scalar(select(func.count()).select_from(SAGAS))) == 0


def test_definitions_are_validated() -> None:
    """Duplicate keys, empty sagas and name clashes in a registry are refused."""
    action = Trail().action("a")
    with pytest.raises(ValueError, match="duplicate"):
        Saga("x", [SagaStep("a", action), SagaStep("a", action)])
    with pytest.raises(ValueError, match="no steps"):
        Saga("x", [])
    registry = SagaRegistry([Saga("x", [SagaStep("a", action)])])
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Saga("x", [SagaStep("b", action)]))


async def test_heartbeat_keeps_a_long_step_from_being_recovered(db: Database) -> None:
    """A step longer than the lease keeps its saga: the heartbeat renews the lease."""
    saga_holder: list[str] = []
    stolen: list[int] = []
    rival = orchestrator(db, Saga("t.long", [SagaStep("a", Trail().action("a"))]))

    async def long_step(ctx: StepContext) -> None:
        saga_holder.append(ctx.saga_id)
        for _ in range(4):  # 4 x 0.15 s = twice the lease
            await asyncio.sleep(0.15)
            stolen.extend(1 for _ in await rival.recover())

    saga = Saga("t.long", [SagaStep("a", long_step)])
    outcome = await orchestrator(db, saga, lease_seconds=0.3).run(saga, {})
    assert outcome.status is SagaStatus.COMPLETED
    assert stolen == []


async def test_a_cancelled_run_is_released_and_recovery_finishes_it(db: Database) -> None:
    """Cancelling a run mid-step loses nothing: the saga is released and recovered at once."""
    started = asyncio.Event()
    trail = Trail()

    async def slow(ctx: StepContext) -> None:
        if ctx.attempt == 1 and not started.is_set():
            started.set()
            await asyncio.sleep(30)

    saga = Saga(
        "t.cancel",
        [
            SagaStep("a", trail.action("a", row=True), transactional=True),
            SagaStep("b", slow, transactional=True),
            SagaStep("c", trail.action("c")),
        ],
    )
    orch = orchestrator(db, saga)
    run = asyncio.create_task(orch.run(saga, {}))
    await asyncio.wait_for(started.wait(), 10)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    (outcome,) = await orchestrator(db, saga).recover()
    assert outcome.status is SagaStatus.COMPLETED
    assert trail.calls == [("do", "a"), ("do", "c")]
    assert await row_keys(db) == [f"{outcome.id}:a"]


async def test_recovery_worker_health_warns_while_passes_fail(db: Database) -> None:
    """A failing pass turns the worker's check to warn; a good pass turns it back to pass."""
    saga = Saga("t.health", [SagaStep("a", Trail().action("a"))])
    unstarted = Database(db.url.render_as_string(hide_password=False))
    broken = SagaRecoveryWorker(orchestrator(unstarted, saga), interval_seconds=0.02)
    await broken.start()
    try:
        for _ in range(200):
            if (await broken.check()).status == "warn":
                break
            await asyncio.sleep(0.02)
        assert (await broken.check()).status == "warn"
    finally:
        await broken.aclose()
    await make_stuck(db, saga)
    healthy = SagaRecoveryWorker(orchestrator(db, saga), interval_seconds=0.02)
    await healthy.start()
    try:
        for _ in range(200):
            result = await healthy.check()
            if result.observed_value == 1:
                break
            await asyncio.sleep(0.02)
        assert (result.status, result.observed_value) == ("pass", 1)
    finally:
        await healthy.aclose()


async def test_retry_compensation_resumes_a_failed_saga_from_the_failed_step(
    db: Database,
) -> None:
    """An operator's retry re-runs the compensation that failed, then the earlier ones."""
    trail = Trail()
    refund_down = [True]

    async def refund(ctx: StepContext) -> None:
        trail.calls.append(("undo", "b"))
        if refund_down[0]:
            raise RuntimeError("refund API down")

    saga = Saga(
        "t.retry_comp",
        [
            SagaStep("a", trail.action("a"), trail.undo("a")),
            SagaStep("b", trail.action("b"), refund),
            SagaStep("c", trail.action("c", fail=ValueError("no stock"))),
        ],
    )
    orch = orchestrator(db, saga)
    failed = await orch.run(saga, {})
    assert failed.status is SagaStatus.FAILED
    with pytest.raises(NotFoundError):
        await orch.retry_compensation("no-such-saga")
    refund_down[0] = False
    outcome = await orch.retry_compensation(failed.id)
    assert outcome.status is SagaStatus.COMPENSATED
    assert trail.calls[3:] == [("undo", "b"), ("undo", "b"), ("undo", "a")]
    with pytest.raises(NotFoundError):  # no longer failed
        await orch.retry_compensation(failed.id)
