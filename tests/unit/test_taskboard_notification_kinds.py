"""taskboard's notification kinds stay one list: the PATCH body, the defaults, the links."""

from __future__ import annotations

import pytest

from taskboard.api.notifications import KindsIn
from taskboard.services.notifications import notification_list, parse_notification_list
from taskboard.services.notify import KINDS


def test_the_preferences_body_names_exactly_the_declared_kinds() -> None:
    """Every kind with defaults can be PATCHed, and nothing else can."""
    assert {field.alias for field in KindsIn.model_fields.values()} == set(KINDS)


def test_an_unsubscribe_list_names_its_kind_and_user() -> None:
    """``notify:<kind>:<user>`` round-trips, dots and all."""
    assert parse_notification_list(notification_list("workspace.member_added", 42)) == (
        "workspace.member_added",
        42,
    )


@pytest.mark.parametrize(
    "list_id",
    ["task-assignments", "notify:", "notify:task.assigned", "notify::7",
     "notify:task.assigned:x7", "notify:task.assigned:١٢", "notify:k:" + "9" * 19],
)  # fmt: skip
def test_anything_else_is_not_a_notification_list(list_id: str) -> None:
    """Other lists, a missing kind, a user that is not plain ASCII digits: None."""
    assert parse_notification_list(list_id) is None
