"""The caller's notifications, preferences and Web Push subscriptions over HTTP.

``/api/me/…`` is always the caller's own (the bearer token says who); a notification
id of someone else is a 404 like a missing one. Errors are problem+json; the shapes are
the contract of issue 15 (docs/push.md, "Notifications").
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from corestone.db import MAX_CURSOR_LENGTH
from corestone.push import Notification
from corestone.push.endpoints import MAX_ENDPOINT_CHARS
from corestone.web import service
from corestone.web.contract import StrictRoute
from corestone.web.openapi import BEARER, problem_responses
from taskboard.api.deps import Caller
from taskboard.api.schemas import DIGITS
from taskboard.services.inbox import NotificationService

__all__ = ["router"]

router = APIRouter(prefix="/api", route_class=StrictRoute)
Inbox = Annotated[NotificationService, Depends(service(NotificationService))]

_STRICT = ConfigDict(strict=True, extra="forbid")
MAX_PAGE = 100


class NotificationOut(BaseModel):
    id: str
    kind: str
    workspace_id: int | None
    task_id: int | None
    event_id: str
    title: str = Field(description="plain text: show it as text, never as HTML")
    body: str = Field(description="plain text")
    created_at: datetime
    read_at: datetime | None


class NotificationListOut(BaseModel):
    items: list[NotificationOut]
    next_cursor: str | None


class UnreadCountOut(BaseModel):
    unread: int


class MarkedOut(BaseModel):
    marked: int


class ChannelsOut(BaseModel):
    in_app: bool
    email: bool
    push: bool


class PreferencesOut(BaseModel):
    preferences: dict[str, ChannelsOut]


class ChannelsIn(BaseModel):
    """The channels to change for one kind; a channel absent (or null) stays as it is."""

    model_config = _STRICT

    in_app: bool | None = None
    email: bool | None = None
    push: bool | None = None


class KindsIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=False)

    task_assigned: ChannelsIn | None = Field(None, alias="task.assigned")
    task_changed: ChannelsIn | None = Field(None, alias="task.changed")
    task_deleted: ChannelsIn | None = Field(None, alias="task.deleted")
    workspace_member_added: ChannelsIn | None = Field(None, alias="workspace.member_added")


class PreferencesIn(BaseModel):
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={"examples": [{"preferences": {"task.changed": {"email": True}}}]},
    )

    preferences: KindsIn


class SubscriptionKeysIn(BaseModel):
    model_config = _STRICT

    p256dh: Annotated[str, Field(min_length=1, max_length=128)]
    auth: Annotated[str, Field(min_length=1, max_length=64)]


class SubscriptionIn(BaseModel):
    """The browser's ``PushSubscription.toJSON()``."""

    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=False)

    endpoint: Annotated[str, Field(min_length=1, max_length=MAX_ENDPOINT_CHARS)]
    expiration_time: float | None = Field(None, alias="expirationTime")
    keys: SubscriptionKeysIn


class EndpointIn(BaseModel):
    model_config = _STRICT

    endpoint: Annotated[str, Field(min_length=1, max_length=MAX_ENDPOINT_CHARS)]


class EndpointOut(BaseModel):
    endpoint: str


class PublicKeyOut(BaseModel):
    public_key: str = Field(description="the VAPID application server key, base64url")


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    return None


def _out(item: Notification) -> NotificationOut:
    assert item.created_at is not None
    return NotificationOut(
        id=str(item.id),
        kind=item.kind,
        workspace_id=_int_or_none(item.workspace_id),
        task_id=_int_or_none(item.data.get("task_id")),
        event_id=item.event_id,
        title=item.title,
        body=item.body,
        created_at=item.created_at,
        read_at=item.read_at,
    )


@router.get("/me/notifications", openapi_extra=BEARER)
async def list_notifications(
    caller: Caller,
    inbox: Inbox,
    unread: Annotated[bool, Query(description="only unread notifications")] = False,
    cursor: Annotated[
        str | None,
        Query(
            max_length=MAX_CURSOR_LENGTH,
            description="next_cursor of the previous page, with the same unread filter",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="page size"), DIGITS] = 50,
) -> NotificationListOut:
    """The caller's notifications, newest first."""
    page = await inbox.page(caller, unread=unread, cursor=cursor, limit=limit)
    return NotificationListOut(items=[_out(n) for n in page.items], next_cursor=page.next_cursor)


@router.get("/me/notifications/unread-count", openapi_extra=BEARER)
async def unread_count(caller: Caller, inbox: Inbox) -> UnreadCountOut:
    """How many of the caller's notifications are unread."""
    return UnreadCountOut(unread=await inbox.unread_count(caller))


@router.post(
    "/me/notifications/{notification_id}/read",
    status_code=204,
    response_class=Response,
    responses=problem_responses(404),
    openapi_extra=BEARER,
)
async def mark_read(
    caller: Caller,
    inbox: Inbox,
    notification_id: Annotated[str, Path(min_length=1, max_length=40)],
) -> Response:
    """Mark one of the caller's notifications read (again: no change)."""
    await inbox.mark_read(caller, notification_id)
    return Response(status_code=204)


@router.post("/me/notifications/read-all", openapi_extra=BEARER)
async def mark_all_read(caller: Caller, inbox: Inbox) -> MarkedOut:
    """Mark every unread notification of the caller read; how many were."""
    return MarkedOut(marked=await inbox.mark_all_read(caller))


def _preferences(found: dict[str, Any]) -> PreferencesOut:
    return PreferencesOut(
        preferences={kind: ChannelsOut(**channels.as_dict()) for kind, channels in found.items()}
    )


@router.get("/me/notification-preferences", openapi_extra=BEARER)
async def get_preferences(caller: Caller, inbox: Inbox) -> PreferencesOut:
    """Every kind's channels for the caller, defaults filled in."""
    return _preferences(await inbox.get_preferences(caller))


@router.patch("/me/notification-preferences", openapi_extra=BEARER)
async def update_preferences(caller: Caller, inbox: Inbox, body: PreferencesIn) -> PreferencesOut:
    """Change some channels of some kinds; the whole set after the change."""
    changes = body.preferences.model_dump(by_alias=True, exclude_none=True)
    return _preferences(await inbox.update_preferences(caller, changes))


@router.get("/push/public-key", responses=problem_responses(404), openapi_extra=BEARER)
async def public_key(caller: Caller, inbox: Inbox) -> PublicKeyOut:
    """The key for ``pushManager.subscribe``; 404 when Web Push is not configured."""
    return PublicKeyOut(public_key=inbox.public_key())


@router.post(
    "/me/push-subscriptions",
    status_code=201,
    responses=problem_responses(404),
    openapi_extra=BEARER,
)
async def subscribe(caller: Caller, inbox: Inbox, body: SubscriptionIn) -> EndpointOut:
    """Register the caller's browser for Web Push (again: its keys are updated)."""
    stored = await inbox.subscribe(caller, body.model_dump(by_alias=True))
    return EndpointOut(endpoint=stored.endpoint)


@router.delete(
    "/me/push-subscriptions",
    status_code=204,
    response_class=Response,
    responses=problem_responses(404),
    openapi_extra=BEARER,
)
async def unsubscribe(caller: Caller, inbox: Inbox, body: EndpointIn) -> Response:
    """Forget the caller's subscription of this endpoint (none: nothing to do)."""
    await inbox.unsubscribe(caller, body.endpoint)
    return Response(status_code=204)
