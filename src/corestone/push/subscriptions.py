"""Push subscriptions: the table, the value a browser hands over, and the store.

A browser's ``PushSubscription.toJSON()`` is ``{"endpoint", "expirationTime", "keys":
{"p256dh", "auth"}}``: the push resource to post to, the browser's P-256 public key
(base64url of the 65-byte uncompressed point) and a 16-byte authentication secret. The
store checks all three before a row is written (the endpoint by
:class:`~corestone.push.endpoints.EndpointPolicy`, the key as a point on the curve, the
secret's length), so the sender never meets a subscription it cannot use.

``corestone_push_subscriptions`` has one row per endpoint (unique): registering an
endpoint again updates its keys and owner (a browser that re-subscribes, or a shared
browser profile now used by someone else) and clears its failure count. User and
workspace ids are strings, like corestone's context ids, so any id type fits. Each user
keeps at most ``max_per_user`` subscriptions; registering one more drops their oldest.

The statements run in a transaction the caller owns (``async with db.transaction() as
tx: await store.register(tx.session, …)``), so registering can share a commit with the
caller's own writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from corestone._extras import requires_extra

with requires_extra(__name__, "postgres", "sqlite"):
    from sqlalchemy import Integer, String, Table, delete, func, select, update
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Mapped, mapped_column

from corestone.db.models import Base, BigIntId, UTCDateTime, utc_now
from corestone.errors import InvalidInputError
from corestone.push.endpoints import MAX_ENDPOINT_CHARS, EndpointPolicy

__all__ = [
    "AUTH_SECRET_BYTES",
    "PushSubscription",
    "PushSubscriptionRecord",
    "SubscriptionStore",
    "check_keys",
]

AUTH_SECRET_BYTES: Final = 16
"""RFC 8291 §3.2: the authentication secret is 16 octets."""
_ID_CHARS: Final = 64


class PushSubscriptionRecord(Base):
    """``corestone_push_subscriptions``: where each user's browsers can be reached."""

    __tablename__ = "corestone_push_subscriptions"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(_ID_CHARS), nullable=False, index=True)
    workspace_id: Mapped[str | None] = mapped_column(String(_ID_CHARS), nullable=True)
    endpoint: Mapped[str] = mapped_column(String(MAX_ENDPOINT_CHARS), nullable=False, unique=True)
    p256dh: Mapped[str] = mapped_column(String(128), nullable=False)
    auth: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


_TABLE: Table = PushSubscriptionRecord.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class PushSubscription:
    """One subscription: where to post and the browser's keys (plus its row, if stored)."""

    endpoint: str
    p256dh: str
    auth: str
    id: int | None = None
    user_id: str | None = None
    workspace_id: str | None = None
    created_at: datetime | None = None
    last_success_at: datetime | None = None
    failures: int = 0

    @classmethod
    def from_browser(cls, data: Mapping[str, Any]) -> PushSubscription:
        """From ``PushSubscription.toJSON()``; InvalidInputError naming a missing field."""
        if not isinstance(data, Mapping):
            raise InvalidInputError("subscription must be an object", field="subscription")
        keys = data.get("keys")
        if not isinstance(keys, Mapping):
            raise InvalidInputError("keys: required, with p256dh and auth", field="keys")
        values = {"endpoint": data.get("endpoint")}
        values |= {name: keys.get(name) for name in ("p256dh", "auth")}
        for name, value in values.items():
            if not isinstance(value, str) or not value:
                where = name if name == "endpoint" else f"keys.{name}"
                raise InvalidInputError(f"{where}: required, a string", field=where)
        return cls(values["endpoint"], values["p256dh"], values["auth"])  # type: ignore[arg-type]

    def to_browser(self) -> dict[str, Any]:
        """The ``toJSON()`` shape (``expirationTime`` is not kept: browsers send null)."""
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": self.p256dh, "auth": self.auth},
        }


def check_keys(p256dh: str, auth: str) -> tuple[bytes, bytes]:
    """The decoded (public key, auth secret), or InvalidInputError naming the bad one.

    ``p256dh`` must be base64url of an uncompressed point on P-256; ``auth`` base64url
    of 16 bytes. Needs the ``push`` extra (cryptography checks the point).
    """
    with requires_extra(__name__, "push"):
        from cryptography.hazmat.primitives.asymmetric import ec

    from corestone.push.vapid import b64url_decode

    try:
        point = b64url_decode(p256dh)
    except ValueError:
        raise InvalidInputError(
            "keys.p256dh: is not base64url", field="keys.p256dh", rule="p256_key"
        ) from None
    if len(point) != 65 or point[0] != 4:
        raise InvalidInputError(
            "keys.p256dh: must be an uncompressed P-256 point (65 bytes)",
            field="keys.p256dh",
            rule="p256_key",
        )
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise InvalidInputError(
            "keys.p256dh: is not a point on P-256", field="keys.p256dh", rule="p256_key"
        ) from None
    try:
        secret = b64url_decode(auth)
    except ValueError:
        raise InvalidInputError(
            "keys.auth: is not base64url", field="keys.auth", rule="auth_secret"
        ) from None
    if len(secret) != AUTH_SECRET_BYTES:
        raise InvalidInputError(
            f"keys.auth: must be {AUTH_SECRET_BYTES} bytes, not {len(secret)}",
            field="keys.auth",
            rule="auth_secret",
        )
    return point, secret


