"""Request and response bodies. Requests are strict: no coercion, no unknown fields."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
)
from pydantic_core import PydanticCustomError

from taskboard.domain.models import DESCRIPTION_MAX, NAME_MAX, TITLE_MAX

__all__ = [
    "BULK_MAX",
    "DESCRIPTION_PATTERN",
    "DIGITS",
    "NAME_PATTERN",
    "AuditEntryOut",
    "AuditListOut",
    "Id",
    "MeOut",
    "MemberIn",
    "MemberOut",
    "TaskBulkIn",
    "TaskBulkOut",
    "TaskIn",
    "TaskListOut",
    "TaskOut",
    "TaskPageOut",
    "TaskPatch",
    "UserIn",
    "UserOut",
    "UserWithTokenOut",
    "WorkspaceIn",
    "WorkspaceOut",
]


_EXACT_FLOATS: Final = 2.0**53
"""Below it a float is exactly the integer its literal wrote; from it up, one of several."""


def _integral(value: object) -> object:
    """``2.0`` is the integer 2: JSON Schema counts a number with no fraction as an integer.

    A client may serialise an id that way (or a generator may, from the document), so
    strict mode would refuse what the schema allows. Only exact integers pass: ``2.5``,
    ``true`` and ``"2"`` are still refused. Nor does a float from 2**53 up: the JSON
    parser has already rounded it (``9007199254740993.0`` arrives as …992.0), so it may
    name another row than the one sent; such an id must be sent as an integer literal.
    """
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT_FLOATS:
        return int(value)
    return value


def _digits(value: object) -> object:
    """An integer in a URL is decimal digits, as the document's ``integer`` is written.

    Lax parsing reads ``1_0``, ``+10``, `` 10 `` and ``10.0`` as 10 too: one resource
    would answer at many URLs (what a cache or a log keys by), and ``limit=1_0`` list ten.
    """
    if isinstance(value, str) and not _DIGITS.fullmatch(value):
        raise PydanticCustomError(
            "int_parsing", "Input should be a valid integer, written in decimal digits"
        )
    return value


_DIGITS = re.compile(r"[0-9]+")
DIGITS: Final = BeforeValidator(_digits)
"""For an integer parameter in a path or a query string: digits only (422 otherwise)."""

# Positive and within BIGINT, so no id ever overflows a database column. The bounds come
# first: the validator after them runs before them, and so they stay JSON Schema bounds.
Id = Annotated[int, Field(gt=0, lt=2**63), BeforeValidator(_integral)]

# Control characters (Unicode Cc: C0, DEL and C1), the Unicode line and paragraph
# separators (NEL (U+0085), U+2028 and U+2029 break a line as \n does), and the bidi
# embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): in a one-line name
# they reorder what follows them on the screen ("Trojan Source"), so a title can show
# one thing and be another. LRM/RLM/ALM, which right-to-left text needs, stay allowed.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# A description keeps its line breaks (\n, \r, NEL, U+2028/9) and tabs; no other control.
_CONTROL_EXCEPT_NEWLINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f]")

# The spaces stripped around a name or title (Unicode White_Space), one set for the
# validator and the schema's pattern, so the document says exactly what is accepted.
_SPACES = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
_SPACES += "\u2028\u2029\u202f\u205f\u3000"
_SPACE = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_NOT_IN_A_LINE = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"  # _CONTROL's
_KEPT = rf"[^{_NOT_IN_A_LINE}]"
_EDGE = rf"[^{_SPACE}{_NOT_IN_A_LINE}]"
NAME_PATTERN = rf"^[{_SPACE}]*{_EDGE}(?:{_KEPT}*{_EDGE})?[{_SPACE}]*$"
"""A name or title: one line, not blank once the spaces around it are stripped."""
DESCRIPTION_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f]*$"
"""A description: any text, line breaks and tabs included, but no other control character."""


def _single_line(value: str) -> str:
    """The name without the spaces around it; refused if blank or not one line.

    Stripped here rather than by ``strip_whitespace``, which strips before the length is
    checked: the length is counted as sent, as the document's ``maxLength`` counts it.
    """
    stripped = value.strip(_SPACES)
    if not stripped:
        raise ValueError("must not be blank")
    if _CONTROL.search(stripped):
        raise ValueError(
            "must not contain control characters, bidirectional overrides or line breaks"
        )
    return stripped


def _text(value: str) -> str:
    if _CONTROL_EXCEPT_NEWLINES.search(value):
        raise ValueError("must not contain control characters")
    return value


# The patterns are documentation only (json_schema_extra): the validators keep their own
# messages, and tests/unit/test_taskboard_input_patterns.py proves the two agree.
Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=NAME_MAX),
    AfterValidator(_single_line),
    Field(json_schema_extra={"pattern": NAME_PATTERN}),
]
Title = Annotated[
    str,
    StringConstraints(min_length=1, max_length=TITLE_MAX),
    AfterValidator(_single_line),
    Field(json_schema_extra={"pattern": NAME_PATTERN}),
]
Description = Annotated[
    str,
    StringConstraints(max_length=DESCRIPTION_MAX),
    AfterValidator(_text),
    Field(json_schema_extra={"pattern": DESCRIPTION_PATTERN}),
]
_EMAIL_RULES = (
    "An address email-validator accepts: besides the syntax, one at a special-use or "
    "reserved domain (.test, .local, .invalid, localhost …) is refused (422), since no "
    "mail can reach it."
)
Status = Literal["open", "in_progress", "done"]


class _Input(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    """A strict input's config, with examples for the document (and schemathesis's examples
    phase, which sends them)."""
    return ConfigDict(strict=True, extra="forbid", json_schema_extra={"examples": list(examples)})


class UserIn(_Input):
    model_config = _examples({"name": "Ada Lovelace", "email": "ada@example.com"})

    name: Name
    email: Annotated[EmailStr, StringConstraints(max_length=254), Field(description=_EMAIL_RULES)]


class WorkspaceIn(_Input):
    model_config = _examples({"name": "Analytical Engine"})

    name: Name


class MemberIn(_Input):
    model_config = _examples({"user_id": 2, "role": "member"})

    user_id: Id
    role: Literal["owner", "member"] = "member"


_TASK_EXAMPLE = {"title": "Write the notes", "description": "on Bernoulli numbers"}


class TaskIn(_Input):
    model_config = _examples(_TASK_EXAMPLE | {"status": "open", "assignee_id": None})

    title: Title
    description: Description = ""
    status: Status = "open"
    assignee_id: Id | None = None


def _patch_schema(schema: dict[str, Any]) -> None:
    """An absent PATCH field is left alone: no default is ever applied, so none is shown.

    A PATCH changing nothing (``{}``) is a 422, so the document asks for one field at least.
    """
    for field in schema.get("properties", {}).values():
        field.pop("default", None)
    schema["minProperties"] = 1
    schema["examples"] = [{"status": "done"}, {"title": "Publish the notes", "assignee_id": None}]


class TaskPatch(_Input):
    """A partial update: only the fields sent change; ``assignee_id: null`` unassigns.

    ``title``, ``description`` and ``status`` are not nullable: their ``None`` default only
    marks them absent (it is never validated), so a ``null`` sent is refused naming the
    field, and the schema shows them as plain strings.
    """

    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra=_patch_schema)

    title: Title = None  # type: ignore[assignment]
    description: Description = None  # type: ignore[assignment]
    status: Status = None  # type: ignore[assignment]
    assignee_id: Id | None = None

    def changes(self) -> dict[str, object]:
        """The fields the client sent, and only those."""
        return self.model_dump(exclude_unset=True)


# One transaction holds the whole batch; a bound keeps it short and the body small.
BULK_MAX = 500


class TaskBulkIn(_Input):
    model_config = _examples({"items": [_TASK_EXAMPLE, {"title": "Translate Menabrea"}]})

    items: Annotated[list[TaskIn], Field(min_length=1, max_length=BULK_MAX)]


class UserOut(BaseModel):
    id: int
    name: str
    email: str


class UserWithTokenOut(BaseModel):
    user: UserOut
    token: str


class WorkspaceOut(BaseModel):
    id: int
    name: str
    role: Literal["owner", "member"] | None = None
    created_at: datetime


class MemberOut(BaseModel):
    workspace_id: int
    user_id: int
    role: Literal["owner", "member"]


class MeOut(BaseModel):
    user: UserOut
    workspaces: list[WorkspaceOut]


class TaskOut(BaseModel):
    id: int
    workspace_id: int
    title: str
    description: str
    status: Status
    assignee_id: int | None
    version: int
    created_at: datetime
    updated_at: datetime


class TaskListOut(BaseModel):
    items: list[TaskOut]
    next_cursor: str | None


class TaskPageOut(TaskListOut):
    """Page mode (``?page=``): the page plus the total count of matching tasks."""

    total: int
    page: int


class TaskBulkOut(BaseModel):
    items: list[TaskOut]


class AuditEntryOut(BaseModel):
    id: int
    action: str
    entity: str
    entity_id: int
    actor_id: int | None
    changes: dict[str, object]
    correlation_id: str | None
    at: datetime


class AuditListOut(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None
