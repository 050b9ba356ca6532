"""A part used without its extra says which extra to install, wherever the import happens.

tests/packaging proves this on real installs; these tests reach the paths a core-only
venv's import scan cannot: an extra installed without the one it also needs (``web``
without a database extra), and third-party imports made inside a function on first use
(the backplane's and the fleet's Redis clients). Each runs a fresh interpreter in which
the named top-level modules cannot be imported, as if their extra were not installed.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from corestone._extras import EXTRA_MODULES
from corestone.errors import MissingExtraError

SRC = Path(__file__).resolve().parents[2] / "src" / "corestone"

_BLOCK = """
import importlib.abc, sys

class _Uninstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _Uninstalled())
"""


def _run_without(blocked: set[str], code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where ``blocked`` cannot be imported."""
    program = _BLOCK.format(blocked=blocked) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False
    )


def _without(blocked: set[str], code: str) -> dict[str, object]:
    """Run ``code`` where ``blocked`` cannot be imported; it leaves its answer in ``found``."""
    result = _run_without(
        blocked,
        "import json\nfound = {}\n" + textwrap.dedent(code) + "\nprint(json.dumps(found))\n",
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return answer


_OUTCOME = """
def outcome(run):
    import asyncio, corestone
    try:
        value = run()
        if asyncio.iscoroutine(value):
            asyncio.run(value)
    except corestone.MissingExtraError as error:
        return ["MissingExtraError", error.module, list(error.extras), error.missing]
    except BaseException as error:
        return [type(error).__name__, str(error)]
    return ["ok"]
"""


def test_web_without_a_database_extra_names_the_database_extras() -> None:
    """`corestone[web]` alone (FastAPI, no SQLAlchemy): importing corestone.web names
    'postgres' or 'sqlite' — the web layer's request scope and access cache run on the
    database — instead of a bare "No module named 'sqlalchemy'"."""
    found = _without(
        EXTRA_MODULES["postgres"] | EXTRA_MODULES["sqlite"],
        _OUTCOME + "found['web'] = outcome(lambda: __import__('corestone.web'))\n",
    )

    assert found["web"] == [
        "MissingExtraError",
        "corestone.web",
        ["postgres", "sqlite"],
        "sqlalchemy",
    ]


def test_redis_clients_made_on_first_use_name_the_redis_extra() -> None:
    """Without the 'redis' extra, a RedisBackplane and a Fleet given a URL (both create their
    client only when built or started) raise MissingExtraError naming 'redis'; so does
    TieredCache.from_url, naming the class called rather than its private builder."""
    found = _without(
        EXTRA_MODULES["redis"],
        _OUTCOME
        + """
from corestone.cache import RedisBackplane, TieredCache
from corestone.resilience import BreakerRegistry, Fleet

async def start_fleet():
    await Fleet(BreakerRegistry(), url="redis://127.0.0.1:1/0").start()

found["backplane"] = outcome(lambda: RedisBackplane("redis://127.0.0.1:1/0"))
found["fleet"] = outcome(start_fleet)
found["tiered"] = outcome(lambda: TieredCache.from_url("redis://127.0.0.1:1/0"))
""",
    )

    assert found["backplane"][:3] == ["MissingExtraError", "corestone.cache.backplane", ["redis"]]
    assert found["fleet"][:3] == ["MissingExtraError", "corestone.resilience.fleet", ["redis"]]
    assert found["tiered"][:3] == ["MissingExtraError", "corestone.cache.TieredCache", ["redis"]]


# Imports of an extra's module inside a function that need no requires_extra, and why.
_UNGUARDED_ON_PURPOSE = {
    # handed an engine or a client: its library is installed, or the caller could not have one
    ("resilience/integrations.py", "sqlalchemy"),
    ("resilience/integrations.py", "redis"),
    # COPY runs only on a PostgreSQL engine, whose creation already named the 'postgres' extra
    ("db/_copy.py", "asyncpg"),
}


def _function_level_imports_of_extras() -> list[tuple[str, str, int, bool]]:
    """(file, module, line, guarded) for imports inside functions; guarded: inside ``with
    requires_extra`` or a ``try`` that handles the ImportError itself."""
    extra_modules = set().union(*EXTRA_MODULES.values())
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            guarded: set[ast.AST] = set()
            for node in ast.walk(function):
                if isinstance(node, ast.With) and any(
                    "requires_extra" in ast.unparse(item.context_expr) for item in node.items
                ):
                    guarded |= set(ast.walk(node))
                if isinstance(node, ast.Try) and any(  # an optional import with a fallback
                    handler.type is not None
                    and any(e in ast.unparse(handler.type) for e in ("ImportError", "NotFound"))
                    for handler in node.handlers
                ):
                    guarded |= {n for stmt in node.body for n in ast.walk(stmt)}
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.partition(".")[0]
                    if top in extra_modules:
                        name = path.relative_to(SRC).as_posix()
                        found.append((name, top, node.lineno, node in guarded))
    return found


def test_every_import_of_an_extra_inside_a_function_names_the_extra() -> None:
    """An import made on first use (not at module level, where the package's own guard
    covers it) sits inside ``requires_extra``, unless listed above with its reason: the
    core-only import scan of tests/packaging never runs these lines."""
    unguarded = [
        f"{name}:{line} imports {top}"
        for name, top, line, guarded in _function_level_imports_of_extras()
        if not guarded and (name, top) not in _UNGUARDED_ON_PURPOSE
    ]

    assert unguarded == []


def test_a_fixture_whose_extra_is_missing_fails_rather_than_skips() -> None:
    """The pytest plugin's service probes: a missing extra is an install to fix, not a server
    that is down, so the fixture fails with the extra's name even off CI (a skip would hide
    every Redis test of a project that forgot the extra)."""
    from corestone.testing.services import require_service

    async def probe() -> None:
        raise MissingExtraError("corestone.testing.plugin", ("redis",), "redis")

    outcome: BaseException | None = None
    try:
        require_service("Redis", probe)
    except BaseException as error:  # pytest's skip and fail are BaseExceptions: catch them
        outcome = error

    assert isinstance(outcome, MissingExtraError), repr(outcome)
    assert "pip install 'corestone[redis]'" in str(outcome)


def test_saga_commands_without_a_database_extra_say_so_in_one_line() -> None:
    """`corestone saga recover` from an install with the 'cli' extra but no database extra
    exits 2 with one line naming 'postgres' or 'sqlite', as for any configuration error,
    not with a traceback of the import."""
    result = _run_without(
        EXTRA_MODULES["postgres"] | EXTRA_MODULES["sqlite"],
        """
        import sys
        from corestone.cli import main
        sys.argv = ["corestone", "saga", "recover", "--app", "myapp.sagas:SAGAS"]
        main()
        """,
    )

    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "error: corestone.db needs one of the extras 'postgres' or 'sqlite', and none is "
        "installed (no module named 'sqlalchemy'): pip install 'corestone[postgres]' or "
        "pip install 'corestone[sqlite]'"
    ]
