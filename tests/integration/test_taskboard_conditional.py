"""DELETE and restore honour If-Match as PATCH does (ADR 0029), on both databases.

If-Match stays optional on both (no header: no condition); one given is parsed and
compared exactly as PATCH's, and the comparison is part of the deleting or restoring
statement, so a write that lands first turns the second into a 412.
"""

from __future__ import annotations

import asyncio

from tests.integration.conftest import Board

PROBLEM = "application/problem+json"


async def _task_url(board: Board, name: str = "Cd") -> tuple[str, dict[str, str]]:
    _, auth = await board.signup(name, f"{name.lower()}@example.com")
    ws = await board.workspace(auth)
    task = await board.task(auth, ws)
    return f"/api/workspaces/{ws}/tasks/{task['id']}", auth


async def test_delete_refuses_a_stale_weak_or_malformed_if_match_and_keeps_the_task(
    board: Board,
) -> None:
    """A stale version is 412 with current_version, a weak tag 412, garbage 422 naming
    If-Match, two versions 422; none of them deletes the task."""
    url, auth = await _task_url(board)
    patched = await board.client.patch(
        url, json={"title": "v2"}, headers=auth | {"If-Match": '"1"'}
    )
    assert patched.status_code == 200
    cases = {
        '"1"': (412, "stale_version"),
        'W/"2"': (412, "precondition_failed"),
        '"abc"': (412, "precondition_failed"),
        "2": (422, "invalid_input"),
        '"2': (422, "invalid_input"),
        '"1", "2"': (422, "invalid_input"),
    }
    for if_match, (status, code) in cases.items():
        response = await board.client.delete(url, headers=auth | {"If-Match": if_match})
        assert (response.status_code, response.json()["code"]) == (status, code), if_match
        assert response.headers["content-type"].startswith(PROBLEM)
        if code == "stale_version":
            assert response.json()["current_version"] == 2
        else:
            assert response.json()["field"] == "If-Match"
        assert (await board.client.get(url, headers=auth)).status_code == 200, if_match


async def test_delete_applies_with_the_current_version_a_star_or_no_if_match(board: Board) -> None:
    """The current version, ``*`` and an absent If-Match (optional on DELETE) all delete;
    ``*`` on a task that is not there is a 404."""
    for number, if_match in enumerate(('"1"', "*", None)):
        url, auth = await _task_url(board, f"Star{number}")
        headers = auth if if_match is None else auth | {"If-Match": if_match}
        response = await board.client.delete(url, headers=headers)
        assert response.status_code == 204, (if_match, response.text)
        assert (await board.client.get(url, headers=auth)).status_code == 404
        again = await board.client.delete(url, headers=auth | {"If-Match": "*"})
        assert again.status_code == 404


async def test_restore_honours_if_match_against_the_deleted_tasks_version(board: Board) -> None:
    """A delete bumps the version: restoring with the ETag read before it is a 412 naming
    the deleted task's version, and leaves it deleted; that version restores it; a live
    task is compared too (412 when stale, returned as is when current)."""
    url, auth = await _task_url(board)
    assert (await board.client.delete(url, headers=auth | {"If-Match": '"1"'})).status_code == 204
    stale = await board.client.post(f"{url}/restore", headers=auth | {"If-Match": '"1"'})
    assert stale.status_code == 412, stale.text
    assert (stale.json()["code"], stale.json()["current_version"]) == ("stale_version", 2)
    assert (await board.client.get(url, headers=auth)).status_code == 404
    malformed = await board.client.post(f"{url}/restore", headers=auth | {"If-Match": "2"})
    assert (malformed.status_code, malformed.json()["field"]) == (422, "If-Match")
    restored = await board.client.post(f"{url}/restore", headers=auth | {"If-Match": '"2"'})
    assert (restored.status_code, restored.json()["version"]) == (200, 3)
    assert restored.headers["etag"] == '"3"'
    live_stale = await board.client.post(f"{url}/restore", headers=auth | {"If-Match": '"2"'})
    assert (live_stale.status_code, live_stale.json()["current_version"]) == (412, 3)
    live = await board.client.post(f"{url}/restore", headers=auth | {"If-Match": '"3"'})
    assert (live.status_code, live.json()["version"]) == (200, 3)
    unconditional = await board.client.post(f"{url}/restore", headers=auth)
    assert unconditional.status_code == 200


