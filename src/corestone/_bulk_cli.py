"""``corestone email bulk``'s helpers: read a recipients file, follow a bulk's progress.

Kept apart from :mod:`corestone.cli` (a command is thin: parse, call, print); nothing
here imports typer, so the progress bar is rich's, which typer depends on, or none.
"""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corestone.email.bulk import Recipient
    from corestone.email.tracking import BulkProgress, EmailTracker

__all__ = ["read_recipients", "watch_bulk"]


def read_recipients(path: Path) -> list[Recipient]:
    """(email, data) pairs from a .csv (header row) or .jsonl file; ValueError naming the line."""
    found: list[Recipient] = []
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as lines:
            for number, row in enumerate(csv.DictReader(lines), start=2):
                data = {k: v for k, v in row.items() if k is not None}
                email = data.pop("email", None)
                if not email:
                    raise ValueError(f"{path}:{number}: no email")
                found.append((email, data))
    elif path.suffix.lower() == ".jsonl":
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            item = json.loads(line)
            if not isinstance(item, dict) or not isinstance(item.get("email"), str):
                raise ValueError(f"{path}:{number}: not an object with an email")
            email = item.pop("email")
            found.append((email, item))
    else:
        raise ValueError(f"{path}: recipients must be a .csv or .jsonl file")
    return found


async def watch_bulk(
    tracker: EmailTracker, bulk_id: str, poll: float, give_up_after: float | None
) -> BulkProgress:
    """Poll the bulk's counts until none is pending (or time is up), drawing a progress bar.

    rich (a dependency of typer) draws the bar on stderr; the counts go to stdout after.
    """
    from corestone.email.tracking import BulkProgress

    loop = asyncio.get_running_loop()
    deadline = None if give_up_after is None else loop.time() + give_up_after
    progress = await tracker.bulk(bulk_id) or BulkProgress(bulk_id, {})
    with _ProgressBar() as bar:
        while True:
            bar.show(progress)
            if progress.done or (deadline is not None and loop.time() >= deadline):
                return progress
            await asyncio.sleep(poll)
            progress = await tracker.bulk(bulk_id) or progress


class _ProgressBar:
    """rich's progress bar on stderr, or nothing where rich is missing (typer-slim)."""

    def __init__(self) -> None:
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
        except ImportError:
            self._bar = None
            return
        self._bar = Progress(
            TextColumn("bulk"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.description}"), console=Console(stderr=True),
        )  # fmt: skip
        self._task = self._bar.add_task("", total=None)

    def __enter__(self) -> _ProgressBar:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def show(self, progress: BulkProgress) -> None:
        if self._bar is not None:
            counts = "  ".join(f"{s}={n}" for s, n in sorted(progress.counts.items()))
            done = progress.total - progress.pending
            self._bar.update(self._task, total=progress.total, completed=done, description=counts)
