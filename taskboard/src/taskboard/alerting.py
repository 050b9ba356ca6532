"""taskboard's alert delivery: the dispatcher, its channels, the silences, from settings.

The log channel is always on; a webhook, email to a list, and in-app notifications to
every owner of a workspace come on with their settings (``CORESTONE_ALERTS_…``,
docs/observability.md "Alert notifications"). The dispatcher is a component (started
with the infrastructure, its sends drained at stop) and a service the ops routes read.

A process that runs the background work (``evaluate``: ``taskboard serve`` without
``--no-worker``, and ``taskboard worker``) also runs the alert engine
(:func:`corestone.observability.alerts.add_alerts`) with the dispatcher as its sink.
Several such processes evaluate the same rules; each notification is still sent once
(the dispatcher claims every send in the database, ADR 0041).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import select

from corestone import Infrastructure
from corestone.db import Database
from corestone.observability.alerts import add_alerts
from corestone.observability.alerts.channels import Channel, LogChannel
from corestone.observability.alerts.channels.email import EmailChannel
from corestone.observability.alerts.channels.inapp import InAppChannel, Recipients
from corestone.observability.alerts.channels.webhook import WebhookChannel
from corestone.observability.alerts.dispatcher import Dispatcher
from corestone.observability.alerts.silences import SilenceStore
from corestone.push import NotificationFeed
from taskboard.domain.models import Membership, Role
from taskboard.mail import MailWiring

__all__ = ["MAX_ALERT_RECIPIENTS", "alerting_for", "owners_of_workspaces", "setup_alerting"]

MAX_ALERT_RECIPIENTS = 1000
"""In-app alert notifications go to at most this many owners (the longest-standing)."""


def owners_of_workspaces(database: Database) -> Recipients:
    """The in-app channel's recipients: every user who owns a workspace."""

    async def recipients() -> Sequence[int]:
        async with database.transaction(read_only=True) as tx:
            rows = await tx.session.execute(
                select(Membership.user_id)
                .where(Membership.role == Role.OWNER.value)
                .group_by(Membership.user_id)
                .order_by(Membership.user_id)
                .limit(MAX_ALERT_RECIPIENTS)
            )
            return [int(user_id) for (user_id,) in rows]

    return recipients


def setup_alerting(infra: Infrastructure, mail: MailWiring, *, evaluate: bool) -> Dispatcher:
    """Build the dispatcher and its channels from the settings; register it; run the
    engine into it if ``evaluate``."""
    settings = infra.settings
    channels: list[Channel] = [LogChannel()]
    if settings.alerts_webhook_url is not None and settings.alerts_webhook_secret is not None:
        secret = settings.alerts_webhook_secret.get_secret_value().encode()
        channels.append(
            WebhookChannel(settings.alerts_webhook_url, secret, breakers=infra.breakers)
        )
    if settings.alerts_email_to and settings.alerts_email_from is not None:
        channels.append(
            EmailChannel(mail.email, sender=settings.alerts_email_from, to=settings.alerts_email_to)
        )
    if settings.alerts_inapp:
        feed = NotificationFeed(settings.signing_key)
        channels.append(InAppChannel(infra.db, feed, owners_of_workspaces(infra.db)))
    dispatcher = Dispatcher(
        infra.db,
        channels,
        timing=settings.alert_timing,
        silences=SilenceStore(max_duration=timedelta(days=settings.alerts_silence_max_days)),
        metrics=infra.metrics,
    )
    infra.add(dispatcher, component_type="component", critical=False)
    infra.services.register_value(Dispatcher, dispatcher)
    if evaluate:
        # Added after the dispatcher, so stopped before it: no evaluation after its drain.
        add_alerts(infra, dispatcher)
    _DISPATCHERS[infra.db] = dispatcher
    return dispatcher


_DISPATCHERS: weakref.WeakKeyDictionary[Database, Dispatcher] = weakref.WeakKeyDictionary()


def alerting_for(database: Database) -> Dispatcher:
    """The dispatcher ``setup_alerting`` made for ``database`` (KeyError if none)."""
    return _DISPATCHERS[database]
