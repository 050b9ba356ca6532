"""corestone's domain events: the transactional outbox, the consumers' inbox, dead letters.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "corestone_events_dead_letters",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=200), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_corestone_events_dead_letters")),
    )
    op.create_index(
        op.f("ix_corestone_events_dead_letters_consumer"),
        "corestone_events_dead_letters",
        ["consumer"],
        unique=False,
    )
    op.create_table(
        "corestone_events_inbox",
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id", name=op.f("pk_corestone_events_inbox")),
    )
    op.create_index(
        op.f("ix_corestone_events_inbox_handled_at"),
        "corestone_events_inbox",
        ["handled_at"],
        unique=False,
    )
    op.create_table(
        "corestone_events_outbox",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=200), nullable=False),
        sa.Column("aggregate_type", sa.String(length=100), nullable=False),
        sa.Column("aggregate_id", sa.String(length=200), nullable=False),
        sa.Column("workspace_id", sa.String(length=64), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fencing_token", sa.Integer(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'sent')", name=op.f("ck_corestone_events_outbox_status")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_corestone_events_outbox")),
        sa.UniqueConstraint("id", name=op.f("uq_corestone_events_outbox_id")),
    )
    op.create_index(
        "ix_corestone_events_outbox_aggregate",
        "corestone_events_outbox",
        ["aggregate_type", "aggregate_id", "seq"],
        unique=False,
    )
    op.create_index(
        "ix_corestone_events_outbox_position", "corestone_events_outbox", ["position"], unique=True
    )
    op.create_index(
        "ix_corestone_events_outbox_status_sent_at",
        "corestone_events_outbox",
        ["status", "sent_at"],
        unique=False,
    )
    op.create_index(
        "ix_corestone_events_outbox_status_seq",
        "corestone_events_outbox",
        ["status", "seq"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_corestone_events_outbox_status_seq", table_name="corestone_events_outbox")
    op.drop_index("ix_corestone_events_outbox_status_sent_at", table_name="corestone_events_outbox")
    op.drop_index("ix_corestone_events_outbox_position", table_name="corestone_events_outbox")
    op.drop_index("ix_corestone_events_outbox_aggregate", table_name="corestone_events_outbox")
    op.drop_table("corestone_events_outbox")
    op.drop_index(op.f("ix_corestone_events_inbox_handled_at"), table_name="corestone_events_inbox")
    op.drop_table("corestone_events_inbox")
    op.drop_index(
        op.f("ix_corestone_events_dead_letters_consumer"),
        table_name="corestone_events_dead_letters",
    )
    op.drop_table("corestone_events_dead_letters")
