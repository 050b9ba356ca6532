"""The two distributions as a user gets them: metadata, contents, and the core without extras.

``uv build`` makes a wheel and an sdist of corestone (the library) and of taskboard (the
reference service). The library's metadata must carry none of the service's needs, its
core must install and work alone, and a part whose extra is missing must say which extra
to install.
"""

from __future__ import annotations

import json
import re
import tarfile
import tomllib
import zipfile
from collections.abc import Callable, Iterable
from email.message import Message
from email.parser import Parser
from importlib.metadata import packages_distributions

import pytest

from corestone._extras import EXTRA_MODULES
from tests.packaging.conftest import ROOT, Distributions, Venv

pytestmark = pytest.mark.packaging

CORE = {
    *("orjson", "prometheus-client", "psutil", "pydantic", "pydantic-settings", "pyyaml"),
    *("structlog", "svcs", "tenacity"),
}
"""The core's direct dependencies: settings, errors, context, logs, metrics, breakers, retry,
the in-memory cache and the service container. Adding one is a decision, not an accident."""

EXTRAS = {"all", *EXTRA_MODULES}


def _name(requirement: str) -> str:
    """The canonical distribution name a requirement line starts with."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match[0]).lower()


def _wheel_metadata(wheel: zipfile.ZipFile) -> Message:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    return Parser().parsestr(wheel.read(name).decode())


def _requires(metadata: Message) -> dict[str | None, set[str]]:
    """Requires-Dist grouped by extra (None: the unconditional ones)."""
    grouped: dict[str | None, set[str]] = {}
    for line in metadata.get_all("Requires-Dist") or []:
        extra = re.search(r"extra == '([^']+)'", line)
        grouped.setdefault(extra[1] if extra else None, set()).add(_name(line))
    return grouped


def _distributions(modules: Iterable[str]) -> set[str]:
    """The distributions that provide these import names, in this (every-extra) environment."""
    provided = packages_distributions()
    return {_name(dist) for module in modules for dist in provided[module]}


def _version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def test_corestone_wheel_metadata_is_complete_and_its_dependencies_are_the_core(
    distributions: Distributions,
) -> None:
    """License, classifiers, URLs, version from pyproject; only the core is unconditional;
    each extra brings exactly the modules corestone._extras names for it."""
    with zipfile.ZipFile(distributions.corestone_wheel) as wheel:
        metadata = _wheel_metadata(wheel)

    assert metadata["Name"] == "corestone"
    assert metadata["Version"] == _version()
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert metadata["Requires-Python"] == ">=3.11"
    classifiers = set(metadata.get_all("Classifier") or [])
    assert {"Typing :: Typed", "Programming Language :: Python :: 3.11"} <= classifiers
    urls = {line.partition(",")[0] for line in metadata.get_all("Project-URL") or []}
    assert urls == {"Homepage", "Documentation", "Source", "Issues", "Changelog"}
    assert metadata["Summary"]
    assert metadata["Description-Content-Type"] == "text/markdown"

    requires = _requires(metadata)
    assert requires.pop(None) == CORE
    assert set(metadata.get_all("Provides-Extra") or []) == EXTRAS
    for extra, modules in EXTRA_MODULES.items():
        assert requires[extra] == _distributions(modules), extra
    assert requires["all"] == _distributions(set().union(*EXTRA_MODULES.values()))
    assert "taskboard" not in str(metadata.get_all("Requires-Dist"))


def test_corestone_wheel_holds_the_library_typed_and_nothing_else(
    distributions: Distributions,
) -> None:
    """py.typed ships; no tests, bench, taskboard or stray top-level files in the wheel."""
    with zipfile.ZipFile(distributions.corestone_wheel) as wheel:
        names = wheel.namelist()

    assert "corestone/py.typed" in names
    top = {name.split("/")[0] for name in names}
    assert top == {"corestone", f"corestone-{_version()}.dist-info"}
    assert not [n for n in names if "/tests/" in n or "/bench/" in n or n.endswith(".pyc")]
    with zipfile.ZipFile(distributions.corestone_wheel) as wheel:
        entry_points = wheel.read(f"corestone-{_version()}.dist-info/entry_points.txt").decode()
    assert "corestone = corestone._console:main" in entry_points
    assert "corestone = corestone.testing.plugin" in entry_points  # the pytest11 plugin


def test_corestone_sdist_has_the_source_license_and_docs_but_no_service_or_tests(
    distributions: Distributions,
) -> None:
    """The sdist rebuilds the wheel (pyproject, src, README, LICENSE) and leaves the rest out."""
    with tarfile.open(distributions.corestone_sdist) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}

    assert {"pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "PKG-INFO"} <= names
    assert "src/corestone/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "taskboard/", ".ci/"))]


def test_taskboard_distribution_depends_on_corestone_all_and_ships_its_migrations(
    distributions: Distributions,
) -> None:
    """taskboard's wheel: corestone[all] plus its own needs, migrations, py.typed, its script
    and its browser page."""
    with zipfile.ZipFile(distributions.taskboard_wheel) as wheel:
        metadata = _wheel_metadata(wheel)
        names = wheel.namelist()
        entry_points = next(
            wheel.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt")
        )

    requires = metadata.get_all("Requires-Dist") or []
    assert any(re.fullmatch(r"corestone\[all\]\S*", line.replace(" ", "")) for line in requires)
    assert metadata["License-Expression"] == "MIT"
    assert "Typing :: Typed" in (metadata.get_all("Classifier") or [])
    assert {"taskboard/py.typed", "taskboard/migrations/env.py",
            "taskboard/migrations/script.py.mako"} <= set(names)  # fmt: skip
    assert any(n.startswith("taskboard/migrations/versions/0001") for n in names)
    # The browser page ships in the wheel: `taskboard serve` reads it from the package.
    assert {"taskboard/web/index.html", "taskboard/web/sw.js", "taskboard/web/app.js",
            "taskboard/web/app.css"} <= set(names)  # fmt: skip
    dist_info = f"taskboard-{metadata['Version']}.dist-info"
    assert {n.split("/")[0] for n in names} == {"taskboard", dist_info}
    assert "taskboard = taskboard.cli:main" in entry_points
    with tarfile.open(distributions.taskboard_sdist) as sdist:
        assert not [n for n in sdist.getnames() if "/tests/" in n or "/bench/" in n]


def test_taskboard_sdist_builds_outside_the_workspace(distributions: Distributions) -> None:
    """The taskboard sdist's pyproject names no workspace source: unpacked on its own (no
    corestone checkout beside it), uv can lock and install it from the index; a
    `corestone = { workspace = true }` there made `uv sync` refuse it ("not a workspace
    member"). The workspace root's sources apply to taskboard inside the repository."""
    with tarfile.open(distributions.taskboard_sdist) as sdist:
        member = next(n for n in sdist.getnames() if n.endswith("/pyproject.toml"))
        extracted = sdist.extractfile(member)
        assert extracted is not None
        pyproject = tomllib.loads(extracted.read().decode())

    sources = pyproject.get("tool", {}).get("uv", {}).get("sources", {})
    assert {name: spec for name, spec in sources.items() if spec.get("workspace")} == {}


_SCAN_EVERY_MODULE = r"""
import importlib, pathlib
bare = []  # a part that fails with anything but MissingExtraError
root = pathlib.Path(corestone.__file__).parent
for path in sorted(root.rglob("*.py")):
    name = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
    try:
        importlib.import_module(name)
    except corestone.MissingExtraError:
        pass
    except ImportError as error:
        if name != "corestone.testing.plugin":  # pytest's plugin: pytest is a given there
            bare.append([name, repr(error)])
"""
"""Imports every module of the installed corestone; ``bare`` lists each that failed with
anything but MissingExtraError (run after ``import corestone``)."""


_CORE_ONLY = (
    r"""
import asyncio, json, sys
import importlib.metadata as metadata

import corestone
from corestone.cache import MemoryCache
from corestone.resilience import BreakerConfig, CircuitBreaker

cache = MemoryCache(max_entries=100)
cache.set("k", {"v": 1}, ttl=60)
assert cache.get("k") == {"v": 1}

async def flaky() -> None:
    raise ConnectionError("down")

async def breaker_opens() -> str:
    breaker = CircuitBreaker("svc", BreakerConfig(minimum_calls=2, failure_rate_threshold=50))
    for _ in range(2):
        try:
            await breaker.acall(flaky)
        except ConnectionError:
            pass
    try:
        await breaker.acall(flaky)
    except corestone.CircuitOpenError as error:
        return error.code
    return "not opened"

missing = {}
for target in ("corestone.web", "corestone.db", "corestone.cache.redis", "corestone.cli"):
    try:
        __import__(target)
    except corestone.MissingExtraError as error:
        missing[target] = [str(error), list(error.extras), isinstance(error, ModuleNotFoundError)]
try:
    from corestone.cache import RedisCache
except ImportError as error:
    missing["RedisCache"] = [str(error), list(error.extras), True]

"""
    + _SCAN_EVERY_MODULE
    + r"""

installed = {}
for dist in metadata.distributions():
    requires = [r for r in dist.requires or [] if "extra ==" not in r]
    installed[dist.metadata["Name"].lower().replace("_", "-")] = requires
print(json.dumps({
    "version": corestone.__version__,
    "breaker": asyncio.run(breaker_opens()),
    "missing": missing,
    "bare": bare,
    "installed": installed,
}))
"""
)


def test_the_core_wheel_alone_works_and_names_the_extra_for_every_other_part(
    distributions: Distributions, make_venv: Callable[[str], Venv]
) -> None:
    """Fresh venv + the wheel with no extras: MemoryCache and CircuitBreaker work; web, db,
    the Redis cache and the CLI raise MissingExtraError naming the extra and the pip command,
    and no module of corestone fails with a bare ModuleNotFoundError; what got installed is
    the core and what the core needs, nothing from any extra."""
    venv = make_venv("core")
    venv.install(str(distributions.corestone_wheel))

    report = json.loads(venv.run_python(_CORE_ONLY).stdout.splitlines()[-1])

    assert report["version"] == _version()
    assert report["breaker"] == "circuit_open"
    expected = {
        "corestone.web": ["web"],
        "corestone.db": ["postgres", "sqlite"],
        "corestone.cache.redis": ["redis"],
        "corestone.cli": ["cli"],
        "RedisCache": ["redis"],
    }
    assert {target: found[1] for target, found in report["missing"].items()} == expected
    assert report["bare"] == []  # every module: imports, or names its extra
    for message, extras, is_module_not_found in report["missing"].values():
        assert is_module_not_found
        for extra in extras:
            assert f"pip install 'corestone[{extra}]'" in message
    installed = report["installed"]
    wanted = {"corestone"}
    frontier = ["corestone"]
    while frontier:  # what corestone needs, and what that needs, markers aside
        for requirement in installed.get(frontier.pop(), []):
            name = _name(requirement)
            if name in installed and name not in wanted:
                wanted.add(name)
                frontier.append(name)
    assert set(installed) == wanted
    assert wanted >= CORE
    assert not wanted & _distributions(set().union(*EXTRA_MODULES.values()))


def test_the_console_script_without_the_cli_extra_says_what_to_install(
    distributions: Distributions, make_venv: Callable[[str], Venv]
) -> None:
    """`corestone` from a core-only install exits 2 with one line naming the 'cli' extra."""
    venv = make_venv("script")
    venv.install(str(distributions.corestone_wheel))

    result = venv.run_python(
        "import subprocess, sys\n"
        "r = subprocess.run([sys.argv[1], '--version'], capture_output=True, text=True)\n"
        "print(r.returncode); print(r.stderr, end='')",
        str(venv.bin / "corestone"),
    )

    code, *stderr = result.stdout.splitlines()
    assert code == "2"
    assert stderr == [
        "corestone: corestone.cli needs the 'cli' extra, which is not installed "
        "(no module named 'typer'): pip install 'corestone[cli]'"
    ]


_BARE_IMPORTS = "import json\nimport corestone\n" + _SCAN_EVERY_MODULE + "print(json.dumps(bare))\n"


@pytest.mark.parametrize("extra", sorted(EXTRA_MODULES))
def test_each_extra_alone_imports_every_part_or_names_what_is_missing(
    extra: str, distributions: Distributions, make_venv: Callable[[str], Venv]
) -> None:
    """The wheel with one extra and no other: every corestone module imports or raises
    MissingExtraError. An extra that leans on another one's library (`web` on SQLAlchemy)
    fails here with a bare ModuleNotFoundError, which the core-only scan cannot see."""
    venv = make_venv(extra)
    venv.install(f"corestone[{extra}] @ {distributions.corestone_wheel.as_uri()}")

    result = venv.run_python(_BARE_IMPORTS)

    assert json.loads(result.stdout.splitlines()[-1]) == []


_POSTGRES_REDIS = r"""
import asyncio, json, sys

from sqlalchemy.orm import Mapped

from corestone import Infrastructure, Settings, StaleVersionError
from corestone.db import Base, IdMixin, Repository, TimestampMixin, VersionMixin


class Note(IdMixin, TimestampMixin, VersionMixin, Base):
    __tablename__ = "notes"
    text: Mapped[str]


class Notes(Repository[Note]):
    model, filterable, sortable = Note, ("text",), ("text",)


def settings() -> Settings:
    return Settings(database_url=sys.argv[1], redis_url=sys.argv[2], cache_namespace=sys.argv[3])


async def main() -> dict[str, object]:
    found: dict[str, object] = {}
    loads = []

    async with Infrastructure(settings()) as infra:
        async with infra.db.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        async with infra.db.transaction() as tx:
            note = await Notes(tx).create({"text": "hello"})
            await Notes(tx).update(note.id, {"text": "hi"}, expected_version=1)
        try:
            async with infra.db.transaction() as tx:
                await Notes(tx).update(note.id, {"text": "late"}, expected_version=1)
        except StaleVersionError as error:
            found["stale"] = [error.code, error.current_version]

        async def texts() -> list[str]:
            loads.append(1)
            async with infra.db.transaction(read_only=True) as tx:
                page = await Notes(tx).list(filters={"text": {"startswith": "h"}}, sort="-text")
            return [n.text for n in page.items]

        found["first"] = await infra.cache.get_or_load("notes:h", texts, ttl=60)
        found["dialect"] = infra.db.engine.dialect.name
        found["ready"] = str((await infra.health.ready()).status)

    async with Infrastructure(settings()) as other:  # a new process's empty L1: Redis answers
        found["second"] = await other.cache.get_or_load("notes:h", texts, ttl=60)
        await other.cache.clear()
    found["loads"] = len(loads)
    return found


print(json.dumps(asyncio.run(main())))
"""


def test_the_wheel_with_postgres_and_redis_runs_a_repository_and_the_tiered_cache(
    distributions: Distributions,
    make_venv: Callable[[str], Venv],
    postgres_url: str,
    redis_url: str,
) -> None:
    """`corestone[postgres,redis]` from the wheel: a repository on a real PostgreSQL (create,
    versioned update, stale refusal, filtered list) and a value cached in the real Redis that a
    second Infrastructure (empty L1) reads without loading it again."""
    venv = make_venv("postgres-redis")
    venv.install(f"corestone[postgres,redis] @ {distributions.corestone_wheel.as_uri()}")
    namespace = f"pkgtest{distributions.corestone_wheel.stat().st_ino}{id(venv)}"

    result = venv.run_python(_POSTGRES_REDIS, postgres_url, redis_url, namespace)

    found = json.loads(result.stdout.splitlines()[-1])
    assert found == {
        "stale": ["stale_version", 2],
        "first": ["hi"],
        "second": ["hi"],
        "loads": 1,
        "dialect": "postgresql",
        "ready": found["ready"],
    }
    assert found["ready"].endswith("pass")


_SQLITE_ONLY = r"""
import asyncio, json, sys

import corestone
from corestone import Infrastructure, Settings
from corestone.db import Database

found = {}
try:
    Infrastructure(Settings(database_url=sys.argv[1], redis_url="redis://127.0.0.1:6379/0"))
except corestone.MissingExtraError as error:
    found["redis_url"] = [list(error.extras), error.missing]
try:
    asyncio.run(Database("postgresql+asyncpg://postgres@127.0.0.1:5432/postgres").start())
except corestone.MissingExtraError as error:
    found["postgres_url"] = [list(error.extras), error.missing, str(error)]
print(json.dumps(found))
"""


def test_configuring_a_service_whose_extra_is_missing_names_that_extra(
    distributions: Distributions, make_venv: Callable[[str], Venv]
) -> None:
    """With only `corestone[sqlite]`: a Redis URL fails at start-up naming 'redis', and a
    PostgreSQL URL fails when its engine starts naming 'postgres' (not asyncpg's import)."""
    venv = make_venv("sqlite")
    venv.install(f"corestone[sqlite] @ {distributions.corestone_wheel.as_uri()}")

    result = venv.run_python(_SQLITE_ONLY, f"sqlite+aiosqlite:///{venv.root / 'x.db'}")

    found = json.loads(result.stdout.splitlines()[-1])
    assert found["redis_url"] == [["redis"], "redis"]
    assert found["postgres_url"][:2] == [["postgres"], "asyncpg"]
    assert "pip install 'corestone[postgres]'" in found["postgres_url"][2]
