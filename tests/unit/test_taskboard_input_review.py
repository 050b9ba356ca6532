"""Hostile inputs the schema review of issue 12 let through: rounded ids, hidden line breaks.

Each case here was accepted by taskboard before the fix that names it; each asserts the
server now refuses it (422), so what a client sent is never silently changed into
something else, and a "single line" title holds no line break of any Unicode kind.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from taskboard.api.schemas import MemberIn, TaskIn, TaskPatch, WorkspaceIn


@pytest.mark.parametrize(
    "literal", ["9007199254740993.0", "9007199254740995.0", "1e17", "9.2233720368547748e18"]
)
def test_an_integral_float_id_beyond_2_53_is_refused_not_rounded(literal: str) -> None:
    """A float holds every integer only up to 2**53: ``9007199254740993.0`` parses as the
    float 9007199254740992.0, so accepting it would add member …992 when …993 was sent.
    Beyond 2**53 an id must come as an integer literal; the exact integer still passes."""
    with pytest.raises(ValidationError) as refused:
        MemberIn.model_validate_json(f'{{"user_id": {literal}}}')
    assert refused.value.errors()[0]["loc"] == ("user_id",)
    exact = MemberIn.model_validate_json('{"user_id": 9007199254740993}')
    assert exact.user_id == 9007199254740993
    below = MemberIn.model_validate_json('{"user_id": 9007199254740991.0}')
    assert below.user_id == 9007199254740991


@pytest.mark.parametrize(
    "title",
    ["a\u2028b", "a\u2029b", "a\x85b", "a\x9bb", "a\x80b", "\x9f", "\x85\x85a\u2028b"],
)
def test_a_title_or_name_with_a_unicode_line_break_or_c1_control_is_refused(title: str) -> None:
    """NEL (U+0085), LINE and PARAGRAPH SEPARATOR (U+2028/9) break lines as \\n does, and
    the C1 controls (U+0080 to U+009F) are control characters as C0's are: a name or title
    is one line with no control character, so they are refused inside it (at its edges
    the Unicode spaces among them are stripped, as before)."""
    for model, field, extra in (
        (TaskIn, "title", {}),
        (TaskPatch, "title", {}),
        (WorkspaceIn, "name", {}),
    ):
        with pytest.raises(ValidationError):
            model.model_validate({field: title} | extra)
    assert TaskIn.model_validate({"title": "\u2028a\x85"}).title == "a"


@pytest.mark.parametrize("text", ["a\x80b", "\x9b31m", "\x9f"])
def test_a_description_with_a_c1_control_is_refused(text: str) -> None:
    """A description may hold line breaks and tabs, never another control character: the
    C1 controls (``\\x9b`` is the one-byte CSI of a terminal escape) are refused as C0's."""
    with pytest.raises(ValidationError):
        TaskIn.model_validate({"title": "t", "description": text})
    assert TaskIn.model_validate({"title": "t", "description": "a\x85b\u2028c"}).description


@pytest.mark.parametrize(
    "title",
    [
        "invoice\u202egnp.exe",  # RIGHT-TO-LEFT OVERRIDE: shows "invoiceexe.png"
        "a\u202ab",
        "a\u202db",
        "\u2066a\u2069",
        "a\u2067b\u2068c",
    ],
)
def test_a_title_or_name_with_a_bidi_override_or_isolate_is_refused(title: str) -> None:
    """Bidi embeddings, overrides and isolates reorder what follows them on the screen
    ("Trojan Source", CVE-2021-42574): a title could show one thing and be another. They
    are refused in one-line names; the marks right-to-left text needs stay allowed."""
    for model, field in ((TaskIn, "title"), (TaskPatch, "title"), (WorkspaceIn, "name")):
        with pytest.raises(ValidationError) as refused:
            model.model_validate({field: title})
        assert "bidirectional" in str(refused.value)
    for allowed in ("שלום\u200f 1", "a\u200eb", "\u061c\u0645\u0631\u062d\u0628\u0627"):
        assert TaskIn.model_validate({"title": allowed}).title == allowed
