"""corestone's alert delivery: state history, send claims, notifications, silences.

``corestone_alert_sends`` has the primary key (group_key, seq): inserting the next row
of a group is the claim that lets one process, of all that evaluate the same rules,
send that notification.

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_STATUSES = "status IN ('sending', 'sent', 'failed', 'silenced')"


def upgrade() -> None:
    op.create_table(
        "corestone_alert_history",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rule", sa.String(length=200), nullable=False),
        sa.Column("fingerprint", sa.String(length=32), nullable=False),
        sa.Column("previous", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("annotations", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_corestone_alert_history")),
    )
    op.create_index("ix_corestone_alert_history_at", "corestone_alert_history", ["at"])
    op.create_index(
        "ix_corestone_alert_history_fingerprint_at",
        "corestone_alert_history",
        ["fingerprint", "at"],
    )
    op.create_table(
        "corestone_alert_sends",
        sa.Column("group_key", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("content", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("group_key", "seq", name=op.f("pk_corestone_alert_sends")),
    )
    op.create_index("ix_corestone_alert_sends_claimed_at", "corestone_alert_sends", ["claimed_at"])
    op.create_table(
        "corestone_alert_notifications",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("group_key", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("alert_status", sa.String(length=16), nullable=False),
        sa.Column("group_labels", sa.JSON(), nullable=False),
        sa.Column("alerts", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(_STATUSES, name=op.f("ck_corestone_alert_notifications_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_corestone_alert_notifications")),
    )
    op.create_index(
        "ix_corestone_alert_notifications_created_at",
        "corestone_alert_notifications",
        ["created_at"],
    )
    op.create_index(
        "ix_corestone_alert_notifications_group_key_seq",
        "corestone_alert_notifications",
        ["group_key", "seq"],
    )
    op.create_table(
        "corestone_alert_silences",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("matchers", sa.JSON(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_corestone_alert_silences")),
    )
    op.create_index("ix_corestone_alert_silences_ends_at", "corestone_alert_silences", ["ends_at"])


def downgrade() -> None:
    op.drop_index("ix_corestone_alert_silences_ends_at", table_name="corestone_alert_silences")
    op.drop_table("corestone_alert_silences")
    for index in ("group_key_seq", "created_at"):
        op.drop_index(
            f"ix_corestone_alert_notifications_{index}",
            table_name="corestone_alert_notifications",
        )
    op.drop_table("corestone_alert_notifications")
    op.drop_index("ix_corestone_alert_sends_claimed_at", table_name="corestone_alert_sends")
    op.drop_table("corestone_alert_sends")
    for index in ("fingerprint_at", "at"):
        op.drop_index(f"ix_corestone_alert_history_{index}", table_name="corestone_alert_history")
    op.drop_table("corestone_alert_history")
