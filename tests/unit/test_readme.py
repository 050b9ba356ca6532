"""The README's example runs as written and prints what its comments promise."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    section = README.read_text().split("## corestone in 20 lines", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match
    return match.group(1)


def test_readme_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The 20-line example starts the infrastructure, queries, reports health and stops."""
    monkeypatch.chdir(tmp_path)
    code = _example()
    assert len([line for line in code.splitlines() if line.strip()]) <= 22
    exec(compile(code, str(README), "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out.splitlines()
    assert "42 pass" in out
    assert "7" in out
