"""taskboard's documented input rules are the ones its validators apply (issue 12).

The OpenAPI document carries a ``pattern`` for names, titles and descriptions, and
integer ids; schemathesis generates from them and expects every value the document
allows to be accepted and every other refused. These properties hold the document and
the validators to each other, character by character.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from corestone.db.filters import parse_sort
from corestone.errors import InvalidInputError
from corestone.web.contract import if_match_version
from taskboard.api.routes import IF_MATCH_PATTERN, SORT_PATTERN
from taskboard.api.schemas import (
    DESCRIPTION_PATTERN,
    NAME_PATTERN,
    MemberIn,
    TaskIn,
    TaskPatch,
    WorkspaceIn,
)
from taskboard.domain.models import DESCRIPTION_MAX, NAME_MAX, TITLE_MAX, Task
from taskboard.services.repositories import TaskRepository

# Whitespace and controls of every kind, where the rules differ: C0, C1, DEL, Unicode
# spaces that are stripped, separators that Python calls space and pydantic does not.
_EDGY = st.sampled_from(
    "\x00\t\n\x0b\x0c\r\x1c\x1f \x7f\x85\x9f\xa0\u1680\u180e\u2000\u200b\u2028\u2029\u202f"
    "\u205f\u3000\ufeff\u200e\u202e\u2066\u2069a"
)
# Lone surrogates are left out: they are no Unicode text (RFC 8259 §8.2
# calls their behaviour unpredictable) and pydantic refuses every one, wherever it is.
_TEXT = st.text(st.one_of(_EDGY, st.characters(exclude_categories=["Cs"])), max_size=12)


def _accepts(model: type[BaseModel], field: str, value: object) -> bool:
    try:
        extra = {"title": "t"} if model is TaskIn and field != "title" else {}
        model.model_validate({field: value} | extra)
    except ValidationError:
        return False
    return True


def _allows(pattern: str, max_length: int, value: str) -> bool:
    """What a JSON Schema validator says: ``pattern`` searched, ``maxLength`` counted."""
    return re.search(pattern, value) is not None and len(value) <= max_length


@settings(max_examples=400, deadline=None)
@given(_TEXT)
@example(" a ")
@example("\u2003")
@example("a\x1c")
@example("\x1cb")
@example("a\nb")
@example("\ta")
@example(" " * 3 + "n" * (NAME_MAX - 1))
@example("\x85" + "n" * (TITLE_MAX - 1) + "\u3000")
def test_a_name_or_title_is_accepted_exactly_when_the_document_allows_it(value: str) -> None:
    """Names and titles: the document's pattern and maxLength agree with the validation.

    The length counts the spaces that are stripped, as a JSON Schema validator does.
    """
    allowed = _allows(NAME_PATTERN, TITLE_MAX, value)
    assert _accepts(TaskIn, "title", value) is allowed, repr(value)
    assert _accepts(WorkspaceIn, "name", value) is _allows(NAME_PATTERN, NAME_MAX, value)


@settings(max_examples=300, deadline=None)
@given(_TEXT)
@example("line\nbreak\ttab\r")
@example("\x0b")
def test_a_description_is_accepted_exactly_when_the_document_allows_it(value: str) -> None:
    """Descriptions: the document's pattern agrees with the control-character rule."""
    allowed = _allows(DESCRIPTION_PATTERN, DESCRIPTION_MAX, value)
    assert _accepts(TaskIn, "description", value) is allowed, repr(value)
    assert _accepts(TaskPatch, "description", value) is allowed, repr(value)


