"""Build both distributions once per test process, and make fresh virtual environments.

The wheels are what a user installs, so these tests install them the way a user would
(``uv pip install``, dependencies from the package index or uv's cache) into virtual
environments of their own, never into the suite's environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _uv() -> str:
    found = shutil.which("uv")
    if found is None:
        pytest.fail("uv is not on PATH (pip install uv)")
    return found


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run a command, its output captured; on failure the output is the assertion message."""
    result = subprocess.run(  # our own commands, no shell
        [str(arg) for arg in args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    if check:
        output = f"{result.stdout}\n{result.stderr}"
        assert result.returncode == 0, f"{args}: rc {result.returncode}\n{output}"
    return result


@dataclass(frozen=True)
class Distributions:
    """The wheel and sdist of each distribution, as ``uv build`` made them."""

    corestone_wheel: Path
    corestone_sdist: Path
    taskboard_wheel: Path
    taskboard_sdist: Path


@pytest.fixture(scope="session")
def distributions(tmp_path_factory: pytest.TempPathFactory) -> Distributions:
    """``uv build --all-packages`` of this checkout (each xdist worker builds its own)."""
    out = tmp_path_factory.mktemp("dist")
    run(_uv(), "build", "--all-packages", "--out-dir", out, "--quiet", cwd=ROOT)

    def one(pattern: str) -> Path:
        found = sorted(out.glob(pattern))
        assert len(found) == 1, (pattern, sorted(p.name for p in out.iterdir()))
        return found[0]

    return Distributions(
        corestone_wheel=one("corestone-*.whl"),
        corestone_sdist=one("corestone-*.tar.gz"),
        taskboard_wheel=one("taskboard-*.whl"),
        taskboard_sdist=one("taskboard-*.tar.gz"),
    )


@dataclass(frozen=True)
class Venv:
    """A fresh virtual environment with no corestone of the checkout on its path."""

    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def install(self, *requirements: str) -> None:
        run(_uv(), "pip", "install", "--quiet", "--python", self.python, *requirements)

    def run_python(self, code: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``code`` in the venv, from a directory where the checkout is not importable."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        return run(self.python, "-c", code, *args, cwd=self.root, env=env)


@pytest.fixture
def make_venv(tmp_path: Path) -> Callable[[str], Venv]:
    """A factory of fresh virtual environments on this interpreter's Python version."""

    def make(name: str) -> Venv:
        root = tmp_path / name
        run(_uv(), "venv", "--quiet", "--python", sys.executable, root)
        return Venv(root)

    return make
