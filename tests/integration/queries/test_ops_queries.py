"""GET /api/ops/queries: the report as JSON, for operators only."""

from __future__ import annotations

from tests.integration.conftest import Board


async def test_the_report_is_served_to_a_signed_in_caller(board: Board) -> None:
    """An owner gets the report's sections, with no parameter values in it."""
    _, auth = await board.signup("Ops")
    await board.workspace(auth)  # an owner: operations data is for operators
    response = await board.client.get("/api/ops/queries", headers=auth)
    assert response.status_code == 200
    body = response.json()
    for key in ("top", "n_plus_one", "plans", "suggestions", "drop_candidates", "sources"):
        assert key in body
    assert body["dialect"] in ("sqlite", "postgresql")
    assert "parameters" not in response.text


async def test_no_token_and_a_bad_token_are_refused(board: Board) -> None:
    """Without a token, or with a wrong one, the report is 401."""
    assert (await board.client.get("/api/ops/queries")).status_code == 401
    bad = {"Authorization": "Bearer not-a-token"}
    assert (await board.client.get("/api/ops/queries", headers=bad)).status_code == 401


async def test_a_bad_limit_is_422_naming_it(board: Board) -> None:
    """limit=0 is a problem+json naming the field."""
    _, auth = await board.signup("Ops")
    await board.workspace(auth)  # an owner: operations data is for operators
    response = await board.client.get("/api/ops/queries?limit=0", headers=auth)
    assert response.status_code == 422
    assert "limit" in response.text
