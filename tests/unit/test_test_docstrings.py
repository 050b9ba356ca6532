"""Every test says in a docstring what it proves (issue 10): a new test without one fails here."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _undocumented(source: str, where: str) -> list[str]:
    """The test functions (module level, in classes or nested) in ``source`` with no docstring."""
    return [
        f"{where}:{node.lineno} {node.name}"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test")
        and not ast.get_docstring(node)
    ]


def test_every_test_function_has_a_docstring() -> None:
    """No test function in any tests/**/test_*.py module lacks a docstring."""
    modules = sorted(TESTS.rglob("test_*.py"))
    assert len(modules) > 10  # the walk found the suite, not an empty directory
    missing = [
        line
        for path in modules
        for line in _undocumented(path.read_text(encoding="utf-8"), str(path.relative_to(TESTS)))
    ]
    assert missing == [], "tests without a docstring saying what they prove:\n" + "\n".join(missing)


def test_the_check_sees_methods_nested_and_async_tests_and_ignores_helpers() -> None:
    """The check flags undocumented sync, async, method and nested tests, never helpers."""
    source = '''
def test_bare(): pass
async def test_async(): pass
def test_documented():
    """Says what it proves."""
    def test_nested(): pass
class TestGroup:
    def test_method(self): pass
def helper(): pass
'''
    assert sorted(_undocumented(source, "m.py")) == [
        "m.py:2 test_bare",
        "m.py:3 test_async",
        "m.py:6 test_nested",
        "m.py:8 test_method",
    ]
