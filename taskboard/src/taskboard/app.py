"""The taskboard application: FastAPI routes on corestone's infrastructure."""

from __future__ import annotations

import os
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp

from corestone import Infrastructure
from corestone.db import Database, upgrade
from corestone.email.routing import ProviderRoute
from corestone.events import Events, add_events
from corestone.observability import get_logger
from corestone.observability.alerts import history_from_settings
from corestone.observability.alerts.dispatcher import Dispatcher
from corestone.observability.dashboard import Panel
from corestone.push import EndpointPolicy, add_live_streams, add_live_wakes
from corestone.sagas import SagaOrchestrator, SagaRecoveryWorker
from corestone.web import instrument
from corestone.web.dashboard import HistorySource, add_dashboard
from corestone.web.openapi import exact_openapi
from taskboard.alerting import setup_alerting
from taskboard.api.alerts import router as alerts_router
from taskboard.api.dashboard import api_router as dashboard_router
from taskboard.api.dashboard import page_router as ops_page_router
from taskboard.api.live import router as live_router
from taskboard.api.members import router as members_router
from taskboard.api.notifications import router as notifications_router
from taskboard.api.ops import router as ops_router
from taskboard.api.page import router as page_router
from taskboard.api.routes import router
from taskboard.events import REGISTRY, register_bus, topic_for
from taskboard.mail import MailWiring, mount_email_routes, setup_email
from taskboard.notify import NotifyWiring, notify_wiring_for, setup_notifications
from taskboard.services import TaskService, UserService, WorkspaceService
from taskboard.services.notifications import MAIL_GROUP, mail_handlers, notifier_for
from taskboard.services.notify import NOTIFY_GROUP, notify_handlers
from taskboard.services.workspaces import SAGAS, require_member

__all__ = [
    "MIGRATIONS",
    "TASK_CACHE_ENV",
    "add_background_work",
    "add_live",
    "add_schema_upgrade",
    "create_app",
    "prepare",
    "register_services",
    "setup_events",
    "task_cache_enabled",
]

MIGRATIONS = "taskboard:migrations"

TASK_CACHE_ENV = "TASKBOARD_TASK_CACHE"
"""``off`` reads tasks from the database on every GET (principal and membership stay
cached): to measure what the task cache saves, or to rule it out while debugging."""

log = get_logger(__name__)


def register_services(
    infra: Infrastructure,
    *,
    mail: MailWiring | None = None,
    events: Events | None = None,
    notify: NotifyWiring | None = None,
    alerting: Dispatcher | None = None,
) -> SagaOrchestrator:
    """Register taskboard's application services (one of each per process).

    ``mail`` is the email wiring (``taskboard.mail.setup_email``), ``events`` the
    events' (``setup_events``), ``notify`` the notifications' (``setup_notifications``)
    and ``alerting`` the alert dispatcher (``setup_alerting``); without them they are set
    up from the settings, with a sender, a relay and the alert engine in this process (a
    ``taskboard worker``).
    Returns the process's saga orchestrator (also registered, as a value).
    """
    if mail is None:
        mail = setup_email(infra, send=True)
    if events is None:
        events = setup_events(infra, relay=True)
    if notify is None:
        setup_notifications(infra, mail)
    if alerting is None:
        setup_alerting(infra, mail, evaluate=True)
    orchestrator = SagaOrchestrator(infra.db, SAGAS, metrics=infra.metrics)
    infra.services.register_value(SagaOrchestrator, orchestrator)

    # Stateless, so one of each serves every request: a factory per request scope would
    # build a TaskService (and its cursor codec) for every cached read.
    db = infra.db
    infra.services.register_value(UserService, UserService(db))
    infra.services.register_value(WorkspaceService, WorkspaceService(db, orchestrator))
    infra.services.register_value(
        TaskService,
        TaskService(
            db,
            signing_key=infra.settings.signing_key,
            cache_reads=task_cache_enabled(os.environ),
        ),
    )
    return orchestrator


def setup_events(infra: Infrastructure, *, relay: bool) -> Events:
    """Wire taskboard's events (``taskboard.events``): the bus its writes record with, and
    the outbox relay, run in this process if ``relay``, on ``CORESTONE_BROKER_URL``'s
    broker (the memory broker when unset)."""
    events = add_events(infra, REGISTRY, topic_for=topic_for, run_relay=relay)
    register_bus(infra.db, events.bus)
    add_live_wakes(infra)  # the relay wakes the live streams of every serving process
    return events


def add_live(infra: Infrastructure) -> None:
    """Serve live streams (``GET /api/workspaces/{ws}/events``) from this process.

    Members only (the membership cache answers); a ``member.removed`` event ends the
    removed user's streams of that workspace.
    """
    db = infra.db

    async def authorize(user_id: int, workspace_id: int) -> None:
        await require_member(db, workspace_id, user_id)

    add_live_streams(infra, authorize=authorize, revocations={"member.removed": "user_id"})


