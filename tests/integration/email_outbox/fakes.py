"""A test double for the EmailProvider protocol: records deliveries, fails on demand.

corestone.email.providers.memory had not landed when these tests were written; this
double implements the same protocol and lives in tests/ only.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from corestone.email.providers.base import Outgoing, Sent
from corestone.errors import EmailProviderError
from corestone.observability.health import CheckResult


@dataclass
class FakeProvider:
    """Accepts messages into ``delivered``; ``down`` makes every call fail retryably.

    ``fail_next`` queues errors for the next calls (retryable or not); ``refuse`` maps an
    address to a permanent refusal; ``idempotent`` dedupes by idempotency key, as a
    provider with a key would; ``delay`` slows each call so concurrent senders overlap.
    """

    name: str
    max_batch: int = 1
    idempotent: bool = False
    down: bool = False
    delay: float = 0.0
    refuse: dict[str, str] = field(default_factory=dict)
    fail_next: list[EmailProviderError] = field(default_factory=list)
    delivered: list[Outgoing] = field(default_factory=list)
    gives_ids: bool = True
    calls: int = 0
    batches: list[int] = field(default_factory=list)
    before_accept: Callable[[Outgoing], None] | None = None
    _by_key: dict[str, Sent] = field(default_factory=dict)

    def _error(self, reason: str, *, retryable: bool = True) -> EmailProviderError:
        return EmailProviderError(self.name, reason, retryable=retryable)

    async def send(self, outgoing: Outgoing) -> Sent:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            raise self._error("503 service unavailable")
        if self.fail_next:
            raise self.fail_next.pop(0)
        for address in outgoing.message.recipients:
            if address.email in self.refuse:
                raise self._error(self.refuse[address.email], retryable=False)
        key = outgoing.message.idempotency_key or outgoing.message_id
        if self.idempotent and key in self._by_key:
            return self._by_key[key]
        if self.before_accept is not None:
            self.before_accept(outgoing)
        self.delivered.append(outgoing)
        sent = Sent(self.name, f"{self.name}-{len(self.delivered)}" if self.gives_ids else None)
        self._by_key[key] = sent
        return sent

    async def send_batch(self, batch: Sequence[Outgoing]) -> list[Sent | EmailProviderError]:
        self.batches.append(len(batch))
        if self.down:
            self.calls += 1
            raise self._error("503 service unavailable")
        results: list[Sent | EmailProviderError] = []
        for outgoing in batch:
            try:
                results.append(await self.send(outgoing))
            except EmailProviderError as error:
                results.append(error)
        return results

    async def check(self) -> CheckResult:
        return CheckResult()

    async def aclose(self) -> None:
        return None

    def ids(self) -> list[str]:
        return [o.message_id for o in self.delivered]


def deliveries(*providers: FakeProvider) -> Counter[str]:
    """How often each message id was accepted, across providers."""
    return Counter(i for p in providers for i in p.ids())
