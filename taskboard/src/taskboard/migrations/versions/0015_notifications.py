"""corestone's notifications: the per-user feed and the preferences per kind.

``corestone_notifications`` is unique on (event_id, user_id, kind), which makes creating
a notification idempotent; (user_id, id) serves the pages newest first and
(user_id, read_at) the unread count.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "corestone_notifications",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("workspace_id", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_corestone_notifications")),
        sa.UniqueConstraint("event_id", "user_id", "kind", name="uq_corestone_notifications_event"),
    )
    op.create_index(
        "ix_corestone_notifications_user_id_id", "corestone_notifications", ["user_id", "id"]
    )
    op.create_index(
        "ix_corestone_notifications_user_id_read_at",
        "corestone_notifications",
        ["user_id", "read_at"],
    )
    op.create_table(
        "corestone_notification_preferences",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("in_app", sa.Boolean(), nullable=True),
        sa.Column("email", sa.Boolean(), nullable=True),
        sa.Column("push", sa.Boolean(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "kind", name="pk_corestone_notification_preferences"),
    )


def downgrade() -> None:
    op.drop_table("corestone_notification_preferences")
    op.drop_index(
        "ix_corestone_notifications_user_id_read_at", table_name="corestone_notifications"
    )
    op.drop_index("ix_corestone_notifications_user_id_id", table_name="corestone_notifications")
    op.drop_table("corestone_notifications")
