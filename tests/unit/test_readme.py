"""The README's example runs as written and prints what its comments promise."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    section = README.read_text().split("## corestone in 30 lines", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match
    return match.group(1)


def test_readme_example_runs(tmp_path: Path) -> None:
    """The example creates, updates with a stale version, lists, reports health and stops.

    It runs in its own interpreter, as a reader would run it: its model must not leak
    into the metadata the other tests share.
    """
    code = _example()
    assert len([line for line in code.splitlines() if line.strip()]) <= 30
    script = tmp_path / "example.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert "stale_version 2" in out
    assert "['hi'] pass" in out
