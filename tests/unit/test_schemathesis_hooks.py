"""The narrowing in tests/integration/schemathesis_hooks.py forgives only what it says.

The hooks replace two of schemathesis's checks with versions that forgive documented
cases; these prove the forgiveness is that narrow, on recorded histories.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from tests.integration import schemathesis_hooks as hooks

TASK = "/api/workspaces/1/tasks/4"


def _history(*steps: tuple[str, str, int]) -> tuple[Any, Any]:
    """A check context whose recorder saw ``steps`` (method, path, status), then a GET."""
    cases = [
        SimpleNamespace(id=str(n), method=method, formatted_path=path)
        for n, (method, path, _) in enumerate(steps)
    ]
    current = SimpleNamespace(id="now", method="GET", formatted_path=TASK)
    responses = {
        str(n): SimpleNamespace(status_code=status) for n, (*_, status) in enumerate(steps)
    }
    internals = SimpleNamespace(
        find_all_cases=lambda: iter([*cases, current]),
        find_response=lambda case_id: responses.get(case_id),
    )
    return SimpleNamespace(internals=internals), current


@pytest.mark.parametrize(
    ("steps", "restored"),
    [
        ([("DELETE", TASK, 204), ("POST", TASK + "/restore", 200)], True),
        ([("POST", TASK + "/restore", 200), ("DELETE", TASK, 204)], False),
        ([("DELETE", TASK, 204), ("POST", TASK + "/restore", 404)], False),
        ([("DELETE", TASK, 204), ("POST", "/api/workspaces/1/tasks/5/restore", 200)], False),
        ([("DELETE", TASK, 204)], False),
    ],
)
def test_only_a_restore_after_the_last_delete_excuses_a_read(
    steps: list[tuple[str, str, int]], restored: bool
) -> None:
    """A successful restore of the same task after its last DELETE, and nothing else."""
    ctx, current = _history(*steps)
    assert hooks._restored_after_delete(ctx, current) is restored


def test_state_refusals_name_a_rule_each_and_no_blanket_status() -> None:
    """Every forgiven refusal of valid input names its operation, status and rule (a 412
    of a stale version has none), never a whole status of an operation; the only POSTs
    are restore, a push subscription (whose endpoint and keys no schema can check) and a
    silence (whose window is measured from now)."""
    for method, path, status, rule in hooks._STATE_REFUSALS:
        assert method in {"GET", "PATCH", "DELETE", "POST"}
        assert path.startswith(("/api/workspaces/{ws}/", "/api/me/", "/api/ops/silences"))
        assert status in {412, 422}
        assert rule is not None or status == 412
        assert method != "POST" or path.endswith(("/restore", "/push-subscriptions", "/silences"))
