"""Request context: bind and restore, correlation id hygiene, propagation into tasks."""

from __future__ import annotations

import asyncio

import pytest

from corestone import context


def test_nothing_is_bound_by_default() -> None:
    """Outside any bind block every value is None."""
    assert context.correlation_id() is None
    assert context.actor_id() is None
    assert context.workspace_id() is None


def test_bind_sets_values_and_restores_them_afterwards() -> None:
    """Values bound for a block are visible inside it and gone after it."""
    with context.bind(correlation="req-1", actor=42, workspace="ws-9"):
        assert context.correlation_id() == "req-1"
        assert context.actor_id() == "42"
        assert context.workspace_id() == "ws-9"

    assert context.correlation_id() is None
    assert context.actor_id() is None
    assert context.workspace_id() is None


def test_nested_binds_restore_the_outer_values() -> None:
    """An inner bind overrides only what it names and the outer values come back after it."""
    with context.bind(correlation="outer", actor="alice"):
        with context.bind(actor="bob", workspace=7):
            assert context.correlation_id() == "outer"
            assert context.actor_id() == "bob"
            assert context.workspace_id() == "7"
        assert context.correlation_id() == "outer"
        assert context.actor_id() == "alice"
        assert context.workspace_id() is None


def test_bind_none_clears_a_value_for_the_block() -> None:
    """Binding None explicitly hides the outer value inside the block only."""
    with context.bind(actor="alice"):
        with context.bind(actor=None):
            assert context.actor_id() is None
        assert context.actor_id() == "alice"


def test_bind_restores_even_when_the_block_raises() -> None:
    """An exception in the block does not leave the values bound."""
    with pytest.raises(RuntimeError), context.bind(correlation="doomed"):
        raise RuntimeError("boom")

    assert context.correlation_id() is None


@pytest.mark.parametrize(
    "good",
    [
        "abc123",
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        "trace:span.1_2",
        "A" * 128,
    ],
)
def test_sanitize_keeps_safe_ids(good: str) -> None:
    """A short id of letters, digits and . _ : - is kept as it is."""
    assert context.sanitize_correlation_id(good) == good


@pytest.mark.parametrize(
    "hostile",
    [
        "abc\r\nSet-Cookie: session=stolen",
        "abc\nforged log line",
        "abc\r",
        "A" * 129,
        "x" * 1000,
        "ідентифікатор",
        "caf\u00e9",
        "abc def",
        "a;b",
        "",
        "abc\x00",
    ],
)
def test_sanitize_replaces_hostile_ids(hostile: str) -> None:
    """Header injection, overlong, non-ASCII or empty ids are replaced with a fresh id."""
    replaced = context.sanitize_correlation_id(hostile)

    assert replaced != hostile
    assert context.sanitize_correlation_id(replaced) == replaced


def test_sanitize_generates_an_id_when_none_is_given() -> None:
    """No incoming id yields a fresh, safe, unique one."""
    first = context.sanitize_correlation_id(None)
    second = context.sanitize_correlation_id(None)

    assert first != second
    assert context.sanitize_correlation_id(first) == first


def test_new_correlation_ids_are_unique_hex() -> None:
    """Fresh ids are 32 hex characters and do not repeat."""
    ids = {context.new_correlation_id() for _ in range(100)}

    assert len(ids) == 100
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


async def test_values_propagate_into_tasks_created_inside_the_block() -> None:
    """Tasks started while a value is bound see it, even after the block has ended."""
    started = asyncio.Event()
    release = asyncio.Event()
    seen: list[str | None] = []

    async def worker() -> None:
        started.set()
        await release.wait()
        seen.append(context.correlation_id())

    with context.bind(correlation="req-7"):
        task = asyncio.create_task(worker())
        await started.wait()
    assert context.correlation_id() is None
    release.set()
    await task

    assert seen == ["req-7"]


async def test_tasks_do_not_leak_values_back_to_their_parent() -> None:
    """A value a task binds stays in that task."""

    async def worker() -> str | None:
        with context.bind(workspace="inner"):
            await asyncio.sleep(0)
        return context.workspace_id()

    async def binds_without_restoring() -> None:
        context._workspace_id.set("leaked")

    assert await asyncio.create_task(worker()) is None
    await asyncio.create_task(binds_without_restoring())
    assert context.workspace_id() is None


async def test_concurrent_tasks_keep_their_own_values() -> None:
    """Two requests handled at once each see only their own correlation id."""
    both_bound = asyncio.Barrier(2)

    async def handle(request_id: str) -> str | None:
        with context.bind(correlation=request_id):
            await both_bound.wait()
            return context.correlation_id()

    results = await asyncio.gather(handle("a"), handle("b"))

    assert results == ["a", "b"]
