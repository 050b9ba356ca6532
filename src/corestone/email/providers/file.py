"""The embedded default: each message written as an ``.eml`` file under a folder.

Nothing leaves the machine, so a fresh checkout sends mail without configuring anything,
and a developer opens the files in any mail client. A file is named after corestone's
message id and written atomically (a temporary file in the same folder, flushed, then
renamed over the final name), so a reader never sees half a message and a second
attempt at the same message replaces the first instead of adding a copy.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from corestone.email.providers._common import send_each, shorten, wire_mime
from corestone.email.providers.base import Outgoing, Sent
from corestone.errors import EmailProviderError
from corestone.observability.health import CheckResult, HealthStatus

__all__ = ["FileProvider"]


class FileProvider:
    """Writes ``<folder>/<message id>.eml``; the provider message id is the file name."""

    def __init__(
        self,
        folder: str | os.PathLike[str] = "var/mail",
        *,
        name: str = "file",
        max_batch: int = 100,
    ) -> None:
        self.name = name
        self.max_batch = max_batch
        self.folder = Path(folder)

    def __repr__(self) -> str:
        return f"FileProvider(name={self.name!r}, folder={str(self.folder)!r})"

    async def send(self, outgoing: Outgoing) -> Sent:
        """Write the message's MIME form; a disk error is retryable (space may come back)."""
        mime = wire_mime(self.name, outgoing)
        data = mime.as_bytes()
        filename = f"{outgoing.message_id}.eml"  # the id is a checked plain token
        try:
            await asyncio.to_thread(self._write, filename, data)
        except OSError as exc:
            raise EmailProviderError(
                self.name,
                shorten(f"cannot write {filename}: {exc.strerror or exc}"),
                retryable=True,
            ) from None
        return Sent(self.name, filename)

    def _write(self, filename: str, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.folder / filename)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    async def send_batch(self, batch: Sequence[Outgoing]) -> list[Sent | EmailProviderError]:
        """One file per message."""
        return await send_each(batch, self.send)

    async def check(self) -> CheckResult:
        """The folder exists (or can be made) and this process may write in it."""

        def probe() -> str | None:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                return f"cannot create {self.folder}: {exc.strerror or exc}"
            if not os.access(self.folder, os.W_OK | os.X_OK):
                return f"{self.folder} is not writable"
            return None

        problem = await asyncio.to_thread(probe)
        if problem:
            return CheckResult(status=HealthStatus.FAIL, output=problem)
        return CheckResult(output=str(self.folder))

    async def aclose(self) -> None:
        """Nothing is held open between sends."""