def _id(value: str | int | None, field: str) -> str | None:
    if value is None:
        return None
    text = str(value)
    if not text or len(text) > _ID_CHARS or not text.isprintable():
        raise InvalidInputError(f"{field}: must be 1-{_ID_CHARS} printable characters", field=field)
    return text


def _subscription(row: Any) -> PushSubscription:
    return PushSubscription(
        endpoint=row.endpoint,
        p256dh=row.p256dh,
        auth=row.auth,
        id=row.id,
        user_id=row.user_id,
        workspace_id=row.workspace_id,
        created_at=row.created_at,
        last_success_at=row.last_success_at,
        failures=row.failures,
    )


class SubscriptionStore:
    """Register, list and remove subscriptions, in the caller's transaction."""

    def __init__(
        self,
        *,
        policy: EndpointPolicy | None = None,
        max_per_user: int = 20,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        if max_per_user < 1:
            raise ValueError("max_per_user must be at least 1")
        self.policy = policy or EndpointPolicy()
        self.max_per_user = max_per_user
        self.now = now

    async def register(
        self,
        session: AsyncSession,
        user_id: str | int,
        subscription: PushSubscription | Mapping[str, Any],
        *,
        workspace_id: str | int | None = None,
    ) -> PushSubscription:
        """Store ``subscription`` for ``user_id`` (a new endpoint, or an update of its row).

        Checks the endpoint and keys first: nothing is written for a bad one.
        """
        if not isinstance(subscription, PushSubscription):
            subscription = PushSubscription.from_browser(subscription)
        user = _id(user_id, "user_id")
        workspace = _id(workspace_id, "workspace_id")
        self.policy.check(subscription.endpoint)
        check_keys(subscription.p256dh, subscription.auth)
        values = {
            "user_id": user,
            "workspace_id": workspace,
            "p256dh": subscription.p256dh,
            "auth": subscription.auth,
            "failures": 0,
        }
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        statement = (
            dialect.insert(_TABLE)
            .values(endpoint=subscription.endpoint, created_at=self.now(), **values)
            .on_conflict_do_update(index_elements=["endpoint"], set_=values)
            .returning(*_TABLE.c)
        )
        row = (await session.execute(statement)).one()
        await self._keep_newest(session, row.user_id)
        return _subscription(row)

    async def _keep_newest(self, session: AsyncSession, user_id: str) -> None:
        """Drop the user's oldest subscriptions beyond ``max_per_user``."""
        count = await session.scalar(
            select(func.count()).select_from(_TABLE).where(_TABLE.c.user_id == user_id)
        )
        if not count or count <= self.max_per_user:
            return
        oldest = (
            select(_TABLE.c.id)
            .where(_TABLE.c.user_id == user_id)
            .order_by(_TABLE.c.created_at, _TABLE.c.id)
            .limit(count - self.max_per_user)
        )
        ids = list((await session.scalars(oldest)).all())
        await session.execute(delete(_TABLE).where(_TABLE.c.id.in_(ids)))

    async def list_for_user(
        self,
        session: AsyncSession,
        user_id: str | int,
        *,
        workspace_id: str | int | None = None,
    ) -> list[PushSubscription]:
        """The user's subscriptions, oldest first (only one workspace's, if given)."""
        statement = select(_TABLE).where(_TABLE.c.user_id == _id(user_id, "user_id"))
        if workspace_id is not None:
            statement = statement.where(_TABLE.c.workspace_id == _id(workspace_id, "workspace_id"))
        rows = await session.execute(statement.order_by(_TABLE.c.created_at, _TABLE.c.id))
        return [_subscription(row) for row in rows]

    async def get(self, session: AsyncSession, endpoint: str) -> PushSubscription | None:
        """The subscription of ``endpoint``, if stored."""
        row = (await session.execute(select(_TABLE).where(_TABLE.c.endpoint == endpoint))).first()
        return None if row is None else _subscription(row)

    async def remove(self, session: AsyncSession, user_id: str | int, endpoint: str) -> bool:
        """Remove the user's subscription of ``endpoint``; False if the user has none there.

        Scoped by user: nobody removes another user's subscription by naming its endpoint.
        """
        result = await session.execute(
            delete(_TABLE)
            .where(_TABLE.c.user_id == _id(user_id, "user_id"), _TABLE.c.endpoint == endpoint)
            .returning(_TABLE.c.id)
        )
        return result.first() is not None

    async def remove_endpoint(self, session: AsyncSession, endpoint: str) -> bool:
        """Remove ``endpoint`` whoever owns it: the push service said it is gone (404/410)."""
        result = await session.execute(
            delete(_TABLE).where(_TABLE.c.endpoint == endpoint).returning(_TABLE.c.id)
        )
        return result.first() is not None

    async def record_success(self, session: AsyncSession, endpoint: str) -> None:
        """A message was accepted: note when, and forget earlier failures."""
        await session.execute(
            update(_TABLE)
            .where(_TABLE.c.endpoint == endpoint)
            .values(last_success_at=self.now(), failures=0)
        )

    async def record_failure(self, session: AsyncSession, endpoint: str) -> None:
        """A message was refused or never got through: count it (for pruning and alerts)."""
        await session.execute(
            update(_TABLE)
            .where(_TABLE.c.endpoint == endpoint)
            .values(failures=_TABLE.c.failures + 1)
        )
