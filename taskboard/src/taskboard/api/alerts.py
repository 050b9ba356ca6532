"""Alerts and silences for operators: what fires, what was sent, what is muted.

``GET /api/ops/alerts`` shows this process's latest evaluation (firing and pending
alerts, each with whether a silence mutes it) and the newest notifications of every
process (from the database). Silences are listed, created and expired under
``/api/ops/silences``; a silence's author is the caller, never a field of the body.
Owners of a workspace and operator tokens may read them (alerts describe the whole
service); only an operator token may create or expire a silence, since anyone may sign
up and own a workspace, and a silence mutes an alert for everyone.
Bad input is a 422 problem naming the field (``matchers[0].value`` for a bad regex).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from corestone.db.models import utc_now
from corestone.observability.alerts.dispatcher import Dispatcher
from corestone.observability.alerts.silences import CREATED_BY_MAX, MAX_MATCHERS
from corestone.web import service
from corestone.web.contract import StrictRoute
from corestone.web.openapi import BEARER, problem_responses
from taskboard.api.deps import Operator, OperatorToken
from taskboard.api.schemas import DESCRIPTION_PATTERN
from taskboard.domain.models import User

__all__ = ["router"]

router = APIRouter(prefix="/api/ops", route_class=StrictRoute)
Alerting = Annotated[Dispatcher, Depends(service(Dispatcher))]


class MatcherIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    op: Literal["=", "!=", "=~", "!~"] = "="
    value: str = Field(max_length=1024, pattern=r"^[^\x00]*$")


class SilenceIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "matchers": [{"name": "alertname", "op": "=", "value": "HighErrorRatio"}],
                    "ends_at": "2030-01-01T12:00:00Z",
                    "comment": "deploying",
                }
            ]
        },
    )

    matchers: list[MatcherIn] = Field(
        min_length=1,
        max_length=MAX_MATCHERS,
        description="every one must hold; =~ and !~ take an anchored regex of at most 256 "
        "characters; at least one must not match empty labels",
    )
    ends_at: AwareDatetime = Field(
        description="required: later than now and starts_at, within the maximum (30 days)"
    )
    starts_at: AwareDatetime | None = None
    comment: str = Field("", max_length=1000, pattern=DESCRIPTION_PATTERN)


@router.get("/alerts", responses=problem_responses(403), openapi_extra=BEARER)
async def alerts(
    _operator: Operator,
    alerting: Alerting,
    limit: Annotated[int, Query(ge=1, le=200, description="notifications shown")] = 50,
) -> dict[str, Any]:
    """Firing and pending alerts (this process's latest evaluation, each with whether a
    silence mutes it), the silences in force, and the newest notifications."""
    return await alerting.overview(notifications=limit)


@router.get("/silences", responses=problem_responses(403), openapi_extra=BEARER)
async def silences(
    _operator: Operator,
    alerting: Alerting,
    expired: Annotated[bool, Query(description="include ended silences")] = False,
) -> dict[str, Any]:
    """Silences newest first: those not yet ended (every one with ``expired=true``)."""
    now = utc_now()
    async with alerting.database.transaction(read_only=True) as tx:
        found = await alerting.silences.all(tx.session, now=now, include_expired=expired)
    return {"items": [silence.as_json(now) for silence in found]}


@router.post(
    "/silences",
    status_code=201,
    responses=problem_responses(403, 409, 422),
    openapi_extra=BEARER,
)
async def create_silence(
    operator: OperatorToken, alerting: Alerting, body: SilenceIn
) -> dict[str, Any]:
    """Mute the alerts every matcher matches, from ``starts_at`` (now) until ``ends_at``.

    409 when 1000 silences are already in force or pending (expire one first)."""
    now = utc_now()
    async with alerting.database.transaction() as tx:
        silence = await alerting.silences.create(
            tx.session,
            matchers=[matcher.model_dump() for matcher in body.matchers],
            starts_at=body.starts_at,
            ends_at=body.ends_at,
            created_by=_author(operator),
            comment=body.comment,
            now=now,
        )
    return silence.as_json(now)


def _author(user: User) -> str:
    """``name <email>``, the name cut to fit what a silence stores (a name and an email
    may be 100 and 254 characters); ``user <id>`` if even the email does not fit."""
    room = CREATED_BY_MAX - len(user.email) - len(" <>")
    if room < 1:
        return f"user {user.id}"
    return f"{user.name[:room].strip()} <{user.email}>"


@router.delete(
    "/silences/{silence_id}", responses=problem_responses(403, 404), openapi_extra=BEARER
)
async def expire_silence(
    _operator: OperatorToken,
    alerting: Alerting,
    silence_id: Annotated[str, Path(min_length=36, max_length=36, pattern=r"^[0-9a-f-]{36}$")],
) -> dict[str, Any]:
    """End a silence now; the row stays, ``state`` ``expired`` (404 if unknown)."""
    now: datetime = utc_now()
    async with alerting.database.transaction() as tx:
        silence = await alerting.silences.expire(tx.session, silence_id, now=now)
    return silence.as_json(now)
