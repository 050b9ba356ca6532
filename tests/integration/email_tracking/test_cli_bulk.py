"""``corestone email bulk`` end to end on SQLite: the command queues, a sender delivers,
``--wait`` follows the progress until every message is done."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corestone import cli as corestone_cli
from corestone.db import Database
from corestone.email import EmailSender, ProviderRoute
from corestone.email.providers import MemoryProvider

from .conftest import ALL_TABLES


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A template folder, a CSV and a JSONL list of recipients."""
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "news.subject.txt").write_text("News for {{ name }}")
    (templates / "news.html").write_text("<p>Hello {{ name }}, {{ plan }}</p>")
    (tmp_path / "people.csv").write_text(
        "email,name,plan\n" + "".join(f"u{i}@example.org,U{i},{{{{ 7*7 }}}}\n" for i in range(5))
    )
    (tmp_path / "people.jsonl").write_text(
        "\n".join(json.dumps({"email": f"j{i}@example.org", "name": f"J{i}", "plan": i})
                  for i in range(3))
    )  # fmt: skip
    return tmp_path


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[tuple[str, Database]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    db = Database(url)
    await db.start()
    async with db.engine.begin() as conn:
        for table in ALL_TABLES:
            await conn.run_sync(table.create, checkfirst=True)
    yield url, db
    await db.aclose()


async def corestone(url: str, *args: str) -> tuple[int, str, str]:
    """Run the real ``corestone`` command in a process of its own."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corestone.cli", "email", *args,
        env={**os.environ, "CORESTONE_DATABASE_URL": url},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_bulk_with_wait_queues_shows_progress_and_ends_when_all_are_sent(
    sqlite: tuple[str, Database], folder: Path
) -> None:
    """The command queues five rendered messages, a running sender delivers them, and
    --wait exits 0 once every one is sent; ``list --bulk`` then shows exactly those."""
    url, db = sqlite
    memory = MemoryProvider()
    sender = EmailSender(db, [ProviderRoute(memory)], poll_seconds=0.05)
    await sender.start()
    try:
        code, out, err = await corestone(
            url, "bulk", "news", "--recipients", str(folder / "people.csv"),
            "--from", "news@acme.example", "--templates", str(folder / "templates"),
            "--wait", "--poll", "0.05", "--timeout", "60",
        )  # fmt: skip
    finally:
        await sender.aclose()
    assert code == 0, err
    first, counts = out.strip().splitlines()
    assert first.startswith("bulk ")
    assert first.endswith(": 5 recipient(s) queued")
    assert counts == "sent=5"
    assert "5/5" in err  # the progress bar's last state
    assert sorted(o.message.subject for o in memory.sent) == [f"News for U{i}" for i in range(5)]
    assert {o.message.html for o in memory.sent} == {
        f"<p>Hello U{i}, {{{{ 7*7 }}}}</p>" for i in range(5)
    }
    bulk_id = first.split()[1].rstrip(":")
    code, listed, _ = await corestone(url, "list", "--bulk", bulk_id)
    assert code == 0
    assert sorted(line.split()[-1] for line in listed.splitlines()[:-1]) == [
        f"u{i}@example.org" for i in range(5)
    ]
    assert listed.splitlines()[-1] == "sent=5"


def test_bulk_without_wait_queues_a_jsonl_list_and_refuses_a_bad_one(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A JSONL list is queued (nothing waits); a list with a bad address is refused with
    exit 2 naming the recipient, and a file of another kind with exit 2 too."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'plain.db'}"

    async def tables() -> None:
        db = Database(url)
        await db.start()
        async with db.engine.begin() as conn:
            for table in ALL_TABLES:
                await conn.run_sync(table.create, checkfirst=True)
        await db.aclose()

    asyncio.run(tables())
    monkeypatch.setenv("CORESTONE_DATABASE_URL", url)
    base = ["email", "bulk", "news", "--from", "news@acme.example",
            "--templates", str(folder / "templates"), "--recipients"]  # fmt: skip
    done = CliRunner().invoke(corestone_cli.app, [*base, str(folder / "people.jsonl")])
    assert done.exit_code == 0, done.output
    assert ": 3 recipient(s) queued" in done.output
    bad = folder / "bad.csv"
    bad.write_text("email,name,plan\nok@example.org,A,p\nnot-an-address,B,p\n")
    refused = CliRunner().invoke(corestone_cli.app, [*base, str(bad)])
    assert refused.exit_code == 2
    assert "recipients[1]" in refused.output
    other = folder / "people.txt"
    other.write_text("x")
    assert CliRunner().invoke(corestone_cli.app, [*base, str(other)]).exit_code == 2
