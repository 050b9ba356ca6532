"""Pattern matching in L1 (and on every instance the pattern is announced to) takes time
linear in the key, whatever the pattern: no catastrophic backtracking."""

from __future__ import annotations

import itertools
import random
import re
import subprocess
import sys
import textwrap

import pytest

from corestone.cache.keys import glob_regex


def test_a_pattern_of_many_stars_cannot_stall_the_event_loop() -> None:
    """``invalidate_pattern("*a*a…*b")`` over a key of many ``a`` finishes (it used to
    backtrack for hours, freezing every instance the pattern reached)."""
    script = textwrap.dedent(
        """
        import asyncio
        from corestone.cache import TieredCache

        async def main():
            async with TieredCache() as cache:
                await cache.set("a" * 200, 1)
                await cache.invalidate_pattern("*a" * 12 + "*b")
                kept = await cache.get("a" * 200)
                await cache.invalidate_pattern("*a" * 12 + "*")
                print(kept, await cache.get("a" * 200))

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1", "None"]


def _reference(glob: str) -> re.Pattern[str]:
    """The obvious translation (``*`` as ``.*``): right, but exponential on hostile input."""
    parts: list[str] = []
    index = 0
    while index < len(glob):
        char = glob[index]
        if char == "\\" and index + 1 < len(glob):
            parts.append(re.escape(glob[index + 1]))
            index += 2
            continue
        parts.append(".*" if char == "*" else re.escape(char))
        index += 1
    return re.compile("".join(parts), re.DOTALL)


@pytest.mark.parametrize("seed", range(5))
def test_the_linear_matcher_agrees_with_the_obvious_one(seed: int) -> None:
    """Every small glob over ``a b * \\*`` matches exactly the keys the plain translation does."""
    rng = random.Random(seed)
    alphabet = ["a", "b", "*", "\\*", ":"]
    keys = ["".join(p) for n in range(6) for p in itertools.product("ab*:", repeat=n)]
    for _ in range(300):
        glob = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
        fast, slow = glob_regex(glob), _reference(glob)
        for key in keys:
            assert (fast.fullmatch(key) is None) == (slow.fullmatch(key) is None), (glob, key)