def test_patterns_are_the_ones_in_the_document() -> None:
    """The schemas of bodies carry these patterns, so generators and clients see them."""
    assert TaskIn.model_json_schema()["properties"]["title"]["pattern"] == NAME_PATTERN
    assert WorkspaceIn.model_json_schema()["properties"]["name"]["pattern"] == NAME_PATTERN
    description = TaskPatch.model_json_schema()["properties"]["description"]
    assert description["pattern"] == DESCRIPTION_PATTERN


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        (3, True),
        (3.0, True),
        (9007199254740991.0, True),
        # The literal is …775000, the float …774784: another id (see test_taskboard_input_review).
        (9.223372036854775e18, False),
        (2.0**63, False),
        (3.5, False),
        (0.0, False),
        (True, False),
        ("3", False),
        (float("inf"), False),
    ],
)
def test_an_id_is_any_json_integer_in_range(value: Any, accepted: bool) -> None:
    """``3.0`` is an integer to JSON Schema, so an id sent that way is accepted as 3, as
    long as the float is exactly the integer written (below 2**53)."""
    try:
        member = MemberIn.model_validate({"user_id": value})
    except ValidationError:
        assert not accepted
        return
    assert accepted
    assert type(member.user_id) is int
    assert member.user_id == int(value)


def test_an_integral_float_id_arrives_as_json_too() -> None:
    """Through JSON, as a request carries it: ``{"assignee_id": 2.0}`` is assignee 2."""

    class Probe(BaseModel):
        model_config = ConfigDict(strict=True)
        item: TaskIn

    probe = TypeAdapter(Probe).validate_json('{"item": {"title": "t", "assignee_id": 2.0}}')
    assert probe.item.assignee_id == 2
    assert type(probe.item.assignee_id) is int


_TAG_PARTS = st.sampled_from(
    ['"', "W/", ",", " ", "\t", "*", "1", "2", "a", "\x7f", "\xe9", "\x00"]
)


def _syntax_refused(value: str) -> bool:
    """Whether the route refuses ``value`` for its syntax (422), as opposed to its match."""
    try:
        if_match_version(value)
    except InvalidInputError as refused:
        return refused.details.get("rule") != "single_etag"
    except Exception:  # the 412 of a tag that matches no version: syntax was fine
        return False
    return False


@settings(max_examples=500, deadline=None)
@given(st.lists(_TAG_PARTS, max_size=10).map("".join))
@example("")
@example('"1",')
@example(' W/"2" , "x" ')
@example('"1",,"2"')
@example('W/ "1"')
def test_if_match_is_refused_for_syntax_exactly_when_the_document_refuses_it(value: str) -> None:
    """The If-Match pattern is the route's syntax: a 422 exactly for what it does not match.

    A list naming two versions is also a 422 (one write expects one version): a rule on
    the values, which no pattern states; the parameter's description does.
    """
    assert _syntax_refused(value) is (re.search(IF_MATCH_PATTERN, value) is None), repr(value)


_SORT_PARTS = st.sampled_from([*TaskRepository.sortable, "-", ",", " ", "\t", "x", "\xa0", "\x1c"])


def _sort_refused(value: str) -> bool:
    """Whether the list route refuses ``sort`` (for its form: no name is given twice)."""
    fields = {name: getattr(Task, name) for name in TaskRepository.sortable}
    try:
        parse_sort(value, fields, tiebreak=Task.id)
    except InvalidInputError:
        return True
    return False


def _without_repeats(value: str) -> str:
    """``value`` without the terms naming a field an earlier term names.

    A repeat is refused before the terms after it are read (``id,id,-`` is a duplicate,
    though ``-`` alone is malformed), so the form is compared on the terms without them.
    """
    seen: set[str] = set()
    kept = []
    for term in value.split(","):
        name = term.strip().removeprefix("-")
        if name in TaskRepository.sortable and name in seen:
            continue
        seen.add(name)
        kept.append(term)
    return ",".join(kept)


@settings(max_examples=500, deadline=None)
@given(st.lists(_SORT_PARTS, max_size=8).map("".join))
@example("-created_at, title")
@example("id,")
@example(",id")
@example("- id")
@example("id,title,status,created_at,updated_at")
@example("id,id,-")
def test_sort_is_refused_exactly_when_the_document_refuses_it(value: str) -> None:
    """The sort pattern is what parse_sort accepts: sortable names, - for descending.

    A name given twice is also refused: a rule between terms that the pattern leaves to
    the parameter's description.
    """
    value = _without_repeats(value)
    assert _sort_refused(value) is (re.search(SORT_PATTERN, value) is None), repr(value)
