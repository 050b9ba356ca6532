"""A provider that keeps what it is given, for the tests of services built on corestone.

A service's test sends mail through the real delivery path and then looks at
:attr:`MemoryProvider.sent`; :meth:`MemoryProvider.fail_next` makes the next sends fail,
retryable or permanent, to test what the service does when a provider is down or refuses
a message. Exported as ``corestone.testing.MemoryProvider``.
"""

from __future__ import annotations

from collections.abc import Sequence

from corestone.email.providers._common import send_each
from corestone.email.providers.base import Outgoing, Sent
from corestone.errors import EmailProviderError
from corestone.observability.health import CheckResult, HealthStatus

__all__ = ["MemoryProvider"]


class MemoryProvider:
    """Accepts every message into :attr:`sent`, unless told to fail the next ones."""

    def __init__(self, *, name: str = "memory", max_batch: int = 100) -> None:
        self.name = name
        self.max_batch = max_batch
        self.sent: list[Outgoing] = []
        """Every accepted message, in order."""
        self.attempts = 0
        """Every send, accepted or failed (a batch counts each message)."""
        self.healthy = True
        """What :meth:`check` reports."""
        self._failures: list[EmailProviderError] = []

    def __repr__(self) -> str:
        return f"MemoryProvider(name={self.name!r}, sent={len(self.sent)})"

    def fail_next(
        self,
        count: int = 1,
        *,
        retryable: bool = True,
        reason: str = "told to fail",
        retry_after: float | None = None,
    ) -> None:
        """Fail the next ``count`` sends with this error (added after any already queued)."""
        if count < 0:
            raise ValueError("count must not be negative")
        error = EmailProviderError(self.name, reason, retryable=retryable, retry_after=retry_after)
        self._failures.extend([error] * count)

    @property
    def messages(self) -> list[str]:
        """corestone's ids of the accepted messages, in order."""
        return [o.message_id for o in self.sent]

    def clear(self) -> None:
        """Forget what was sent and any queued failures."""
        self.sent.clear()
        self._failures.clear()
        self.attempts = 0

    async def send(self, outgoing: Outgoing) -> Sent:
        """Keep the message, or raise the next queued failure."""
        self.attempts += 1
        if self._failures:
            raise self._failures.pop(0)
        self.sent.append(outgoing)
        return Sent(self.name, f"memory-{len(self.sent)}")

    async def send_batch(self, batch: Sequence[Outgoing]) -> list[Sent | EmailProviderError]:
        """Each message in turn, so queued failures land on the first ones."""
        return await send_each(batch, self.send)

    async def check(self) -> CheckResult:
        """Pass, or fail when a test set :attr:`healthy` to False."""
        if self.healthy:
            return CheckResult()
        return CheckResult(status=HealthStatus.FAIL, output="marked unhealthy")

    async def aclose(self) -> None:
        """Nothing to close."""
