"""The README's example runs as written and prints what its comments promise."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> tuple[int, str]:
    """The line count the heading promises, and the example's code."""
    heading = re.search(r"^## corestone in (\d+) lines$", README.read_text(), re.MULTILINE)
    assert heading
    section = README.read_text()[heading.end() :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match
    return int(heading.group(1)), match.group(1)


def _run(script: Path) -> list[str]:
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=script.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_readme_example_runs_and_runs_again_the_same(tmp_path: Path) -> None:
    """The example creates, updates with a stale version, lists, reports health and stops.

    It runs in its own interpreter, as a reader would run it: its model must not leak
    into the metadata the other tests share. A reader runs it twice too: the second run
    in the same directory (its notes.db still there) prints the same, not ['hi', 'hi'].
    """
    promised, code = _example()
    assert len(code.splitlines()) == promised  # every line a reader counts, blank ones too
    script = tmp_path / "example.py"
    script.write_text(code)

    for _ in range(2):
        out = _run(script)
        assert "stale_version 2" in out
        assert "['hi'] pass" in out
