"""Run one benchmark suite: ``python -m bench SUITE [--quick]``.

Each suite is a module ``bench.<suite>`` with ``run(quick: bool) -> Report``; this entry
point prints its table and then its JSON object as the last line (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import pkgutil
import sys

import bench
from bench._report import Report


def _suites() -> list[str]:
    return sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("suite", choices=_suites())
    parser.add_argument("--quick", action="store_true", help="a smaller run, same keys")
    args = parser.parse_args(argv)
    module = importlib.import_module(f"bench.{args.suite}")
    outcome = module.run(args.quick)
    report: Report = asyncio.run(outcome) if inspect.isawaitable(outcome) else outcome
    report.print()
    return 0 if all(check.met for check in report.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