def task_cache_enabled(environ: Mapping[str, str]) -> bool:
    """Whether tasks are read through the cache: ``TASKBOARD_TASK_CACHE`` is on (default) or off."""
    value = environ.get(TASK_CACHE_ENV, "on").strip().lower()
    if value not in ("on", "off"):
        raise ValueError(f"{TASK_CACHE_ENV} must be 'on' or 'off', not {value!r}")
    return value == "on"


def add_background_work(
    infra: Infrastructure, orchestrator: SagaOrchestrator, *, interval_seconds: float = 10.0
) -> None:
    """Run taskboard's background work in this process (docs/scaling.md): saga recovery,
    and the consumers of its events (the ``taskboard-mail`` group: welcome emails; the
    ``taskboard-notify`` group: notifications, with their email and push). Events and
    notifications must be set up (``register_services`` does it)."""
    worker = SagaRecoveryWorker(orchestrator, interval_seconds=interval_seconds)
    infra.add(worker, check=worker.check, component_type="worker", critical=False)
    mail = notifier_for(infra.db)
    infra.events.consumer(MAIL_GROUP, mail_handlers(mail))
    notifier = notify_wiring_for(infra.db).notifier
    infra.events.consumer(NOTIFY_GROUP, notify_handlers(notifier, mail))


async def prepare(infra: Infrastructure) -> None:
    """Bring the schema to the latest revision (safe with several processes at once).

    Once per database and process: the ``schema`` component of a process with background
    work has done it by the time the start-up calls it again.
    """
    if infra.db in _PREPARED:
        return
    await upgrade(infra.db, MIGRATIONS)
    _PREPARED.add(infra.db)
    log.info("schema up to date")


_PREPARED: weakref.WeakSet[Database] = weakref.WeakSet()


class _Schema:
    """Brings the schema up to date when it starts: added right after the database in a
    process that runs background work, so the email sender, the relay and the consumers
    (started after it) never run a pass against tables a first start has not made yet."""

    name = "schema"

    def __init__(self, infra: Infrastructure) -> None:
        self.infra = infra

    async def start(self) -> None:
        await prepare(self.infra)

    async def aclose(self) -> None:
        """Nothing to stop."""


def add_schema_upgrade(infra: Infrastructure) -> None:
    """Migrate the schema as the infrastructure starts, before the components added after.

    Call it first, before ``create_app``'s or ``register_services``' wiring adds the
    background work (``create_app(worker=True)`` and ``taskboard worker`` do).
    """
    infra.add(_Schema(infra), component_type="datastore", critical=True)


def _history_alone(infra: Infrastructure) -> HistorySource:
    history = history_from_settings(infra)
    infra.add(history, critical=False)
    return lambda: history


def create_app(
    infra: Infrastructure,
    *,
    worker: bool = True,
    email_routes: Sequence[ProviderRoute] | None = None,
    push_policy: EndpointPolicy | None = None,
) -> ASGIApp:
    """The ASGI app. If the infrastructure is not running yet, the lifespan runs it.

    ``worker=False`` leaves background work (saga recovery, sending email, relaying and
    consuming events) to ``taskboard worker`` processes: this process only records
    events in the outbox. Email goes through the providers of the settings
    (``CORESTONE_EMAIL_PROVIDERS``; files under var/mail when unset) unless
    ``email_routes`` are given (tests: a memory provider). ``push_policy`` replaces
    the rule for push endpoints (tests: allow a local push service).
    """
    if worker:
        add_schema_upgrade(infra)
    wiring = setup_email(infra, send=worker, routes=email_routes)
    events = setup_events(infra, relay=worker)
    notify = setup_notifications(infra, wiring, push_policy=push_policy)
    alerting = setup_alerting(infra, wiring, evaluate=worker)
    orchestrator = register_services(
        infra, mail=wiring, events=events, notify=notify, alerting=alerting
    )
    if worker:
        add_background_work(infra, orchestrator)
    add_live(infra)
    add_dashboard(
        infra,
        # Without the engine (`serve --no-worker`) the traffic panel still has a history.
        history=None if worker else _history_alone(infra),
        extra=[Panel("alerts", lambda: alerting.overview(notifications=10), ttl=2.0)],
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if infra.running:  # `taskboard serve` started it before binding the port
            yield
            return
        async with infra:
            await prepare(infra)
            yield

    # FastAPI's native OpenTelemetry is off: corestone measures and logs every request
    # itself, and the check for a configured provider alone costs 6% of a cached GET
    # (three environment lookups per request; docs/performance.md).
    api = FastAPI(
        title="taskboard",
        version="0.1.0",
        lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    api.include_router(router)
    api.include_router(members_router)
    api.include_router(live_router)
    api.include_router(ops_router)
    api.include_router(alerts_router)
    api.include_router(dashboard_router)
    api.include_router(notifications_router)
    api.include_router(page_router)
    api.include_router(ops_page_router)
    mount_email_routes(api, wiring, on_unsubscribe=notify.service.unsubscribe_email)
    exact_openapi(api)
    return instrument(api, infra)