async def test_a_delete_and_a_patch_with_the_same_if_match_never_both_apply(board: Board) -> None:
    """Sent together with the ETag both read, exactly one of a PATCH and a DELETE applies:
    the DELETE after a PATCH is a 412, the PATCH after a DELETE a 404 (RFC 9110 §13.2.1:
    no task, so no precondition to evaluate). The version is checked by the write itself."""
    for number in range(5):
        url, auth = await _task_url(board, f"Race{number}")
        headers = auth | {"If-Match": '"1"'}
        patch, delete = await asyncio.gather(
            board.client.patch(url, json={"title": "mine"}, headers=headers),
            board.client.delete(url, headers=headers),
        )
        statuses = (patch.text, delete.text)
        assert (patch.status_code, delete.status_code) in ((200, 412), (404, 204)), statuses


async def test_if_match_sent_as_several_header_lines_is_read_as_one_list(board: Board) -> None:
    """RFC 9110 §5.3: repeated field lines are one comma-separated list. ``If-Match: "9"``
    then ``If-Match: "1"`` is the list ``"9", "1"``: two versions, a 422 on PATCH, DELETE
    and restore alike, never the first line alone (which made a stale PATCH apply, or the
    outcome depend on whether a proxy joined the lines). One current line among weak or
    foreign tags on other lines still matches, as it would in a single line. The length
    limit (100) holds for the lines together."""
    url, auth = await _task_url(board)
    lines = [*auth.items(), ("If-Match", '"9"'), ("If-Match", '"1"')]
    for method, target in (("PATCH", url), ("DELETE", url), ("POST", f"{url}/restore")):
        body = {"title": "mine"} if method == "PATCH" else None
        response = await board.client.request(method, target, json=body, headers=lines)
        assert response.status_code == 422, (method, response.text)
        assert (response.json()["field"], response.json()["rule"]) == ("If-Match", "single_etag")
    assert (await board.client.get(url, headers=auth)).headers["etag"] == '"1"'
    first_stale = [*auth.items(), ("If-Match", 'W/"1"'), ("If-Match", '"1"')]
    patched = await board.client.patch(url, json={"title": "v2"}, headers=first_stale)
    assert patched.status_code == 200, patched.text
    only_weak = [*auth.items(), ("If-Match", '"2"'), ("If-Match", "*")]
    refused = await board.client.delete(url, headers=only_weak)
    assert (refused.status_code, refused.json()["field"]) == (422, "If-Match"), refused.text
    padded = '"2"' + " " * 60
    too_long = await board.client.delete(
        url, headers=[*auth.items(), ("If-Match", padded), ("If-Match", padded)]
    )
    assert (too_long.status_code, too_long.json()["rule"]) == (422, "max_length"), too_long.text


async def test_a_task_that_is_not_there_is_404_whatever_the_if_match(board: Board) -> None:
    """RFC 9110 §13.2.1: preconditions are ignored when the request would fail without
    them. A weak or non-version If-Match on a missing task, on another workspace's task
    or under a workspace the caller is no member of is the 404 the same request gets
    without it, not a 412 that answers before the task (or membership) is looked at;
    on a task that is there it is still the 412 ``precondition_failed`` naming If-Match."""
    url, auth = await _task_url(board, "Owner")
    other_url, other_auth = await _task_url(board, "Other")
    missing = url.rsplit("/", 1)[0] + "/999999"
    for if_match in ('W/"1"', '"abc"'):
        headers = auth | {"If-Match": if_match}
        for target in (missing, other_url):
            for method, path in (("PATCH", target), ("DELETE", target)):
                body = {"title": "x"} if method == "PATCH" else None
                response = await board.client.request(method, path, json=body, headers=headers)
                assert response.status_code == 404, (method, path, if_match, response.text)
            restore = await board.client.post(f"{target}/restore", headers=headers)
            assert restore.status_code == 404, (target, if_match, restore.text)
        there = await board.client.delete(url, headers=headers)
        assert (there.status_code, there.json()["code"]) == (412, "precondition_failed")
        assert there.json()["field"] == "If-Match"
    assert (await board.client.get(other_url, headers=other_auth)).status_code == 200
