"""A consumer's dead letters: list, replay (now, or as an operator marked them), drop.

:class:`~corestone.events.consumer.EventConsumer` inherits these: a replay applies the
letter through the same inbox and handlers as a delivery, in one transaction that also
takes the letter, so a replayed event is applied once however many consumers of the
group poll for marked letters.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from corestone.db.database import Database
from corestone.db.transactions import Transaction
from corestone.errors import InvalidInputError
from corestone.events.event import DomainEvent
from corestone.events.inbox import DeadLetter, InboxStore
from corestone.events.registry import EventRegistry
from corestone.observability.logging import get_logger

__all__ = ["DeadLetterOps", "Replayed"]

log = get_logger(__name__)

Replayed = Literal["handled", "duplicate", "failed"]
"""What a replay of a dead letter came to (``failed``: it stays, with the new reason)."""


class DeadLetterOps:
    """The dead-letter half of a consumer (its attributes are the consumer's)."""

    database: Database
    store: InboxStore
    registry: EventRegistry
    group: str
    _handlers: Mapping[str, Any]
    _replays: Any
    _stopping: Callable[[], bool]
    _apply: Callable[[Transaction, DomainEvent, Any], Awaitable[bool]]
    """The consumer's: apply one event through the inbox in ``tx``."""

    async def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        """This consumer's dead letters, oldest first."""
        async with self.database.transaction(read_only=True) as tx:
            return await self.store.dead_letters(tx.session, consumer=self.group, limit=limit)

    async def replay(self, dead_letter_id: int) -> Replayed:
        """Handle a dead letter of this group again, now; it is removed in the same transaction.

        Returns ``handled`` (or ``duplicate`` if the inbox shows it was applied since).
        If it still fails (it does not decode, there is no handler, or the handler
        raises), the dead letter stays with the new reason and one attempt more, and
        the error propagates. :class:`InvalidInputError` if the group has no dead
        letter by that id (or another consumer is replaying it right now).
        """
        outcome, error = await self._replay(dead_letter_id, marked_only=False)
        if outcome is None:
            raise InvalidInputError(
                f"no dead letter {dead_letter_id} for {self.group}", field="id", rule="exists"
            )
        if error is not None:
            raise error
        return outcome

    async def replay_requested(self, *, limit: int = 100) -> dict[int, Replayed]:
        """Replay this group's dead letters marked for replay by an operator; their outcomes.

        ``corestone events dead-letters replay`` marks them (another process, with no
        handlers); every running consumer of the group calls this every
        ``replay_poll_seconds``. Each marked letter is replayed once, by one consumer:
        taking it clears its mark in the replay's transaction (see
        :meth:`InboxStore.lock_for_replay`).
        """
        async with self.database.transaction(read_only=True) as tx:
            ids = await self.store.replay_requested(tx.session, self.group, limit=limit)
        outcomes: dict[int, Replayed] = {}
        for letter_id in ids:
            if self._stopping():
                break
            outcome, _ = await self._replay(letter_id, marked_only=True)
            if outcome is not None:
                outcomes[letter_id] = outcome
        return outcomes

    async def _replay(
        self, letter_id: int, *, marked_only: bool
    ) -> tuple[Replayed | None, Exception | None]:
        """Replay one dead letter in one transaction: take it (locked, mark cleared), then in
        a savepoint delete it and apply it through the inbox. A failure rolls back only the
        savepoint and records the new reason. (None, None): not there, or taken by another.
        """

        async def work(tx: Transaction) -> tuple[Replayed | None, Exception | None]:
            letter = await self.store.lock_for_replay(
                tx.session, letter_id, self.group, marked_only=marked_only
            )
            if letter is None:
                return None, None
            try:
                async with self.database.transaction() as inner:  # a savepoint
                    await self.store.take_dead_letter(inner.session, letter_id)
                    event = self.registry.decode(letter.body.encode())
                    handler = self._handlers.get(event.type)
                    if handler is None:
                        raise InvalidInputError(
                            f"{self.group} has no handler for {event.type!r}",
                            field="type",
                            rule="handled",
                        )
                    applied = await self._apply(inner, event, handler)
            except Exception as error:  # noqa: BLE001 - recorded on the letter, then raised
                reason = (
                    f"replay: {error.code}: {error.message}"
                    if isinstance(error, InvalidInputError)
                    else f"replay failed: {error!r}"
                )
                await self.store.replay_failed(tx.session, letter, reason)
                return "failed", error
            return ("handled" if applied else "duplicate"), None

        outcome, error = await self.database.run_in_transaction(work)
        if outcome is not None:
            self._replays.labels(group=self.group, outcome=outcome).inc()
            detail = None if error is None else repr(error)[:300]
            log.info("dead letter replayed", group=self.group, dead_letter=letter_id,
                     outcome=outcome, error=detail)  # fmt: skip
        return outcome, error

    async def drop(self, dead_letter_id: int) -> bool:
        """Delete a dead letter of this consumer; False if there is none by that id."""

        async def work(tx: Transaction) -> bool:
            letter = await self.store.take_dead_letter(tx.session, dead_letter_id)
            if letter is not None and letter.consumer != self.group:
                raise InvalidInputError(
                    f"dead letter {dead_letter_id} belongs to {letter.consumer}",
                    field="id",
                    rule="consumer",
                )
            return letter is not None

        return await self.database.run_in_transaction(work)
