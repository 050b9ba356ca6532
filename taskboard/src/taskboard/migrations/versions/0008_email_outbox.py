"""corestone's email outbox, its status history and the suppression list.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_STATUSES = (
    "status IN ('queued', 'sending', 'sent', 'delivered', 'deferred', 'bounced', 'complained', "
    "'opened', 'clicked', 'failed', 'suppressed', 'unknown')"
)


def upgrade() -> None:
    op.create_table(
        "corestone_email_outbox",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column(
            "workspace_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.JSON(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fencing_token", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=True),
        sa.Column("provider_message_id", sa.String(length=255), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("correlation_id", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(_STATUSES, name=op.f("ck_corestone_email_outbox_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_corestone_email_outbox")),
        sa.UniqueConstraint(
            "idempotency_key", name=op.f("uq_corestone_email_outbox_idempotency_key")
        ),
    )
    op.create_index(
        "ix_corestone_email_outbox_status_next_attempt_at",
        "corestone_email_outbox",
        ["status", "next_attempt_at"],
    )
    op.create_index(
        op.f("ix_corestone_email_outbox_workspace_id"), "corestone_email_outbox", ["workspace_id"]
    )
    op.create_index(
        op.f("ix_corestone_email_outbox_provider_message_id"),
        "corestone_email_outbox",
        ["provider_message_id"],
    )
    op.create_table(
        "corestone_email_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.CheckConstraint(_STATUSES, name=op.f("ck_corestone_email_events_status")),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["corestone_email_outbox.id"],
            name=op.f("fk_corestone_email_events_message_id_corestone_email_outbox"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_corestone_email_events")),
    )
    op.create_index(
        op.f("ix_corestone_email_events_message_id"), "corestone_email_events", ["message_id"]
    )
    op.create_table(
        "corestone_email_suppressions",
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "reason IN ('bounce', 'complaint', 'manual')",
            name=op.f("ck_corestone_email_suppressions_reason"),
        ),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_corestone_email_suppressions")),
    )


def downgrade() -> None:
    op.drop_table("corestone_email_suppressions")
    op.drop_index(op.f("ix_corestone_email_events_message_id"), table_name="corestone_email_events")
    op.drop_table("corestone_email_events")
    op.drop_index(
        op.f("ix_corestone_email_outbox_provider_message_id"), table_name="corestone_email_outbox"
    )
    op.drop_index(
        op.f("ix_corestone_email_outbox_workspace_id"), table_name="corestone_email_outbox"
    )
    op.drop_index(
        "ix_corestone_email_outbox_status_next_attempt_at", table_name="corestone_email_outbox"
    )
    op.drop_table("corestone_email_outbox")
