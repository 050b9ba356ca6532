"""The ``status`` pattern /api/ops/emails documents accepts exactly what the server does."""

from __future__ import annotations

import re

import pytest

from corestone.email.tracking import parse_statuses
from corestone.errors import InvalidInputError
from taskboard.api.ops import STATUS_PATTERN


@pytest.mark.parametrize(
    "value",
    ["", "queued", "queued,failed", "sent,delivered,opened", "queued ", " queued", "Queued",
     "queued,", ",queued", "queued,,failed", "lost", "queued\x1c", "unknown,x"],
)  # fmt: skip
def test_the_documented_pattern_and_the_parser_agree(value: str) -> None:
    """A value matches the document's pattern if and only if the server accepts it."""
    documented = re.fullmatch(STATUS_PATTERN, value) is not None
    try:
        parse_statuses(value)
        accepted = True
    except InvalidInputError:
        accepted = False
    assert documented == accepted
