"""Cache keys: workspace first, user keys never interpreted, hostile keys kept apart."""

from __future__ import annotations

import pytest

from corestone.cache.keys import MAX_KEY_BYTES, KeyBuilder, escape_glob, glob_regex
from corestone.context import bind
from corestone.errors import InvalidInputError

KEYS = KeyBuilder("tasks")


def test_entry_keys_are_namespace_then_workspace_then_key() -> None:
    """Entry keys are corestone:<namespace>:<workspace>:<key>: workspace given, bound or global."""
    assert KEYS.entry("task:7", 42) == "corestone:tasks:42:task:7"
    assert KEYS.entry("task:7") == "corestone:tasks:global:task:7"
    with bind(workspace=9):
        assert KEYS.entry("task:7") == "corestone:tasks:9:task:7"
        assert KEYS.entry("task:7", "global") == "corestone:tasks:global:task:7"


@pytest.mark.parametrize("workspace", ["a:b", "*", "x y", "", "é", "a" * 65, "1\n2"])
def test_a_workspace_that_could_widen_the_scope_is_refused(workspace: str) -> None:
    """A workspace with ':', '*', space, non-ASCII, newline, none or 65 chars is refused."""
    with pytest.raises(InvalidInputError) as caught:
        KEYS.entry("k", workspace)
    assert caught.value.field == "workspace"


def test_a_namespace_is_validated_too() -> None:
    """A namespace with a colon, which could reach into another namespace, is refused."""
    with pytest.raises(InvalidInputError):
        KeyBuilder("a:b")


def test_user_keys_cannot_reach_tag_sets_or_hashed_keys() -> None:
    """A user key spelled like a tag set stays an entry key, apart from the tag set it imitates."""
    # Entries continue the scope with ':'; tags and digests with '#', which no entry has.
    assert KEYS.entry("#tag:x", 1) == "corestone:tasks:1:#tag:x"
    assert KEYS.tag("x", 1) == "corestone:tasks:1#tag:x"
    assert KEYS.entry("#tag:x", 1) != KEYS.tag("x", 1)


@pytest.mark.parametrize(
    "key",
    [b"\x00\xff binary", "lone \udcff surrogate", "é" * (MAX_KEY_BYTES // 2 + 1), "k" * 5000],
)
def test_binary_unencodable_and_long_keys_are_stored_under_a_digest(key: str | bytes) -> None:
    """Binary, unencodable and long keys get a short stable digest key, distinct per workspace."""
    full = KEYS.entry(key, 3)
    assert full.startswith("corestone:tasks:3#h:")
    assert len(full) < 100
    assert full == KEYS.entry(key, 3)  # stable
    assert full != KEYS.entry(key, 4)


def test_short_unicode_keys_stay_readable() -> None:
    """A short non-ASCII key is kept as text in the full key, not hashed."""
    assert KEYS.entry("tâche", 1) == "corestone:tasks:1:tâche"


def test_a_str_and_bytes_key_with_the_same_text_do_not_collide() -> None:
    """The str key "abc" and the bytes key b"abc" are two different entries."""
    assert KEYS.entry("abc", 1) != KEYS.entry(b"abc", 1)


def test_keys_of_other_types_are_refused() -> None:
    """A key that is neither str nor bytes (an int) is refused, not converted."""
    with pytest.raises(InvalidInputError):
        KEYS.entry(12, 1)  # type: ignore[arg-type]


def test_patterns_escape_everything_but_star() -> None:
    """In a pattern [, ], ? and backslash match literally, * matches anything in the workspace."""
    pattern = KEYS.pattern("user:[1]?\\*", 5)
    assert pattern == "corestone:tasks:5:user:\\[1\\]\\?\\\\*"
    regex = glob_regex(pattern)
    assert regex.fullmatch("corestone:tasks:5:user:[1]?\\anything")
    assert not regex.fullmatch("corestone:tasks:5:user:11?\\x")  # '[1]' is literal
    assert not regex.fullmatch("corestone:tasks:6:user:[1]?\\x")  # other workspace


def test_a_star_only_matches_inside_the_scope() -> None:
    """The pattern "*" matches its whole workspace, not a longer workspace id nor a tag set."""
    regex = KEYS.matcher("*", 5)
    assert regex.fullmatch("corestone:tasks:5:anything:at:all")
    assert not regex.fullmatch("corestone:tasks:50:x")
    assert not regex.fullmatch("corestone:tasks:5#tag:x")


def test_escape_glob_round_trips_through_the_regex() -> None:
    """An escaped text's glob regex matches the text itself, not what its wildcards would."""
    text = "a*b?c[d]e\\f"
    assert glob_regex(escape_glob(text)).fullmatch(text)
    assert not glob_regex(escape_glob(text)).fullmatch("aXb?c[d]e\\f")


@pytest.mark.parametrize("pattern", ["", "x" * (MAX_KEY_BYTES + 1)])
def test_empty_or_huge_patterns_are_refused(pattern: str) -> None:
    """An empty pattern or one over MAX_KEY_BYTES is refused, naming the field pattern."""
    with pytest.raises(InvalidInputError) as caught:
        KEYS.pattern(pattern, 1)
    assert caught.value.field == "pattern"


def test_a_long_bytes_key_and_the_same_long_str_key_are_two_entries() -> None:
    """Digested keys stay apart by type: 600 bytes of x and 600 chars of x are two entries."""
    assert KEYS.entry(b"x" * 600, 1) != KEYS.entry("x" * 600, 1)
