"""GET /api/ops/breakers: every breaker of the process, as the registry reports it."""

from __future__ import annotations

from corestone.resilience import State
from tests.integration.conftest import Board


async def test_breakers_endpoint_lists_the_database_breaker(board: Board) -> None:
    """The database breaker is there, CLOSED, with the calls the requests made."""
    _, auth = await board.signup("Ops")
    await board.workspace(auth)  # an owner: operations data is for operators
    response = await board.client.get("/api/ops/breakers", headers=auth)
    assert response.status_code == 200
    breakers = {b["name"]: b for b in response.json()["breakers"]}
    database = breakers["database"]
    assert database["state"] == "closed"
    assert database["successful_calls"] > 0
    assert database["failed_calls"] == 0


async def test_breakers_endpoint_shows_an_open_breaker_and_health_warns(board: Board) -> None:
    """A forced-open breaker shows in the JSON with its state, and readiness warns."""
    _, auth = await board.signup("Ops")
    await board.workspace(auth)  # an owner: operations data is for operators
    board.infra.breakers.get("smtp").transition_to(State.FORCED_OPEN)
    body = (await board.client.get("/api/ops/breakers", headers=auth)).json()
    assert {b["name"]: b["state"] for b in body["breakers"]}["smtp"] == "forced_open"
    board.infra.breakers.get("database").transition_to(State.FORCED_OPEN)
    ready = await board.client.get("/health/ready")
    checks = ready.json()["checks"]
    database = next(v for k, v in checks.items() if k.startswith("database"))[0]
    assert database["status"] == "warn"
    assert "circuit breaker" in database["output"]
    board.infra.breakers.get("database").reset()


async def test_breakers_endpoint_needs_a_token(board: Board) -> None:
    """Without a bearer token the endpoint answers 401."""
    response = await board.client.get("/api/ops/breakers")
    assert response.status_code == 401
