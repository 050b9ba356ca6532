"""Operations data for the dashboard (docs/taskboard.md): breakers, cache, queries, emails.

Breakers, cache and queries describe the whole service: operators only (``Operator``).
Emails are a workspace's data: each caller sees their own workspaces' messages.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from corestone import NotFoundError
from corestone.db.report import database_report
from corestone.email import EmailStatus
from corestone.email.tracking import MAX_LIMIT, BulkProgress, EmailTracker, parse_statuses
from corestone.web import infrastructure, service
from corestone.web.contract import StrictRoute
from corestone.web.openapi import BEARER, problem_responses
from taskboard.api.deps import Caller, Operator, Workspaces

__all__ = ["router"]

router = APIRouter(prefix="/api/ops", route_class=StrictRoute)

Tracker = Annotated[EmailTracker, Depends(service(EmailTracker))]

_STATUS = "|".join(s.value for s in EmailStatus)
STATUS_PATTERN = rf"^(({_STATUS})(,({_STATUS}))*)?$"
"""What ``status`` accepts (documentation: ``parse_statuses`` checks it, naming the field)."""
BULK_PATTERN = r"^[0-9a-f-]{1,36}$"
"""A bulk id as ``EmailService.send_bulk`` makes them (a UUID)."""


@router.get("/breakers", openapi_extra=BEARER, responses=problem_responses(403))
async def breakers(request: Request, _operator: Operator) -> dict[str, Any]:
    """Every circuit breaker of this process: state, rates, counters, when it retries.

    For operators (owners of a workspace, operator tokens): it names the service's
    dependencies and their health, nothing of a workspace's data.
    """
    return infrastructure(request).breakers.as_json()


@router.get("/cache", openapi_extra=BEARER, responses=problem_responses(403))
async def cache(request: Request, _operator: Operator) -> dict[str, Any]:
    """The cache of this process: hits and misses per tier, L1 size, Redis and backplane.

    Counters only, never keys or values: a key names a workspace's data. For operators.
    """
    return infrastructure(request).cache.snapshot()


@router.get("/queries", openapi_extra=BEARER, responses=problem_responses(403))
async def queries(
    request: Request,
    _operator: Operator,
    limit: Annotated[int, Query(ge=1, le=100, description="statements looked at")] = 20,
) -> dict[str, Any]:
    """What is slow, why, and which index would fix it (``corestone queries report``'s JSON).

    The top statements come from this process's query monitor (``CORESTONE_QUERY_MONITOR``)
    and from ``pg_stat_statements`` where it answers; each slow one's plan problems, the
    index advisor's suggestions (proven with hypopg, cost before and after) and drop
    candidates. Statements appear as fingerprints, values replaced by placeholders: the
    values a plan was made with never leave the process. For operators.
    """
    infra = infrastructure(request)
    return await database_report(infra.db, infra.settings, limit=limit)


@router.get("/emails", openapi_extra=BEARER)
async def emails(
    caller: Caller,
    workspaces: Workspaces,
    tracker: Tracker,
    status: Annotated[
        str | None,
        Query(
            description="only these statuses, comma-separated (queued,failed); "
            "an unknown one is 422 naming status",
            json_schema_extra={"pattern": STATUS_PATTERN},
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    bulk: Annotated[
        str | None,
        Query(
            pattern=BULK_PATTERN,
            description="only the messages of this bulk send; the answer's bulk summarises "
            "its progress (total 0 when none of its messages is in the caller's workspaces)",
        ),
    ] = None,
) -> dict[str, Any]:
    """The newest emails of the caller's workspaces, and how many are in each status.

    Unlike breakers and cache counters, a message is a workspace's data (its recipients
    and subject), so a caller sees only the messages of workspaces they are a member of;
    messages of no workspace are for operators (``corestone email list``). The counts
    show a long send's progress; with ``bulk`` everything is of that one bulk send, and
    ``bulk`` adds its total, how many are still pending and whether it is done.
    """
    wanted = parse_statuses(status)
    mine = await workspaces.workspace_ids_of(caller)
    items = await tracker.messages(statuses=wanted, workspace_ids=mine, limit=limit, bulk_id=bulk)
    answer: dict[str, Any] = {"items": [item.as_json() for item in items]}
    if bulk is None:
        answer["counts"] = await tracker.counts(workspace_ids=mine)
        return answer
    # A bulk of other workspaces looks like one that does not exist: empty, as a filter.
    progress = await tracker.bulk(bulk, workspace_ids=mine) or BulkProgress(bulk, {})
    answer["counts"] = progress.counts
    answer["bulk"] = progress.as_json()
    return answer


@router.get("/emails/{message_id}", openapi_extra=BEARER)
async def email(
    message_id: Annotated[str, Path(max_length=36)],
    caller: Caller,
    workspaces: Workspaces,
    tracker: Tracker,
) -> dict[str, Any]:
    """One email of the caller's workspaces and its status history; 404 for any other."""
    mine = await workspaces.workspace_ids_of(caller)
    found = await tracker.message(message_id, workspace_ids=mine)
    if found is None:
        raise NotFoundError("no such email")
    return found.as_json()
