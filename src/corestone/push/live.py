"""Wire live streams into an :class:`~corestone.Infrastructure`: wakes and the feed.

``add_live_wakes(infra)`` is for every process that runs events: it makes the process's
wakes (Redis pub/sub on ``corestone:{CORESTONE_CACHE_NAMESPACE}:live`` when
``CORESTONE_REDIS_URL`` is set, in-process otherwise) and has the outbox relay call them
after each pass, so a ``worker`` process's relay wakes the serving processes.
``add_live_streams(infra, authorize=...)`` is for a process that serves streams: it adds
the wakes if needed and one :class:`~corestone.push.feed.EventFeed`, managed, with its
health check (not critical: a stream that cannot be served does not stop the rest)::

    events = add_events(infra, registry)
    feed = add_live_streams(
        infra, authorize=check_member, revocations={"member.removed": "user_id"}
    )

    @app.get("/api/workspaces/{ws}/events")
    async def events(ws: int, user: Caller, request: Request) -> Response:
        return await feed.open(user.id, ws, last_event_id=request.headers.get("last-event-id"))

See docs/push.md ("Live stream").
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from corestone.push.feed import Authorize, EventFeed
from corestone.push.wakes import LocalWakes, RedisWakes

if TYPE_CHECKING:
    from corestone.runtime import Infrastructure

__all__ = ["add_live_streams", "add_live_wakes"]

_WAKES: weakref.WeakKeyDictionary[Infrastructure, LocalWakes] = weakref.WeakKeyDictionary()


def add_live_wakes(infra: Infrastructure) -> LocalWakes:
    """This infrastructure's wakes (made and managed once), told by its relay.

    Call it after ``add_events`` and before the infrastructure starts.
    """
    found = _WAKES.get(infra)
    if found is not None:
        return found
    settings = infra.settings
    wakes: LocalWakes
    if settings.redis_url:
        wakes = RedisWakes(
            settings.redis_url,
            channel=f"corestone:{settings.cache_namespace}:live",
            protocol=settings.redis_protocol,
        )
    else:
        wakes = LocalWakes()
    infra.add(wakes, critical=False)
    infra.events.relay.on_sent = wakes.notify
    _WAKES[infra] = wakes
    return wakes


def add_live_streams(
    infra: Infrastructure,
    *,
    authorize: Authorize,
    revocations: Mapping[str, str] | None = None,
    **options: Any,
) -> EventFeed:
    """The process's live feed: managed, in readiness (not critical), and returned.

    ``authorize(user, workspace)`` lets a caller in or raises (``NotFoundError``: 404);
    ``revocations`` maps an event type to the payload field naming a user whose streams
    of that workspace end (``{"member.removed": "user_id"}``). ``options`` are
    :class:`EventFeed`'s; ``max_streams``, ``max_streams_per_user`` and
    ``heartbeat_seconds`` default to ``CORESTONE_LIVE_MAX_STREAMS``,
    ``CORESTONE_LIVE_MAX_STREAMS_PER_USER`` and ``CORESTONE_LIVE_HEARTBEAT_SECONDS``.
    """
    wakes = add_live_wakes(infra)
    options.setdefault("max_streams", infra.settings.live_max_streams)
    options.setdefault("max_streams_per_user", infra.settings.live_max_streams_per_user)
    options.setdefault("heartbeat_seconds", infra.settings.live_heartbeat_seconds)
    feed = EventFeed(
        infra.db,
        wakes,
        authorize=authorize,
        revocations=revocations,
        metrics=infra.metrics,
        health=infra.health,
        **options,
    )
    infra.add(feed, check=feed.check, component_type="component", critical=False)
    infra.services.register_value(EventFeed, feed)
    return feed
